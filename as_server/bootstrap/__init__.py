"""The bootstrap adapter: the LwM2M bootstrap protocol core (OMA LwM2M 1.1/1.2, no I/O, storage or clocks) and the
factory side (device credentials, bundles, the device registry).

Issue #7: locks leave the factory with bootstrap credentials only and get their operational credentials (the
AS<->lock key, the AS's public key, the AS address) from this bootstrap server, as a standard LwM2M client stores
them: in a Security (``/0``) and a Server (``/1``) object instance. The protocol facts are in
``shared/reference/lwm2m-bootstrap.md`` ("ref. §n" in the docstrings).

The wire formats it shares with the locks are in :mod:`ace_core.lwm2m` (registry, object model, TLV, SenML CBOR,
Security/Server/OSCORE objects, bootstrap messages, factory identifiers and credential bundles). Here:

* :mod:`.discover` -- the Bootstrap-Discover answer (RFC 6690) and the choice of instance ids;
* :mod:`.session` -- the server-driven sequence (Discover, Delete, Write, Finish) as a state machine;
* :mod:`.operational` -- the locks' operational keys: generations, delivery, rotation, retirement, revocation;
* :mod:`.server` -- the bootstrap service: DTLS PSK lookup, Bootstrap-Pack, classic sessions, LwM2M registrations
  (on CoAP in :mod:`as_server.transport.bootstrap_coap`).

The factory side (these modules do I/O):

* :mod:`.archive` -- the batch's credential bundles in one ZIP;
* :mod:`.manifest` -- the factory line's manifest (CSV and JSON Lines; never a PSK);
* :mod:`.devices` -- the device registry's Protocols and an in-memory store; :mod:`.device_db` -- the SQLite-file
  store (secrets sealed under the AS master key); :mod:`.factory` -- ``ostiary factory batch``.

Decoders of device input raise only :class:`~ace_core.lwm2m.errors.BootstrapFormatError` subclasses.
The CoAP transport, the device store and the authorizer are separate (Leshan's split, STYLE §1).
"""
