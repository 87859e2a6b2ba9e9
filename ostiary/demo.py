"""``ostiary demo``: the end-to-end scenario, printed for a person to read (what ``make demo`` runs).

It sets up a real deployment in ``./.demo`` with the commands a facility operator would type -- an
authorization server (``ostiary as ...``) and a door lock (``ostiary lock ...``) -- starts both as separate
processes on loopback (``ostiary as serve``: CoAP + HTTP on gunicorn, SQLite in WAL mode; ``ostiary lock
serve``: the reference door lock built on the resource-server library), and then plays phone apps with the
client SDK in this process:

1. an app without a token is refused by the lock with 4.01 and AS Request Creation Hints (RFC 9200 §5.2, §5.3);
2. the app obtains a proof-of-possession token (RFC 9200 §5.8, OSCORE profile RFC 9203), uploads it to the lock's
   ``/authz-info``, derives the OSCORE context and unlocks the door with a protected PUT;
3. a second app holding a token for another door is refused (4.01), an expired token is refused (4.01), a scope
   the policy does not grant is refused by the AS, and a resource or method the token does not cover is refused
   by the lock (4.03 / 4.05);
4. both servers stop cleanly on SIGTERM and no secret appears in their logs.
"""

from __future__ import annotations

import asyncio
import base64
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
from typing import IO, TextIO

from ace_core.errors import InvalidScope, OAuthError
from ace_core.messages import AuthzInfoRequest
from ace_core.registry import ContentFormat
from ace_core.scope import AifScope

FRONT_DOOR = "front-door"
SERVER_ROOM = "server-room"
APP = "phone-app"
VISITOR = "visitor-app"
CONTRACTOR = "contractor-app"
CLEANER = "cleaner-app"
MANAGER = "frank"  # the facility manager who approves the cleaner's access
SHORT_LIFETIME = 2  # seconds: the contractor's tokens, to show expiry
ISSUER = "coap://127.0.0.1/token"  # the default `issuer` setting of a new deployment
READY_TIMEOUT = 30.0
POLICY = f"""\
# Who may do what where (allow-list policy; see `ostiary as --help`).
rules:
  - client: {APP}
    audience: {FRONT_DOOR}
    scope: "/lock:GET,PUT /battery:GET"
  - client: {VISITOR}
    audience: {SERVER_ROOM}
    scope: "/lock:GET,PUT"
  - client: {CONTRACTOR}
    audience: {FRONT_DOOR}
    scope: "/lock:PUT"
    max_lifetime: {SHORT_LIFETIME}
  - id: cleaner-needs-consent
    effect: consent
    client: {CLEANER}
    audience: {FRONT_DOOR}
    scope: "/lock:PUT"
    approvers: {{users: [{MANAGER}]}}
"""


