"""Ostiary resource-server (RS) library: what door-lock firmware embeds to accept ACE access tokens. RFC 9200 §5.10.

The RS receives tokens from clients, verifies them against the keys of its authorization server and enforces
their scope on every request. Planned scope:

* the ``/authz-info`` endpoint that receives access tokens -- RFC 9200 §5.10.1;
* token verification in the order RFC 9200 §5.10.1.1 prescribes (security wrapper, ``iss``, ``exp``, ``aud``,
  ``scope``), each failure answered with the status given there, and expiry handling -- §5.10.3;
* scope enforcement for resource requests, answering unauthorised ones with AS Request Creation Hints --
  RFC 9200 §5.2, §5.3 (AIF-REST scopes, RFC 9237);
* the OSCORE profile: nonce exchange and security-context derivation -- RFC 9203 §4 (§4.1 to §4.3);
* ``AceSiteWrapper`` in ``aiocoap_site.py``, which protects a whole aiocoap site, and ``examples/door_lock.py``,
  the reference lock firmware built on the library;
* the device side of the bootstrap adapter (``bootstrap_client.py``).

Wire formats and token verification come from :mod:`ace_core`; this package never imports :mod:`as_server` or
:mod:`client_sdk`.

Status: nothing is implemented here yet; the library and the door-lock example arrive in the next issues.
"""
