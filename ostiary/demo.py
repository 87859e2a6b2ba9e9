"""``ostiary demo``: the end-to-end scenario, printed for a person to read (what ``make demo`` runs).

It sets up a real authorization-server deployment in ``./.demo/as`` with the ``ostiary as`` commands a facility
operator would type, starts ``ostiary as serve`` (CoAP on UDP, HTTP on gunicorn, SQLite in WAL mode), and then
plays a phone app (the client SDK) and a door lock:

1. the app asks for a token over CoAP and over HTTP, with its pre-established client secret;
2. the lock verifies the proof-of-possession CWT with the key it shares with the AS, checks that the OSCORE
   input material inside equals what the app received (RFC 9203 §3.2), enforces the AIF scope, and asks the AS
   to introspect the token (RFC 9200 §5.9);
3. the AS refuses a wrong secret, a scope the policy does not grant and an unknown lock, and the lock refuses a
   tampered, an expired and a misdirected token, each with its RFC 9200 code.

The resource-server library (``/authz-info``, OSCORE) and the door-lock example arrive with their own issue; until
then the lock's checks are done here with :mod:`ace_core` directly, exactly as that library will do them.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from ace_core import cbor, cose, cwt
from ace_core.errors import InvalidClient, InvalidRequest, InvalidScope, OAuthError, TokenRejected
from ace_core.keys import CoseKey
from ace_core.pop import Confirmation
from ace_core.registry import AceProfile
from ace_core.scope import AifScope

LOCK = "front-door"
OTHER_LOCK = "server-room"
APP = "phone-app"
POLICY = f"""\
# Who may do what where (ostiary policies, allow-list form).
rules:
  - client: {APP}
    audience: {LOCK}
    scope: "/lock:GET,PUT /battery:GET"
    max_lifetime: 3600
