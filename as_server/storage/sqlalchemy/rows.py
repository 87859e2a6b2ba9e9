"""Conversion between the frozen records of :mod:`as_server.models` and rows of :mod:`.tables`.

Key material is sealed here on the way in and opened on the way out, so no other code sees a sealed blob or
writes a key in the clear. The associated data of each seal names the table, the column and the row's primary key
(:func:`aad`): a blob copied into another row, or into another column, does not open.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, TypeVar

from ace_core.keys import ALGORITHM_NAMES, CoseKey, algorithm_from_name
from ace_core.registry import AceProfile, CoseAlgorithm, GrantType
from as_server.models import (
    AccessRequestStatus,
    AuditEntry,
    Client,
    ConsentRequest,
    Grant,
    GrantStatus,
    Group,
    IssuedToken,
    Lwm2mRegistration,
    OperationalKey,
    PopKeyType,
    ResourceServer,
    ScopeFormat,
    SigningKey,
    TokenForm,
    TokenStatus,
    User,
    UserRole,
)
from as_server.sealing import MasterKey, SealingError

__all__ = [
    "CorruptRecordError",
    "aad",
    "access_request_from_row",
    "access_request_to_row",
    "audit_from_row",
    "audit_to_row",
    "client_from_row",
    "client_to_row",
    "grant_from_row",
    "grant_to_row",
    "group_from_row",
    "group_to_row",
    "open_sealed",
    "operational_key_from_row",
    "operational_key_to_row",
    "registration_from_row",
    "registration_to_row",
    "resource_server_from_row",
    "resource_server_to_row",
    "signing_key_from_row",
    "signing_key_to_row",
    "TOKEN_COLUMNS",
    "token_from_row",
    "token_grant_values",
    "token_values",
    "user_from_row",
    "user_to_row",
]

Row = Mapping[Any, Any]  # a RowMapping: column names as keys
_E = TypeVar("_E", bound=Enum)


class CorruptRecordError(ValueError):
    """A stored row cannot be turned back into a record (a value no version of the schema writes)."""


# Registry values are stored by their RFC names: RFC 9200 §5.8.4.1 (grant types), RFC 9202 §9 / RFC 9203 §9.1
# (ACE profiles). The enum member names are those names in upper case.
_GRANT_NAME = {g: g.name.lower() for g in GrantType}
_GRANT_BY_NAME = {v: k for k, v in _GRANT_NAME.items()}
_PROFILE_NAME = {p: p.name.lower() for p in AceProfile}
_PROFILE_BY_NAME = {v: k for k, v in _PROFILE_NAME.items()}


def aad(table: str, column: str, key: str | bytes) -> bytes:
    """Associated data binding a sealed value to its table, column and primary key."""
    return f"ostiary/{table}.{column}\x00".encode() + (key.encode() if isinstance(key, str) else key)


def _describe(key: str | bytes) -> str:
    return repr(key) if isinstance(key, str) else f"0x{key.hex()}"


def seal(master_key: MasterKey, plaintext: bytes, table: str, column: str, key: str | bytes) -> bytes:
    """Seal ``plaintext`` for ``table.column`` of the row with primary key ``key``."""
    return master_key.seal(plaintext, aad=aad(table, column, key))


def open_sealed(master_key: MasterKey, blob: bytes, table: str, column: str, key: str | bytes) -> bytes:
    """Inverse of :func:`seal`.

    :raises SealingError: naming the table, column and record; the blob was sealed for another row or column,
        was altered, or was sealed under another master key.
    """
    try:
        return master_key.open(bytes(blob), aad=aad(table, column, key))
    except SealingError as exc:
        raise SealingError(
            f"{table}.{column} of {_describe(key)} does not open ({exc}): it was sealed for another record, "
            "was altered, or the master key is not the one it was sealed with"
        ) from exc


def _names(values: Iterable[str]) -> str:
    return json.dumps(sorted(values), separators=(",", ":"))


def _json_list(values: Iterable[str]) -> str:
    """An ordered list of strings as a JSON array (order matters: rules and approvers are in decision order)."""
    return json.dumps(list(values), separators=(",", ":"))


def _parse_list(text: str, column: str) -> list[str]:
    return _parse_names(text, column)


def _parse_names(text: str, column: str) -> list[str]:
    try:
        names = json.loads(text)
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CorruptRecordError(f"{column} is not a JSON array of strings")
    return names


def _lookup(mapping: Mapping[str, _E], name: str, column: str) -> _E:
    try:
        return mapping[name]
    except KeyError:
        raise CorruptRecordError(f"{column}: unknown value {name!r}") from None


def _str_enum(cls: type[_E], value: str, column: str) -> _E:
    try:
        return cls(value)
    except ValueError:
        raise CorruptRecordError(f"{column}: unknown value {value!r}") from None


def _split(value: str | bytes | None, column: str) -> tuple[str | None, bytes | None]:
    """A ``str | bytes`` field as its (text, binary) column pair."""
    if value is None:
        return None, None
    if isinstance(value, str):
        return value, None
    if isinstance(value, bytes):
        return None, value
    raise TypeError(f"{column} must be str or bytes, not {type(value).__name__}")


def _join(text: str | None, binary: bytes | None) -> str | bytes | None:
    return text if text is not None else (bytes(binary) if binary is not None else None)


def _key_or_none(data: bytes | None) -> CoseKey | None:
    return None if data is None else CoseKey.from_cbor(bytes(data))


# -- clients ---------------------------------------------------------------------------------------------------


def client_to_row(client: Client) -> dict[str, Any]:
    """The ``clients`` row of ``client`` (its public key in the clear: it is public)."""
    text, binary = _split(client.default_scope, "default_scope")
    return {
        "client_id": client.client_id,
        "secret_hash": client.secret_hash,
        "display_name": client.display_name,
        "grant_types": _names(_GRANT_NAME[g] for g in client.grant_types),
        "audiences": _names(client.audiences),
        "profiles": _names(_PROFILE_NAME[p] for p in client.profiles),
        "pop_key_types": _names(p.value for p in client.pop_key_types),
        "public_key": None if client.public_key is None else client.public_key.to_cbor(),
        "default_audience": client.default_audience,
        "default_scope_text": text,
        "default_scope_bin": binary,
        "enabled": client.enabled,
        "created_at": client.created_at,
        "redirect_uris": _json_list(client.redirect_uris),  # revision 0005
        "public": client.public,
    }


def client_from_row(row: Row) -> Client:
    """Inverse of :func:`client_to_row`. :raises CorruptRecordError:"""
    return Client(
        client_id=row["client_id"],
        secret_hash=bytes(row["secret_hash"]),
        display_name=row["display_name"],
        grant_types=frozenset(
            _lookup(_GRANT_BY_NAME, n, "clients.grant_types")
            for n in _parse_names(row["grant_types"], "clients.grant_types")
        ),
        audiences=frozenset(_parse_names(row["audiences"], "clients.audiences")),
        profiles=frozenset(
            _lookup(_PROFILE_BY_NAME, n, "clients.profiles") for n in _parse_names(row["profiles"], "clients.profiles")
        ),
        pop_key_types=frozenset(
            _str_enum(PopKeyType, n, "clients.pop_key_types")
            for n in _parse_names(row["pop_key_types"], "clients.pop_key_types")
        ),
        public_key=_key_or_none(row["public_key"]),
        default_audience=row["default_audience"],
        default_scope=_join(row["default_scope_text"], row["default_scope_bin"]),
        enabled=bool(row["enabled"]),
        created_at=row["created_at"],
        redirect_uris=tuple(_parse_list(row["redirect_uris"], "clients.redirect_uris")),
        public=bool(row["public"]),
    )


# -- resource servers ------------------------------------------------------------------------------------------


def resource_server_to_row(rs: ResourceServer, master_key: MasterKey) -> dict[str, Any]:
    """The ``resource_servers`` row of ``rs``; the AS-RS shared key is sealed. Without ``exi_sequence``: that counter
    is not part of the record, and an insert or update of the record must leave it alone (tables.py)."""
    text, binary = _split(rs.resources, "resources")
    shared = (
        None
        if rs.shared_key is None
        else seal(master_key, rs.shared_key.to_cbor(), "resource_servers", "shared_key_sealed", rs.audience)
    )
    return {
        "audience": rs.audience,
        "shared_key_sealed": shared,
        "public_key": None if rs.public_key is None else rs.public_key.to_cbor(),
        "profiles": _names(_PROFILE_NAME[p] for p in rs.profiles),
        "scope_format": rs.scope_format.value,
        "resources_text": text,
        "resources_bin": binary,
        "token_form": rs.token_form.value,
        "max_lifetime": rs.max_lifetime,
        "introspection_secret_hash": rs.introspection_secret_hash,
        "enabled": rs.enabled,
        "created_at": rs.created_at,
        "compact_claims": rs.compact_claims,
        "has_clock": rs.has_clock,
    }


def resource_server_from_row(row: Row, master_key: MasterKey) -> ResourceServer:
    """Inverse of :func:`resource_server_to_row`. :raises SealingError: :raises CorruptRecordError:"""
    audience: str = row["audience"]
    sealed = row["shared_key_sealed"]
    shared = (
        None
        if sealed is None
        else CoseKey.from_cbor(open_sealed(master_key, sealed, "resource_servers", "shared_key_sealed", audience))
    )
    secret_hash = row["introspection_secret_hash"]
    return ResourceServer(
        audience=audience,
        shared_key=shared,
        public_key=_key_or_none(row["public_key"]),
        profiles=frozenset(
            _lookup(_PROFILE_BY_NAME, n, "resource_servers.profiles")
            for n in _parse_names(row["profiles"], "resource_servers.profiles")
        ),
        scope_format=_str_enum(ScopeFormat, row["scope_format"], "resource_servers.scope_format"),
        resources=_join(row["resources_text"], row["resources_bin"]),
        token_form=_str_enum(TokenForm, row["token_form"], "resource_servers.token_form"),
        max_lifetime=row["max_lifetime"],
        introspection_secret_hash=None if secret_hash is None else bytes(secret_hash),
        enabled=bool(row["enabled"]),
        created_at=row["created_at"],
        compact_claims=bool(row["compact_claims"]),
        has_clock=bool(row["has_clock"]),
    )


# -- issued tokens ---------------------------------------------------------------------------------------------


#: The columns :func:`token_values` fills, in its order (``seq`` is assigned by the database).
TOKEN_COLUMNS = (
    "cti",
    "token_hash",
    "client_id",
    "audience",
    "scope_text",
    "scope_bin",
    "profile",
    "iat",
    "exp",
    "cnf_sealed",
    "pop_kid",
    "subject",
    "status",
    "pop_key_generated",
    "exi",
    "rules",
)
_CNF_AAD = aad("issued_tokens", "cnf_sealed", b"")


def token_values(token: IssuedToken, master_key: MasterKey) -> tuple[Any, ...]:
    """The ``issued_tokens`` values of ``token`` (:data:`TOKEN_COLUMNS`); ``cnf`` is sealed, as it may carry an
    OSCORE master secret (RFC 9203 §3.2.1). A tuple, not a dict: this is the token endpoint's hot path and the
    1M-row bulk load's, and the driver takes tuples as they are."""
    scope = token.scope
    if isinstance(scope, str):
        text, binary = scope, None
    elif isinstance(scope, bytes):
        text, binary = None, scope
    else:
        raise TypeError(f"scope must be str or bytes, not {type(scope).__name__}")
    return (
        token.cti,
        token.token_hash,
        token.client_id,
        token.audience,
        text,
        binary,
        None if token.profile is None else _PROFILE_NAME[token.profile],
        token.iat,
        token.exp,
        master_key.seal(token.cnf, aad=_CNF_AAD + token.cti),
        token.pop_kid,
        token.subject,
        token.status.value,
        True if token.pop_key_generated else None,  # TRUE or NULL, never FALSE (tables.py)
        token.exi,
        _json_list(token.rules) if token.rules else None,
    )


