"""The lock's LwM2M client over aiocoap (issue #7): bootstrap (pull and classic), registration at the AS, and the
loop that keeps both going while the lock serves tokens.

* :class:`BootstrapClient` -- ``pull()``: LwM2M 1.2 Bootstrap-Pack-Request ``GET /bspack?ep=`` (Accept 112);
  ``classic()``: ``POST /bs?ep=&pct=112``, then the server's Discover/Delete/Write/Finish are answered from the same
  client context (``ctx.serversite``; aiocoap's tinydtls client hands every message it receives on the DTLS session
  to the context); ``bootstrap()``: pull, falling back to classic on 4.04 as Anjay does (ref. §3b). The bootstrap
  account comes from the factory bundle: ``coaps://`` uses DTLS-PSK with the bundle's identity and PSK,
  ``coap://`` plain CoAP (development). Any failure -- timeout, an error code, a malformed or unusable pack, an
  inconsistent classic configuration -- raises :class:`~resource_server.bootstrap_client.BootstrapError` and leaves
  the credentials file as it was.
* :class:`Registration` -- Register / Update / De-register at the account's ``coaps://`` URI with the newest key
  slot as DTLS PSK (:mod:`resource_server.registration`).
* :class:`DeviceLink` -- registers, updates before the lifetime ends, bootstraps again every ``pull_interval`` to
  pick up a rotated key (with the lock's bootstrap method: a pull, or the classic flow), re-registers with the new
  identity when it changes, and re-bootstraps when registration fails (a retired identity fails its DTLS
  handshake), retrying without end: a released device claimed again, or an AS back after a long outage, is noticed
  without a restart. The backoff starts as :class:`~resource_server.registration.Backoff` does (5, 10, 20, ... s)
  and is capped at the pull interval or :data:`MAX_RETRY_DELAY`, whichever is smaller; its waits end at once when the
  lock stops. A new Register replaces the lock's registration at the AS (one per audience), so the
  old one is not de-registered first: after a revocation its identity is gone, and after a restart of the AS its
  DTLS session is unknown there, so that De-register would only retransmit until it timed out. :meth:`DeviceLink.close`
  de-registers, bounded by :data:`DEREGISTER_TIMEOUT`.
* Revocation versus rotation (:meth:`DeviceLink._after_bootstrap`): a bootstrap that brings a key newer than the
  lock's newest is a rotation only if the AS still takes the identity the lock had. The lock asks with a fresh
  Register (a new DTLS handshake) under that identity. Taken: a rotation (the new key goes to ``next``, and the old
  one stays accepted for the overlap after the swap). Refused -- the handshake fails (the AS erased the key: an
  alert, or silence until the request timeout) or 4.01/4.03 -- while the AS has just answered the factory-PSK
  bootstrap: the AS retired every key the lock held (``ostiary as rs revoke``), so the delivered key replaces them at
  once (:meth:`~resource_server.credentials.CredentialKeeper.drop_refused`) and the lock drops its tokens. An
  unreachable AS answers no bootstrap, so nothing is delivered and nothing is dropped; a probe lost to the network
  just after a successful bootstrap that brought a rotation drops the old key early, which costs tokens (clients
  get 4.01 and fetch new ones under the new key), never acceptance of a retired key.

Each account gets its own client context (Anjay: one socket per server): the bootstrap identity and the
operational identity talk to the same ``host:port``, and a context's credentials are chosen by URI.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlsplit

import aiocoap
from aiocoap import Code, Message
from aiocoap import resource as aiocoap_resource

from ace_core.lwm2m.bundle import DeviceBundle
from ace_core.lwm2m.registry import EXCHANGE_LIFETIME, Lwm2mContentFormat
from ace_core.status import Status
from resource_server.bootstrap_client import (
    BootstrapError,
    DeviceBootstrap,
    InconsistentConfiguration,
    InvalidAccount,
    OperationRefused,
    account_from_pack,
)
from resource_server.credentials import (
    CredentialKeeper,
    Credentials,
    CredentialsError,
    CredentialStore,
    DeliveredAccount,
    KeySlot,
)
from resource_server.registration import REGISTER_PATH, Backoff, object_links, register_query, update_delay

__all__ = [
    "BootstrapClient",
    "BootstrapRefused",
    "BootstrapTimeout",
    "DeviceLink",
    "IDENTITY_REFUSED",
    "Registration",
    "RegistrationFailed",
    "client_context",
]

log = logging.getLogger("ostiary.lock.lwm2m")

#: Default bound on one request (seconds): a CoAP exchange with the default transmission parameters.
REQUEST_TIMEOUT: Final = 93.0
#: Bound on a De-register (seconds): best effort, and the registration ends with its lifetime anyway; a De-register
#: over a DTLS session the AS no longer has (it restarted) gets no answer, so a stop must not wait a whole exchange.
DEREGISTER_TIMEOUT: Final = 5.0
#: Longest wait between two attempts to register (seconds), after the backoff's first attempts: a released device is
#: noticed within about this long after it is claimed again, at the cost of a bootstrap per wait meanwhile.
MAX_RETRY_DELAY: Final = 3600.0
_T = TypeVar("_T")


class BootstrapRefused(BootstrapError):
    """The bootstrap server answered with an error code (``code`` is ``class*100+detail``, e.g. 404)."""

    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"{what}: the bootstrap server answered {code // 100}.{code % 100:02d}")
        self.code = code


class BootstrapTimeout(BootstrapError):
    """The bootstrap did not complete in time (no answer, a failed DTLS handshake, or no Bootstrap-Finish)."""


class RegistrationFailed(BootstrapError):
    """Register, Update or De-register failed (an error code, a timeout or a failed DTLS handshake).

    :param code: the AS's answer as ``class*100+detail`` (e.g. 401), or ``None`` when there was none (a timeout, a
        failed DTLS handshake).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


