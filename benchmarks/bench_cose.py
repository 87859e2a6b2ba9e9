"""CWT issue/verify throughput of ``ace_core.cwt`` against baselines measured in the same run.

For each token form (COSE_Sign1 ES256/EdDSA, COSE_Mac0 HMAC 256/64 and 256/256, COSE_Encrypt0 AES-CCM-16-64-128/256
and A128GCM/A256GCM, and an EdDSA COSE_Sign1 nested in an AES-CCM-16-64-128 COSE_Encrypt0) it measures, single
threaded:

* **ours**: ``ace_cwt.issue(Claims(...), ...)`` (building the claims object and CBOR included) and
  ``ace_cwt.verify(token, keyset, now=..., audience=..., issuer=...)`` (claims decoding and checks included);
* **raw**: the ``cryptography`` primitive on the same bytes (sign / HMAC / AEAD-encrypt; verify / HMAC+compare /
  decrypt), key objects created once;
* **python-cwt** (``cwt`` 3.x): ``cwt.encode`` / ``cwt.decode`` with the same claims and keys;
* **pycose**: its ``Sign1Message`` / ``Mac0Message`` / ``Enc0Message`` (informative).

Then it evaluates two goals: (1) ES256 and EdDSA issue and verify reach at least half the raw signature rate;
(2) no form is slower than half of python-cwt. It prints PASS/FAIL and exits 0 either way.

Run: ``python -m benchmarks.bench_cose [--seconds S | --quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import hmac
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM
from pycose.headers import IV, KID, Algorithm
from pycose.keys.curves import P256, Ed25519
from pycose.keys.ec2 import EC2Key
from pycose.keys.okp import OKPKey
from pycose.keys.symmetric import SymmetricKey
from pycose.messages.cosemessage import CoseMessage
from pycose.messages.enc0message import Enc0Message
from pycose.messages.mac0message import Mac0Message
from pycose.messages.sign1message import Sign1Message

from ace_core import cose as ace_cose
from ace_core import cwt as ace_cwt
from ace_core.keys import ALGORITHM_NAMES, CoseKey
from ace_core.pop import Confirmation, OscoreMaterial
from ace_core.registry import ConfirmationMethod, CoseAlgorithm, CwtClaim, OscoreInputMaterial
from benchmarks._timing import DEFAULT_BATCHES, Measurement, fmt_rate, fmt_ratio, measure, measure_interleaved

# python-cwt's import name is ``cwt``; ace_core.cwt is always referred to as ``ace_cwt`` here.
pycwt: Any
try:
    pycwt = importlib.import_module("cwt")
except ImportError:  # the [bench] extra is not installed
    pycwt = None

Op = Callable[[], object]

DEFAULT_SECONDS = 0.5
QUICK_SECONDS = 0.1

# The claims set (the same for every library). nbf is included because python-cwt inserts one when it is
# missing; passing it keeps the three libraries' payloads identical.
ISS = "coaps://as.example.com"
AUD = "coaps://lock-1.example.com"
SCOPE = "lock:open"
LIFETIME = 3600
OSC_ID = b"\x01\x02"
OSC_MS = bytes(range(16))

ROLES = ("ours", "raw", "pycwt", "pycose")
INTEROP_PYCWT_READS_OURS = "python-cwt reads ours"
INTEROP_OURS_READS_PYCWT = "ours reads python-cwt's"
ROLE_TITLES = {"ours": "ours", "raw": "raw primitive", "pycwt": "python-cwt", "pycose": "pycose"}
OPS = ("issue", "verify")


@dataclass(frozen=True, slots=True)
class Form:
    """A token form: its COSE structure and algorithm(s)."""

    name: str
    kind: str  # "sign1" | "mac0" | "encrypt0" | "nested"
    alg: CoseAlgorithm  # for "nested": the inner signature algorithm
    outer_alg: CoseAlgorithm | None = None  # for "nested": the AEAD of the outer COSE_Encrypt0


FORMS: tuple[Form, ...] = (
    Form("ES256 Sign1", "sign1", CoseAlgorithm.ES256),
    Form("EdDSA Sign1", "sign1", CoseAlgorithm.EDDSA),
    Form("HMAC 256/64 Mac0", "mac0", CoseAlgorithm.HMAC_256_64),
    Form("HMAC 256/256 Mac0", "mac0", CoseAlgorithm.HMAC_256_256),
    Form("AES-CCM-16-64-128 Enc0", "encrypt0", CoseAlgorithm.AES_CCM_16_64_128),
    Form("AES-CCM-16-64-256 Enc0", "encrypt0", CoseAlgorithm.AES_CCM_16_64_256),
    Form("A128GCM Enc0", "encrypt0", CoseAlgorithm.A128GCM),
    Form("A256GCM Enc0", "encrypt0", CoseAlgorithm.A256GCM),
    Form("EdDSA in AES-CCM-16-64-128", "nested", CoseAlgorithm.EDDSA, CoseAlgorithm.AES_CCM_16_64_128),
)
#: Goal 1 applies to these forms: the plain signed tokens.
SIGNATURE_FORMS = ("ES256 Sign1", "EdDSA Sign1")
GOAL_RATIO = 0.5

_NONCE_LENGTH = {
    CoseAlgorithm.AES_CCM_16_64_128: 13,
    CoseAlgorithm.AES_CCM_16_64_256: 13,
    CoseAlgorithm.A128GCM: 12,
    CoseAlgorithm.A256GCM: 12,
}
_HMAC_TAG_LENGTH = {CoseAlgorithm.HMAC_256_64: 8, CoseAlgorithm.HMAC_256_256: 32}


# --------------------------------------------------------------------------------------------------------------
# claims, built per token by every contender
# --------------------------------------------------------------------------------------------------------------


def _ours_claims(now: int) -> ace_cwt.Claims:
    return ace_cwt.Claims(
        iss=ISS,
        aud=AUD,
        exp=now + LIFETIME,
        nbf=now,
        iat=now,
        cti=os.urandom(16),
        scope=SCOPE,
        cnf=Confirmation(osc=OscoreMaterial(id=OSC_ID, ms=OSC_MS)),
    )


# Plain-int labels for the map handed to python-cwt and pycose (a caller of those libraries writes ints; IntEnum
# keys would also cost cbor2 extra time per key).
_ISS, _AUD, _EXP, _NBF, _IAT, _CTI, _CNF, _SCOPE = (
    int(CwtClaim[name]) for name in ("ISS", "AUD", "EXP", "NBF", "IAT", "CTI", "CNF", "SCOPE")
)
_OSC, _OSC_ID, _OSC_MS = int(ConfirmationMethod.OSC), int(OscoreInputMaterial.ID), int(OscoreInputMaterial.MS)


def _claims_map(now: int) -> dict[int, Any]:
    # Same keys, values and order as Claims.to_cbor_map(): iss aud exp nbf iat cti cnf scope.
    return {
        _ISS: ISS,
        _AUD: AUD,
        _EXP: now + LIFETIME,
        _NBF: now,
        _IAT: now,
        _CTI: os.urandom(16),
        _CNF: {_OSC: {_OSC_ID: OSC_ID, _OSC_MS: OSC_MS}},
        _SCOPE: SCOPE,
    }


def _check_map(m: object) -> None:
    """The iss/aud checks a resource server makes after decoding (ours makes them inside verify)."""
    if not isinstance(m, dict) or m.get(_ISS) != ISS or m.get(_AUD) != AUD:
        raise AssertionError("claims did not round-trip")


def _pycwt_claims(m: dict[int, Any]) -> Any:
    # python-cwt 3.3's claims validator rejects a cnf holding only OSCORE_Input_Material (cnf method 4,
    # RFC 9203 §3.2.1): "cnf(8) should include COSE_Key, Encrypted_COSE_Key, or kid." A Claims instance is
    # passed through cwt.encode without re-validation, so build one without running the validator.
    c = object.__new__(pycwt.Claims)
    c._claims = m
    c._claim_names = {}
    return c


# --------------------------------------------------------------------------------------------------------------
# contenders
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Contender:
    """One library's issue and verify operations for one form (``None`` = not available)."""

    issue: Op | None = None
    verify: Op | None = None
    token: bytes | None = None
    note: str = ""
    verify_keys: Any = None  # python-cwt: the keys its decode uses (for the interop check)