def token_grant_values(token: IssuedToken) -> tuple[tuple[str, bytes], ...]:
    """The ``token_grants`` rows of ``token``: ``(grant_id, cti)`` per grant it was issued under (usually none)."""
    return tuple((grant_id, token.cti) for grant_id in token.grant_ids)


def token_from_row(row: Row, master_key: MasterKey) -> IssuedToken:
    """Inverse of :func:`token_values`. :raises SealingError: :raises CorruptRecordError:"""
    cti = bytes(row["cti"])
    profile = row["profile"]
    pop_kid = row["pop_kid"]
    scope = _join(row["scope_text"], row["scope_bin"])
    if scope is None:  # pragma: no cover - the one_scope CHECK constraint prevents it
        raise CorruptRecordError("issued_tokens: no scope")
    return IssuedToken(
        cti=cti,
        client_id=row["client_id"],
        audience=row["audience"],
        scope=scope,
        profile=None if profile is None else _lookup(_PROFILE_BY_NAME, profile, "issued_tokens.profile"),
        iat=row["iat"],
        exp=row["exp"],
        token_hash=bytes(row["token_hash"]),
        cnf=open_sealed(master_key, row["cnf_sealed"], "issued_tokens", "cnf_sealed", cti),
        pop_kid=None if pop_kid is None else bytes(pop_kid),
        subject=row["subject"],
        status=_str_enum(TokenStatus, row["status"], "issued_tokens.status"),
        pop_key_generated=bool(row["pop_key_generated"]),
        exi=row["exi"],
        rules=() if row["rules"] is None else tuple(_parse_list(row["rules"], "issued_tokens.rules")),
    )


