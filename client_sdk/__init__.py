"""Ostiary client SDK: what a smartphone app uses to obtain access tokens and open doors. RFC 9200 §5.

Scope:

* discovering the AS from an RS's AS Request Creation Hints -- RFC 9200 §5.3;
* requesting an access token with the client-credentials grant and a PoP key (``req_cnf``) -- RFC 9200 §5.8.1,
  RFC 9201 §3.1, and reading the token response and its ``rs_cnf`` -- RFC 9200 §5.8.2, RFC 9201 §3.2;
* uploading the token to the RS's ``/authz-info`` endpoint -- RFC 9200 §5.10.1;
* the OSCORE profile's client side: nonce exchange and security-context derivation -- RFC 9203 §4;
* ``AceClient`` choosing the CoAP or HTTP transport by URI scheme (``transport/``).

Wire formats and proof-of-possession keys come from :mod:`ace_core`; this package never imports
:mod:`as_server` or :mod:`resource_server`.

Status: :class:`client_sdk.client.AceClient` requests tokens over CoAP and HTTP, discovers the AS from a lock's
hints, uploads tokens to ``/authz-info``, derives the OSCORE context (RFC 9203 §4) and sends protected requests,
caching tokens per audience and retrying once after a 4.01. Modules: ``client.py`` (the API and the protocol flow),
``session.py`` (sans-IO token cache and session bookkeeping), ``errors.py``, ``transport/`` (aiocoap, httpx).
"""
