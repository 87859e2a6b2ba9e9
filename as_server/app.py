"""The composition root of the authorization server: one object that owns storage, policy, limiter and endpoints.

:class:`AuthorizationServer` is what the transports adapt (STYLE §3.1, Leshan's builder): the CoAP site
(:mod:`as_server.transport.coap`) and the Flask app (:mod:`as_server.transport.http`) each take one and call its
:attr:`~AuthorizationServer.token_endpoint` (RFC 9200 §5.8), :attr:`~AuthorizationServer.introspection_endpoint`
(RFC 9200 §5.9) and :attr:`~AuthorizationServer.consent_api` (the consent workflow of issue #5). Nothing here imports
a web or CoAP framework, and nothing is read at import time: :meth:`AuthorizationServer.from_settings` opens
everything from a :class:`~as_server.config.Settings`.

The policy of :meth:`~AuthorizationServer.from_settings` is the :class:`~policies.engine.PolicyEngine` of the policy
file plus the consent grants in the database (:class:`~as_server.consent.GrantRuleSource`), evaluated after the
file's rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from as_server.audit import AuditLog
from as_server.auth import FailureRateLimiter
from as_server.config import Settings
from as_server.consent import ConsentService, GrantRuleSource
from as_server.console import ConsoleService
from as_server.endpoints.consent import ConsentApi
from as_server.endpoints.introspect import IntrospectionEndpoint
from as_server.endpoints.token import TokenEndpoint
from as_server.identity import IdentityProvider, LocalIdentityProvider
from as_server.oauth.flows import OAuthFlows
from as_server.oauth.signin import Sealer
from as_server.sealing import MasterKey
from as_server.storage.base import Storage
from policies.base import AccessPolicy

__all__ = ["AuthorizationServer", "coap_base_url", "storage_pool_size"]

#: Paths of the endpoints on both transports: the defaults RFC 9200 §5.8 and §5.9 recommend.
TOKEN_PATH = "/token"
INTROSPECTION_PATH = "/introspect"
#: RFC 8414 §3: the well-known suffix of the authorization server metadata document.
METADATA_PATH = "/.well-known/oauth-authorization-server"
#: The authorization endpoint of apps signing users in (RFC 6749 §3.1; issue #5, :mod:`as_server.oauth`), HTTP only.
AUTHORIZE_PATH = "/authorize"
#: Where an access request can be read (issue #5), on both transports: ``ACCESS_REQUESTS_PATH + "/" + id``.
ACCESS_REQUESTS_PATH = "/access-requests"


def _host_for_uri(host: str) -> str:
    """``host`` ready for a URI authority: IPv6 literals in brackets (RFC 3986 §3.2.2)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def storage_pool_size(settings: Settings) -> int:
    """Database connections one AS process keeps open: one per request thread (HTTP workers and the CoAP process
    each use one of the two thread counts; the CoAP process also runs the bootstrap server's threads), plus one for
    the token writer and one spare. With fewer, connections beyond the pool are opened and closed per request,
    which on SQLite means re-running its set-up pragmas."""
    bootstrap = settings.bootstrap_threads if settings.bootstrap_dtls_port or settings.bootstrap_plain_port else 0
    return max(settings.http_threads, settings.coap_threads + bootstrap) + 2


def csrf_sealer(settings: Settings) -> Sealer:
    """The master key of the deployment for the sign-in page's CSRF tokens, or -- when there is none, as for a
    server on memory storage -- a key of this process only (enough for one process; a logged warning says so)."""
    try:
        return MasterKey.load(settings.master_key_file)
    except (FileNotFoundError, PermissionError) as exc:
        logging.getLogger("ostiary.as").warning(
            "no master key (%s): sign-in pages are only accepted by the process that showed them", exc
        )
        return MasterKey.generate()[0]


def coap_base_url(settings: Settings) -> str:
    """``coap://host:port`` of the CoAP side (the port is always written, even the default 5683)."""
    return f"coap://{_host_for_uri(settings.coap_host)}:{settings.coap_port}"


