"""Framework-free endpoint logic of the authorization server (STYLE §3.1, Authlib ``AuthorizationServer``).

* :mod:`.token` -- the token endpoint, RFC 9200 §5.8 (with RFC 9201 PoP keys and the RFC 9203 OSCORE profile);
* :mod:`.introspect` -- the introspection endpoint, RFC 9200 §5.9 (RFC 7662).
* :mod:`.consent` -- the access-request resource and the approvers' JSON API of the consent workflow (issue #5).

Each endpoint takes a decoded message plus what the transport knows (client credentials found in the transport,
the peer address), and returns a decoded message or raises an :class:`~ace_core.errors.AceError` that the
transport renders at its single catch site. Time comes from an injected ``clock`` that only the endpoints read;
everything below them receives ``now``.
"""
