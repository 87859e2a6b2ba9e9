"""Apps signing users in: the authorization code grant with PKCE, and refresh tokens (issue #5).

A smartphone app gets tokens on behalf of the person using it, not only as itself:

1. The app opens ``GET /authorize?response_type=code&client_id=...&redirect_uri=...&audience=...&scope=...
   &state=...&code_challenge=...&code_challenge_method=S256`` in the system browser (RFC 6749 §4.1.1, RFC 7636
   §4.3, RFC 8252 §6). The AS shows a sign-in page: the user's name and password, and what the app asks for.
2. The user signs in and allows it; the AS redirects to the app's registered redirect URI -- a loopback URI
   ``http://127.0.0.1:{port}/...`` (RFC 8252 §7.3, any port) or a private-use scheme ``com.example.app:/...``
   (RFC 8252 §7.1) -- with ``code`` and ``state`` (RFC 6749 §4.1.2).
3. The app exchanges the code at ``POST /token`` (form, RFC 6749 §4.1.3) with the PKCE ``code_verifier`` and gets
   the ACE Access Information (RFC 9200 §5.8.2): a proof-of-possession CWT whose ``sub`` is the user, decided by the
   policy for that user and their groups, and a ``refresh_token``.
4. Later, ``grant_type=refresh_token`` (over HTTP or, in ACE CBOR, over CoAP) returns a new access token for the
   same audience and PoP key (RFC 9200 §5.8.1) and a new refresh token; the policy is decided again each time.

Modules: :mod:`.flows` (the composition root and the code exchange), :mod:`.authorization_code` (Authlib grant and
PKCE), :mod:`.refresh` (the refresh grant), :mod:`.signin` (CSRF and password sign-in), :mod:`.clients` (public and
confidential clients), :mod:`.redirect_uris` (RFC 8252 §7), :mod:`.opaque` (codes and refresh tokens). None imports
a web framework; the page and the Authlib Flask integration are in :mod:`as_server.transport.authorize`.
"""
