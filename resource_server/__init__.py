"""Ostiary resource-server (RS) library: what door-lock firmware embeds to accept ACE access tokens. RFC 9200 §5.10
with the OSCORE profile, RFC 9203.

The sans-IO core (no CoAP stack, time passed in):

* :mod:`resource_server.config` -- :class:`~resource_server.config.RsConfig` (and the TOML lock configuration);
* :mod:`resource_server.authz_info` -- the ``/authz-info`` endpoint: token upload and verification in the RFC 9200
  §5.10.1.1 order, the RFC 9203 §4.1/§4.2 nonce and Recipient-ID exchange, update of access rights;
* :mod:`resource_server.token_store` -- one token per PoP key, bounded with a documented eviction rule, expiry on
  the wall clock (``exp``) and on uptime (``exi``, with the sequence-number rule of RFC 9200 §5.10.3), optional
  persistence that keeps OSCORE replay-safe across restarts (RFC 8613 Appendix B.1);
* :mod:`resource_server.guard` -- 4.01 + AS Request Creation Hints / 4.03 / 4.05 (RFC 9200 §5.2, §5.3, §5.10.2);
* :mod:`resource_server.cnonce`, :mod:`resource_server.ratelimit` -- RFC 9200 §5.3.1 cnonces, RFC 8516 4.29;
* :mod:`resource_server.oscore_keys` -- the OSCORE context keys (RFC 8613 §3.2.1) from one HKDF-Extract;
* :mod:`resource_server.server` -- :class:`~resource_server.server.ResourceServer`, all of the above wired together;
* :mod:`resource_server.resources` -- application resources as plain functions (what firmware writes).

The transport: :mod:`resource_server.aiocoap_site` -- ``AceSiteWrapper`` protects a whole aiocoap site (the only
module here that imports aiocoap). :mod:`resource_server.examples.door_lock` is the reference lock
(``ostiary lock serve --config FILE``).

Wire formats and token verification come from :mod:`ace_core`; this package never imports :mod:`as_server` or
:mod:`client_sdk`. Planned: the device side of the bootstrap adapter (``bootstrap_client.py``).
"""