@dataclass
class FormSetup:
    form: Form
    payload_len: int
    contenders: dict[str, Contender]
    interop: dict[str, str] = field(default_factory=dict)


@dataclass
class _OurKeys:
    issue_kwargs: dict[str, Any]  # sign_key / mac_key / encrypt_key for ace_cwt.issue
    keyset: ace_cose.KeySet
    sign: CoseKey | None  # the private signing key (sign1, nested)
    secret: CoseKey | None  # the symmetric key (mac0, encrypt0, nested outer)


def _our_keys(form: Form) -> _OurKeys:
    if form.kind == "sign1":
        sk = CoseKey.generate(form.alg)
        return _OurKeys({"sign_key": sk}, ace_cose.KeySet([sk.public()]), sk, None)
    if form.kind == "nested":
        assert form.outer_alg is not None
        sk, ek = CoseKey.generate(form.alg), CoseKey.generate(form.outer_alg)
        return _OurKeys({"sign_key": sk, "encrypt_key": ek}, ace_cose.KeySet([ek, sk.public()]), sk, ek)
    k = CoseKey.generate(form.alg)
    role = "mac_key" if form.kind == "mac0" else "encrypt_key"
    return _OurKeys({role: k}, ace_cose.KeySet([k]), None, k)


def _ours(keys: _OurKeys) -> Contender:
    kwargs, keyset = keys.issue_kwargs, keys.keyset

    def issue() -> bytes:
        return ace_cwt.issue(_ours_claims(int(time.time())), **kwargs)

    token = issue()

    def verify() -> ace_cwt.Claims:
        return ace_cwt.verify(token, keyset, now=time.time(), audience=AUD, issuer=ISS)

    return Contender(issue, verify, token)