class AuthorizationServer:
    """One AS deployment: storage, consent policy, failure rate limiter and the two endpoints.

    The endpoints are synchronous and thread-safe (they are called from gunicorn's threads and from the CoAP
    transport's thread pool); transports never touch storage or policy directly.

    :param settings: the deployment's configuration.
    :param storage: an opened :class:`~as_server.storage.base.Storage`; :meth:`close` closes it.
    :param policy: decides what is granted (RFC 9200 §5.8.1: the AS may grant less than requested).
    :param limiter: counts failed client authentications per client and per source address.
    :param clock: seconds since the epoch; injectable for tests (STYLE §3.6 rule 3).
    :param identity: who approvers are (default: the local users of ``storage``).
    :param sealer: seals the sign-in page's CSRF tokens (:mod:`as_server.oauth.signin`): the master key, so that
        every process of the deployment accepts the others' tokens (default: :func:`csrf_sealer`).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        policy: AccessPolicy,
        limiter: FailureRateLimiter,
        clock: Callable[[], float] = time.time,
        identity: IdentityProvider | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.policy = policy
        self.limiter = limiter
        self.clock = clock
        self.identity: IdentityProvider = identity if identity is not None else LocalIdentityProvider(storage)
        self.audit_log = AuditLog(
            storage.append_audit,
            queue_size=settings.audit_queue_size,
            flush_interval=settings.audit_flush_interval,
            clock=clock,
        )
        self.consent = ConsentService(settings=settings, storage=storage, identity=self.identity, clock=clock)
        self.consent_api = ConsentApi(self.consent, clock=clock)
        self.token_endpoint = TokenEndpoint(
            settings=settings,
            storage=storage,
            policy=policy,
            limiter=limiter,
            clock=clock,
            consent=self.consent,
            audit=self.audit_log,
        )
        self.introspection_endpoint = IntrospectionEndpoint(
            settings=settings, storage=storage, limiter=limiter, clock=clock
        )
        # Issue #5, apps signing users in: registers the authorization_code and refresh_token grants.
        the_sealer = sealer if sealer is not None else csrf_sealer(settings)
        self.oauth = OAuthFlows(
            settings=settings,
            storage=storage,
            endpoint=self.token_endpoint,
            identity=self.identity,
            sealer=the_sealer,
            audit=self.audit_log,
            clock=clock,
        )
        # Issue #6, the manager console: sessions and forms sealed with the same key, the sign-in page's limiter.
        self.console = ConsoleService(
            storage=storage,
            consent=self.consent,
            signin=self.oauth.signin,
            sealer=the_sealer,
            idle_timeout=settings.console_idle_timeout,
            lifetime=settings.console_session_lifetime,
            policy=policy,
            policy_file=settings.effective_policy_file,
            clock=clock,
        )
        self._closed = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        storage: Storage | None = None,
        clock: Callable[[], float] = time.time,
    ) -> AuthorizationServer:
        """Open the master key, the storage, the policy file and one limiter, and build the endpoints.

        :param storage: use this storage instead of opening :attr:`Settings.effective_database_url` (tests pass a
            :class:`~as_server.storage.memory.MemoryStorage`); it is closed by :meth:`close` all the same.
        :raises FileNotFoundError: no master key (run ``ostiary as init``).
        :raises PermissionError: the master key file is readable by others.
        """
        from policies.engine import PolicyEngine

        if storage is None:
            from as_server.storage.sqlalchemy import open_storage

            master_key: MasterKey | None = MasterKey.load(settings.master_key_file)
            assert master_key is not None
            storage = open_storage(settings.effective_database_url, master_key, pool_size=storage_pool_size(settings))
        else:
            master_key = None
        try:
            policy = PolicyEngine.from_file(
                settings.effective_policy_file, missing_ok=True, sources=[GrantRuleSource(storage)]
            )
            limiter = FailureRateLimiter.from_settings(settings)
            return cls(
                settings=settings, storage=storage, policy=policy, limiter=limiter, clock=clock, sealer=master_key
            )
        except BaseException:
            storage.close()
            raise

    def metadata(self) -> dict[str, Any]:
        """The authorization server metadata document (RFC 8414 §2), served as JSON over HTTP.

        Standard members: ``issuer``, ``token_endpoint``, ``introspection_endpoint`` (RFC 8414 §2, the HTTP
        URLs), ``grant_types_supported``, ``token_endpoint_auth_methods_supported``,
        ``introspection_endpoint_auth_methods_supported``, and for apps signing users in (issue #5)
        ``authorization_endpoint``, ``response_types_supported`` (``code``, REQUIRED by RFC 8414 §2) and
        ``code_challenge_methods_supported`` (``S256`` only, RFC 8414 §2 / RFC 7636 §4.2). ``none`` is among the
        token endpoint auth methods for public clients, which prove themselves with PKCE and refresh-token rotation.

        Ostiary extensions, which RFC 8414 §2 permits ("additional authorization server metadata parameters
        MAY also be used") and which clients that do not know them ignore:

        * ``ace_profiles_supported`` -- the ACE profiles this AS issues tokens for, by their RFC 9202 §9 /
          RFC 9203 §9.1 names (``coap_oscore``, ``coap_dtls``);
        * ``coap_token_endpoint`` / ``coap_introspection_endpoint`` -- the same endpoints over CoAP
          (``application/ace+cbor``, RFC 9200 §5), for clients that discover the AS over HTTP but talk CoAP.

        Note that :attr:`Settings.issuer` is also the ``iss`` of issued tokens and defaults to a ``coap://`` URI;
        RFC 8414 §2 asks for an ``https`` issuer, which a deployment reachable over HTTPS should configure.
        """
        http = self.settings.effective_http_base_url.rstrip("/")
        coap = coap_base_url(self.settings)
        return {
            "issuer": self.settings.issuer,
            "token_endpoint": http + TOKEN_PATH,
            "introspection_endpoint": http + INTROSPECTION_PATH,
            "authorization_endpoint": http + AUTHORIZE_PATH,
            "grant_types_supported": sorted(g.name.lower() for g in self.token_endpoint.grant_types),
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "ace_profiles_supported": ["coap_oscore", "coap_dtls"],
            "coap_token_endpoint": coap + TOKEN_PATH,
            "coap_introspection_endpoint": coap + INTROSPECTION_PATH,
        }

    @property
    def metadata_paths(self) -> tuple[str, ...]:
        """Where the metadata is served: the plain well-known path, plus the RFC 8414 §3 form for an issuer
        with a path component (``/.well-known/oauth-authorization-server/<issuer path>``)."""
        path = urlsplit(self.settings.issuer).path.rstrip("/")
        return (METADATA_PATH,) if not path else (METADATA_PATH, METADATA_PATH + path)

    def close(self) -> None:
        """Write the queued audit entries and close the storage (idempotent)."""
        if not self._closed:
            self._closed = True
            try:
                self.audit_log.close()
            finally:
                self.storage.close()

    def __enter__(self) -> AuthorizationServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
