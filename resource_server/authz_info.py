"""The ``/authz-info`` endpoint, sans-IO: RFC 9200 §5.10.1 (token upload), §5.10.1.1 (verification) and the OSCORE
profile's exchange, RFC 9203 §4.1/§4.2 (nonces, Recipient IDs, update of access rights).

:meth:`AuthzInfo.handle` takes the request payload and its Content-Format and either returns an
:class:`AuthzInfoResult` (2.01) or raises an :class:`~ace_core.errors.AceError` whose ``status`` is the answer.
The transport puts only that status on the wire (and Max-Age for 4.29); the cause is logged here (WARNING). An
accepted token is logged with its PoP id, ``cti``, audience and rights at DEBUG, or at INFO with ``audit_granted``
(see :mod:`resource_server.aiocoap_site` for the lock's audit log).

=========================================================  ===============================  ======
check, in this order                                       error                            status
=========================================================  ===============================  ======
more than ``rate_limit`` submissions per window from peer  :class:`RateLimited`             4.29
payload larger than ``max_token_size`` (before parsing)    ``PayloadTooLarge``              4.13
Content-Format not ``application/cwt``/``ace+cbor``        :class:`UnsupportedContentFormat` 4.15
payload not an AuthzInfoRequest / not a COSE token         ``TokenMalformed``               4.00
COSE signature/MAC/decryption fails, unknown AS key        ``SecurityWrapperFailed``        4.01
claims not a CBOR map of well-typed claims                 ``ClaimsUnavailable``            4.00
``iss`` is not the configured issuer                       ``IssuerMismatch``               4.01
``exp`` passed (lock with a clock) / no usable expiry      ``TokenExpired``                 4.01
``exi`` token with a sequence number already gone          :class:`ExiSequenceExpired`      4.01
``aud`` names none of the lock's audiences                 ``AudienceMismatch``             4.03
``exi`` token whose ``cti`` has another layout             :class:`ExiSequenceInvalid`      4.00
``scope`` missing, not AIF (or no known text name), empty  ``ScopeNotRecognized``           4.00
``cnonce`` missing or stale (if the lock uses cnonces)     ``CnonceInvalid``                4.01
``ace_profile`` not ``coap_oscore``; ``cnf`` not ``osc``   :class:`ProfileNotSupported`     4.00
``nonce1``/``ace_client_recipientid`` missing or unusable  :class:`OscoreParametersInvalid` 4.00
``osc`` with unknown members / unsupported alg, hkdf, ...  :class:`OscoreParametersInvalid` 4.00
token over OSCORE not naming that context's material;      :class:`UpdateRejected`          4.01
``cnf`` ``{3: kid}`` posted without OSCORE
=========================================================  ===============================  ======

Success (RFC 9203 §4.1, §4.2): the token is stored (superseding the one held for the same Input Material, RFC
9200 §5.10.1) and the answer is 2.01 with ``{42: nonce2, 44: ID2}`` (``nonce2`` 8 random bytes, ``ID2`` unique
among the lock's contexts and different from ``ID1``); :attr:`AuthzInfoResult.context` holds the server's
:class:`~ace_core.oscore.OscoreContextParameters` to install. Posted over OSCORE (update of access rights, RFC 9203
§4.1), a token whose ``cnf`` is ``{3: id}`` (or ``osc`` with the same ``id``) naming the Input Material of the
context the request arrived on replaces the authorization information and keeps the context: 2.01 with no payload
(the transport protects it).

What is kept of an accepted token is described in :mod:`resource_server.token_store` (memory per token): the
claims set is not, equal audiences and rights are shared objects (the rights of each distinct ``scope`` are
decoded once), and the OSCORE keys are derived with one HKDF-Extract (:mod:`resource_server.oscore_keys`).

Content-Formats: ``application/cwt`` (61) is a bare token; ``application/ace+cbor`` (19) -- or no Content-Format,
which RFC 9203 leaves no other reading for -- is the ``AuthzInfoRequest`` map ``{1: token, 40: nonce1, 43: ID1}``.
In an update, ``nonce1`` and ``ID1`` are ignored (RFC 9203 §4.1).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from ace_core import cbor, cwt
from ace_core.errors import (
    AceError,
    AudienceMismatch,
    CnonceInvalid,
    PayloadTooLarge,
    ScopeNotRecognized,
    TokenMalformed,
    TokenRejected,
    WireFormatError,
)
from ace_core.keys import CoseKey
from ace_core.messages import AuthzInfoRequest
from ace_core.oscore import AEAD_PARAMETERS, DEFAULT_AEAD, OscoreContextParameters, Role, context_parameters
from ace_core.pop import Confirmation, OscoreMaterial
from ace_core.registry import AceProfile, ContentFormat, TokenParam
from ace_core.scope import AifScope, TextScope, decode_scope
from ace_core.status import Status
from resource_server.cnonce import CnonceManager
from resource_server.config import RsConfig, ScopeFormat
from resource_server.errors import (
    ExiSequenceExpired,
    ExiSequenceInvalid,
    OscoreParametersInvalid,
    ProfileNotSupported,
    RateLimited,
    UnsupportedContentFormat,
    UpdateRejected,
)
from resource_server.ratelimit import RateLimiter
from resource_server.token_store import (
    OscoreAssociation,
    PersistedToken,
    RemovalReason,
    StoredToken,
    TokenStore,
    parse_exi_cti,
    token_hash,
)

__all__ = ["NONCE2_LENGTH", "AuthzInfo", "AuthzInfoResult", "RestoreReport"]

log = logging.getLogger("ostiary.rs.authz_info")

#: RFC 9203 §4.2: nonce2 SHOULD be 64 bits of randomness.
NONCE2_LENGTH = 8
#: Longest nonce1 accepted (RFC 9203 recommends 8 bytes; the Master Salt must stay small).
MAX_NONCE1_LENGTH = 64
#: Longest ID Context accepted (RFC 8613 §6.1: its length travels in one byte of the OSCORE option).
MAX_ID_CONTEXT_LENGTH = 255
#: Distinct ``scope`` values whose rights are remembered (tokens for the same scope then share one AifScope).
RIGHTS_CACHE_SIZE = 256
#: The ``AuthzInfoResponse`` map keys (RFC 9203 §4.2) as plain ints, for encoding it without the message codec.
_NONCE2 = int(TokenParam.NONCE2)
_ID2 = int(TokenParam.ACE_SERVER_RECIPIENTID)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthzInfoResult:
    """A token accepted at ``/authz-info``.

    :param status: always 2.01 (Created).
    :param payload: the ``AuthzInfoResponse`` CBOR, or empty for an update of access rights.
    :param content_format: ``application/ace+cbor`` (19) for a payload, else ``None``.
    :param token: the stored token.
    :param context: the server's OSCORE context parameters to install; ``None`` for an update (keep the context).
    """

    status: Status
    payload: bytes
    content_format: int | None
    token: StoredToken
    context: OscoreContextParameters | None

    @property
    def is_update(self) -> bool:
        """True for an update of access rights over an existing context (RFC 9203 §4.1)."""
        return self.context is None


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What :meth:`AuthzInfo.restore` did with the persisted tokens."""

    restored: tuple[StoredToken, ...]
    dropped: int