def _raw_signature(alg: CoseAlgorithm, tbs: bytes) -> tuple[Op, Op]:
    """Sign / verify ``tbs`` with a fresh key; key and algorithm objects are created here, once."""
    if alg == CoseAlgorithm.ES256:
        ec_sk = ec.generate_private_key(ec.SECP256R1())
        ec_pk = ec_sk.public_key()
        ecdsa = ec.ECDSA(hashes.SHA256())
        der = ec_sk.sign(tbs, ecdsa)
        return (lambda: ec_sk.sign(tbs, ecdsa)), (lambda: ec_pk.verify(der, tbs, ecdsa))
    ed_sk = ed25519.Ed25519PrivateKey.generate()
    ed_pk = ed_sk.public_key()
    sig = ed_sk.sign(tbs)
    return (lambda: ed_sk.sign(tbs)), (lambda: ed_pk.verify(sig, tbs))


def _raw_aead(alg: CoseAlgorithm, plaintext: bytes, aad: bytes) -> tuple[Op, Op]:
    """AEAD encrypt / decrypt with a fixed nonce (a benchmark only: never reuse a nonce for real)."""
    key = os.urandom(16 if alg in (CoseAlgorithm.AES_CCM_16_64_128, CoseAlgorithm.A128GCM) else 32)
    aead: AESCCM | AESGCM = AESGCM(key) if alg in (CoseAlgorithm.A128GCM, CoseAlgorithm.A256GCM) else AESCCM(key, 8)
    nonce = os.urandom(_NONCE_LENGTH[alg])
    ct = aead.encrypt(nonce, plaintext, aad)
    return (lambda: aead.encrypt(nonce, plaintext, aad)), (lambda: aead.decrypt(nonce, ct, aad))


def _raw(form: Form, keys: _OurKeys, token: bytes) -> Contender:
    """The primitive over the exact bytes our token signs, MACs or encrypts (structures taken from our token)."""
    payload, obj, _ = ace_cose.verify(token, keys.keyset)
    if form.kind == "sign1":
        tbs = cbor2.dumps(["Signature1", obj.protected_bytes, b"", payload])
        sign, check = _raw_signature(form.alg, tbs)
        return Contender(sign, check, note=f"sign/verify {len(tbs)} B Sig_structure")
    if form.kind == "mac0":
        tbm = cbor2.dumps(["MAC0", obj.protected_bytes, b"", payload])
        key, sha256, tag_len = os.urandom(32), hashes.SHA256(), _HMAC_TAG_LENGTH[form.alg]

        def mac() -> bytes:
            h = crypto_hmac.HMAC(key, sha256)
            h.update(tbm)
            return h.finalize()[:tag_len]

        tag = mac()

        def check() -> None:
            if not hmac.compare_digest(mac(), tag):
                raise AssertionError("HMAC mismatch")

        return Contender(mac, check, note=f"HMAC-SHA256 over {len(tbm)} B MAC_structure")
    aad = cbor2.dumps(["Encrypt0", obj.protected_bytes, b""])
    if form.kind == "encrypt0":
        enc, dec = _raw_aead(form.alg, payload, aad)
        return Contender(enc, dec, note=f"AEAD over {len(payload)} B (+{len(aad)} B aad)")
    # nested: payload is the inner COSE_Sign1; sign its Sig_structure, then encrypt it (and the reverse).
    assert form.outer_alg is not None
    _, inner, _ = ace_cose.verify(payload, keys.keyset)
    tbs = cbor2.dumps(["Signature1", inner.protected_bytes, b"", inner.payload])
    sign, check = _raw_signature(form.alg, tbs)
    enc, dec = _raw_aead(form.outer_alg, payload, aad)

    def sign_then_encrypt() -> None:
        sign()
        enc()

    def decrypt_then_verify() -> None:
        dec()
        check()

    return Contender(sign_then_encrypt, decrypt_then_verify, note="sign + AEAD encrypt; AEAD decrypt + verify")


