"""The Bootstrap-Discover answer (CoRE link-format, RFC 6690 §2; OMA LwM2M Transport, Bootstrap Interface; ref. §1)
and the choice of instance ids for the AS's Security and Server instances.

A Discover on ``/`` lists objects and instances, e.g. (Wakaama, ref. §1)::

    </>;lwm2m=1.1,</0/0>,</1>;ver=1.1,</2>,</3/0>,...

Some clients open with a bare ``lwm2m="1.1"`` element instead of ``</>;lwm2m=...``; both are accepted. From LwM2M
1.1.1 on, non-bootstrap Security instances carry ``;ssid=N;uri="..."`` and Server instances ``;ssid=N``; the
bootstrap-server account is the Security instance without ``ssid`` (it has no Short Server ID, and no Server
instance). A client that predates that format lists no ``ssid`` at all, so every Security instance without one is
treated as possibly the bootstrap account and is never chosen, deleted or overwritten: Anjay accepted a write over
its bootstrap account at ``/0/1`` and so lost it (ref. §1, "Pitfall seen in a run").

Parsing is bounded (payload size, link count, parameters per link) and raises only
:class:`~ace_core.lwm2m.errors.LinkFormatError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ace_core.lwm2m.errors import LinkFormatError
from ace_core.lwm2m.model import MAX_ID
from ace_core.lwm2m.registry import ObjectId

__all__ = [
    "DEFAULT_MAX_LINKS",
    "DEFAULT_MAX_SIZE",
    "DiscoveredInstance",
    "Discovery",
    "InstancePlan",
    "Link",
    "choose_instance_ids",
    "parse_discover",
    "parse_link_format",
]

#: Bounds on a Discover answer: bytes, links, and parameters of one link.
DEFAULT_MAX_SIZE = 16384
DEFAULT_MAX_LINKS = 1024
MAX_PARAMS_PER_LINK = 32

_MAX_INSTANCE_ID = MAX_ID - 1  # 65535 is reserved as "no instance" in LwM2M
# RFC 6690 §2: parmname = 1*( ALPHA / DIGIT / "!" / "#" / "$" / "&" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" )
_PARMNAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&+-.^_`|~")
# ptokenchar: the printable ASCII characters other than SP, DQUOTE, ",", ";" and "\".
_PTOKEN = frozenset(chr(c) for c in range(0x21, 0x7F)) - set('",;\\')
_WS = " \t\r\n"


@dataclass(frozen=True, slots=True)
class Link:
    """One link-value: its target (``"/0/1"``) and its parameters (``None`` for a parameter without value).

    A bare attribute element (``lwm2m="1.1"`` without a ``<target>``) has target ``""``.
    """

    target: str
    params: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def path(self) -> tuple[int, ...] | None:
        """The LwM2M path as ids (``/`` is ``()``), or ``None`` when the target is not ``/{id}/{id}...``."""
        if self.target == "/":
            return ()
        parts = self.target.split("/")
        if len(parts) < 2 or parts[0] != "":
            return None
        ids: list[int] = []
        for part in parts[1:]:
            if not (0 < len(part) <= 5 and part.isascii() and part.isdigit()) or int(part) > MAX_ID:
                return None
            ids.append(int(part))
        return tuple(ids)


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str) -> LinkFormatError:
        return LinkFormatError(f"link-format: {what} at offset {self.pos}")

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take_while(self, allowed: frozenset[str]) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in allowed:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str:
        self.pos += 1  # opening DQUOTE
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                return "".join(out)
            if char == "\\":  # quoted-pair
                if self.pos >= len(self.text):
                    break
                char = self.text[self.pos]
                self.pos += 1
            elif ord(char) < 0x20 or ord(char) == 0x7F:
                raise self.error("control character in a quoted string")
            out.append(char)
        raise self.error("unterminated quoted string")

    def target(self) -> str:
        self.pos += 1  # "<"
        end = self.text.find(">", self.pos)
        if end < 0:
            raise self.error("unterminated <target>")
        target = self.text[self.pos : end]
        if any(c in _WS or c == "<" or ord(c) < 0x20 for c in target):
            raise self.error("invalid character in a link target")
        self.pos = end + 1
        return target

    def params(self) -> dict[str, str | None]:
        params: dict[str, str | None] = {}
        while True:
            self.skip_ws()
            if self.peek() != ";":
                return params
            self.pos += 1
            self.skip_ws()
            name = self.take_while(_PARMNAME)
            if not name:
                raise self.error("missing parameter name")
            value: str | None = None
            if self.peek() == "=":
                self.pos += 1
                if self.peek() == '"':
                    value = self.quoted()
                else:
                    value = self.take_while(_PTOKEN)
                    if not value:
                        raise self.error(f"missing value for {name!r}")
            if len(params) >= MAX_PARAMS_PER_LINK:
                raise self.error(f"more than {MAX_PARAMS_PER_LINK} parameters on one link")
            params[name] = value  # a repeated parameter keeps its last value


def _first_bare_element(scanner: _Scanner) -> Link:
    """A leading ``lwm2m="1.1"`` element without target, as some clients send it."""
    scanner.skip_ws()
    name = scanner.take_while(_PARMNAME)
    if not name:
        raise scanner.error("expected '<'")
    value: str | None = None
    if scanner.peek() == "=":
        scanner.pos += 1
        value = scanner.quoted() if scanner.peek() == '"' else scanner.take_while(_PTOKEN)
        if value == "" and scanner.text[scanner.pos - 1] == "=":
            raise scanner.error(f"missing value for {name!r}")
    params: dict[str, str | None] = {name: value}
    params.update(scanner.params())
    return Link("", params)


def parse_link_format(
    payload: bytes | str, *, max_size: int = DEFAULT_MAX_SIZE, max_links: int = DEFAULT_MAX_LINKS
) -> tuple[Link, ...]:
    """Parse CoRE link-format (RFC 6690 §2) into links, tolerating whitespace between elements.

    :raises LinkFormatError: not UTF-8, over the bounds, or not link-format.
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        if len(payload) > max_size:
            raise LinkFormatError(f"link-format payload of {len(payload)} bytes exceeds the limit of {max_size}")
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LinkFormatError(f"link-format payload is not UTF-8: {exc}") from None
    elif isinstance(payload, str):
        text = payload
        if len(text) > max_size:
            raise LinkFormatError(f"link-format payload of {len(text)} characters exceeds the limit of {max_size}")
    else:
        raise LinkFormatError(f"expected bytes or str, got {type(payload).__name__}")
    scanner = _Scanner(text)
    links: list[Link] = []
    scanner.skip_ws()
    if scanner.peek() == "":
        return ()
    while True:
        scanner.skip_ws()
        if scanner.peek() == "<":
            target = scanner.target()
            links.append(Link(target, scanner.params()))
        elif not links:
            links.append(_first_bare_element(scanner))
        else:
            raise scanner.error("expected '<'")
        if len(links) > max_links:
            raise LinkFormatError(f"more than {max_links} links")
        scanner.skip_ws()
        if scanner.peek() == "":
            return tuple(links)
        if scanner.peek() != ",":
            raise scanner.error("expected ',' between links")
        scanner.pos += 1


