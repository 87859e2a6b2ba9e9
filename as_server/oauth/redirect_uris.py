"""Redirect URIs of apps: which may be registered, and when a presented one matches (RFC 6749 §3.1.2, RFC 8252 §7).

Three kinds can be registered, the ones RFC 8252 §7 gives native apps, plus HTTPS for web apps:

* **Loopback** (RFC 8252 §7.3): ``http://127.0.0.1:{port}/{path}`` or ``http://[::1]:{port}/{path}``. The app
  listens on a port it picks when it starts, so the port of a registered loopback URI does not count: "The
  authorization server MUST allow any port to be specified at the time of the request for loopback IP redirect
  URIs". ``localhost`` is refused (RFC 8252 §8.3: "NOT RECOMMENDED", it may resolve elsewhere).
* **Private-use URI schemes** (RFC 8252 §7.1): ``com.example.app:/callback``. The scheme must contain a period, as
  the reverse domain name the RFC asks for ("a scheme based on a domain name under their control, expressed in
  reverse order") always does; that also keeps out ``http``, ``javascript``, ``data`` and the like.
* **HTTPS** (RFC 8252 §7.2 claimed URLs, or a web app): ``https://app.example/callback``.

Everything else is refused at registration: plain ``http`` to anything but a loopback address (RFC 6749 §3.1.2.1
wants TLS), URIs with a fragment (RFC 6749 §3.1.2: "MUST NOT include a fragment component"), user information, or
characters outside printable ASCII. Matching is exact string comparison after that (RFC 6749 §3.1.2.3, RFC 9700
§4.1.3 "exact string matching"), except for the loopback port.

>>> normalize("http://127.0.0.1:0/callback")
'http://127.0.0.1/callback'
>>> matches("http://127.0.0.1/callback", "http://127.0.0.1:51004/callback")
True
>>> matches("http://127.0.0.1/callback", "http://127.0.0.1:51004/callback/other")
False
>>> matches("com.example.app:/callback", "com.example.app:/callback")
True
>>> normalize("http://app.example/callback")
Traceback (most recent call last):
...
as_server.oauth.redirect_uris.InvalidRedirectUri: plain http only to a loopback address (RFC 8252 section 7.3)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import SplitResult, urlsplit

__all__ = ["InvalidRedirectUri", "find_match", "is_loopback", "matches", "normalize"]

#: Longest redirect URI accepted (characters).
MAX_REDIRECT_URI_LENGTH: Final = 2000
#: RFC 3986 §3.1 scheme syntax.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1"})


class InvalidRedirectUri(ValueError):
    """A redirect URI that cannot be registered (the message says why, in RFC 6749 §5.2 characters)."""


def _split(uri: str) -> SplitResult:
    if not uri or len(uri) > MAX_REDIRECT_URI_LENGTH or not uri.isascii() or not uri.isprintable() or " " in uri:
        raise InvalidRedirectUri("a redirect URI is printable ASCII without spaces, at most 2000 characters")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise InvalidRedirectUri("malformed redirect URI") from None
    if not parts.scheme or not _SCHEME.match(parts.scheme):
        raise InvalidRedirectUri("a redirect URI must be absolute (RFC 6749 section 3.1.2)")
    if "#" in uri:
        raise InvalidRedirectUri("a redirect URI must not have a fragment (RFC 6749 section 3.1.2)")
    return parts


def is_loopback(uri: str) -> bool:
    """Whether ``uri`` is an ``http`` URI to a loopback IP literal (RFC 8252 §7.3)."""
    try:
        parts = _split(uri)
    except InvalidRedirectUri:
        return False
    return parts.scheme.lower() == "http" and (parts.hostname or "") in _LOOPBACK_HOSTS


def normalize(uri: str) -> str:
    """The form of ``uri`` to register: checked, and for a loopback URI without its port.

    :raises InvalidRedirectUri: the URI may not be registered (see the module documentation).
    """
    parts = _split(uri)
    scheme = parts.scheme.lower()
    if scheme == "https":
        if not parts.hostname or "@" in parts.netloc:
            raise InvalidRedirectUri("an https redirect URI needs a host and no user information")
        return uri
    if scheme == "http":
        host = parts.hostname or ""
        if host not in _LOOPBACK_HOSTS or "@" in parts.netloc:
            raise InvalidRedirectUri("plain http only to a loopback address (RFC 8252 section 7.3)")
        netloc = "[::1]" if host == "::1" else host
        return parts._replace(scheme="http", netloc=netloc).geturl()
    if "." not in scheme:
        raise InvalidRedirectUri(
            "a private-use scheme is a reverse domain name such as com.example.app (RFC 8252 section 7.1)"
        )
    return uri


def matches(registered: str, presented: str) -> bool:
    """Whether ``presented`` is the registered redirect URI ``registered`` (exact, loopback port ignored)."""
    if registered == presented:
        return True
    if not (is_loopback(registered) and is_loopback(presented)):
        return False
    try:
        # Any port, but the URI as sent otherwise: scheme, host, path and query exactly as registered.
        return normalize(presented) == registered and urlsplit(presented).hostname == urlsplit(registered).hostname
    except InvalidRedirectUri:
        return False


def find_match(registered: Iterable[str], presented: str) -> str | None:
    """The registered URI that ``presented`` matches, or ``None``."""
    return next((uri for uri in registered if matches(uri, presented)), None)