def _pycwt(form: Form, keys: _OurKeys) -> Contender:
    if pycwt is None:
        return Contender(note="python-cwt is not installed (pip install -e '.[bench]')")
    key_cls = pycwt.COSEKey

    def symmetric(k: CoseKey) -> Any:
        assert k.alg is not None
        return key_cls.from_symmetric_key(k.secret(), alg=ALGORITHM_NAMES[CoseAlgorithm(k.alg)], kid=k.kid)

    def new_claims() -> Any:
        return _pycwt_claims(_claims_map(int(time.time())))

    issue: Op
    if form.kind == "sign1":
        assert keys.sign is not None
        sk = key_cls.from_pem(keys.sign.to_pem(), kid=keys.sign.kid)
        vks = [key_cls.from_pem(keys.sign.public().to_pem(), kid=keys.sign.kid)]

        def issue() -> Any:
            return pycwt.encode(new_claims(), sk)

    elif form.kind == "nested":
        assert keys.sign is not None and keys.secret is not None
        sk = key_cls.from_pem(keys.sign.to_pem(), kid=keys.sign.kid)
        ek = symmetric(keys.secret)
        vks = [ek, key_cls.from_pem(keys.sign.public().to_pem(), kid=keys.sign.kid)]

        def issue() -> Any:
            return pycwt.encode_and_encrypt(pycwt.encode_and_sign(new_claims(), sk), ek)

    else:
        assert keys.secret is not None
        k = symmetric(keys.secret)
        vks = [k]

        def issue() -> Any:
            return pycwt.encode(new_claims(), k)

    token = issue()
    assert isinstance(token, bytes)

    def verify() -> None:
        _check_map(pycwt.decode(token, vks))

    verify()
    return Contender(issue, verify, token, verify_keys=vks)


