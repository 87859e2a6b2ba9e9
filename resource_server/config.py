"""Resource-server configuration: :class:`RsConfig` (what the sans-IO core needs) and :class:`LockConfig` (plus
where a lock listens), loadable from a TOML file.

The TOML file (``ostiary lock init-config`` writes one; ``ostiary lock serve --config FILE`` reads it)::

    [rs]
    audience = "front-door"                      # or: audiences = ["front-door", "coap://lock-7"]
    issuer = "coap://127.0.0.1/token"            # the AS's ``iss`` (its ``issuer`` setting)
    as_uri = "coap://127.0.0.1:5683/token"       # sent in AS Request Creation Hints (RFC 9200 §5.3)
    keys = ["a3010402...", "pQECAz..."]          # COSE_Keys, hex or base64url (as `ostiary as rs add` prints)
    key_files = ["/etc/ostiary/as-public.hex"]   # or files holding one COSE_Key each (hex, base64url or CBOR)
    scope_format = "aif"                         # "aif" (RFC 9237, default) or "text" (see [scopes])
    has_clock = true                             # false: a lock without a real-time clock (exi only)
    leeway = 0                                   # seconds of clock skew tolerated on exp/nbf
    max_token_size = 1024                        # bytes; larger /authz-info payloads get 4.13
    max_tokens = 32                              # stored tokens (one per PoP key); see token_store
    cnonce = false                               # RFC 9200 §5.3.1 client nonces in hints
    cnonce_lifetime = 300                        # seconds a cnonce stays fresh
    rate_limit = 10                              # token submissions per peer ...
    rate_window = 60                             # ... per this many seconds (then 4.29)
    state_file = "/var/lib/ostiary/lock.state"   # optional: keep tokens across restarts
    sequence_chunk = 64                          # OSCORE sender sequence numbers reserved per write
    audit_granted = false                        # true: log accepted tokens and granted requests at INFO

    [scopes]                                     # only for scope_format = "text": name -> AIF rights
    open = "/lock:PUT,POST"

    [listen]
    host = "127.0.0.1"
    port = 5683

Key material is inlined because ``ostiary as rs add`` prints it for pasting (the config file is written with
mode 0600); ``key_files`` keeps it out of the file instead (STYLE §3.5).

**Audit trail.** At the default log level (INFO) the lock logs every refused token or request, and the door logs
who locked or unlocked it (logger ``ostiary.lock.door``: ``door unlocked by pop_id=... cti=...``). Every accepted
token (client address, PoP id, ``cti``, audience, rights; logger ``ostiary.rs.authz_info``) and every *granted*
request to any resource (``authorized PUT /lock from 192.0.2.7 (pop_id=... cti=...)``, logger ``ostiary.lock``) is
logged too, at DEBUG by default -- one log line costs about as much CPU as the whole OSCORE request -- or at INFO
with ``audit_granted = true``. ``ostiary lock serve --log-level debug`` shows them as well, with everything else at
DEBUG.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from ace_core import cose
from ace_core.errors import WireFormatError
from ace_core.keys import CoseKey, b64url_decode
from ace_core.scope import AifScope

__all__ = ["ConfigError", "KeySource", "LockConfig", "RsConfig", "ScopeFormat", "load_config", "parse_key"]

DEFAULT_COAP_PORT = 5683


class ConfigError(ValueError):
    """The configuration is missing a setting or has a wrong value; the message says which."""


class ScopeFormat(StrEnum):
    """How the ``scope`` claim is read: AIF-REST bytes (RFC 9237 §3) or RFC 6749 §3.3 text names."""

    AIF = "aif"
    TEXT = "text"


class KeySource(Protocol):
    """The RS's keys for its AS: a :class:`~ace_core.cose.KeyResolver` that can list them. A fixed
    :class:`~ace_core.cose.KeySet` (from the configuration file) or the key slots of a bootstrapped lock
    (:class:`resource_server.credentials.SlotKeys`, which change when the AS rotates the key)."""

    @property
    def keys(self) -> Sequence[CoseKey]:
        """The keys, in the order they are tried."""
        ...

    def resolve(self, kid: bytes | None, alg: int) -> Iterable[CoseKey]:
        """Candidate keys for a COSE object with this ``kid`` and algorithm."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RsConfig:
    """Everything the sans-IO resource server needs (RFC 9200 §5.10, RFC 9203 §4).

    :param audiences: the audiences this RS identifies with (RFC 9200 §5.10.1.1 ``aud`` check); the first one is
        sent in AS Request Creation Hints.
    :param issuer: the AS's ``iss``; tokens naming another issuer get 4.01.
    :param as_uri: the AS token endpoint, sent in the hints (RFC 9200 §5.3).
    :param keys: the AS<->RS shared key(s) and/or the AS's public key(s) (:class:`KeySource`).
    :param scope_format: AIF (default) or text scopes; ``scope_map`` gives text names their AIF rights.
    :param has_clock: whether the lock has a wall clock; without one only ``exi`` tokens are accepted.
    :param leeway: seconds of skew tolerated on ``exp``/``nbf``.
    :param max_token_size: larger ``/authz-info`` payloads are refused with 4.13 before parsing.
    :param max_tokens: stored tokens at most (see :class:`~resource_server.token_store.TokenStore`).
    :param use_cnonce: send cnonces in hints and require them in tokens (RFC 9200 §5.3.1).
    :param cnonce_lifetime: seconds a cnonce is fresh.
    :param rate_limit: token submissions allowed per peer per ``rate_window`` seconds (then 4.29).
    :param state_file: where tokens and OSCORE sequence numbers persist; ``None`` keeps them in memory.
    :param sequence_chunk: OSCORE sender sequence numbers reserved per write of the state file (RFC 8613 B.1.1).
    :param audit_granted: log accepted tokens and granted resource requests at INFO instead of DEBUG (the module
        docstring's audit trail).
    """

    audiences: tuple[str, ...]
    issuer: str
    as_uri: str
    keys: KeySource
    scope_format: ScopeFormat = ScopeFormat.AIF
    scope_map: Mapping[str, AifScope] = field(default_factory=dict)
    has_clock: bool = True
    leeway: float = 0.0
    max_token_size: int = 1024
    max_tokens: int = 32
    use_cnonce: bool = False
    cnonce_lifetime: float = 300.0
    rate_limit: int = 10
    rate_window: float = 60.0
    state_file: Path | None = None
    sequence_chunk: int = 64
    audit_granted: bool = False

    def __post_init__(self) -> None:
        if not self.audiences or not all(isinstance(a, str) and a for a in self.audiences):
            raise ConfigError("at least one non-empty audience is required")
        if not self.issuer:
            raise ConfigError("issuer is required")
        if not self.as_uri:
            raise ConfigError("as_uri is required")
        if not self.keys.keys:
            raise ConfigError("at least one AS key is required")
        for name in ("max_token_size", "max_tokens", "rate_limit", "sequence_chunk"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in ("cnonce_lifetime", "rate_window"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.leeway < 0:
            raise ConfigError("leeway must not be negative")
        if self.scope_format is ScopeFormat.TEXT and not self.scope_map:
            raise ConfigError("scope_format 'text' needs a [scopes] table mapping names to AIF rights")

    @property
    def audience(self) -> str:
        """The audience sent in AS Request Creation Hints."""
        return self.audiences[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class LockConfig:
    """A lock deployment: the RS configuration plus the CoAP listen address."""

    rs: RsConfig
    host: str = "127.0.0.1"
    port: int = DEFAULT_COAP_PORT


def parse_key(text: str) -> CoseKey:
    """A COSE_Key from hex or base64url text (both forms ``ostiary as rs add`` prints).

    :raises ConfigError: neither form decodes to a COSE_Key (the text itself is not quoted: it is secret).
    """
    compact = "".join(text.split())
    candidates: list[bytes] = []
    try:
        candidates.append(bytes.fromhex(compact))
    except ValueError:
        pass
    try:
        candidates.append(b64url_decode(compact))
    except WireFormatError:
        pass
    for data in candidates:
        try:
            return CoseKey.from_cbor(data)
        except (WireFormatError, ValueError, TypeError):
            continue
    raise ConfigError("a key is not a COSE_Key in hex or base64url")


def _read_key_file(path: Path) -> CoseKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        return parse_key(data.decode("ascii"))
    except (UnicodeDecodeError, ConfigError):
        try:
            return CoseKey.from_cbor(data)
        except (WireFormatError, ValueError, TypeError):
            raise ConfigError(f"{path} does not hold a COSE_Key (hex, base64url or CBOR)") from None


def _expect(table: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = table.get(name, default)
    if value is None:
        return None
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, float, (int, float)))
    if not ok:
        raise ConfigError(f"{name} has the wrong type ({type(value).__name__})")
    return value


def _strings(table: Mapping[str, Any], name: str) -> list[str]:
    value = table.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name} must be a list of strings")
    return list(value)


def rs_config_from_mapping(data: Mapping[str, Any], *, base: Path | None = None) -> RsConfig:
    """Build an :class:`RsConfig` from the ``[rs]`` table (and ``[scopes]``) of a parsed TOML document.

    :param base: directory that relative paths (``key_files``, ``state_file``) are resolved against.
    :raises ConfigError: for a missing or malformed setting.
    """
    rs = data.get("rs")
    if not isinstance(rs, dict):
        raise ConfigError("missing [rs] table")
    audiences = _strings(rs, "audiences")
    single = _expect(rs, "audience", str)
    if single is not None:
        audiences.insert(0, single)

    def resolve(p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() or base is None else base / path

    keys = [parse_key(k) for k in _strings(rs, "keys")]
    keys += [_read_key_file(resolve(p)) for p in _strings(rs, "key_files")]
    scopes = data.get("scopes", {})
    if not isinstance(scopes, dict):
        raise ConfigError("[scopes] must be a table")
    scope_map: dict[str, AifScope] = {}
    for name, spec in scopes.items():
        if not isinstance(spec, str):
            raise ConfigError(f"scope {name!r} must map to an AIF spec string like '/lock:GET,PUT'")
        try:
            scope_map[name] = AifScope.parse_spec(spec)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"scope {name!r}: {exc}") from None
    try:
        scope_format = ScopeFormat(_expect(rs, "scope_format", str, "aif"))
    except ValueError:
        raise ConfigError("scope_format must be 'aif' or 'text'") from None
    state_file = _expect(rs, "state_file", str)
    number = (int, float)
    return RsConfig(
        audiences=tuple(audiences),
        issuer=_expect(rs, "issuer", str) or "",
        as_uri=_expect(rs, "as_uri", str) or "",
        keys=cose.KeySet(keys),
        scope_format=scope_format,
        scope_map=scope_map,
        has_clock=_expect(rs, "has_clock", bool, True),
        leeway=float(_expect(rs, "leeway", number, 0)),
        max_token_size=_expect(rs, "max_token_size", int, 1024),
        max_tokens=_expect(rs, "max_tokens", int, 32),
        use_cnonce=_expect(rs, "cnonce", bool, False),
        cnonce_lifetime=float(_expect(rs, "cnonce_lifetime", number, 300)),
        rate_limit=_expect(rs, "rate_limit", int, 10),
        rate_window=float(_expect(rs, "rate_window", number, 60)),
        state_file=None if state_file is None else resolve(state_file),
        sequence_chunk=_expect(rs, "sequence_chunk", int, 64),
        audit_granted=_expect(rs, "audit_granted", bool, False),
    )


def load_config(path: Path) -> LockConfig:
    """Read a lock's TOML configuration file (format in the module docstring).

    :raises ConfigError: unreadable file, TOML syntax error, or a bad setting.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    rs = rs_config_from_mapping(data, base=path.parent)
    listen = data.get("listen", {})
    if not isinstance(listen, dict):
        raise ConfigError("[listen] must be a table")
    port = _expect(listen, "port", int, DEFAULT_COAP_PORT)
    if not 0 <= port <= 65535:
        raise ConfigError("listen port must be 0..65535")
    return LockConfig(rs=rs, host=_expect(listen, "host", str, "127.0.0.1"), port=port)


def render_config(
    *,
    audiences: Sequence[str],
    issuer: str,
    as_uri: str,
    keys: Sequence[str],
    host: str = "127.0.0.1",
    port: int = DEFAULT_COAP_PORT,
    state_file: str | None = None,
    has_clock: bool = True,
) -> str:
    """The TOML text of a minimal lock configuration (what ``ostiary lock init-config`` writes)."""

    def s(value: str) -> str:
        return _toml_string(value)

    lines = [
        "# Ostiary door lock (ACE resource server) configuration; see resource_server/config.py for every setting.",
        "[rs]",
    ]
    if len(audiences) == 1:
        lines.append(f"audience = {s(audiences[0])}")
    else:
        lines.append(f"audiences = [{', '.join(s(a) for a in audiences)}]")
    lines += [
        f"issuer = {s(issuer)}",
        f"as_uri = {s(as_uri)}",
        "# AS<->RS key(s) as COSE_Key hex or base64url: secret, keep this file private (mode 0600).",
        f"keys = [{', '.join(s(k) for k in keys)}]",
        'scope_format = "aif"',
        f"has_clock = {'true' if has_clock else 'false'}",
        "max_token_size = 1024",
        "max_tokens = 32",
        "cnonce = false",
        "rate_limit = 10",
        "rate_window = 60",
        "# true: log accepted tokens and granted requests at INFO (refusals and the door's actions always are).",
        "audit_granted = false",
    ]
    if state_file is not None:
        lines.append(f"state_file = {s(state_file)}")
    lines += ["", "[listen]", f"host = {s(host)}", f"port = {port}", ""]
    return "\n".join(lines)


def _toml_string(value: str) -> str:
    """A TOML basic string (RFC-like escapes: backslash, quote, control characters as \\uXXXX)."""
    out = ['"']
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)
