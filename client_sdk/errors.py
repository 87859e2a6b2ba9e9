"""Errors of the client SDK. Every one is an :class:`~ace_core.errors.AceError` (STYLE §3.3), so an app can catch
:class:`AceClientError` for "the SDK could not do it" and still handle the specific cases.

Refusals by the AS keep their own classes: an RFC 9200 §5.8.3 error response is raised as the
:class:`~ace_core.errors.OAuthError` subclass of its code (``InvalidScope``, ``InvalidClient``, ...).

The messages name what happened and, where one is likely, the cause -- they are meant to be shown to a developer
or an operator. They never contain secrets (client secret, master secret).
"""

from __future__ import annotations

from ace_core.errors import AceError
from ace_core.messages import CreationHints

__all__ = [
    "AccessDenied",
    "AceClientError",
    "ContextMismatch",
    "DiscoveryFailed",
    "NoSecurityContext",
    "ResponseProtectionFailed",
    "TokenRequestFailed",
    "TokenUnusable",
    "TokenUploadFailed",
    "TransportError",
    "TransportTimeout",
    "UntrustedAuthorizationServer",
]


class AceClientError(AceError):
    """Base of the errors the client SDK raises on purpose (besides the AS's ``OAuthError`` refusals).

    Where a peer's answer caused the error, its status is in ``response_status`` (``Status``-style int: ``401``
    for CoAP 4.01 and HTTP 401). The inherited class attribute ``status`` is what a *server* would render an
    ``AceError`` as, and means nothing here.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


class TransportError(AceClientError):
    """The network failed (name resolution, unreachable host, a malformed response)."""


class TransportTimeout(TransportError, TimeoutError):
    """No response within the client's timeout."""


class TokenRequestFailed(AceClientError):
    """The AS answered with something other than a token or an RFC 9200 §5.8.3 error response.

    :param status: the response status (``Status``-style ``401`` for CoAP 4.01 and HTTP 401), kept as
        :attr:`response_status` (``status`` is the class attribute every ``AceError`` has for servers).
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"token request failed ({status}): {detail}")
        self.response_status = status


class TokenUnusable(AceClientError):
    """The AS granted a token the client cannot use with the OSCORE profile: another ACE profile, no
    OSCORE_Input_Material in ``cnf`` (RFC 9203 §3.2), or no way to learn its lifetime (RFC 9200 §5.10.4)."""


class UntrustedAuthorizationServer(AceClientError):
    """The AS named by a resource server's AS Request Creation Hints (RFC 9200 §5.3) is not one this client may
    send its credentials to. The hints arrive in an unprotected 4.01, so anyone on the path can forge them."""


class DiscoveryFailed(AceClientError):
    """An unprotected request to the resource server did not yield usable AS Request Creation Hints (RFC 9200
    §5.2, §5.3), or the hints lack what the client needs (AS, audience or scope) and it was not told otherwise."""


class TokenUploadFailed(AceClientError):
    """The resource server refused the token at ``/authz-info`` (RFC 9200 §5.10.1.1, RFC 9203 §4.1), or its
    answer does not allow deriving a security context (RFC 9203 §4.2).

    :param status: the response status (``Status``-style int), ``None`` when the response itself was unusable.
    :param hints: the AS Request Creation Hints the RS sent with a 4.01, if any.
    """

    def __init__(self, message: str, *, status: int | None = None, hints: CreationHints | None = None) -> None:
        super().__init__(message)
        self.response_status = status
        self.hints = hints


class NoSecurityContext(AceClientError):
    """A protected request was about to be sent to an origin without an installed OSCORE context. The
    transport refuses instead of sending it unprotected."""


class ResponseProtectionFailed(AceClientError):
    """A response claimed OSCORE protection but did not verify with the client's context (RFC 8613 §8.4)."""


class ContextMismatch(AceClientError):
    """The lock could not use a security context it had just agreed to: the first OSCORE request of a freshly
    derived context was answered unprotected (e.g. 4.00 "Decryption failed" or 4.01 "Security context not
    found"), was not answered at all, or the lock's response did not verify -- also after one retry with a new
    token. Both ends then derived different keys from the same exchange; the likely cause is a different
    Master Salt convention for an absent ``salt`` (RFC 9203 §4.3 leaves it open) or different OSCORE
    algorithms / ID Context.

    :param status: the status of the lock's last (unprotected) answer, ``None`` when it did not answer.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.response_status = status


class AccessDenied(AceClientError):
    """The lock answered 4.01 Unauthorized (RFC 9200 §5.10.2) again after the client had retried once with a
    fresh token and security context.

    :param status: the status of the lock's last answer.
    :param hints: the AS Request Creation Hints it sent, if any.
    """

    def __init__(self, message: str, *, status: int, hints: CreationHints | None = None) -> None:
        super().__init__(message)
        self.response_status = status
        self.hints = hints
