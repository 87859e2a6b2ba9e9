"""Bootstrap-interface messages as plain data (sans-IO): the client's requests, the server's operations with the
response codes each one expects, and the Bootstrap-Pack. OMA LwM2M Transport 1.2, "Operation to Method and URI
Mapping (Bootstrap Interface)" and Table 5 "Response Codes: Bootstrap Interface" (ref. §1).

=========================  ==========  =====================  ===========  =====================================
Operation                  Direction   CoAP                   Success      Failures (spec)
=========================  ==========  =====================  ===========  =====================================
Bootstrap-Request          C->BS       POST /bs?ep=&pct=      2.04         4.00 (unknown endpoint)
Bootstrap-Pack-Request     C->BS       GET /bspack?ep=        2.05         4.00 4.01 4.04 4.05 4.06 5.01
Bootstrap-Discover         BS->C       GET / Accept: 40       2.05         4.00 4.04
Bootstrap-Write            BS->C       PUT /o[/i[/r]] + CF    2.04         4.00 (format mismatch) 4.15
Bootstrap-Delete           BS->C       DELETE /o/i, /o or /   2.02         4.00
Bootstrap-Finish           BS->C       POST /bs (empty)       2.04         4.00 (bad URI), 4.06 (inconsistent)
=========================  ==========  =====================  ===========  =====================================

Codes are :class:`~ace_core.status.Status` values (``class*100+detail``: 2.04 is 204). The query of ``/bs`` and
``/bspack`` is parsed order-independently (Wakaama's client sends ``ep`` first, but a server must not rely on it).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import unquote

from ace_core import cbor
from ace_core.keys import CoseKey
from ace_core.lwm2m import senml
from ace_core.lwm2m.errors import InvalidBootstrapRequest, SenmlError
from ace_core.lwm2m.model import ObjectInstance
from ace_core.lwm2m.objects import (
    OBJECT_SPECS,
    OscoreInstance,
    SecurityInstance,
    ServerAccount,
    ServerInstance,
    build_server_account,
)
from ace_core.lwm2m.registry import CoapMethod, Lwm2mContentFormat, ObjectId
from ace_core.status import Status

__all__ = [
    "BOOTSTRAP_PACK_FAILURES",
    "BOOTSTRAP_PACK_SUCCESS",
    "BOOTSTRAP_REQUEST_FAILURE",
    "BOOTSTRAP_REQUEST_SUCCESS",
    "BootstrapPack",
    "BootstrapPackRequest",
    "BootstrapPackTemplate",
    "BootstrapRequest",
    "NotAcceptable",
    "Operation",
    "OperationKind",
    "build_bootstrap_pack",
    "choose_pack_format",
    "endpoint_of",
    "parse_bootstrap_pack",
    "parse_query",
    "split_query",
]

#: Bootstrap-Request: the BS answers 2.04 before it starts its operations, 4.00 for an unknown endpoint.
BOOTSTRAP_REQUEST_SUCCESS = Status.CHANGED
BOOTSTRAP_REQUEST_FAILURE = Status.BAD_REQUEST
#: Bootstrap-Pack-Request: 2.05 with the whole pack (no Bootstrap-Finish follows).
BOOTSTRAP_PACK_SUCCESS = Status.CONTENT
#: The failure codes the spec lists for a Bootstrap-Pack-Request (5.01 is outside :class:`Status`).
BOOTSTRAP_PACK_FAILURES: tuple[int, ...] = (400, 401, 404, 405, 406, 501)

# CoAP Uri-Query options are at most 255 bytes (RFC 7252 §5.10), so "ep=" leaves 252 for the name.
_MAX_ENDPOINT_BYTES = 252
_MAX_QUERY_ITEMS = 16


class NotAcceptable(InvalidBootstrapRequest):
    """The Bootstrap-Pack-Request's Accept names a format this server does not produce: 4.06."""

    status = Status.NOT_ACCEPTABLE


