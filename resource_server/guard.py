"""Access decisions for resource requests, sans-IO: RFC 9200 §5.10.2 (and §5.2/§5.3 for the 4.01 answer).

:meth:`Guard.check` decides one request from the token that authorises it (the token of the OSCORE context the
request arrived on, or ``None`` for an unprotected request):

=================================================  ======  ===================================================
case                                               status  payload
=================================================  ======  ===================================================
no token (unprotected request, unknown context)    4.01    AS Request Creation Hints (RFC 9200 §5.3): AS URI,
                                                           audience, the scope this request needs (AIF entry
                                                           for path + method, or the text names granting it),
                                                           a cnonce when the lock uses cnonces
token expired (``exp``/``exi``)                    4.01    hints, as above
token does not cover the path                      4.03    none
token covers the path but not the method           4.05    none
allowed                                            --      --
=================================================  ======  ===================================================

Paths compare exactly (``/lock``; no normalisation), as :meth:`ace_core.scope.AifScope.permits` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from ace_core.messages import CreationHints
from ace_core.scope import AifScope, MethodLike, aif_method
from ace_core.status import Status
from resource_server.cnonce import CnonceManager
from resource_server.config import RsConfig, ScopeFormat
from resource_server.token_store import StoredToken

__all__ = ["Guard", "GuardDecision"]


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """The outcome of :meth:`Guard.check`.

    :param status: ``None`` when the request may proceed, else the error status to answer with.
    :param hints: AS Request Creation Hints to send with a 4.01 (``application/ace+cbor``).
    :param reason: why, for logs.
    """

    status: Status | None
    hints: CreationHints | None = None
    reason: str = ""

    @property
    def allowed(self) -> bool:
        """True when the request may reach the resource."""
        return self.status is None


_GRANTED = GuardDecision(None, None, "granted")


class Guard:
    """Decides resource requests against stored tokens (module docstring).

    :param config: the RS configuration (AS URI, audience, scope format).
    :param cnonces: the cnonce state if the lock uses cnonces (each 4.01 then carries a new one).
    """

    def __init__(self, config: RsConfig, *, cnonces: CnonceManager | None = None) -> None:
        self.config = config
        self.cnonces = cnonces

    def check(
        self,
        method: MethodLike,
        path: str,
        token: StoredToken | None,
        *,
        now: float | None,
        monotonic: float,
    ) -> GuardDecision:
        """Decide a request for ``method`` on ``path`` authorised by ``token``.

        :param method: a CoAP method code (``aiocoap.GET``), a name (``"GET"``) or an AIF flag.
        :param now: wall-clock time (``None`` without a clock); :param monotonic: uptime, for ``exi``.
        """
        if token is None:
            return GuardDecision(
                Status.UNAUTHORIZED, self.hints(method, path, monotonic=monotonic), "no token for this request"
            )
        if token.is_expired(now=now if self.config.has_clock else None, monotonic=monotonic):
            hints = self.hints(method, path, monotonic=monotonic)
            return GuardDecision(Status.UNAUTHORIZED, hints, f"token expired ({token.describe()})")
        if not token.rights.covers_path(path):
            return GuardDecision(Status.FORBIDDEN, None, f"{path} not covered ({token.describe()})")
        try:
            permitted = token.rights.permits(method, path)
        except (ValueError, TypeError):
            permitted = False  # a method AIF cannot express is never granted (RFC 9237 §6)
        if not permitted:
            return GuardDecision(Status.METHOD_NOT_ALLOWED, None, f"method not granted on {path} ({token.describe()})")
        return _GRANTED  # the common case allocates nothing (the transport describes the token if it logs)

    def hints(self, method: MethodLike | None = None, path: str | None = None, *, monotonic: float) -> CreationHints:
        """AS Request Creation Hints (RFC 9200 §5.3) for a request, or generic ones when the request is unknown
        (e.g. it arrived under a security context the lock no longer has)."""
        cnonce = self.cnonces.issue(monotonic=monotonic) if self.cnonces is not None else None
        return CreationHints(
            as_uri=self.config.as_uri,
            audience=self.config.audience,
            scope=self.scope_for(method, path) if method is not None and path is not None else None,
            cnonce=cnonce,
        )

    def scope_for(self, method: MethodLike, path: str) -> str | bytes | None:
        """The ``scope`` a client should ask for to make this request: the AIF entry ``[[path, method]]``
        (``application/aif+cbor`` bytes) or, for text scopes, the names whose rights include it."""
        try:
            flag = aif_method(method)
        except (ValueError, TypeError):
            return None
        if self.config.scope_format is ScopeFormat.AIF:
            try:
                return AifScope([(path, flag)]).to_cbor()
            except (ValueError, TypeError):
                return None
        names = [name for name, rights in self.config.scope_map.items() if rights.permits(flag, path)]
        return " ".join(names) if names else None