# -- signing keys ----------------------------------------------------------------------------------------------


def signing_key_to_row(key: SigningKey, master_key: MasterKey) -> dict[str, Any]:
    """The ``signing_keys`` row of ``key``; the key (with its private part) is sealed."""
    return {
        "kid": key.kid,
        "alg": ALGORITHM_NAMES[CoseAlgorithm(key.alg)],
        "key_sealed": seal(master_key, key.key.to_cbor(), "signing_keys", "key_sealed", key.kid),
        "created_at": key.created_at,
        "retired_at": key.retired_at,
        "retire_after": key.retire_after,
    }


def signing_key_from_row(row: Row, master_key: MasterKey) -> SigningKey:
    """Inverse of :func:`signing_key_to_row`. :raises SealingError: :raises CorruptRecordError:"""
    kid = bytes(row["kid"])
    try:
        alg = algorithm_from_name(row["alg"])
    except ValueError:
        raise CorruptRecordError(f"signing_keys.alg: unknown algorithm {row['alg']!r}") from None
    return SigningKey(
        kid=kid,
        alg=alg,
        key=CoseKey.from_cbor(open_sealed(master_key, row["key_sealed"], "signing_keys", "key_sealed", kid)),
        created_at=row["created_at"],
        retired_at=row["retired_at"],
        retire_after=row["retire_after"],
    )


