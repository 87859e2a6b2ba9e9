"""Shared, sans-IO ACE-OAuth core: wire formats (RFC 9200/9201/9203), scopes (RFC 9237), COSE/CWT (RFC 8392).

Imported by the authorization server, the resource-server library and the client SDK alike. Nothing here does
I/O or reads the clock: time is always a parameter (``now``).
"""

__version__ = "0.1.0"
