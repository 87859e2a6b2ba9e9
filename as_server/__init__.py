"""Ostiary authorization server (AS): issues proof-of-possession access tokens to clients. RFC 9200 §5.

The AS authenticates clients with pre-established secrets, applies the consent policies of :mod:`policies` and
issues CWT access tokens (RFC 8392) bound to the client's key through a ``cnf`` claim (RFC 8747), over CoAP
(``application/ace+cbor``) and HTTP (JSON). What it implements:

* token endpoint -- RFC 9200 §5.8 (request §5.8.1, grant types §5.8.4.1 Table 4, error responses §5.8.3,
  CBOR mappings §5.8.5 Table 5); PoP key parameters ``req_cnf``, ``cnf`` and ``rs_cnf`` -- RFC 9201 §3;
* introspection endpoint -- RFC 9200 §5.9 (responses §5.9.2, errors §5.9.3, mappings §5.9.4 Table 6);
* the OSCORE profile's AS side: ``OSCORE_Input_Material`` in the token and response -- RFC 9203 §3.2;
* the consent workflow (issue #5): access requests named in ``invalid_scope`` errors' ``error_uri`` (RFC 9200
  §5.8.3, RFC 6749 §5.2), observable over CoAP (RFC 7641), approvals that become policy grants, revocation
  (:mod:`.consent`); local users with Argon2id password hashes (RFC 9106, :mod:`.identity`); the append-only
  audit log (:mod:`.audit`);
* a bootstrap adapter that hands devices their operational credentials, LwM2M-bootstrap style (``bootstrap/``).

Layout (STYLE §3.1): framework-free endpoints and grants, injected storage Protocols with memory and SQLAlchemy
backends, and thin CoAP/HTTP adapters under ``transport/``. All wire formats and token crypto come from
:mod:`ace_core`; this package never imports :mod:`resource_server` or :mod:`client_sdk`.

Status: the token and introspection endpoints, client authentication, storage (memory, SQLite, PostgreSQL) and
both transports work (``ostiary as serve``); the bootstrap adapter arrives with its own issue.
"""