def _pycose(form: Form, keys: _OurKeys) -> Contender:
    def pycose_sign_keys(k: CoseKey) -> tuple[Any, Any]:
        assert k.d is not None and k.x is not None
        if k.alg == CoseAlgorithm.ES256:
            assert k.y is not None
            return EC2Key(crv=P256, d=k.d, x=k.x, y=k.y), EC2Key(crv=P256, x=k.x, y=k.y)
        return OKPKey(crv=Ed25519, d=k.d, x=k.x), OKPKey(crv=Ed25519, x=k.x)

    def sign1(payload: bytes, key: Any) -> bytes:
        return Sign1Message(phdr={Algorithm: int(form.alg)}, uhdr={KID: kid_s}, payload=payload, key=key).encode()

    def open_sign1(data: bytes, key: Any) -> bytes:
        msg: Any = CoseMessage.decode(data)
        msg.key = key
        if not msg.verify_signature():
            raise AssertionError("signature")
        return bytes(msg.payload)

    def enc0(payload: bytes, alg: CoseAlgorithm, key: Any) -> bytes:
        uhdr = {KID: kid_e, IV: os.urandom(_NONCE_LENGTH[alg])}
        return Enc0Message(phdr={Algorithm: int(alg)}, uhdr=uhdr, payload=payload, key=key).encode()

    def open_enc0(data: bytes, key: Any) -> bytes:
        msg: Any = CoseMessage.decode(data)
        msg.key = key
        return bytes(msg.decrypt())

    def new_payload() -> bytes:
        return cbor2.dumps(_claims_map(int(time.time())))

    kid_s = keys.sign.kid if keys.sign is not None else None
    kid_e = keys.secret.kid if keys.secret is not None else None
    issue: Op
    verify: Op
    if form.kind in ("sign1", "nested"):
        assert keys.sign is not None
        sk, vk = pycose_sign_keys(keys.sign)
    if form.kind in ("mac0", "encrypt0", "nested"):
        assert keys.secret is not None
        symk = SymmetricKey(k=keys.secret.secret())
    if form.kind == "sign1":

        def issue() -> bytes:
            return sign1(new_payload(), sk)

        def verify() -> None:
            _check_map(cbor2.loads(open_sign1(token, vk)))

    elif form.kind == "mac0":

        def issue() -> bytes:
            msg = Mac0Message(phdr={Algorithm: int(form.alg)}, uhdr={KID: kid_e}, payload=new_payload(), key=symk)
            return bytes(msg.encode())

        def verify() -> None:
            msg: Any = CoseMessage.decode(token)
            msg.key = symk
            if not msg.verify_tag():
                raise AssertionError("tag")
            _check_map(cbor2.loads(msg.payload))

    elif form.kind == "encrypt0":

        def issue() -> bytes:
            return enc0(new_payload(), form.alg, symk)

        def verify() -> None:
            _check_map(cbor2.loads(open_enc0(token, symk)))

    else:
        assert form.outer_alg is not None
        outer_alg = form.outer_alg

        def issue() -> bytes:
            return enc0(sign1(new_payload(), sk), outer_alg, symk)

        def verify() -> None:
            _check_map(cbor2.loads(open_sign1(open_enc0(token, symk), vk)))

    token = issue()
    assert isinstance(token, bytes)
    verify()
    return Contender(issue, verify, token)


def _guarded(build: Callable[[], Contender]) -> Contender:
    try:
        return build()
    except Exception as exc:  # a library that cannot do this form: report n/a with the reason
        return Contender(note=f"{type(exc).__name__}: {exc}")


def _setup(form: Form) -> FormSetup:
    keys = _our_keys(form)
    ours = _ours(keys)
    assert ours.token is not None and ours.verify is not None
    claims = ours.verify()
    assert isinstance(claims, ace_cwt.Claims) and claims.cnf is not None and claims.cnf.osc is not None
    payload_len = len(claims.to_cbor())
    contenders = {
        "ours": ours,
        "raw": _raw(form, keys, ours.token),
        "pycwt": _guarded(lambda: _pycwt(form, keys)),
        "pycose": _guarded(lambda: _pycose(form, keys)),
    }
    for role in ("raw", "pycwt", "pycose"):
        c = contenders[role]
        for op in (c.issue, c.verify):
            if op is not None:
                op()  # every operation runs once before it is timed
    setup = FormSetup(form, payload_len, contenders)
    pc = contenders["pycwt"]
    if pc.token is not None:
        ours_token, pc_token, pc_keys = ours.token, pc.token, pc.verify_keys
        setup.interop[INTEROP_PYCWT_READS_OURS] = _outcome(lambda: _check_map(pycwt.decode(ours_token, pc_keys)))
        setup.interop[INTEROP_OURS_READS_PYCWT] = _outcome(
            lambda: ace_cwt.verify(pc_token, keys.keyset, now=time.time(), audience=AUD, issuer=ISS)
        )
    return setup


def _token_len(token: bytes | None) -> str:
    return "n/a" if token is None else str(len(token))


def _outcome(check: Op) -> str:
    try:
        check()
    except Exception as exc:
        return f"FAIL ({type(exc).__name__}: {exc})"
    return "ok"


# --------------------------------------------------------------------------------------------------------------
# running and reporting
# --------------------------------------------------------------------------------------------------------------

Results = dict[str, dict[str, dict[str, Measurement | None]]]


def _rate(results: Results, form: str, role: str, op: str) -> float | None:
    m = results[form][role][op]
    return None if m is None else m.median


