"""Ostiary consent policies: how facility managers decide which client may open which lock, and when.

The authorization server asks a policy for every token request and issues a token only for the scope the policy
grants -- which may be narrower than the scope requested (RFC 9200 §5.8.1; the granted scope is returned in the
token response when it differs, RFC 6749 §5.1 as referenced by RFC 9200 §5.8.2). Scopes are text or AIF-REST
(RFC 9237). Planned scope:

* ``base.py`` -- the ``ConsentPolicy`` Protocol: ``decide(ctx) -> Decision(granted_scope, reason)``;
  deterministic for equal input and sans-IO (time is passed in, never read);
* ``builtin/`` -- an allow-list policy and an owner-consent policy;
* third-party policies loaded through the ``ace.consent_policies`` entry-point group.

This package imports only :mod:`ace_core` among the project's packages (STYLE §3.1).

Status: ``base.py`` defines ``AccessPolicy``/``AccessRequest``/``Decision``; ``builtin/allow_list.py`` implements the
static YAML allow list. The owner-consent policy and entry-point loading are still to come.
"""