# -- users and groups ------------------------------------------------------------------------------------------


def user_to_row(user: User) -> dict[str, Any]:
    """The ``users`` row of ``user`` (the password only as its Argon2id hash)."""
    return {
        "name": user.name,
        "password_hash": user.password_hash,
        "display_name": user.display_name,
        "role": user.role.value,
        "enabled": user.enabled,
        "created_at": user.created_at,
    }


def user_from_row(row: Row) -> User:
    """Inverse of :func:`user_to_row`. :raises CorruptRecordError:"""
    return User(
        name=row["name"],
        password_hash=row["password_hash"],
        display_name=row["display_name"],
        role=_str_enum(UserRole, row["role"], "users.role"),
        enabled=bool(row["enabled"]),
        created_at=row["created_at"],
    )


def group_to_row(group: Group) -> dict[str, Any]:
    """The ``user_groups`` row of ``group``."""
    return {"name": group.name, "description": group.description, "created_at": group.created_at}


def group_from_row(row: Row) -> Group:
    """Inverse of :func:`group_to_row`."""
    return Group(name=row["name"], description=row["description"], created_at=row["created_at"])


# -- access requests and grants --------------------------------------------------------------------------------


def access_request_to_row(request: ConsentRequest, pending_key: str | None) -> dict[str, Any]:
    """The ``access_requests`` row of ``request``; ``pending_key`` while it is pending, else ``None``."""
    text, binary = _split(request.scope, "scope")
    return {
        "id": request.id,
        "client_id": request.client_id,
        "subject": request.subject,
        "audience": request.audience,
        "scope_text": text,
        "scope_bin": binary,
        "reason": request.reason,
        "approvers": _json_list(request.approvers),
        "rules": _json_list(request.rules),
        "requested_from": request.requested_from,
        "requested_until": request.requested_until,
        "status": request.status.value,
        "created_at": request.created_at,
        "updated_at": request.updated_at,
        "request_count": request.request_count,
        "expires_at": request.expires_at,
        "decided_at": request.decided_at,
        "decided_by": request.decided_by,
        "note": request.note,
        "pending_key": pending_key,
    }