def _ace_core_revision() -> str:
    """The git commit of the tree being measured, with ``+dirty`` when ace_core/ has local changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(ace_cwt.__file__)))
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "ace_core"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "ace_core": _ace_core_revision()}
    for dist in ("cryptography", "pycose", "cwt", "cbor2"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = [f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths)]
    lines = [" | ".join(f.format(h) for f, h in zip(fmt, headers, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(f.format(c) for f, c in zip(fmt, r, strict=True)) for r in rows]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class GoalCheck:
    """One PASS/FAIL comparison: ours against a baseline for one form and operation."""

    goal: int
    form: str
    op: str
    ours_m: Measurement | None
    baseline_m: Measurement | None
    baseline_name: str

    @property
    def ours(self) -> float | None:
        return None if self.ours_m is None else self.ours_m.median

    @property
    def baseline(self) -> float | None:
        return None if self.baseline_m is None else self.baseline_m.median

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.baseline is None:
            return None
        return self.ours / self.baseline

    @property
    def ratio_range(self) -> tuple[float, float] | None:
        """The ratio's spread over the batches: (slowest ours / fastest baseline, fastest ours / slowest baseline)."""
        if self.ours_m is None or self.baseline_m is None:
            return None
        return self.ours_m.minimum / self.baseline_m.maximum, self.ours_m.maximum / self.baseline_m.minimum

    @property
    def status(self) -> str:
        r = self.ratio
        return "n/a" if r is None else ("PASS" if r >= GOAL_RATIO else "FAIL")

    def line(self) -> str:
        if self.ratio is None or self.ratio_range is None:
            return f"  n/a   {self.form:<27} {self.op:<6} {self.baseline_name} not available"
        assert self.ours is not None and self.baseline is not None
        overhead = 1e6 / self.ours - 1e6 / self.baseline
        lo, hi = self.ratio_range
        borderline = " BORDERLINE" if lo < GOAL_RATIO <= hi else ""
        return (
            f"  {self.status:<5} {self.form:<27} {self.op:<6} ours {self.ours:>8,.0f}/s ({1e6 / self.ours:6.1f} us)"
            f"  {self.baseline_name} {self.baseline:>8,.0f}/s ({1e6 / self.baseline:6.1f} us)"
            f"  ratio {self.ratio:.3f} [{lo:.2f}-{hi:.2f}] (need >= {GOAL_RATIO:.2f}){borderline};"
            f" ours {overhead:+.1f} us/op vs {self.baseline_name}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "goal": self.goal,
            "form": self.form,
            "op": self.op,
            "ours": self.ours,
            "baseline": self.baseline,
            "baseline_name": self.baseline_name,
            "ratio": self.ratio,
            "ratio_range": self.ratio_range,
            "status": self.status,
        }


def _goals(results: Results) -> list[GoalCheck]:
    checks = [
        GoalCheck(1, f, op, results[f]["ours"][op], results[f]["raw"][op], "raw")
        for f in SIGNATURE_FORMS
        if f in results
        for op in OPS
    ]
    checks += [
        GoalCheck(2, f, op, results[f]["ours"][op], results[f]["pycwt"][op], "python-cwt")
        for f in results
        for op in OPS
    ]
    return checks