"""
READY_TIMEOUT = 30.0
ISSUER = "coap://127.0.0.1/token"  # the default `issuer` setting of a new deployment


def _free_port(kind: int) -> int:
    """A free port below 32768 (ephemeral ports in TIME_WAIT live above it) for UDP or TCP on 127.0.0.1."""
    for port in range(20000 + os.getpid() % 5000, 32000):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


class _Demo:
    def __init__(self, out: TextIO, home: Path) -> None:
        self.out = out
        self.home = home
        self.failures = 0
        self.env = {**os.environ, "OSTIARY_HOME": str(home)}
        self.env.pop("OSTIARY_MASTER_KEY", None)
        self.env.pop("OSTIARY_DATABASE_URL", None)

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def check(self, label: str, ok: bool) -> None:
        self.failures += not ok
        self.say(f"    {'ok  ' if ok else 'FAIL'} {label}")

    def ostiary(self, *args: str, show: int = 0) -> str:
        """Run ``ostiary ARGS`` as a user would; print the command and the first ``show`` lines of its output."""
        self.say(f"    $ ostiary {shlex.join(args)}")
        done = subprocess.run(
            [sys.executable, "-m", "ostiary", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"ostiary {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
        for line in done.stdout.splitlines()[:show]:
            self.say(f"      {line}")
        return done.stdout


def run(out: TextIO = sys.stdout, *, home: Path | None = None) -> int:
    """Run the scenario, writing to ``out``. Returns the process exit status (0: every step behaved)."""
    home = home or Path.cwd() / ".demo" / "as"
    if home.exists():
        shutil.rmtree(home)
    demo = _Demo(out, home)
    say = demo.say
    say("Ostiary demo: a phone app gets an ACE-OAuth token from the authorization server for a door lock")
    say("=" * 96)

    say(f"\n1. The facility operator sets up the authorization server (state in {home})")
    demo.ostiary("as", "init", show=0)
    rs_out = demo.ostiary(
        "as", "rs", "add", LOCK, "--resources", "/lock:GET,PUT,POST /battery:GET /log:GET", "--introspection-secret"
    )
    lock_key = CoseKey.from_cbor(bytes.fromhex(re.search(r"hex:\s+([0-9a-f]+)", rs_out).group(1)))  # type: ignore[union-attr]
    lock_introspection_secret = re.search(r"introspection secret:\s+(\S+)", rs_out).group(1)  # type: ignore[union-attr]
    say(
        f"      (the lock is provisioned with the AS<->lock key, kid {lock_key.kid.hex() if lock_key.kid else '-'}, "
        "printed once)"
    )
    demo.ostiary("as", "rs", "add", OTHER_LOCK, "--resources", "/lock:GET,PUT")
    app_out = demo.ostiary(
        "as", "client", "add", APP, "--name", "Facility app", "--audience", LOCK, "--audience", OTHER_LOCK
    )
    app_secret = re.search(r"client_secret:\s+(\S+)", app_out).group(1)  # type: ignore[union-attr]
    say(f"      (the app is given its client secret, {len(app_secret)} characters, printed once; the AS keeps a hash)")
    (home / "policy.yaml").write_text(POLICY)
    say(f"    policy.yaml: {APP} may GET/PUT /lock and GET /battery on {LOCK}; nothing on {OTHER_LOCK}")

    coap_port, http_port = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
    say(f"\n2. The AS starts: CoAP on udp/{coap_port}, HTTP on tcp/{http_port}")
    say(f"    $ ostiary as serve --coap-port {coap_port} --http-port {http_port}")
    log = open(home / "serve.log", "w")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen(
        [sys.executable, "-m", "ostiary", "as", "serve", "--coap-port", str(coap_port), "--http-port", str(http_port)],
        env=demo.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(http_port, server)
        say(f"    ready (log: {home / 'serve.log'})")
        asyncio.run(_scenario(demo, coap_port, http_port, app_secret, lock_key, lock_introspection_secret))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            code = -9
        log.close()
    say("\n6. The AS stops on SIGTERM")
    demo.check(f"ostiary as serve exited with status {code}", code == 0)
    log_text = (home / "serve.log").read_text()
    demo.check(
        "no secret appears in the server's log",
        app_secret not in log_text and lock_introspection_secret not in log_text,
    )
    say("")
    if demo.failures:
        say(f"{demo.failures} step(s) did not behave as expected.")
        return 1
    say("Every step behaved as RFC 9200 says. `make test` runs the full suite; `make bench` the benchmarks.")
    return 0


def _wait_ready(http_port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"ostiary as serve exited with status {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", http_port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the AS did not start listening in time")


async def _scenario(
    demo: _Demo, coap_port: int, http_port: int, secret: str, lock_key: CoseKey, introspection_secret: str
) -> None:
    from client_sdk.client import AceClient

    say, check = demo.say, demo.check
    coap_as = f"coap://127.0.0.1:{coap_port}/token"
    http_as = f"http://127.0.0.1:{http_port}/token"
    wanted = AifScope.parse_spec("/lock:GET,PUT")

    say("\n3. The phone app asks for a token (client SDK; RFC 9200 §5.8, client_credentials, OSCORE profile)")
    app = AceClient(coap_as, APP, secret)
    http_app = AceClient(http_as, APP, secret)
    try:
        info = await app.request_token(LOCK, wanted.to_cbor())
        check(
            f"over CoAP: 2.01 with a {len(info.access_token)}-byte token, expires_in {info.expires_in} s, "
            f"ace_profile {AceProfile(info.ace_profile).name if info.ace_profile else '-'}",
            True,
        )
        app_cnf = Confirmation.from_cbor_map(dict(info.cnf or {}))
        osc_id = app_cnf.osc.id.hex() if app_cnf.osc and app_cnf.osc.id else "?"
        check(
            f"the response carries OSCORE input material (id {osc_id}, 16-byte master secret) for the app",
            app_cnf.osc is not None,
        )
        http_info = await http_app.request_token(LOCK, wanted.to_cbor())
        check(f"over HTTP (gunicorn): 200 with a {len(http_info.access_token)}-byte token", True)

        say("\n4. The lock checks the token as RFC 9200 §5.10.1.1 says (the RS library does this at /authz-info)")
        keys = cose.KeySet([lock_key])
        now = time.time()
        claims = cwt.verify(info.access_token, keys, now=now, audience=LOCK, issuer=ISSUER)
        scope = AifScope.from_cbor(claims.scope) if isinstance(claims.scope, bytes) else AifScope()
        check(f"decrypted and verified with the AS<->lock key: aud={claims.aud}, scope {scope.to_spec()}", True)
        check(
            "the OSCORE material in the token equals what the app received (RFC 9203 §3.2)",
            claims.cnf is not None and claims.cnf.osc == app_cnf.osc,
        )
        check("PUT /lock (unlock) is covered", scope.permits("PUT", "/lock"))
        check("POST /lock is not: method not covered -> 4.05", not scope.permits("POST", "/lock"))
        check("GET /log is not: resource not covered -> 4.03", not scope.covers_path("/log"))
        introspection = await _introspect(http_port, LOCK, introspection_secret, info.access_token)
        check(
            f"introspection (RFC 9200 §5.9) says active={introspection.get('active')} "
            f"for client {introspection.get('client_id')}",
            introspection.get("active") is True,
        )

        say("\n5. What is refused, and how")
        impostor = AceClient(coap_as, APP, "not-the-secret")
        try:
            await _refused(demo, impostor.request_token(LOCK, wanted.to_cbor()), InvalidClient, "a wrong client secret")
        finally:
            await impostor.close()
        await _refused(
            demo,
            app.request_token(LOCK, AifScope.parse_spec("/log:GET").to_cbor()),
            InvalidScope,
            "a scope the policy does not grant (GET /log)",
        )
        await _refused(
            demo,
            app.request_token(OTHER_LOCK, wanted.to_cbor()),
            InvalidScope,
            f"a lock the policy does not cover ({OTHER_LOCK})",
        )
        await _refused(demo, app.request_token("garage", wanted.to_cbor()), InvalidRequest, "an unknown lock")
        token = info.access_token
        tampered = bytearray(token)
        tampered[len(tampered) // 2] ^= 0x01
        _lock_refuses(demo, "the token with one byte flipped", bytes(tampered), keys, now, LOCK, "4.01")
        _lock_refuses(demo, "the token after it expired", token, keys, now + (info.expires_in or 0), LOCK, "4.01")
        _lock_refuses(
            demo, f"the token shown to '{OTHER_LOCK}' (holding the same key)", token, keys, now, OTHER_LOCK, "4.03"
        )
        _lock_refuses(demo, "bytes that are not a token", cbor.dumps({"open": True}), keys, now, LOCK, "4.00")
    finally:
        await app.close()
        await http_app.close()


async def _refused(demo: _Demo, call: object, expected: type[OAuthError], label: str) -> None:
    try:
        await call  # type: ignore[misc]
    except OAuthError as exc:
        demo.check(
            f"the AS refuses {label}: {type(exc).__name__} ({exc.status.coap_dotted})", isinstance(exc, expected)
        )
        return
    demo.check(f"the AS refuses {label}: it did not", False)


def _lock_refuses(
    demo: _Demo, label: str, token: bytes, keys: cose.KeySet, now: float, audience: str, code: str
) -> None:
    try:
        cwt.verify(token, keys, now=now, audience=audience)
    except TokenRejected as exc:
        demo.check(
            f"the lock refuses {label}: {exc.status.coap_dotted} {type(exc).__name__}", exc.status.coap_dotted == code
        )
        return
    demo.check(f"the lock refuses {label}: it accepted it", False)


async def _introspect(http_port: int, audience: str, secret: str, token: bytes) -> dict[str, object]:
    import httpx

    from ace_core.keys import b64url_encode

    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(
            f"http://127.0.0.1:{http_port}/introspect", auth=(audience, secret), data={"token": b64url_encode(token)}
        )
        body: dict[str, object] = r.json()
        return body
