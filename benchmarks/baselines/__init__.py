"""Baseline servers that ``bench_as`` measures beside the authorization server, under the same server stacks.

* :mod:`.trivial_http`: the cheapest Flask POST endpoint (the HTTP ceiling of gunicorn + Flask on this machine);
* :mod:`.authlib_app`: Authlib's Flask ``client_credentials`` endpoint issuing RFC 9068 JWTs (ES256), recording
  every token in SQLite with the same durability as ours (what a Python user would pick today);
* :mod:`.trivial_coap`: the cheapest aiocoap POST resource (the CoAP ceiling of aiocoap on this machine);
* :mod:`.durable_floor`: the trivial HTTP and CoAP endpoints plus one durable SQLite write per request through the
  AS's group committer (the ceiling of any endpoint that records each request before answering).

``bench_rs`` also uses :mod:`.trivial_coap` (against token uploads), and :mod:`.oscore_lock`: the door lock's
resources behind aiocoap's own ``OscoreSiteWrapper`` with a few static contexts and no ACE checks.
"""