def _report(setups: list[FormSetup], results: Results, seconds: float, skipped_validation_us: float | None) -> str:
    out: list[str] = []
    for op, title in (("issue", "Issue"), ("verify", "Verify")):
        rows = []
        for s in setups:
            f = s.form.name
            ours, raw, pyc = (_rate(results, f, r, op) for r in ("ours", "raw", "pycwt"))
            rows.append([f, fmt_rate(ours), fmt_rate(raw), fmt_ratio(ours, raw), fmt_rate(pyc), fmt_ratio(ours, pyc)])
        out.append(f"{title} (ops/s, median of {DEFAULT_BATCHES} batches; ratio > 1 means ours is faster)")
        out.append(
            _table(["form", f"ours {op}/s", "raw prim./s", "ours÷raw", f"python-cwt {op}/s", "ours÷python-cwt"], rows)
        )
        out.append("")

    rows = []
    for s in setups:
        f = s.form.name
        row = [f]
        for op in OPS:
            ours, pcs = _rate(results, f, "ours", op), _rate(results, f, "pycose", op)
            row += [fmt_rate(pcs), fmt_ratio(ours, pcs)]
        rows.append(row)
    out.append("pycose 1.1.0 message API (informative; see note e)")
    out.append(_table(["form", "pycose create/s", "ours÷pycose", "pycose verify/s", "ours÷pycose"], rows))
    out.append("")

    rows = []
    interop_failures: list[str] = []
    for s in setups:
        sizes = [_token_len(s.contenders[r].token) for r in ("ours", "pycwt", "pycose")]
        interop = []
        for name in (INTEROP_PYCWT_READS_OURS, INTEROP_OURS_READS_PYCWT):
            outcome = s.interop.get(name, "n/a")
            interop.append(outcome.split(" ", 1)[0])
            if outcome.startswith("FAIL"):
                interop_failures.append(f"{s.form.name}: {name}: {outcome}")
        rows.append([s.form.name, str(s.payload_len), *sizes, *interop])
    out.append("Token sizes (bytes; the same claims in every token) and interoperability with python-cwt")
    out.append(
        _table(
            ["form", "claims", "ours", "python-cwt", "pycose", INTEROP_PYCWT_READS_OURS, INTEROP_OURS_READS_PYCWT],
            rows,
        )
    )
    if interop_failures:
        out.append("interop failures (see note g):")
        out += [f"  {line}" for line in interop_failures]
    out.append("")

    checks = _goals(results)
    goal_titles = {
        1: "Goal 1: ES256 and EdDSA issue and verify at least 50% of the raw signature primitive's rate",
        2: "Goal 2: no form slower than half of python-cwt's rate (issue and verify)",
    }
    out.append("Goals")
    for g, title in goal_titles.items():
        mine = [c for c in checks if c.goal == g]
        passed = sum(c.status == "PASS" for c in mine)
        failed = sum(c.status == "FAIL" for c in mine)
        verdict = "FAIL" if failed else ("PASS" if passed else "n/a")
        out.append(f"{title}: {verdict} ({passed}/{len(mine)} checks pass)")
        out += [c.line() for c in mine]
    failures = [c for c in checks if c.status == "FAIL"]
    if failures:
        out.append("")
        out.append(f"*** {len(failures)} GOAL CHECK(S) FAILED ***")
        out += [f"***   goal {c.goal}: {c.form} {c.op}: ratio {c.ratio:.3f} < {GOAL_RATIO:.2f}" for c in failures]
    else:
        out.append("All goal checks pass.")
    out.append(
        "(ratio [a-b]: the median ratio and its spread from the batches' extremes; BORDERLINE: the spread straddles "
        "the goal, so a rerun may flip the verdict)"
    )
    out.append("")

    notes = [
        "Notes",
        "a. Claims: iss, aud, exp, nbf, iat, cti (16 random bytes, fresh per token), scope 'lock:open', cnf with "
        "OSCORE_Input_Material (id 2 B, ms 16 B). Every contender's issue builds its claims object/map and its "
        "CBOR per token. nbf is included because python-cwt inserts nbf when it is missing.",
        "b. ours verify: decode, verify/decrypt, decode and type-check every claim into Claims/Confirmation/"
        "OscoreMaterial, check iss, exp/nbf, aud. python-cwt decode checks exp/nbf (leeway 60 s) and kid; the bench "
        "adds the iss/aud comparison afterwards (as for pycose).",
        "c. raw primitive: cryptography on the exact bytes our token protects (Sig_structure, MAC_structure, or "
        "plaintext + Enc_structure aad), key and algorithm objects built once; ECDSA output stays DER (no r||s "
        "conversion); AEAD uses one fixed nonce (benchmark only), while ours draws a fresh IV with os.urandom per "
        "token. Nested: Ed25519 sign + AES-CCM encrypt, and AES-CCM decrypt + Ed25519 verify.",
        "d. python-cwt 3.3 refuses to encode a cnf holding only OSCORE_Input_Material (cnf method 4, RFC 9203 "
        "§3.2.1): its Claims validator raises 'cnf(8) should include COSE_Key, Encrypted_COSE_Key, or kid.' The bench "
        "therefore hands cwt.encode a cwt.Claims object built without running that validator (cwt.encode does not "
        "re-validate Claims objects), which favours python-cwt slightly"
        + (
            f": its validator costs about {skipped_validation_us:.1f} us per token on a same-shape claims set "
            "with a kid cnf."
            if skipped_validation_us is not None
            else "."
        )
        + " Nested: cwt.encode_and_sign, then cwt.encode_and_encrypt of the signed bytes; cwt.decode with "
        "[AEAD key, verification key]. Keys come from the same key material (COSEKey.from_pem / from_symmetric_key) "
        "with the same kid.",
        "e. pycose: ace_core.cose registers cryptography-backed ES256/ES384, EdDSA and constant-time HMAC into "
        "pycose's algorithm registry when it is imported, so pycose messages in this process use those (ES256 with "
        "pycose keys rebuilds the cryptography key from d/x/y per call; EdDSA with pycose keys falls back to "
        "pycose's own Ed25519 code). Stock pycose would sign ES256 with the pure-Python ecdsa package (~40x "
        "slower). AES-CCM/GCM are pycose's own.",
        f"f. Method: per measurement, warm-up/calibration, then {DEFAULT_BATCHES} timed batches totalling about "
        f"{seconds:g} s (time.perf_counter); the median batch rate is reported. The batches of the contenders of "
        "one (form, operation) run interleaved round-robin, so background load hits them alike. Single thread, gc "
        "enabled; the load average above shows how busy the machine was.",
    ]
    if interop_failures:
        notes.append(
            "g. Interop: ace_core puts every header parameter, the COSE_Encrypt0 IV included, in the protected "
            "bucket (RFC 9770 §3; RFC 9052 §3.1 allows either bucket). python-cwt 3.3 reads the IV only from the "
            "unprotected header (cwt/cose.py: nonce = u.get(5)), so it cannot decrypt such tokens."
        )
    for s in setups:
        for role in ("pycwt", "pycose"):
            c = s.contenders[role]
            if c.issue is None:
                notes.append(f"n/a: {ROLE_TITLES[role]} for {s.form.name}: {c.note}")
    out += notes
    return "\n".join(out)