#: Answers to a Register that mean the AS does not take the identity (the registration interface checks it again
#: for every request, also over a DTLS session opened before the identity was revoked).
IDENTITY_REFUSED: Final = frozenset({401, 403})


def _code(message: Message) -> int:
    """aiocoap's code as ``class*100+detail`` (the :class:`~ace_core.status.Status` convention)."""
    code = int(message.code)
    return (code >> 5) * 100 + (code & 0x1F)


def _status_code(status: Status) -> Code:
    return Code((status // 100) << 5 | status % 100)


async def client_context(uri: str, identity: bytes | None = None, psk: bytes | None = None) -> aiocoap.Context:
    """A fresh aiocoap client context for one server: DTLS-PSK (tinydtls) with ``identity``/``psk`` for a
    ``coaps://`` URI, plain UDP for ``coap://``."""
    parts = urlsplit(uri)
    if parts.scheme == "coaps":
        if identity is None or psk is None:
            raise ValueError("a coaps:// server needs a PSK identity and key")
        ctx = await aiocoap.Context.create_client_context(transports=["tinydtls"])
        ctx.client_credentials.load_from_dict(
            {f"coaps://{parts.netloc}/*": {"dtls": {"psk": psk, "client-identity": identity}}}
        )
        return ctx
    if parts.scheme == "coap":
        return await aiocoap.Context.create_client_context(transports=["udp6"])
    raise ValueError(f"unsupported scheme in {uri!r} (coap:// or coaps://)")


def _base(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def _fatal_dtls_alert(exc: BaseException) -> bool:
    """Whether aiocoap's error is a fatal DTLS alert from the peer: tinydtls's (private) ``FatalDTLSError``, which
    aiocoap wraps in a ``NetworkError``. A server that does not know the PSK identity ends the handshake so."""
    seen: BaseException | None = exc
    for _ in range(4):  # the wrapper and its cause; bounded in case of a cycle
        if seen is None:
            return False
        if type(seen).__name__ == "FatalDTLSError":
            return True
        seen = seen.__cause__
    return False


async def _bounded(what: str, awaitable: Awaitable[_T], timeout: float, error: type[BootstrapError]) -> _T:
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise error(f"{what}: no answer within {timeout:g} s") from None
    except (aiocoap.error.Error, OSError) as exc:  # DTLS handshake failure, network errors
        if _fatal_dtls_alert(exc):
            refused = error(
                f"{what}: the server refused the DTLS handshake (a fatal alert: it does not take the PSK identity)"
            )
            refused.handshake_refused = True
            raise refused from None
        raise error(f"{what}: {type(exc).__name__}: {exc}") from None


# -- the bootstrap -------------------------------------------------------------------------------------------------


class BootstrapClient:
    """Fetch operational credentials from the bootstrap server (module docstring).

    :param bundle: the factory bundle (bootstrap URI, PSK identity and PSK, endpoint name).
    :param store: the credentials file, or a running lock's :class:`CredentialKeeper`.
    :param timeout: bound on a whole pull, and on the silence between two server commands in a classic bootstrap
        (the client fails if Finish does not come within EXCHANGE_LIFETIME of the last command; ref. §1).
    :param max_duration: bound on a whole classic bootstrap, however busy the server keeps it.
    """

    def __init__(
        self,
        bundle: DeviceBundle,
        store: Path | CredentialStore | CredentialKeeper,
        *,
        timeout: float = EXCHANGE_LIFETIME,
        max_duration: float | None = None,
    ) -> None:
        self.bundle = bundle
        if isinstance(store, CredentialKeeper):
            self.keeper = store
        else:
            self.keeper = CredentialKeeper(store if isinstance(store, CredentialStore) else CredentialStore(store))
        self.timeout = timeout
        self.max_duration = max_duration if max_duration is not None else 4 * timeout

    def __repr__(self) -> str:
        return f"BootstrapClient(endpoint={self.bundle.endpoint!r}, uri={self.bundle.bootstrap_uri!r})"

    async def _context(self) -> aiocoap.Context:
        return await client_context(self.bundle.bootstrap_uri, self.bundle.psk_identity, self.bundle.psk)

    async def bootstrap(self) -> Credentials:
        """:meth:`pull`, then :meth:`classic` if the server has no ``/bspack`` (4.04/4.05/5.01)."""
        try:
            return await self.pull()
        except BootstrapRefused as exc:
            if exc.code not in (404, 405, 501):
                raise
            log.info("the bootstrap server has no Bootstrap-Pack (%s); falling back to the classic bootstrap", exc)
        return await self.classic()

    async def pull(self, ctx: aiocoap.Context | None = None) -> Credentials:
        """LwM2M 1.2 Bootstrap-Pack-Request; the delivery is stored (atomically) before this returns.

        :param ctx: a client context holding the bootstrap credentials (default: a fresh one, shut down after).
        :raises BootstrapRefused: an error code. :raises BootstrapTimeout: no answer in time.
        :raises InvalidAccount: the pack is malformed or its account unusable.
        """
        own = ctx is None
        ctx = ctx if ctx is not None else await self._context()
        try:
            request = Message(
                code=Code.GET,
                uri=f"{_base(self.bundle.bootstrap_uri)}/bspack?ep={quote(self.bundle.endpoint, safe='')}",
                accept=int(Lwm2mContentFormat.SENML_CBOR),
            )
            response = await _bounded(
                "Bootstrap-Pack-Request", ctx.request(request).response, self.timeout, BootstrapTimeout
            )
        finally:
            if own:
                await ctx.shutdown()
        code = _code(response)
        if code != Status.CONTENT:
            raise BootstrapRefused("Bootstrap-Pack-Request", code)
        fmt = response.opt.content_format
        if fmt is not None and int(fmt) != Lwm2mContentFormat.SENML_CBOR:
            raise InvalidAccount(f"Bootstrap-Pack in Content-Format {int(fmt)}, not SenML CBOR (112)")
        account = account_from_pack(response.payload)
        return self._commit(account, "Bootstrap-Pack")

    def _commit(self, account: DeliveredAccount, how: str) -> Credentials:
        try:
            credentials = self.keeper.deliver(account)
        except CredentialsError as exc:
            raise InvalidAccount(str(exc)) from None
        log.info("%s delivered %s (generation %d)", how, account.slot.identity.decode(), account.slot.generation)
        return credentials

    async def classic(self, ctx: aiocoap.Context | None = None) -> Credentials:
        """Client-initiated bootstrap: ``POST /bs?ep=&pct=112``, then answer the server's operations until
        Bootstrap-Finish, which stores the delivery (atomically) before it is answered 2.04.

        :param ctx: a client context holding the bootstrap credentials; its ``serversite`` is replaced for the
            duration (default: a fresh context, shut down after).
        :raises BootstrapRefused: the Bootstrap-Request was refused. :raises BootstrapTimeout: no answer, or no
            Finish within :attr:`timeout` of the last command (or :attr:`max_duration` in all): nothing is stored.
        """
        own = ctx is None
        ctx = ctx if ctx is not None else await self._context()
        existing = self.keeper.credentials
        site = _DeviceSite(DeviceBootstrap(self.bundle, _account_of(existing)), self._commit_classic)
        previous_site = ctx.serversite
        ctx.serversite = site
        deadline = asyncio.get_running_loop().time() + self.max_duration
        try:
            request = Message(
                code=Code.POST,
                uri=f"{_base(self.bundle.bootstrap_uri)}/bs?ep={quote(self.bundle.endpoint, safe='')}"
                f"&pct={int(Lwm2mContentFormat.SENML_CBOR)}",
            )
            response = await _bounded(
                "Bootstrap-Request", ctx.request(request).response, self.timeout, BootstrapTimeout
            )
            code = _code(response)
            if code != Status.CHANGED:
                raise BootstrapRefused("Bootstrap-Request", code)
            session = response.remote  # keep the DTLS session alive: aiocoap pools it in a weak dictionary
            while site.result is None:
                if site.error is not None:
                    raise site.error
                remaining = min(self.timeout, deadline - asyncio.get_running_loop().time())
                if remaining <= 0:
                    raise BootstrapTimeout(f"no Bootstrap-Finish within {self.max_duration:g} s")
                site.activity.clear()
                try:
                    await asyncio.wait_for(site.activity.wait(), remaining)
                except TimeoutError:
                    raise BootstrapTimeout(
                        f"no Bootstrap-Finish within {remaining:g} s of the last bootstrap command"
                    ) from None
            del session
            return site.result
        finally:
            site.closed = True  # a late command gets 4.00 and can no longer commit anything
            ctx.serversite = previous_site
            if own:
                await ctx.shutdown()

    def _commit_classic(self, account: DeliveredAccount) -> Credentials:
        try:
            return self._commit(account, "Bootstrap-Finish")
        except InvalidAccount as exc:
            raise InconsistentConfiguration(str(exc)) from None


def _account_of(credentials: Credentials | None) -> DeliveredAccount | None:
    """The account a stored state stands for (its newest slot), for Bootstrap-Discover."""
    if credentials is None:
        return None
    return DeliveredAccount(
        server_uri=credentials.server_uri,
        slot=credentials.newest,
        server_public_key=credentials.server_public_key,
        short_server_id=credentials.short_server_id,
        lifetime=credentials.lifetime,
        security_instance=credentials.security_instance,
        server_instance=credentials.server_instance,
    )


class _DeviceSite(aiocoap_resource.Resource):  # type: ignore[misc]
    """The lock's CoAP server side during a classic bootstrap: renders :class:`DeviceBootstrap`'s operations (one
    catch site: :class:`OperationRefused` -> its status, no payload)."""

    def __init__(self, session: DeviceBootstrap, commit: Callable[[DeliveredAccount], Credentials]) -> None:
        super().__init__()
        self.session = session
        self.commit = commit
        self.activity = asyncio.Event()
        self.result: Credentials | None = None
        self.error: BootstrapError | None = None
        self.closed = False

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return True

    async def render(self, request: Message) -> Message:
        path = tuple(request.opt.uri_path)
        if self.closed or self.result is not None:
            log.warning("%s %s after the bootstrap ended: refused", request.code, "/" + "/".join(path))
            return Message(code=Code.BAD_REQUEST)
        self.activity.set()
        try:
            return self._render(request, path)
        except OperationRefused as exc:
            log.warning("bootstrap %s /%s refused (%s): %s", request.code, "/".join(path), exc.status, exc)
            return Message(code=_status_code(exc.status))

    def _render(self, request: Message, path: tuple[str, ...]) -> Message:
        code = request.code
        if code == Code.GET:
            accept = request.opt.accept
            if accept is not None and int(accept) != Lwm2mContentFormat.LINK_FORMAT:
                return Message(code=Code.NOT_ACCEPTABLE)  # Bootstrap-Read is not offered
            payload = self.session.discover(path)
            return Message(code=Code.CONTENT, payload=payload, content_format=int(Lwm2mContentFormat.LINK_FORMAT))
        if code == Code.DELETE:
            self.session.delete(path)
            return Message(code=Code.DELETED)
        if code == Code.PUT:
            fmt = request.opt.content_format
            self.session.write(path, None if fmt is None else int(fmt), request.payload)
            return Message(code=Code.CHANGED)
        if code == Code.POST and path == ("bs",):
            account = self.session.finish()
            try:
                self.result = self.commit(account)
            except OSError as exc:
                log.error("cannot store the delivered credentials: %s", exc)
                self.error = BootstrapError(f"cannot store the delivered credentials: {exc.strerror}")
                return Message(code=Code.INTERNAL_SERVER_ERROR)
            return Message(code=Code.CHANGED)
        return Message(code=Code.METHOD_NOT_ALLOWED if code == Code.POST else Code.BAD_REQUEST)


# -- registration --------------------------------------------------------------------------------------------------


class Registration:
    """One registration at the AS with one key slot (module docstring). Not reusable across identities: a new
    identity gets a new :class:`Registration` (and a new DTLS session).

    :param timeout: bound on each request (a retired identity fails its handshake: the request times out).
    """

    def __init__(
        self,
        endpoint: str,
        server_uri: str,
        slot: KeySlot,
        *,
        lifetime: int,
        server_instance: int = 0,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.endpoint = endpoint
        self.server_uri = server_uri
        self.slot = slot
        self.lifetime = lifetime
        self.server_instance = server_instance
        self.timeout = timeout
        self.location: tuple[str, ...] | None = None
        self._ctx: aiocoap.Context | None = None
        # The DTLS session: aiocoap's client pool holds sessions weakly, so without this reference the session is
        # garbage-collected between two requests (a new handshake for every Update, and aiocoap warns that it
        # could not shut it down).
        self._session: Any = None

    def __repr__(self) -> str:
        return f"Registration({self.slot.identity.decode(errors='replace')!r} at {self.server_uri!r})"

    async def _request(self, what: str, message: Message, timeout: float | None = None) -> Message:
        if self._ctx is None:
            self._ctx = await client_context(self.server_uri, self.slot.identity, self.slot.key)
        bound = self.timeout if timeout is None else timeout
        response = await _bounded(what, self._ctx.request(message).response, bound, RegistrationFailed)
        self._session = response.remote
        return response

    def _uri(self, path: tuple[str, ...], query: tuple[str, ...] = ()) -> str:
        uri = _base(self.server_uri) + "".join("/" + quote(p, safe="") for p in path)
        if query:
            uri += "?" + "&".join(quote(q, safe="=") for q in query)
        return uri

    async def register(self) -> tuple[str, ...]:
        """Register; returns the Location-Path (e.g. ``("rd", "5")``).

        :raises RegistrationFailed: no 2.01 with a Location-Path.
        """
        request = Message(
            code=Code.POST,
            uri=self._uri(REGISTER_PATH, register_query(self.endpoint, self.lifetime)),
            content_format=int(Lwm2mContentFormat.LINK_FORMAT),
            payload=object_links(self.server_instance),
        )
        response = await self._request("Register", request)
        if _code(response) != Status.CREATED or not response.opt.location_path:
            raise RegistrationFailed(f"Register: answered {response.code} without a Location-Path", _code(response))
        self.location = tuple(response.opt.location_path)
        log.info("registered as %s at %s/%s", self.slot.identity.decode(), self.server_uri, "/".join(self.location))
        return self.location

    async def update(self) -> None:
        """Registration Update (empty). :raises RegistrationFailed: not 2.04 (e.g. 4.04: the AS forgot us)."""
        if self.location is None:
            raise RegistrationFailed("Update before Register")
        response = await self._request("Update", Message(code=Code.POST, uri=self._uri(self.location)))
        if _code(response) != Status.CHANGED:
            raise RegistrationFailed(f"Update: answered {response.code}", _code(response))

    async def deregister(self, timeout: float = DEREGISTER_TIMEOUT) -> None:
        """De-register (best effort: failures are logged) and close the DTLS session.

        :param timeout: bound on the De-register (at most :attr:`timeout`).
        """
        try:
            if self.location is not None:
                message = Message(code=Code.DELETE, uri=self._uri(self.location))
                response = await self._request("De-register", message, min(timeout, self.timeout))
                if _code(response) != Status.DELETED:
                    log.warning("De-register: answered %s", response.code)
                self.location = None
        except RegistrationFailed as exc:
            log.warning("%s", exc)
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the DTLS session without de-registering."""
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            await ctx.shutdown()
        self._session = None


class DeviceLink:
    """Keeps a bootstrapped lock registered and its credentials fresh (module docstring).

    :param client: the bootstrap client (its keeper holds the credentials the resource server verifies with).
    :param pull_interval: seconds between two periodic bootstraps (rotation pick-up).
    :param method: how the lock bootstraps after the first time: ``"pack"`` pulls (Bootstrap-Pack-Request, LwM2M
        1.2; a re-bootstrap after a failed registration falls back to the classic flow on 4.04, as
        :meth:`BootstrapClient.bootstrap`), ``"classic"`` uses the classic flow (``POST /bs``) every time.
    :param backoff: delays between failed attempts to register (each failure re-bootstraps first); after its
        attempts the link keeps trying, the delay still doubling, at most the pull interval or
        :data:`MAX_RETRY_DELAY`, whichever is smaller (and no delay is longer than that).
    :param request_timeout: bound on each registration request.
    :param sleep: the wait between attempts (a fake clock in tests); a stop ends it at once.
    """

    def __init__(
        self,
        client: BootstrapClient,
        *,
        pull_interval: float = 3600.0,
        method: str = "pack",
        backoff: Backoff | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.keeper = client.keeper
        if method not in ("pack", "classic"):
            raise ValueError(f"unknown bootstrap method {method!r} (pack or classic)")
        self.pull_interval = pull_interval
        self.method = method
        backoff = backoff if backoff is not None else Backoff()
        ceiling = min(pull_interval, MAX_RETRY_DELAY)
        if backoff.ceiling is not None:
            ceiling = min(ceiling, backoff.ceiling)
        self.backoff = replace(backoff, ceiling=ceiling)  # without end: see the class docstring
        self.request_timeout = request_timeout
        self._sleep = sleep
        self.registration: Registration | None = None
        self._changed = asyncio.Event()
        self.keeper.listeners.append(self._on_change)
        self.registered = asyncio.Event()
        #: The last failure logged per channel ("register", "bootstrap"): a repeat is logged at debug level only.
        self._reported: dict[str, str] = {}

    def _failed(self, channel: str, message: str) -> None:
        """Log a failure on ``channel`` as a warning when it differs from the last one logged there, at debug level
        when it repeats: the loop retries with backoff, and the operator needs one line per change, not one per
        attempt."""
        if self._reported.get(channel) == message:
            log.debug("still: %s", message)
            return
        self._reported[channel] = message
        log.warning("%s", message)

    def _recovered(self, channel: str, message: str) -> None:
        """Log (once) that ``channel`` works again after a failure was logged."""
        if self._reported.pop(channel, None) is not None:
            log.info("%s", message)

    def _registration_failure(self, exc: BootstrapError) -> str:
        if not isinstance(exc, RegistrationFailed):  # no credentials yet, and the bootstrap for them failed
            return self._bootstrap_failure(exc, "")
        if exc.handshake_refused:
            creds = self.keeper.credentials
            identity = creds.newest.identity.decode(errors="replace") if creds is not None else "?"
            return (
                f"the AS refused the lock's operational identity {identity} (DTLS handshake failed: its key was "
                "revoked or retired); bootstrapping again"
            )
        return f"registration failed ({exc}); bootstrapping again"

    def _bootstrap_failure(self, exc: BootstrapError, what: str) -> str:
        if exc.handshake_refused:
            bundle = self.client.bundle
            return (
                f"the bootstrap server refused the factory identity {bundle.psk_identity.decode(errors='replace')} "
                f"of {bundle.endpoint} (DTLS handshake failed): the device may be decommissioned or released, or "
                "its factory bundle is wrong; retrying"
            )
        return f"{what}bootstrap failed: {exc}"

    def _on_change(self, new: Credentials, old: Credentials | None) -> None:
        if old is None or new.newest.identity != old.newest.identity or new.server_uri != old.server_uri:
            self._changed.set()

    async def ensure_credentials(self) -> Credentials:
        """The stored credentials, bootstrapping first when there are none."""
        if self.keeper.credentials is None:
            return await self._bootstrap()
        return self.keeper.credentials

    async def _bootstrap(self) -> Credentials:
        """A (re-)bootstrap with the lock's method."""
        return await (self.client.classic() if self.method == "classic" else self.client.bootstrap())

    async def _periodic(self) -> Credentials:
        """The periodic bootstrap that picks up a rotated key: a pull, or the classic flow."""
        return await (self.client.classic() if self.method == "classic" else self.client.pull())

    async def _after_bootstrap(self, before: Credentials | None) -> None:
        """After a successful bootstrap: when it brought a key newer than ``before``'s newest, ask the AS whether it
        still takes ``before``'s newest identity; if not, it retired every key the lock held, and only the delivered
        one stays (module docstring, "Revocation versus rotation")."""
        after = self.keeper.credentials
        if before is None or after is None or after.newest.key == before.newest.key:
            return  # nothing new: re-bootstrapping is idempotent, and an unchanged key says nothing
        if await self._identity_accepted(before):
            return  # a rotation: the old key stays accepted (next, then previous for the overlap)
        self.keeper.drop_refused(before.newest)

    async def _identity_accepted(self, creds: Credentials) -> bool:
        """Whether the AS at ``creds.server_uri`` takes ``creds.newest``'s identity: a Register over a new DTLS
        session (a new identity's Register replaces it right after). Refused: no answer (a failed handshake, or
        silence for :attr:`request_timeout`) or 4.01/4.03; any other answer comes over an accepted handshake."""
        probe = self._registration_for(creds)
        try:
            await probe.register()
        except RegistrationFailed as exc:
            if exc.code is not None and exc.code not in IDENTITY_REFUSED:
                log.warning("%s; the AS still takes %s", exc, creds.newest.identity.decode(errors="replace"))
                return True
            log.warning("the AS refuses %s (%s)", creds.newest.identity.decode(errors="replace"), exc)
            return False
        finally:
            await probe.close()
        return True

    async def _register(self) -> None:
        """Register with the newest identity. An existing registration is replaced, not de-registered first: the
        AS keeps one registration per audience and a Register replaces it (the LwM2M Registration Interface), and
        the old identity may be revoked or its DTLS session unknown to a restarted AS (module docstring)."""
        creds = await self.ensure_credentials()
        old, self.registration = self.registration, None
        try:
            await self._register_anew(creds)
        finally:
            if old is not None:
                if old.server_uri == creds.server_uri:
                    await old.close()  # replaced at the AS (or failed: then it ends with its lifetime)
                else:
                    await old.deregister()  # another server: nothing replaces it there

    def _registration_for(self, creds: Credentials) -> Registration:
        """A registration of ``creds``'s newest identity at its server (not yet sent)."""
        return Registration(
            self.client.bundle.endpoint,
            creds.server_uri,
            creds.newest,
            lifetime=creds.lifetime,
            server_instance=creds.server_instance,
            timeout=self.request_timeout,
        )

    async def _register_anew(self, creds: Credentials) -> None:
        registration = self._registration_for(creds)
        self._changed.clear()
        try:
            await registration.register()
        except BaseException:
            await registration.close()
            raise
        self.registration = registration
        self.registered.set()

    async def _register_with_retries(self, stop: asyncio.Event) -> bool:
        """Register; on failure re-bootstrap (with the lock's method) and try again with backoff, without end (the
        device may be claimed again, the AS may come back). Returns whether it registered: ``False`` only when
        ``stop`` was set, which ends a wait between attempts at once."""
        attempts = 0
        for delay in chain((0.0,), self.backoff):  # no end: the backoff has a ceiling
            if delay and not await self._wait(delay, stop):
                return False
            if stop.is_set():
                return False
            attempts += 1
            try:
                await self._register()
                self._recovered("register", "registered again")
                return True
            except BootstrapError as exc:
                self._failed("register", self._registration_failure(exc))
            before = self.keeper.credentials
            try:
                await self._bootstrap()
            except BootstrapError as exc:  # e.g. the AS is unreachable: nothing delivered, nothing dropped
                self._failed("bootstrap", self._bootstrap_failure(exc, ""))
            else:
                self._recovered("bootstrap", "the bootstrap server delivered credentials again")
                await self._after_bootstrap(before)
            if attempts == self.backoff.attempts + 1:
                log.info(
                    "not registered after %d attempts: the lock serves the tokens it holds, unregistered, and keeps "
                    "trying (at most every %g s)",
                    attempts,
                    self.backoff.ceiling,
                )
        raise AssertionError("the backoff has no end")  # pragma: no cover

    async def _wait(self, delay: float, stop: asyncio.Event) -> bool:
        """Wait ``delay`` seconds (with the injected sleep); ``False`` when ``stop`` was set first."""
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._sleep(delay))]
        try:
            await asyncio.wait(waiters, return_when="FIRST_COMPLETED")
        finally:
            for waiter in waiters:
                waiter.cancel()
        return not stop.is_set()

    async def run(self, stop: asyncio.Event) -> None:
        """Register, then Update, pull and re-register until ``stop`` is set (then de-register)."""
        loop = asyncio.get_running_loop()
        try:
            await self._register_with_retries(stop)
            next_pull = loop.time() + self.pull_interval
            while not stop.is_set():
                assert self.registration is not None
                next_update = loop.time() + update_delay(self.registration.lifetime)
                wake = min(next_update, next_pull)
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._changed.wait())]
                try:
                    await asyncio.wait(waiters, timeout=max(0.0, wake - loop.time()), return_when="FIRST_COMPLETED")
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                if stop.is_set():
                    break
                self.keeper.refresh()
                if loop.time() >= next_pull:
                    next_pull = loop.time() + self.pull_interval
                    before = self.keeper.credentials
                    try:
                        await self._periodic()
                    except BootstrapError as exc:
                        self._failed("bootstrap", self._bootstrap_failure(exc, f"periodic {self.method} "))
                    else:
                        self._recovered("bootstrap", "the bootstrap server delivered credentials again")
                        await self._after_bootstrap(before)
                if self._changed.is_set():
                    log.info("credentials changed: registering with the new identity")
                    await self._register_with_retries(stop)
                elif loop.time() >= next_update:
                    try:
                        await self.registration.update()
                    except RegistrationFailed as exc:
                        log.warning("%s; registering again", exc)
                        await self._register_with_retries(stop)
        finally:
            await self.close()

    async def close(self) -> None:
        """De-register (best effort)."""
        registration, self.registration = self.registration, None
        if registration is not None:
            await registration.deregister()