@dataclass(frozen=True, slots=True)
class _Checked:
    claims: cwt.Claims
    pop_id: bytes | None
    audience: str
    rights: AifScope
    exi_sequence: int | None
    held: StoredToken | None  # the token held for the same PoP key with the same cti (a re-post)


class AuthzInfo:
    """The sans-IO ``/authz-info`` handler of an OSCORE-profile resource server (module docstring).

    :param config: the RS configuration.
    :param store: where accepted tokens go.
    :param cnonces: the cnonce state when the lock uses cnonces (RFC 9200 §5.3.1), else ``None``.
    :param rng: random bytes for ``nonce2`` (injectable for tests).
    :param on_verified_key: called with the AS key that opened each token's outer COSE layer, once the token's
        protection, ``iss`` and expiry are checked (before ``aud`` and ``scope``): a bootstrapped lock promotes its
        ``next`` key slot when a token arrives under it (:mod:`resource_server.credentials`). ``None``: no call.
    """

    def __init__(
        self,
        config: RsConfig,
        store: TokenStore,
        *,
        cnonces: CnonceManager | None = None,
        rng: Callable[[int], bytes] = secrets.token_bytes,
        on_verified_key: Callable[[CoseKey], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.cnonces = cnonces
        self._rng = rng
        self.on_verified_key = on_verified_key
        self.limiter = RateLimiter(limit=config.rate_limit, window=config.rate_window)
        # The configuration's own str objects, so that stored tokens share them instead of each keeping the
        # decoded ``aud`` string; and the rights of the scopes seen, shared by tokens granting the same.
        self._audiences = {a: a for a in config.audiences}
        self._rights: dict[str | bytes, AifScope] = {}
        # id(rights) -> (rights, its text for the audit line): the entry keeps the object alive, so the id is not
        # reused while the entry exists; the text is computed once per distinct rights object.
        self._rights_texts: dict[int, tuple[AifScope, str]] = {}
        # Accepted tokens are logged like granted requests (resource_server.config: audit_granted); refused ones
        # always at WARNING.
        self._granted_level = logging.INFO if config.audit_granted else logging.DEBUG

    # -- the endpoint ----------------------------------------------------------------------------------------

    def handle(
        self,
        payload: bytes,
        content_format: int | None,
        *,
        now: float | None,
        monotonic: float,
        peer: str,
        protected_by: StoredToken | None = None,
    ) -> AuthzInfoResult:
        """Process one POST to ``/authz-info`` (see the module docstring for the checks and answers).

        :param now: wall-clock time, or ``None`` on a lock without a clock (ignored unless ``has_clock``).
        :param monotonic: the lock's uptime counter (``exi``, cnonces, rate limiting).
        :param peer: the client's address, for rate limiting and logs.
        :param protected_by: the token whose OSCORE context protected the request, or ``None`` if unprotected.
        :raises AceError: the refusal; ``status`` is the answer.
        """
        try:
            result = self._handle(payload, content_format, now, monotonic, peer, protected_by)
        except AceError as exc:
            log.warning(
                "refused token from %s%s: %s %s: %s",
                peer,
                " (over OSCORE)" if protected_by is not None else "",
                exc.status.coap_dotted,
                type(exc).__name__,
                exc.detail or "-",
            )
            raise
        level = self._granted_level
        if log.isEnabledFor(level):  # the audit line of a grant: INFO with audit_granted, else DEBUG
            log.log(
                level,
                "accepted token from %s: %s audience=%s rights=%s%s",
                peer,
                result.token.describe(),
                result.token.audience,
                self._rights_text(result.token.rights),
                " (access rights updated over OSCORE)" if result.is_update else "",
            )
        return result

    def _handle(
        self,
        payload: bytes,
        content_format: int | None,
        now: float | None,
        monotonic: float,
        peer: str,
        protected_by: StoredToken | None,
    ) -> AuthzInfoResult:
        retry_after = self.limiter.check(peer, monotonic=monotonic)
        if retry_after is not None:
            raise RateLimited(f"more than {self.config.rate_limit} submissions", retry_after=retry_after)
        if len(payload) > self.config.max_token_size:
            raise PayloadTooLarge(f"payload of {len(payload)} bytes")
        request = self._parse(payload, content_format)
        now = now if self.config.has_clock else None
        checked = self._check(request.access_token, now=now, monotonic=monotonic)
        if self.cnonces is not None and checked.held is None:
            # RFC 9200 §5.3.1; a re-post of a token the lock holds was checked on first receipt.
            if not self.cnonces.is_fresh(checked.claims.cnonce, monotonic=monotonic):
                raise CnonceInvalid("cnonce missing, unknown or stale")
        profile = checked.claims.ace_profile
        if profile is not None and profile != AceProfile.COAP_OSCORE:
            raise ProfileNotSupported(f"ace_profile {profile}")
        if protected_by is not None:
            return self._update(request.access_token, checked, protected_by, now, monotonic)
        return self._first_upload(request, checked, now, monotonic)

    def _parse(self, payload: bytes, content_format: int | None) -> AuthzInfoRequest:
        if content_format == ContentFormat.CWT:
            if not payload:
                raise TokenMalformed("empty payload")
            return AuthzInfoRequest(access_token=payload)
        if content_format not in (None, ContentFormat.ACE_CBOR):
            raise UnsupportedContentFormat(f"Content-Format {content_format}")
        try:
            return AuthzInfoRequest.from_cbor(payload, max_size=self.config.max_token_size)
        except WireFormatError as exc:
            raise TokenMalformed(f"not an authz-info request: {exc.detail}") from exc

    def _rights_text(self, rights: AifScope) -> str:
        entry = self._rights_texts.get(id(rights))
        if entry is not None and entry[0] is rights:
            return entry[1]
        text = _rights_text(rights)
        if len(self._rights_texts) >= RIGHTS_CACHE_SIZE:
            self._rights_texts.clear()
        self._rights_texts[id(rights)] = (rights, text)
        return text

    # -- token checks (RFC 9200 §5.10.1.1 order) -------------------------------------------------------------

    def _check(self, token: bytes, *, now: float | None, monotonic: float, restoring: bool = False) -> _Checked:
        config = self.config
        verified = cwt.verify_token(
            token,
            config.keys,
            now=now,
            audience=None,  # checked below, after the exi sequence number (an "exp"-class check)
            issuer=config.issuer,
            leeway=config.leeway,
            require_expiry=True,
            max_size=config.max_token_size,
        )
        if self.on_verified_key is not None:
            self.on_verified_key(verified.keys[0])
        claims = verified.claims
        pop_id = _pop_id(claims.cnf)
        held = self.store.get(pop_id) if pop_id is not None else None
        if held is not None and (claims.cti is None or held.cti != claims.cti):
            held = None
        exi = parse_exi_cti(claims.cti, config.audiences) if claims.exi is not None else None
        if exi is not None and held is None and not restoring and self.store.is_sequence_gone(*exi):
            raise ExiSequenceExpired(f"exi sequence number {exi[1]} not above the highest gone for {exi[0]!r}")
        audience = next((self._audiences[a] for a in claims.audiences() if a in self._audiences), None)
        if audience is None:
            raise AudienceMismatch(f"aud {claims.aud!r} not in {list(config.audiences)}")
        if claims.exi is not None and exi is None:
            raise ExiSequenceInvalid("exi token whose cti is not UTF-8(audience) || 1-8 byte sequence number")
        rights = self.rights_of(claims.scope)
        return _Checked(claims, pop_id, exi[0] if exi else audience, rights, exi[1] if exi else None, held)

    def rights_of(self, scope: str | bytes | None) -> AifScope:
        """The access rights a ``scope`` claim grants on this lock.

        AIF (RFC 9237): the AIF-REST entries, keeping only understood methods (RFC 9237 §6). Text: the union of
        the ``[scopes]`` mapping of every known name.

        :raises ScopeNotRecognized: missing, malformed, of the other format, or granting nothing (RFC 9200
            §5.10.1.1: 4.00).
        """
        if scope is None:
            raise ScopeNotRecognized("no scope")
        rights = self._rights.get(scope)
        if rights is not None:
            return rights  # AifScope is immutable: tokens granting the same share one
        rights = self._decode_rights(scope)
        if len(self._rights) >= RIGHTS_CACHE_SIZE:
            self._rights.clear()
        self._rights[scope] = rights
        return rights

    def _decode_rights(self, scope: str | bytes) -> AifScope:
        try:
            if self.config.scope_format is ScopeFormat.AIF:
                decoded = decode_scope(scope, aif=True, max_size=self.config.max_token_size)
                assert isinstance(decoded, AifScope)
                rights = decoded.known_only()
            else:
                text = decode_scope(scope, aif=False, max_size=self.config.max_token_size)
                assert isinstance(text, TextScope)
                rights = AifScope()
                for name in text:
                    mapped = self.config.scope_map.get(name)
                    if mapped is not None:
                        rights = rights | mapped
        except WireFormatError as exc:
            raise ScopeNotRecognized(f"scope not understood: {exc.detail}") from exc
        if rights.is_empty:
            raise ScopeNotRecognized("scope grants nothing on this lock")
        return rights

    # -- first upload: derive a new context (RFC 9203 §4.1-§4.3) ---------------------------------------------

    def _first_upload(
        self, request: AuthzInfoRequest, checked: _Checked, now: float | None, monotonic: float
    ) -> AuthzInfoResult:
        cnf = checked.claims.cnf
        if cnf is not None and cnf.kid is not None:
            raise UpdateRejected("a token naming a kid can only update access rights over OSCORE")
        if cnf is None or cnf.osc is None:
            raise ProfileNotSupported("cnf holds no OSCORE_Input_Material")
        material = _checked_material(cnf.osc)
        nonce1, id1 = request.nonce1, request.ace_client_recipientid
        if nonce1 is None or id1 is None:
            raise OscoreParametersInvalid("nonce1 or ace_client_recipientid missing")
        if not 1 <= len(nonce1) <= MAX_NONCE1_LENGTH:
            raise OscoreParametersInvalid(f"nonce1 of {len(nonce1)} bytes")
        max_id = _max_id_length(material)
        if len(id1) > max_id:
            raise OscoreParametersInvalid(f"ace_client_recipientid longer than {max_id} bytes")
        nonce2 = self._rng(NONCE2_LENGTH)
        id2 = self.store.allocate_recipient_id(exclude=id1, max_length=max_id)
        try:
            params = context_parameters(
                material,
                nonce1=nonce1,
                nonce2=nonce2,
                client_recipient_id=id1,
                server_recipient_id=id2,
                role=Role.SERVER,
            )
            persistent = self.store.persistent  # only a restart needs the nonces again
            association = OscoreAssociation.derive(
                params, nonce1=nonce1 if persistent else None, nonce2=nonce2 if persistent else None
            )
        except ValueError as exc:
            raise OscoreParametersInvalid(str(exc)) from exc
        token = self._stored(request.access_token, checked, association, now, monotonic)
        self.store.put(token, now=now, monotonic=monotonic, reason=RemovalReason.SUPERSEDED)
        self.store.save()
        # AuthzInfoResponse {42: nonce2, 44: ID2} (RFC 9203 §4.2), encoded directly: the message codec costs more
        # than the two byte strings (a test checks the bytes are AuthzInfoResponse.to_cbor()'s).
        body = cbor.dumps({_NONCE2: nonce2, _ID2: id2})
        return AuthzInfoResult(
            status=Status.CREATED, payload=body, content_format=ContentFormat.ACE_CBOR, token=token, context=params
        )

    # -- update of access rights over OSCORE (RFC 9203 §4.1) -------------------------------------------------

    def _update(
        self, access_token: bytes, checked: _Checked, protected_by: StoredToken, now: float | None, monotonic: float
    ) -> AuthzInfoResult:
        if checked.pop_id is None or checked.pop_id != protected_by.pop_id:
            raise UpdateRejected("the token does not name the Input Material of this security context")
        association = protected_by.association
        assert association is not None
        token = self._stored(access_token, checked, association, now, monotonic)
        self.store.put(token, now=now, monotonic=monotonic, reason=RemovalReason.UPDATED)
        self.store.save()
        return AuthzInfoResult(status=Status.CREATED, payload=b"", content_format=None, token=token, context=None)

    def _stored(
        self,
        raw: bytes,
        checked: _Checked,
        association: OscoreAssociation,
        now: float | None,
        monotonic: float,
        *,
        exi_started: float | None = None,
        exi_started_wall: float | None = None,
    ) -> StoredToken:
        claims = checked.claims
        assert checked.pop_id is not None
        expires_at = None
        if now is not None and claims.exp is not None:
            expires_at = float(claims.exp) + self.config.leeway
        expires_after = None
        if claims.exi is not None:
            if exi_started is None:
                # RFC 9200 §5.10.3: the exi counter starts when the RS first receives the token.
                held = checked.held
                exi_started = held.exi_started if held is not None else monotonic
                exi_started_wall = held.exi_started_wall if held is not None else now
            assert exi_started is not None
            expires_after = exi_started + claims.exi
        return StoredToken(
            token=raw if self.store.persistent else None,
            token_hash=token_hash(raw),
            cti=claims.cti,
            pop_id=checked.pop_id,
            audience=checked.audience,
            rights=checked.rights,
            received=monotonic,
            received_wall=now,
            exi_started=exi_started,
            exi_started_wall=exi_started_wall,
            expires_at=expires_at,
            expires_after=expires_after,
            exi_sequence=checked.exi_sequence,
            association=association,
        )

    # -- restart ---------------------------------------------------------------------------------------------

    def restore(self, *, now: float | None, monotonic: float) -> RestoreReport:
        """Load the persisted tokens and rebuild their security associations (see
        :mod:`resource_server.token_store` for the replay-safety rule).

        Each token is verified again (keys, issuer, ``exp``, audience and scope may have changed). An ``exi``
        token keeps its remaining lifetime only on a lock with a wall clock; a clockless lock cannot know how long
        it was down, so it drops them and records their sequence numbers as gone. Restored contexts continue their
        sender sequence numbers at the persisted reservation and recover their replay windows with Echo.
        """
        now = now if self.config.has_clock else None
        state = self.store.load()
        if state is None:
            return RestoreReport((), 0)
        restored: list[StoredToken] = []
        dropped = 0
        for record in state.tokens:
            token = self._restore_one(record, now, monotonic)
            if token is None:
                dropped += 1
            else:
                restored.append(token)
        self.store.save()
        log.info("restored %d token(s), dropped %d", len(restored), dropped)
        return RestoreReport(tuple(restored), dropped)

    def _restore_one(self, record: PersistedToken, now: float | None, monotonic: float) -> StoredToken | None:
        try:
            checked = self._check(record.token, now=now, monotonic=monotonic, restoring=True)
        except TokenRejected as exc:
            log.info("not restoring a token: %s %s", type(exc).__name__, exc.detail or "")
            return None
        claims = checked.claims
        exi_started = exi_started_wall = None
        if claims.exi is not None:
            assert checked.exi_sequence is not None
            elapsed = None if now is None or record.exi_started_wall is None else now - record.exi_started_wall
            if elapsed is None or elapsed >= claims.exi:
                self.store.note_sequence_gone(checked.audience, checked.exi_sequence)
                log.info("not restoring exi token cti=%s: remaining lifetime unknown or over", _hex(claims.cti))
                return None
            exi_started, exi_started_wall = monotonic - elapsed, record.exi_started_wall
        cnf = claims.cnf
        if cnf is None or cnf.osc is None:
            log.info("not restoring token cti=%s: no OSCORE_Input_Material", _hex(claims.cti))
            return None
        try:
            material = _checked_material(cnf.osc)
            params = context_parameters(
                material,
                nonce1=record.nonce1,
                nonce2=record.nonce2,
                client_recipient_id=record.client_recipient_id,
                server_recipient_id=record.server_recipient_id,
                role=Role.SERVER,
            )
            association = OscoreAssociation.derive(
                params,
                nonce1=record.nonce1,
                nonce2=record.nonce2,
                sender_sequence_reserved=record.sender_sequence_reserved,
                restored=True,
            )
        except (OscoreParametersInvalid, ValueError) as exc:
            log.info("not restoring token cti=%s: %s", _hex(claims.cti), exc)
            return None
        token = self._stored(
            record.token,
            checked,
            association,
            now,
            monotonic,
            exi_started=exi_started,
            exi_started_wall=exi_started_wall,
        )
        self.store.put(token, now=now, monotonic=monotonic, reason=RemovalReason.SUPERSEDED)
        return token


def _pop_id(cnf: Confirmation | None) -> bytes | None:
    """The PoP key identifier of a ``cnf``: the OSCORE Input Material ``id``, or the ``kid`` of an update."""
    if cnf is None:
        return None
    if cnf.osc is not None:
        return cnf.osc.id
    return cnf.kid


def _checked_material(material: OscoreMaterial) -> OscoreMaterial:
    """RFC 9203 §3.2.1: ``id`` and ``ms`` are required; members this RS does not know make it refuse (4.00)."""
    if material.extra:
        raise OscoreParametersInvalid(f"unrecognised OSCORE_Input_Material members {sorted(map(str, material.extra))}")
    if material.id is None or material.ms is None:
        raise OscoreParametersInvalid("OSCORE_Input_Material without id or ms")
    if not material.ms:
        raise OscoreParametersInvalid("empty master secret")
    if material.context_id is not None and len(material.context_id) > MAX_ID_CONTEXT_LENGTH:
        raise OscoreParametersInvalid("contextId too long")
    if material.alg is not None and material.alg not in AEAD_PARAMETERS:
        raise OscoreParametersInvalid(f"unsupported alg {material.alg!r}")
    return material


def _max_id_length(material: OscoreMaterial) -> int:
    """RFC 8613 §3.3: a Sender/Recipient ID is at most nonce length - 6 bytes for the AEAD algorithm."""
    alg = material.alg if isinstance(material.alg, int) else DEFAULT_AEAD
    return AEAD_PARAMETERS[alg][1] - 6


def _rights_text(rights: AifScope) -> str:
    try:
        return rights.to_spec()
    except ValueError:
        return repr(rights)


def _hex(value: bytes | None) -> str:
    return "-" if value is None else value.hex()