def _measure_skipped_validation(seconds: float) -> float | None:
    if pycwt is None:
        return None
    m = _claims_map(int(time.time()))
    m[_CNF] = {int(ConfirmationMethod.KID): OSC_ID}  # the same shape with a cnf python-cwt accepts
    return measure(lambda: pycwt.Claims.validate(m), seconds).us_per_op


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_cose",
        description="CWT issue/verify rates of ace_core against raw cryptography, python-cwt and pycose.",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        help=f"wall time per measurement, split over {DEFAULT_BATCHES} batches (default {DEFAULT_SECONDS})",
    )
    parser.add_argument("--quick", action="store_true", help=f"same as --seconds {QUICK_SECONDS}")
    parser.add_argument("--json", metavar="FILE", help="also write the raw results as JSON to FILE")
    args = parser.parse_args(argv)
    seconds = QUICK_SECONDS if args.quick else args.seconds
    if seconds <= 0:
        parser.error("--seconds must be positive")

    versions = _versions()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("bench_cose: CWT issue/verify throughput, single thread")
    print(
        ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.2f}"
    )
    print(f"{seconds:g} s per measurement; {len(FORMS)} forms x {len(ROLES)} contenders x 2 operations")
    print(flush=True)

    started = time.perf_counter()
    setups: list[FormSetup] = []
    results: Results = {}
    for form in FORMS:
        print(f"  measuring {form.name} ...", file=sys.stderr, flush=True)
        setup = _setup(form)
        setups.append(setup)
        per_role: dict[str, dict[str, Measurement | None]] = {role: {} for role in ROLES}
        for op in OPS:
            # All contenders of one (form, operation) are measured together, their batches interleaved.
            fns = {role: fn for role in ROLES if (fn := getattr(setup.contenders[role], op)) is not None}
            measured = measure_interleaved(fns, seconds)
            for role in ROLES:
                per_role[role][op] = measured.get(role)
        results[form.name] = per_role
    skipped_validation_us = _measure_skipped_validation(seconds)
    print(_report(setups, results, seconds, skipped_validation_us))
    elapsed = time.perf_counter() - started
    print(f"\n(total {elapsed:.0f} s)")

    if args.json:
        doc = {
            "benchmark": "bench_cose",
            "versions": versions,
            "seconds_per_measurement": seconds,
            "batches": DEFAULT_BATCHES,
            "load_average": load,
            "results": {
                f: {role: {op: (m.as_dict() if m else None) for op, m in ops.items()} for role, ops in roles.items()}
                for f, roles in results.items()
            },
            "claims_bytes": {s.form.name: s.payload_len for s in setups},
            "token_bytes": {
                s.form.name: {r: (len(c.token) if c.token is not None else None) for r, c in s.contenders.items()}
                for s in setups
            },
            "interop": {s.form.name: s.interop for s in setups},
            "notes": {s.form.name: {r: c.note for r, c in s.contenders.items() if c.note} for s in setups},
            "pycwt_skipped_validation_us": skipped_validation_us,
            "goals": [c.as_dict() for c in _goals(results)],
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