def _free_port(kind: int, avoid: int = 0) -> int:
    """A free port below 32768 (ephemeral ports in TIME_WAIT live above it) on 127.0.0.1."""
    for port in range(20000 + os.getpid() % 5000, 32000):
        if port == avoid:
            continue
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
        self.env = {**os.environ, "OSTIARY_HOME": str(home / "as")}
        for name in ("OSTIARY_MASTER_KEY", "OSTIARY_DATABASE_URL"):
            self.env.pop(name, None)
        self.processes: list[tuple[str, subprocess.Popen[bytes], IO[str], Path]] = []

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def check(self, label: str, ok: bool) -> None:
        self.failures += not ok
        self.say(f"    {'ok  ' if ok else 'FAIL'} {label}")

    def ostiary(self, *args: str, show: int = 0, shown: tuple[str, ...] | None = None) -> str:
        """Run ``ostiary ARGS`` as a user would; print the command (``shown`` replaces secret arguments)."""
        self.say(f"    $ ostiary {shlex.join(shown or args)}")
        done = subprocess.run(
            [sys.executable, "-m", "ostiary", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"ostiary {args[0]} {args[1]} failed: {done.stderr.strip() or done.stdout.strip()}")
        for line in done.stdout.splitlines()[:show]:
            self.say(f"      {line}")
        return done.stdout

    def start(self, name: str, *args: str, wait_for: tuple[int, int]) -> None:
        """Start ``ostiary ARGS`` in the background, logging to ``<home>/<name>.log``; wait until it listens."""
        self.say(f"    $ ostiary {shlex.join(args)} &")
        log_path = self.home / f"{name}.log"
        log = open(log_path, "w")  # noqa: SIM115 - closed in stop_all()
        process = subprocess.Popen(
            [sys.executable, "-m", "ostiary", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes.append((name, process, log, log_path))
        _wait_ready(process, *wait_for)

    def stop_all(self) -> dict[str, int]:
        codes: dict[str, int] = {}
        for name, process, log, _ in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                codes[name] = process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = -9
            log.close()
        return codes


def _wait_ready(process: subprocess.Popen[bytes], kind: int, port: int) -> None:
    """Wait until ``port`` is taken (TCP: accepts; UDP: cannot be bound any more)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"a server exited with status {process.returncode} (see its log in .demo/)")
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                if kind == socket.SOCK_STREAM:
                    s.settimeout(0.5)
                    s.connect(("127.0.0.1", port))
                    return
                s.bind(("127.0.0.1", port))
            except OSError:
                if kind == socket.SOCK_DGRAM:
                    return
        time.sleep(0.1)
    raise RuntimeError("a server did not start listening in time")


def _capture(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"unexpected output, no {pattern!r}")
    return match.group(1)


def run(out: TextIO = sys.stdout, *, home: Path | None = None) -> int:
    """Run the scenario, writing to ``out``. Returns the process exit status (0: every step behaved)."""
    home = home or Path.cwd() / ".demo"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    demo = _Demo(out, home)
    say = demo.say
    say("Ostiary demo: phone apps, an ACE-OAuth authorization server and a door lock, on loopback")
    say("=" * 96)

    say(f"\n1. The facility operator sets up the authorization server (state in {home / 'as'})")
    demo.ostiary("as", "init")
    rs_out = demo.ostiary("as", "rs", "add", FRONT_DOOR, "--resources", "/lock:GET,PUT /battery:GET /log:GET")
    lock_key = _capture(r"hex:\s+([0-9a-f]+)", rs_out)
    say("      (prints the AS<->lock key once, for provisioning the lock)")
    demo.ostiary("as", "rs", "add", SERVER_ROOM, "--resources", "/lock:GET,PUT")
    secrets: dict[str, str] = {}
    for client, door in ((APP, FRONT_DOOR), (VISITOR, SERVER_ROOM), (CONTRACTOR, FRONT_DOOR), (CLEANER, FRONT_DOOR)):
        printed = demo.ostiary("as", "client", "add", client, "--audience", door)
        secrets[client] = _capture(r"client_secret:\s+(\S+)", printed)
    say("      (each app receives its client secret once; the AS keeps only a hash)")
    demo.env["OSTIARY_DEMO_MANAGER_PASSWORD"] = base64.urlsafe_b64encode(os.urandom(12)).decode()
    demo.ostiary("user", "add", MANAGER, "--role", "manager", "--password-env", "OSTIARY_DEMO_MANAGER_PASSWORD")
    say("      (a facility manager's account; the password is hashed with Argon2id)")
    (home / "as" / "policy.yaml").write_text(POLICY)
    say(f"    policy.yaml: {APP} may GET/PUT /lock and GET /battery at {FRONT_DOOR}; {VISITOR} may open")
    say(f"                 {SERVER_ROOM} only; {CONTRACTOR} may PUT /lock at {FRONT_DOOR} for {SHORT_LIFETIME} s;")
    say(f"                 {CLEANER} may PUT /lock at {FRONT_DOOR} once {MANAGER} consents")

    coap_port = _free_port(socket.SOCK_DGRAM)
    http_port = _free_port(socket.SOCK_STREAM)
    lock_port = _free_port(socket.SOCK_DGRAM, avoid=coap_port)
    as_uri = f"coap://127.0.0.1:{coap_port}/token"
    lock_uri = f"coap://127.0.0.1:{lock_port}"
    try:
        say("\n2. The authorization server and the door lock start (separate processes)")
        demo.start(
            "as",
            "as",
            "serve",
            "--coap-port",
            str(coap_port),
            "--http-port",
            str(http_port),
            wait_for=(socket.SOCK_STREAM, http_port),
        )
        lock_config = home / "lock.toml"
        demo.ostiary(
            "lock",
            "init-config",
            "--audience",
            FRONT_DOOR,
            "--issuer",
            ISSUER,
            "--as-uri",
            as_uri,
            "--key",
            lock_key,
            "--port",
            str(lock_port),
            "--out",
            str(lock_config),
            shown=(
                "lock",
                "init-config",
                "--audience",
                FRONT_DOOR,
                "--issuer",
                ISSUER,
                "--as-uri",
                as_uri,
                "--key",
                "<AS<->lock key>",
                "--port",
                str(lock_port),
                "--out",
                str(lock_config),
            ),
        )
        demo.start("lock", "lock", "serve", "--config", str(lock_config), wait_for=(socket.SOCK_DGRAM, lock_port))
        say(f"    AS on {as_uri} (and http://127.0.0.1:{http_port}/token); lock on {lock_uri}")
        asyncio.run(_story(demo, as_uri, lock_uri, secrets))
    finally:
        codes = demo.stop_all()
    say("\n7. Both stop on SIGTERM")
    for name, code in codes.items():
        demo.check(f"{name} exited with status {code}", code == 0)
    logs = "".join(path.read_text() for _, _, _, path in demo.processes)
    demo.check(
        "no client secret and no key appears in their logs",
        not any(secret in logs for secret in secrets.values()) and lock_key not in logs,
    )
    say("")
    if demo.failures:
        say(f"{demo.failures} step(s) did not behave as expected (logs in {home}).")
        return 1
    say(
        "Every step behaved as RFC 9200 and RFC 9203 say. `make test` runs the full suite; `make bench` the benchmarks."
    )
    return 0


async def _story(demo: _Demo, as_uri: str, lock_uri: str, secrets: dict[str, str]) -> None:
    from client_sdk.client import AceClient
    from client_sdk.errors import TokenUploadFailed
    from client_sdk.transport.coap import CoapTransport

    say, check = demo.say, demo.check
    open_door = AifScope.parse_spec("/lock:GET,PUT")

    say("\n3. The phone app opens the front door")
    app = AceClient(as_uri, APP, secrets[APP])
    try:
        hints = await app.discover(lock_uri + "/lock", "PUT")
        hinted_scope = AifScope.from_cbor(hints.scope) if isinstance(hints.scope, bytes) else hints.scope
        check(
            f"without a token: 4.01 with hints: AS {hints.as_uri}, audience {hints.audience}, "
            f"scope {hinted_scope.to_spec() if isinstance(hinted_scope, AifScope) else hinted_scope}",
            hints.audience == FRONT_DOOR,
        )
        session = await app.connect(lock_uri, audience=FRONT_DOOR, scope=open_door)
        check(
            f"token for {session.audience} uploaded to /authz-info, OSCORE context derived (recipient ids: app "
            f"h'{session.client_recipient_id.hex()}', lock h'{session.server_recipient_id.hex()}'), valid "
            f"{int(session.seconds_left)} s",
            True,
        )
        unlocked = await app.request("PUT", lock_uri + "/lock", b"unlock")
        check(f"PUT /lock 'unlock' over OSCORE: {unlocked.status_text()}", unlocked.ok and unlocked.protected)
        state = await app.request("GET", lock_uri + "/lock")
        check(f"GET /lock: {state.status_text()} {state.payload.decode(errors='replace')}", state.ok)
        battery = await app.request("GET", lock_uri + "/battery")
        check(
            f"GET /battery is outside this token's scope: {battery.status_text()} (4.03)",
            battery.status_text() == "4.03",
        )
        post = await app.request("POST", lock_uri + "/lock", b"lock")
        check(f"POST /lock is outside it too: {post.status_text()} (4.05)", post.status_text() == "4.05")
        try:
            await app.request_token(FRONT_DOOR, AifScope.parse_spec("/log:GET").to_cbor())
            check("the AS refuses GET /log (not in the policy): it did not", False)
        except OAuthError as exc:
            check(
                f"the AS refuses a token for GET /log (not in the policy): {type(exc).__name__} "
                f"({exc.status.coap_dotted})",
                isinstance(exc, InvalidScope),
            )
    finally:
        await app.close()

    say("\n4. A visitor's app, allowed only into the server room, tries the front door")
    visitor = AceClient(as_uri, VISITOR, secrets[VISITOR])
    try:
        await visitor.connect(lock_uri, audience=SERVER_ROOM, scope=open_door)
        check("the front door accepted a server-room token!", False)
    except TokenUploadFailed as exc:
        status = _dotted(exc.response_status) if exc.response_status else "no answer"
        # The token is encrypted for the server-room lock: the front door cannot even open it (RFC 9200 §5.10.1.1:
        # a failed security wrapper is 4.01; 4.03 is for tokens it can read whose aud is not its own).
        check(
            f"its server-room token is refused at /authz-info: {status} (it is encrypted for another lock)",
            exc.response_status == 401,
        )
    finally:
        await visitor.close()

    await _consent(demo, as_uri, lock_uri, secrets)

    say(f"\n6. A contractor's token expires after {SHORT_LIFETIME} s")
    contractor = AceClient(as_uri, CONTRACTOR, secrets[CONTRACTOR])
    transport = CoapTransport()
    try:
        info = await contractor.request_token(FRONT_DOOR, AifScope.parse_spec("/lock:PUT").to_cbor())
        check(
            f"token issued with expires_in {info.expires_in} s (the policy's limit)", info.expires_in == SHORT_LIFETIME
        )
        await asyncio.sleep(SHORT_LIFETIME + 1)
        upload = AuthzInfoRequest(access_token=info.access_token, nonce1=os.urandom(8), ace_client_recipientid=b"\x07")
        answer = await transport.post(lock_uri + "/authz-info", upload.to_cbor(), content_format=ContentFormat.ACE_CBOR)
        check(f"uploaded after it expired: {answer.status_text()} (4.01)", answer.status_text() == "4.01")
    finally:
        await transport.close()
        await contractor.close()


async def _consent(demo: _Demo, as_uri: str, lock_uri: str, secrets: dict[str, str]) -> None:
    from client_sdk.client import AceClient

    say, check = demo.say, demo.check
    put_lock = AifScope.parse_spec("/lock:PUT")
    say("\n5. A cleaner's app needs the facility manager's consent")
    cleaner = AceClient(as_uri, CLEANER, secrets[CLEANER])
    try:
        try:
            await cleaner.request_token(FRONT_DOOR, put_lock.to_cbor())
            check("the AS issued a token without consent", False)
            return
        except OAuthError as exc:
            uri = exc.uri or ""
            check(
                f"first request refused: {type(exc).__name__} ({exc.status.coap_dotted}); the AS recorded an access "
                f"request, error_uri {uri}",
                isinstance(exc, InvalidScope) and "/access-requests/" in uri,
            )
        request_id = uri.rsplit("/", 1)[-1]
        demo.ostiary("consent", "list", "--as", MANAGER, show=3)
        demo.ostiary("consent", "approve", request_id, "--as", MANAGER, "--max-lifetime", "600", show=1)
        await cleaner.connect(lock_uri, audience=FRONT_DOOR, scope=put_lock)
        unlocked = await cleaner.request("PUT", lock_uri + "/lock", b"unlock")
        check(f"after the approval: token issued, PUT /lock over OSCORE: {unlocked.status_text()}", unlocked.ok)
        demo.ostiary("consent", "revoke", request_id, "--as", MANAGER, show=1)
        try:
            await cleaner.request_token(FRONT_DOOR, put_lock.to_cbor())
            check("after the revocation the AS still issued a token", False)
        except OAuthError as exc:
            check(
                f"after the revocation: the next token request is refused ({type(exc).__name__}); the token issued "
                "under the grant is marked revoked (introspection: active false)",
                isinstance(exc, InvalidScope),
            )
    finally:
        await cleaner.close()


def _dotted(status: int) -> str:
    return f"{status // 100}.{status % 100:02d}"
