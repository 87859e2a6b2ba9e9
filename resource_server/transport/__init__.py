"""The resource server's client-side CoAP adapters (aiocoap): the lock's LwM2M bootstrap and registration client
(:mod:`.lwm2m_client`). The lock's own server side is :mod:`resource_server.aiocoap_site`."""
