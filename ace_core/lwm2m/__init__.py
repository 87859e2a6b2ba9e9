"""The LwM2M wire formats the bootstrap server (``as_server.bootstrap``) and the locks
(``resource_server.bootstrap_client``) share (issue #7), sans-IO: OMA LwM2M 1.1/1.2 as summarised in
``shared/reference/lwm2m-bootstrap.md`` ("ref. §n" in the docstrings).

* :mod:`.registry` -- object/resource ids, TLV kinds, Content-Formats, SenML labels, CoAP methods;
* :mod:`.model` -- resource types, values, object definitions and instances;
* :mod:`.tlv` -- OMA-TLV (11542), OMA LwM2M Core §7.4.3;
* :mod:`.senml` -- SenML CBOR (112), RFC 8428 §4, §6, with LwM2M's ``vlo``;
* :mod:`.objects` -- typed Security/Server/OSCORE instances and the AS's server account;
* :mod:`.messages` -- Bootstrap-Request / Bootstrap-Pack-Request parsing, operations and their codes, the pack;
* :mod:`.identifiers` -- serial numbers, endpoint names, PSK identities, enrolment ids;
* :mod:`.bundle` -- a device's factory credential bundle (AES-256-GCM under a per-batch key);
* :mod:`.errors` -- one error class per decoder (all :class:`~ace_core.errors.WireFormatError`).
"""