def access_request_from_row(row: Row) -> ConsentRequest:
    """Inverse of :func:`access_request_to_row`. :raises CorruptRecordError:"""
    scope = _join(row["scope_text"], row["scope_bin"])
    if scope is None:  # pragma: no cover - the one_scope CHECK constraint prevents it
        raise CorruptRecordError("access_requests: no scope")
    return ConsentRequest(
        id=row["id"],
        client_id=row["client_id"],
        subject=row["subject"],
        audience=row["audience"],
        scope=scope,
        reason=row["reason"],
        approvers=tuple(_parse_list(row["approvers"], "access_requests.approvers")),
        rules=tuple(_parse_list(row["rules"], "access_requests.rules")),
        requested_from=row["requested_from"],
        requested_until=row["requested_until"],
        status=_str_enum(AccessRequestStatus, row["status"], "access_requests.status"),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        request_count=row["request_count"],
        expires_at=row["expires_at"],
        decided_at=row["decided_at"],
        decided_by=row["decided_by"],
        note=row["note"],
    )


def grant_to_row(grant: Grant) -> dict[str, Any]:
    """The ``grants`` row of ``grant``."""
    text, binary = _split(grant.scope, "scope")
    return {
        "id": grant.id,
        "request_id": grant.request_id,
        "client_id": grant.client_id,
        "subject": grant.subject,
        "audience": grant.audience,
        "scope_text": text,
        "scope_bin": binary,
        "valid_from": grant.valid_from,
        "valid_until": grant.valid_until,
        "windows": _json_list(grant.windows),
        "timezone": grant.timezone,
        "max_lifetime": grant.max_lifetime,
        "approvers": _json_list(grant.approvers),
        "created_at": grant.created_at,
        "created_by": grant.created_by,
        "status": grant.status.value,
        "revoked_at": grant.revoked_at,
        "revoked_by": grant.revoked_by,
    }


def grant_from_row(row: Row) -> Grant:
    """Inverse of :func:`grant_to_row`. :raises CorruptRecordError:"""
    scope = _join(row["scope_text"], row["scope_bin"])
    if scope is None:  # pragma: no cover - the one_scope CHECK constraint prevents it
        raise CorruptRecordError("grants: no scope")
    return Grant(
        id=row["id"],
        request_id=row["request_id"],
        client_id=row["client_id"],
        subject=row["subject"],
        audience=row["audience"],
        scope=scope,
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        windows=tuple(_parse_list(row["windows"], "grants.windows")),
        timezone=row["timezone"],
        max_lifetime=row["max_lifetime"],
        approvers=tuple(_parse_list(row["approvers"], "grants.approvers")),
        created_at=row["created_at"],
        created_by=row["created_by"],
        status=_str_enum(GrantStatus, row["status"], "grants.status"),
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
    )