def split_query(query: str) -> tuple[str, ...]:
    """Split a URI query string (``ep=lock%2D1&pct=112``) into percent-decoded items, as CoAP Uri-Query options
    arrive (RFC 7252 §6.5: one option per ``&``-separated item).

    :raises InvalidBootstrapRequest: invalid percent-encoding (not UTF-8).
    """
    if not query:
        return ()
    items = []
    for raw in query.split("&"):
        try:
            items.append(unquote(raw, errors="strict"))
        except UnicodeDecodeError:
            raise InvalidBootstrapRequest("query item is not UTF-8 after percent-decoding") from None
    return tuple(items)


def parse_query(items: Iterable[str], known: frozenset[str]) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Uri-Query options (already percent-decoded, one per item) as ``(known, other)`` parameters, in any order;
    a parameter without ``=`` maps to ``None``.

    :raises InvalidBootstrapRequest: too many items, an item without a name, or a parameter given twice.
    """
    found: dict[str, str | None] = {}
    extra: dict[str, str | None] = {}
    count = 0
    for item in items:
        count += 1
        if count > _MAX_QUERY_ITEMS:
            raise InvalidBootstrapRequest(f"more than {_MAX_QUERY_ITEMS} query parameters")
        if not isinstance(item, str):
            raise InvalidBootstrapRequest("query items are text")
        name, sep, value = item.partition("=")
        if not name:
            raise InvalidBootstrapRequest(f"query item {item!r} has no name")
        target = found if name in known else extra
        if name in target:
            raise InvalidBootstrapRequest(f"query parameter {name!r} given twice")
        target[name] = value if sep else None
    return found, extra


def endpoint_of(found: Mapping[str, str | None]) -> str:
    """The checked Endpoint Client Name ``ep`` of a parsed query. :raises InvalidBootstrapRequest: missing, empty,
    too long, or holding control characters."""
    if "ep" not in found:
        raise InvalidBootstrapRequest("missing query parameter 'ep' (Endpoint Client Name)")
    ep = found["ep"]
    if not ep:
        raise InvalidBootstrapRequest("empty Endpoint Client Name")
    if len(ep.encode("utf-8", "surrogatepass")) > _MAX_ENDPOINT_BYTES:
        raise InvalidBootstrapRequest(f"Endpoint Client Name longer than {_MAX_ENDPOINT_BYTES} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in ep):
        raise InvalidBootstrapRequest("control character in the Endpoint Client Name")
    return ep


@dataclass(frozen=True, slots=True, kw_only=True)
class BootstrapRequest:
    """``POST /bs?ep={Endpoint Client Name}&pct={Preferred Content Format}`` (ref. §1).

    ``pct`` (LwM2M 1.1+) is only a preference: Wakaama (``pct=110``), Anjay (``pct=112``) and coap-node (none)
    all accepted TLV writes (ref. §1). Unknown query parameters are kept in ``extra``.
    """

    endpoint: str
    preferred_content_format: int | None = None
    extra: Mapping[str, str | None] = field(default_factory=dict)

    @classmethod
    def from_query(cls, items: Iterable[str]) -> BootstrapRequest:
        """Parse the Uri-Query options (``("ep=lock-0001", "pct=112")``, any order).

        :raises InvalidBootstrapRequest: ``ep`` missing, empty, repeated, over 252 bytes or with control
            characters; ``pct`` repeated, empty or not a Content-Format number (0..65535); over 16 items.
        """
        found, extra = parse_query(items, frozenset({"ep", "pct"}))
        pct: int | None = None
        if "pct" in found:
            text = found["pct"]
            if not text or not (len(text) <= 5 and text.isascii() and text.isdigit()) or int(text) > 0xFFFF:
                raise InvalidBootstrapRequest(f"pct {text!r} is not a Content-Format number")
            pct = int(text)
        return cls(endpoint=endpoint_of(found), preferred_content_format=pct, extra=extra)

    def to_query(self) -> tuple[str, ...]:
        """The Uri-Query options, ``ep`` first then ``pct`` (the order Wakaama's own server insists on)."""
        items = [f"ep={self.endpoint}"]
        if self.preferred_content_format is not None:
            items.append(f"pct={self.preferred_content_format}")
        items += [name if value is None else f"{name}={value}" for name, value in self.extra.items()]
        return tuple(items)


@dataclass(frozen=True, slots=True, kw_only=True)
class BootstrapPackRequest:
    """``GET /bspack?ep={Endpoint Client Name}`` with Accept SenML CBOR / SenML JSON / LwM2M CBOR (ref. §1)."""

    endpoint: str
    extra: Mapping[str, str | None] = field(default_factory=dict)

    @classmethod
    def from_query(cls, items: Iterable[str]) -> BootstrapPackRequest:
        """Parse the Uri-Query options. :raises InvalidBootstrapRequest: as for :class:`BootstrapRequest`."""
        found, extra = parse_query(items, frozenset({"ep"}))
        return cls(endpoint=endpoint_of(found), extra=extra)

    def to_query(self) -> tuple[str, ...]:
        """The Uri-Query options."""
        return (f"ep={self.endpoint}",) + tuple(
            name if value is None else f"{name}={value}" for name, value in self.extra.items()
        )


def choose_pack_format(accept: int | None) -> Lwm2mContentFormat:
    """The Content-Format of the Bootstrap-Pack for a request's Accept option: SenML CBOR (the only one produced).

    :raises NotAcceptable: Accept names another format (answer 4.06).
    """
    if accept is None or accept == Lwm2mContentFormat.SENML_CBOR:
        return Lwm2mContentFormat.SENML_CBOR
    raise NotAcceptable(f"Bootstrap-Pack in Content-Format {accept} is not supported (only 112, SenML CBOR)")


class OperationKind(Enum):
    """The server-initiated operations of the bootstrap interface, with their success code (ref. §1)."""

    DISCOVER = ("Bootstrap-Discover", Status.CONTENT)
    DELETE = ("Bootstrap-Delete", Status.DELETED)
    WRITE = ("Bootstrap-Write", Status.CHANGED)
    FINISH = ("Bootstrap-Finish", Status.CHANGED)

    def __init__(self, title: str, success: Status) -> None:
        self.title = title
        self.success = success


#: Failure codes OMA Table 5 lists per operation, with their meaning.
_FAILURE_REASONS: Mapping[OperationKind, Mapping[int, str]] = {
    OperationKind.DISCOVER: {400: "Bad Request: the client refused the Discover", 404: "Not Found: no such object"},
    OperationKind.DELETE: {400: "Bad Request: the client refused the Delete"},
    OperationKind.WRITE: {
        400: "Bad Request: the payload does not match its Content-Format",
        415: "Unsupported Content-Format",
    },
    OperationKind.FINISH: {
        400: "Bad Request: bad URI",
        406: "Not Acceptable: the client found its configuration inconsistent",
    },
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One request the bootstrap server sends to the device, from the socket the Bootstrap-Request came in on,
    to the device's source address and port (Wakaama accepts bootstrap commands only on that session; ref. §1).
    """

    kind: OperationKind
    method: CoapMethod
    uri_path: tuple[str, ...]
    content_format: Lwm2mContentFormat | None = None
    accept: Lwm2mContentFormat | None = None
    payload: bytes = b""

    @property
    def path(self) -> str:
        """The path as text, ``/`` for the root."""
        return "/" + "/".join(self.uri_path)

    @property
    def success(self) -> Status:
        """The code that means the step worked."""
        return self.kind.success

    def reason(self, code: int) -> str:
        """Why ``code`` is a failure for this operation (the spec's meaning when it lists the code)."""
        known = _FAILURE_REASONS[self.kind].get(code)
        return known if known is not None else "unexpected response code for this operation"

    def __str__(self) -> str:
        return f"{self.kind.title} {self.path}"

    @classmethod
    def discover(cls, path: tuple[int, ...] = ()) -> Operation:
        """``GET /{path}`` with Accept: application/link-format (40)."""
        return cls(
            kind=OperationKind.DISCOVER,
            method=CoapMethod.GET,
            uri_path=tuple(str(i) for i in path),
            accept=Lwm2mContentFormat.LINK_FORMAT,
        )

    @classmethod
    def delete(cls, path: tuple[int, ...] = ()) -> Operation:
        """``DELETE /{path}``: an instance, an object, or ``/`` (everything but the bootstrap account)."""
        return cls(kind=OperationKind.DELETE, method=CoapMethod.DELETE, uri_path=tuple(str(i) for i in path))

    @classmethod
    def write(cls, path: tuple[int, ...], payload: bytes, content_format: Lwm2mContentFormat) -> Operation:
        """``PUT /{path}`` with ``payload`` in ``content_format``."""
        return cls(
            kind=OperationKind.WRITE,
            method=CoapMethod.PUT,
            uri_path=tuple(str(i) for i in path),
            content_format=content_format,
            payload=payload,
        )

    @classmethod
    def finish(cls) -> Operation:
        """``POST /bs`` with an empty payload."""
        return cls(kind=OperationKind.FINISH, method=CoapMethod.POST, uri_path=("bs",))


def build_bootstrap_pack(
    account: ServerAccount,
    *,
    security_instance_id: int,
    server_instance_id: int,
    oscore: tuple[int, OscoreInstance] | None = None,
) -> bytes:
    """The SenML CBOR payload (Content-Format 112) of a 2.05 answer to a Bootstrap-Pack-Request.

    The client applies it whole, with no Discover first, so the caller picks the instance ids: they must not be
    the device's bootstrap-account instance (known from its factory configuration).

    :param oscore: an OSCORE instance ``(id, instance)`` to include (linked from ``/0/x/17`` by the caller).
    """
    instances: list[ObjectInstance] = [
        account.security.to_instance(security_instance_id),
        account.server.to_instance(server_instance_id),
    ]
    if oscore is not None:
        instances.append(oscore[1].to_instance(oscore[0]))
    return senml.encode_instances(instances, OBJECT_SPECS)


class BootstrapPackTemplate:
    """:func:`build_bootstrap_pack` of :func:`~ace_core.lwm2m.objects.build_server_account`'s accounts that differ
    only in PSK identity and key (a bootstrap server's packs): the pack is encoded once, with two random
    placeholders, and :meth:`pack` puts a lock's identity and key in their place. Each is one CBOR byte string of
    its own record, so the result is byte for byte what :func:`build_bootstrap_pack` makes of the same account.

    :raises ValueError: what :func:`~ace_core.lwm2m.objects.build_server_account` raises for these arguments.
    """

    __slots__ = ("lifetime", "server_public_key", "server_uri", "short_server_id", "_parts")

    def __init__(
        self,
        *,
        server_uri: str,
        server_public_key: CoseKey,
        short_server_id: int,
        lifetime: int,
        security_instance_id: int,
        server_instance_id: int,
    ) -> None:
        self.server_uri = server_uri
        self.server_public_key = server_public_key
        self.short_server_id = short_server_id
        self.lifetime = lifetime
        # 32 random bytes cannot occur by chance in the rest of the pack (the URI, a public key, small integers).
        identity, psk = secrets.token_bytes(32), secrets.token_bytes(32)
        account = build_server_account(
            server_uri=server_uri,
            identity=identity,
            psk=psk,
            server_public_key=server_public_key,
            short_server_id=short_server_id,
            lifetime=lifetime,
        )
        data = build_bootstrap_pack(
            account, security_instance_id=security_instance_id, server_instance_id=server_instance_id
        )
        marks = sorted(
            (data.index(cbor.bstr(mark)), name, len(cbor.bstr(mark))) for name, mark in ((0, identity), (1, psk))
        )
        (at_a, first, len_a), (at_b, _second, len_b) = marks
        if data.count(cbor.bstr(identity)) != 1 or data.count(cbor.bstr(psk)) != 1:  # pragma: no cover - 2**-256
            raise ValueError("a placeholder of the pack template occurs twice")
        #: prefix, middle and suffix around the two byte strings; whether the identity comes first.
        self._parts = (data[:at_a], data[at_a + len_a : at_b], data[at_b + len_b :], first == 0)

    def matches(self, *, server_uri: str, server_public_key: CoseKey, short_server_id: int, lifetime: int) -> bool:
        """Whether this template makes the packs of these account settings."""
        return (
            server_uri == self.server_uri
            and server_public_key is self.server_public_key
            and short_server_id == self.short_server_id
            and lifetime == self.lifetime
        )

    def pack(self, identity: bytes, psk: bytes) -> bytes:
        """The pack of the account with this PSK identity (``/0/x/3``) and key (``/0/x/5``).

        :raises ValueError: an empty identity or key (as :func:`~ace_core.lwm2m.objects.build_server_account`).
        """
        if not isinstance(identity, bytes) or not isinstance(psk, bytes):
            raise ValueError("PSK identity and key must be bytes")
        if not identity or not psk:
            raise ValueError("PSK identity and key must be non-empty")
        prefix, middle, suffix, identity_first = self._parts
        a, b = (identity, psk) if identity_first else (psk, identity)
        return b"".join((prefix, cbor.bstr(a), middle, cbor.bstr(b), suffix))


@dataclass(frozen=True, slots=True)
class BootstrapPack:
    """A decoded Bootstrap-Pack (device side): typed instances by id, and any other object's instances."""

    security: Mapping[int, SecurityInstance]
    server: Mapping[int, ServerInstance]
    oscore: Mapping[int, OscoreInstance]
    others: tuple[ObjectInstance, ...] = ()

    def account(self, short_server_id: int) -> ServerAccount:
        """The server account with ``short_server_id``. :raises KeyError: none or an incomplete one."""
        securities = [s for s in self.security.values() if s.short_server_id == short_server_id]
        servers = [s for s in self.server.values() if s.short_server_id == short_server_id]
        if len(securities) != 1 or len(servers) != 1:
            raise KeyError(f"no single account with Short Server ID {short_server_id} in the pack")
        return ServerAccount(securities[0], servers[0])


def parse_bootstrap_pack(data: bytes) -> BootstrapPack:
    """Decode a Bootstrap-Pack (the device side of :func:`build_bootstrap_pack`).

    :raises SenmlError: malformed pack. :raises ObjectError: an instance that breaks its object definition.
    """
    try:
        instances = senml.decode_instances(data, OBJECT_SPECS)
    except ValueError as exc:  # ObjectInstance rejects nothing senml accepted; keep one error class regardless
        if isinstance(exc, SenmlError):
            raise
        raise SenmlError(str(exc)) from None
    security: dict[int, SecurityInstance] = {}
    server: dict[int, ServerInstance] = {}
    oscore: dict[int, OscoreInstance] = {}
    others: list[ObjectInstance] = []
    for inst in instances:
        if inst.object_id == ObjectId.SECURITY:
            security[inst.instance_id] = SecurityInstance.from_instance(inst)
        elif inst.object_id == ObjectId.SERVER:
            server[inst.instance_id] = ServerInstance.from_instance(inst)
        elif inst.object_id == ObjectId.OSCORE:
            oscore[inst.instance_id] = OscoreInstance.from_instance(inst)
        else:
            others.append(inst)
    return BootstrapPack(security, server, oscore, tuple(others))
