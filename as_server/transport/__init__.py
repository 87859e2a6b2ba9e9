"""Transports of the authorization server: thin adapters that translate and catch at one place (STYLE §3.1).

* :mod:`.http` -- Flask app factory (form, JSON and ACE CBOR over HTTP); :mod:`.wsgi` is its gunicorn entry point
  and :mod:`.gunicorn_conf` the worker hooks;
* :mod:`.coap` -- aiocoap resources (``application/ace+cbor``, RFC 9200 §5);
* :mod:`.common` -- what both share (exception -> outcome), framework-free.

Only modules in this package may import Flask or aiocoap (tests/test_import_boundaries.py).
"""