# -- audit -----------------------------------------------------------------------------------------------------


def audit_to_row(entry: AuditEntry) -> dict[str, Any]:
    """The ``audit_log`` row of ``entry`` (``seq`` is assigned by the database)."""
    return {
        "at": entry.at,
        "action": entry.action,
        "actor": entry.actor,
        "client_id": entry.client_id,
        "subject": entry.subject,
        "audience": entry.audience,
        "scope": entry.scope,
        "request_id": entry.request_id,
        "grant_id": entry.grant_id,
        "cti": entry.cti,
        "detail": entry.detail,
    }


def audit_from_row(row: Row) -> AuditEntry:
    """Inverse of :func:`audit_to_row`, with the row's ``seq``."""
    cti = row["cti"]
    return AuditEntry(
        seq=row["seq"],
        at=row["at"],
        action=row["action"],
        actor=row["actor"],
        client_id=row["client_id"],
        subject=row["subject"],
        audience=row["audience"],
        scope=row["scope"],
        request_id=row["request_id"],
        grant_id=row["grant_id"],
        cti=None if cti is None else bytes(cti),
        detail=row["detail"],
    )


# -- operational keys and LwM2M registrations (revision 0007, issue #7) ---------------------------------------


def seal_operational_key(master_key: MasterKey, key: bytes, audience: str, generation: int) -> bytes:
    """``rs_keys.key_sealed`` of a generation; the primary key in the associated data is its PSK identity."""
    return seal(master_key, key, "rs_keys", "key_sealed", f"{audience}#{generation}")


def operational_key_to_row(key: OperationalKey, master_key: MasterKey) -> dict[str, Any]:
    """The ``rs_keys`` row of ``key``; the key material sealed (NULL when erased)."""
    return {
        "audience": key.audience,
        "generation": key.generation,
        "key_sealed": None
        if key.key is None
        else seal_operational_key(master_key, key.key, key.audience, key.generation),
        "created_at": key.created_at,
        "delivered_at": key.delivered_at,
        "retire_at": key.retire_at,
    }


def operational_key_from_row(row: Row, master_key: MasterKey) -> OperationalKey:
    """Inverse of :func:`operational_key_to_row`. :raises SealingError:"""
    audience, generation = row["audience"], int(row["generation"])
    sealed = row["key_sealed"]
    return OperationalKey(
        audience=audience,
        generation=generation,
        key=None
        if sealed is None
        else open_sealed(master_key, sealed, "rs_keys", "key_sealed", f"{audience}#{generation}"),
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        retire_at=row["retire_at"],
    )


def registration_to_row(registration: Lwm2mRegistration) -> dict[str, Any]:
    """The ``lwm2m_registrations`` row of ``registration`` (nothing secret)."""
    return {
        "location": registration.location,
        "audience": registration.audience,
        "endpoint": registration.endpoint,
        "lifetime": registration.lifetime,
        "binding": registration.binding,
        "lwm2m_version": registration.lwm2m_version,
        "object_links": registration.object_links,
        "source": registration.source,
        "registered_at": registration.registered_at,
        "last_contact": registration.last_contact,
    }


def registration_from_row(row: Row) -> Lwm2mRegistration:
    """Inverse of :func:`registration_to_row`."""
    return Lwm2mRegistration(
        location=row["location"],
        audience=row["audience"],
        endpoint=row["endpoint"],
        lifetime=int(row["lifetime"]),
        binding=row["binding"],
        lwm2m_version=row["lwm2m_version"],
        object_links=row["object_links"],
        source=row["source"],
        registered_at=row["registered_at"],
        last_contact=row["last_contact"],
    )
