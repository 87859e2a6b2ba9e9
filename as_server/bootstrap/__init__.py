"""The bootstrap adapter: the LwM2M bootstrap protocol core (OMA LwM2M 1.1/1.2, no I/O, storage or clocks) and the
factory side (device credentials, bundles, the device registry).

Issue #7: locks leave the factory with bootstrap credentials only and get their operational credentials (the
AS<->lock key, the AS's public key, the AS address) from this bootstrap server, as a standard LwM2M client stores
them: in a Security (``/0``) and a Server (``/1``) object instance. The protocol facts are in
``shared/reference/lwm2m-bootstrap.md`` ("ref. §n" in the docstrings).

* :mod:`.registry` -- object/resource ids, TLV kinds, Content-Formats, SenML labels, CoAP methods;
* :mod:`.model` -- resource types, values, object definitions and instances;
* :mod:`.tlv` -- OMA-TLV (11542), OMA LwM2M Core §7.4.3;
* :mod:`.senml` -- SenML CBOR (112), RFC 8428 §4, §6, with LwM2M's ``vlo``;
* :mod:`.objects` -- typed Security/Server/OSCORE instances and the AS's server account;
* :mod:`.discover` -- the Bootstrap-Discover answer (RFC 6690) and the choice of instance ids;
* :mod:`.messages` -- Bootstrap-Request / Bootstrap-Pack-Request parsing, operations and their codes, the pack;
* :mod:`.session` -- the server-driven sequence (Discover, Delete, Write, Finish) as a state machine.

The factory side (these modules do I/O):

* :mod:`.identifiers` -- serial numbers, endpoint names, PSK identities, enrolment ids with a check character;
* :mod:`.bundle` and :mod:`.archive` -- per-device credential bundles (AES-256-GCM under a per-batch key) in one ZIP;
* :mod:`.manifest` -- the factory line's manifest (CSV and JSON Lines; never a PSK);
* :mod:`.devices` -- the device registry's Protocols and an in-memory store; :mod:`.device_db` -- the SQLite-file
  store (secrets sealed under the AS master key); :mod:`.factory` -- ``ostiary factory batch``.

Decoders of device input raise only :class:`~.errors.BootstrapFormatError` subclasses (one per module).
The CoAP transport, the device store and the authorizer are separate (Leshan's split, STYLE §1).
"""
