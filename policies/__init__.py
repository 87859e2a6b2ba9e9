"""Ostiary consent policies: how facility managers decide which client may open which lock, and when.

The authorization server asks a policy for every token request and issues a token only for the scope the policy
grants -- which may be narrower than the scope requested (RFC 9200 §5.8.1; the granted scope is returned in the
token response when it differs, RFC 6749 §5.1 as referenced by RFC 9200 §5.8.2). Scopes are text or AIF-REST
(RFC 9237).

* ``base.py`` -- the decision interface: ``AccessPolicy.decide(AccessRequest) -> Decision`` (granted scope,
  ``max_lifetime``, ``not_after``, ``consent``, the deciding ``rules``); deterministic for equal input and sans-IO
  (time is passed in, never read);
* ``engine.py`` -- :class:`~policies.engine.PolicyEngine`, the policy the AS runs: rules with subjects (clients,
  users, groups), targets (audiences, globs, audience groups), AIF or text scopes, conditions (validity, weekly
  time windows in IANA time zones, token lifetime) and an effect (permit, deny, consent by named approvers);
  deny overrides permit (issue #5);
* ``rules.py`` (the rule model), ``schedule.py`` (time windows, exact across daylight-saving changes),
  ``scopes.py`` (scope set algebra), ``policy_file.py`` (the YAML format, every mistake with its line),
  ``sources.py`` (the ``RuleSource`` interface for rules kept elsewhere, e.g. a database, and an in-memory
  source), ``errors.py`` (``PolicyError``);
* ``builtin/allow_list.py`` -- the static allow list the AS ran before the engine (its files load unchanged into
  the engine); kept as the baseline of the policy benchmark.

This package imports only :mod:`ace_core` among the project's packages (STYLE §3.1).
"""