@dataclass(frozen=True, slots=True)
class DiscoveredInstance:
    """A Security or Server instance as Discover lists it."""

    instance_id: int
    ssid: int | None = None
    uri: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Discovery:
    """What a Bootstrap-Discover on ``/`` says about the device."""

    lwm2m_version: str | None
    objects: Mapping[int, str | None]  # object id -> ``ver`` (None when not given)
    instances: Mapping[int, frozenset[int]]  # object id -> instance ids
    security: Mapping[int, DiscoveredInstance]
    server: Mapping[int, DiscoveredInstance]
    links: tuple[Link, ...] = ()

    @property
    def protected_security_ids(self) -> frozenset[int]:
        """Security instances without ``ssid``: the bootstrap account, or unidentifiable (never touched)."""
        return frozenset(i for i, info in self.security.items() if info.ssid is None)

    @property
    def bootstrap_instance_id(self) -> int | None:
        """The bootstrap-server account's instance, when exactly one Security instance has no ``ssid``."""
        protected = self.protected_security_ids
        return next(iter(protected)) if len(protected) == 1 else None


def _ssid(value: str | None, target: str) -> int:
    if value is None:
        raise LinkFormatError(f"{target}: ssid without a value")
    if not (0 < len(value) <= 5 and value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_ID:
        raise LinkFormatError(f"{target}: ssid {value!r} is not a Short Server ID")
    return int(value)


def parse_discover(payload: bytes | str, *, max_size: int = DEFAULT_MAX_SIZE) -> Discovery:
    """Read a Bootstrap-Discover answer into objects, instances and the Security/Server accounts.

    Links that are not LwM2M paths, and resource-level links, are kept in :attr:`Discovery.links` only.

    :raises LinkFormatError: malformed link-format, a bad ``ssid``, or one instance listed with two ``ssid``.
    """
    links = parse_link_format(payload, max_size=max_size)
    version: str | None = None
    objects: dict[int, str | None] = {}
    instances: dict[int, set[int]] = {}
    security: dict[int, DiscoveredInstance] = {}
    server: dict[int, DiscoveredInstance] = {}
    for link in links:
        if "lwm2m" in link.params and link.target in ("", "/"):
            version = link.params["lwm2m"]
        path = link.path
        if path is None or len(path) == 0 or len(path) > 2:
            continue
        obj = path[0]
        if len(path) == 1:
            objects[obj] = link.params.get("ver", objects.get(obj))
            continue
        inst = path[1]
        if inst > _MAX_INSTANCE_ID:
            raise LinkFormatError(f"{link.target}: instance id {inst} is reserved")
        objects.setdefault(obj, None)
        instances.setdefault(obj, set()).add(inst)
        if obj not in (ObjectId.SECURITY, ObjectId.SERVER):
            continue
        ssid = _ssid(link.params["ssid"], link.target) if "ssid" in link.params else None
        table = security if obj == ObjectId.SECURITY else server
        previous = table.get(inst)
        if previous is not None and previous.ssid is not None and ssid is not None and previous.ssid != ssid:
            raise LinkFormatError(f"{link.target} is listed with two Short Server IDs")
        uri = link.params.get("uri") if obj == ObjectId.SECURITY else None
        table[inst] = DiscoveredInstance(
            inst,
            ssid if ssid is not None else (previous.ssid if previous else None),
            uri if uri is not None else (previous.uri if previous else None),
        )
    return Discovery(
        lwm2m_version=version,
        objects=objects,
        instances={obj: frozenset(ids) for obj, ids in instances.items()},
        security=security,
        server=server,
        links=links,
    )


@dataclass(frozen=True, slots=True)
class InstancePlan:
    """Where the AS's account goes, and which instances to delete first (its previous account, if any)."""

    security_instance_id: int
    server_instance_id: int
    delete: tuple[tuple[int, int], ...] = ()

    @property
    def rebootstrap(self) -> bool:
        """True when the device already held this server's account (it is replaced in place)."""
        return bool(self.delete)


def _smallest_free(used: frozenset[int] | set[int]) -> int:
    for candidate in range(_MAX_INSTANCE_ID + 1):
        if candidate not in used:
            return candidate
    raise LinkFormatError("no free instance id")  # pragma: no cover - a Discover answer holds at most 1024 links


def choose_instance_ids(discovery: Discovery, short_server_id: int) -> InstancePlan:
    """Choose the Security and Server instance ids for the account with ``short_server_id``.

    * An instance that already holds this SSID is reused (re-bootstrap) and deleted before it is written, so no
      stale optional resource survives; further instances with the same SSID (an inconsistent device) are deleted.
    * Otherwise the smallest id that no instance of the object uses.
    * A Security instance without ``ssid`` (the bootstrap account, or unidentifiable) is never chosen or deleted.
    """
    if not 1 <= short_server_id <= MAX_ID - 1:
        raise ValueError(f"Short Server ID {short_server_id} is not in 1..{MAX_ID - 1}")
    used_security = set(discovery.instances.get(ObjectId.SECURITY, frozenset())) | set(discovery.security)
    used_server = set(discovery.instances.get(ObjectId.SERVER, frozenset())) | set(discovery.server)
    ours_security = sorted(i for i, info in discovery.security.items() if info.ssid == short_server_id)
    ours_server = sorted(i for i, info in discovery.server.items() if info.ssid == short_server_id)
    security_id = ours_security[0] if ours_security else _smallest_free(used_security)
    server_id = ours_server[0] if ours_server else _smallest_free(used_server)
    delete = [(int(ObjectId.SECURITY), i) for i in ours_security] + [(int(ObjectId.SERVER), i) for i in ours_server]
    return InstancePlan(security_id, server_id, tuple(delete))
