"""``ostiary demo``: the end-to-end scenario, printed for a person to read (what ``make demo`` runs).

It sets up a real deployment in ``./.demo`` with the commands a device maker, an installer and a facility
operator would type, starts the authorization server and a bootstrapped door lock as separate processes on
loopback, and then plays phone apps with the client SDK in this process:

1. the operator creates the authorization server's home (``ostiary as init``); the device maker makes a factory
   batch of three L1 locks against it (``ostiary factory batch``: bootstrap credentials, sealed bundles, a
   manifest, the batch key) and the installer claims one for site building-a with the enrolment id on its label
   (``ostiary factory claim``); its serial number, e.g. ``L1-00000001``, is the front door's audience at the AS;
2. the operator registers the apps, a manager, a hand-registered server-room lock and the policy;
3. ``ostiary as serve`` starts (CoAP + HTTP on gunicorn, SQLite in WAL mode, and the LwM2M bootstrap server over
   DTLS on a free UDP port, the one the batch's bundles point at) and the front door lock starts from its factory
   bundle (``ostiary lock serve --bootstrap``): it bootstraps its operational key (generation 1) over DTLS with
   its bootstrap PSK and registers at the AS (``ostiary as rs keys`` / ``rs show``);
4. an app without a token is refused by the lock with 4.01 and AS Request Creation Hints (RFC 9200 §5.2, §5.3);
   the app obtains a proof-of-possession token (RFC 9200 §5.8, OSCORE profile RFC 9203), uploads it to the lock's
   ``/authz-info``, derives the OSCORE context and unlocks the door with a protected PUT;
5. a visitor's token for another door is refused (4.01), a scope the policy does not grant is refused by the AS,
   and a resource or method the token does not cover is refused by the lock (4.03 / 4.05); a cleaner's app gets
   a token once the facility manager consents, and none after the consent is revoked; an expired token is
   refused (4.01);
6. the operator rotates the lock's key (``ostiary as rs rotate-key``): the lock fetches generation 2 at its next
   pull (every 2 s here), the AS makes tokens with it and a new token opens the door;
7. both servers stop cleanly on SIGTERM and no secret (client secrets, AS<->lock keys, the bootstrap PSK, the
   batch key) appears in their logs.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import IO, TextIO

from ace_core.errors import InvalidScope, OAuthError
from ace_core.messages import AuthzInfoRequest
from ace_core.registry import ContentFormat
from ace_core.scope import AifScope

SERVER_ROOM = "server-room"
APP = "phone-app"
VISITOR = "visitor-app"
CONTRACTOR = "contractor-app"
CLEANER = "cleaner-app"
MANAGER = "frank"  # the facility manager who approves the cleaner's access
SITE = "building-a"
MODEL = "L1"
BATCH_SIZE = 3
SHORT_LIFETIME = 2  # seconds: the contractor's tokens, to show expiry
PULL_INTERVAL = 2  # seconds: how often the bootstrapped lock asks the AS for a rotated key
ISSUER = "coap://127.0.0.1/token"  # the default `issuer` setting of a new deployment
READY_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0


class DemoError(RuntimeError):
    """A step of the demo could not run (a command failed, a server did not start); the message says which."""


def _policy(front_door: str) -> str:
    return f"""\
# Who may do what where (allow-list policy; see `ostiary as --help`). {front_door} is the front door lock.
rules:
  - client: {APP}
    audience: {front_door}
    scope: "/lock:GET,PUT /battery:GET"
  - client: {VISITOR}
    audience: {SERVER_ROOM}
    scope: "/lock:GET,PUT"
  - client: {CONTRACTOR}
    audience: {front_door}
    scope: "/lock:PUT"
    max_lifetime: {SHORT_LIFETIME}
  - id: cleaner-needs-consent
    effect: consent
    client: {CLEANER}
    audience: {front_door}
    scope: "/lock:PUT"
    approvers: {{users: [{MANAGER}]}}
"""


def _free_port(kind: int, avoid: Collection[int] = ()) -> int:
    """A free port below 32768 (ephemeral ports in TIME_WAIT live above it) on 127.0.0.1."""
    for port in range(20000 + os.getpid() % 5000, 32000):
        if port in avoid:
            continue
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise DemoError("no free port below 32768")


class _Demo:
    def __init__(self, out: TextIO, home: Path) -> None:
        self.out = out
        self.home = home
        self.failures = 0
        self.env = {**os.environ, "OSTIARY_HOME": str(home / "as")}
        for name in list(self.env):  # the demo's own deployment: no settings from the caller's environment
            if name.startswith("OSTIARY_") and name not in ("OSTIARY_HOME", "OSTIARY_DEBUG"):
                del self.env[name]
        self.processes: list[tuple[str, subprocess.Popen[bytes], IO[str], Path]] = []

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def check(self, label: str, ok: bool) -> None:
        self.failures += not ok
        self.say(f"    {'ok  ' if ok else 'FAIL'} {label}")

    def _run(self, args: tuple[str, ...]) -> str:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "ostiary", *args],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise DemoError(f"ostiary {shlex.join(args)} did not finish within {COMMAND_TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            command = " ".join(itertools.takewhile(lambda arg: not arg.startswith("-"), args[:3]))
            said = (done.stderr.strip() or done.stdout.strip() or f"status {done.returncode}").splitlines()[-1]
            raise DemoError(f"ostiary {command} failed: {said.removeprefix('ostiary: error: ')}")
        return done.stdout

    def _show(self, output: str, show: int | tuple[str, ...]) -> None:
        """Print the first ``show`` lines of ``output``, or the lines that start with one of ``show``."""
        lines = output.splitlines()
        picked = lines[:show] if isinstance(show, int) else [line for line in lines if line.startswith(show)]
        for line in picked:
            self.say(f"      {line}")

    def ostiary(self, *args: str, show: int | tuple[str, ...] = 0, shown: tuple[str, ...] | None = None) -> str:
        """Run ``ostiary ARGS`` as a user would; print the command (``shown`` replaces secret arguments)."""
        self.say(f"    $ ostiary {shlex.join(shown or args)}")
        output = self._run(args)
        self._show(output, show)
        return output

    def ostiary_until(
        self, *args: str, ready: Callable[[str], bool], what: str, show: int | tuple[str, ...] = 0
    ) -> str:
        """Run ``ostiary ARGS`` every half second until ``ready(output)`` (at most :data:`READY_TIMEOUT`); print the
        command and the output that satisfied it."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            self.poll_processes()
            output = self._run(args)
            if ready(output):
                break
            if time.monotonic() > deadline:
                raise DemoError(f"{what} did not happen within {READY_TIMEOUT:.0f} s (logs in {self.home})")
            time.sleep(0.5)
        self.say(f"    $ ostiary {shlex.join(args)}")
        self._show(output, show)
        return output

    def start(self, name: str, *args: str, wait_for: tuple[int, int]) -> None:
        """Start ``ostiary ARGS`` in the background, logging to ``<home>/<name>.log``; wait until it listens."""
        self.say(f"    $ ostiary {shlex.join(args)} &")
        log_path = self.home / f"{name}.log"
        log = open(log_path, "w")  # noqa: SIM115 - closed in stop_all()
        process = subprocess.Popen(
            [sys.executable, "-m", "ostiary", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes.append((name, process, log, log_path))
        _wait_ready(process, *wait_for, log_path)

    def poll_processes(self) -> None:
        """Fail fast when a server has exited."""
        for name, process, _, log_path in self.processes:
            if process.poll() is not None:
                raise DemoError(f"{name} exited with status {process.returncode} (see {log_path})")

    def log_line(self, name: str, pattern: str) -> str:
        """The first line of ``<home>/<name>.log`` that matches ``pattern``, waiting for it (bounded)."""
        path = self.home / f"{name}.log"
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            text = path.read_text(errors="replace") if path.exists() else ""
            found = next((line for line in text.splitlines() if re.search(pattern, line)), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise DemoError(f"no {pattern!r} in {path} within {READY_TIMEOUT:.0f} s")
            self.poll_processes()
            time.sleep(0.1)

    def stop_all(self) -> dict[str, int]:
        codes: dict[str, int] = {}
        for name, process, log, _ in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                codes[name] = process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                codes[name] = -9
            log.close()
        return codes


def _wait_ready(process: subprocess.Popen[bytes], kind: int, port: int, log_path: Path) -> None:
    """Wait until ``port`` is taken (TCP: accepts; UDP: cannot be bound any more)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"a server exited with status {process.returncode} (see {log_path})")
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
    raise DemoError(f"a server did not start listening in time (see {log_path})")


def _arg(path: Path) -> str:
    """``path`` for a command line: relative to the working directory when it is below it (shorter to read)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _capture(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise DemoError(f"unexpected output, no {pattern!r}")
    return match.group(1)


def _secret_forms(secret: bytes) -> set[str]:
    """How a key could appear in a log: hex (either case), base64 and base64url."""
    return {
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode().rstrip("="),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
    }


def _device_secrets(factory: Path, serial: str, state_dir: Path) -> set[str]:
    """The batch key, the device's bootstrap PSK and every operational key the lock holds, in their printable
    forms (for the log check)."""
    from ace_core.lwm2m.bundle import BundleKey, parse_key_file
    from as_server.bootstrap.archive import read_member
    from resource_server.credentials import CredentialStore

    raw_key = parse_key_file((factory / "bundle.key").read_text())
    bundle = BundleKey(raw_key).open(read_member(factory / "bundles.zip", f"{serial}.bundle"))
    found = _secret_forms(raw_key) | _secret_forms(bundle.psk)
    credentials = CredentialStore(state_dir / "credentials.cbor").load()
    for slot in credentials.slots() if credentials is not None else ():
        found |= _secret_forms(slot.key)
    return found


_KEY_ROW = re.compile(r"^(\d+)\s+\S+\s+\S+ \S+\s+(-|\S+ \S+)\s+(?:-|\S+ \S+)\s+(\w+)$")


def _key_row(generation: int, state: str) -> Callable[[str], bool]:
    """Whether ``ostiary as rs keys`` shows ``generation`` delivered and in ``state``."""

    def ready(output: str) -> bool:
        rows = (_KEY_ROW.match(line.strip()) for line in output.splitlines())
        return any(m is not None and m[1] == str(generation) and m[2] != "-" and m[3] == state for m in rows)

    return ready


def run(out: TextIO = sys.stdout, *, home: Path | None = None) -> int:
    """Run the scenario, writing to ``out``. Returns the process exit status (0: every step behaved)."""
    home = home or Path.cwd() / ".demo"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    demo = _Demo(out, home)
    try:
        return _scenario(demo, home)
    except DemoError as exc:
        demo.say(f"\nThe demo stopped: {exc}")
        return 1


def _scenario(demo: _Demo, home: Path) -> int:
    say = demo.say
    say("Ostiary demo: a factory batch of door locks, one bootstrapped at the front door, an ACE-OAuth")
    say("authorization server and phone apps, on loopback")
    say("=" * 96)

    # Ports first: the batch's bundles carry the bootstrap server's URI, and `ostiary as serve` must listen there.
    coap_port = _free_port(socket.SOCK_DGRAM)
    bootstrap_port = _free_port(socket.SOCK_DGRAM, avoid={coap_port})
    lock_port = _free_port(socket.SOCK_DGRAM, avoid={coap_port, bootstrap_port})
    http_port = _free_port(socket.SOCK_STREAM, avoid={coap_port, bootstrap_port, lock_port})
    demo.env["OSTIARY_BOOTSTRAP_DTLS_PORT"] = str(bootstrap_port)
    as_uri = f"coap://127.0.0.1:{coap_port}/token"
    lock_uri = f"coap://127.0.0.1:{lock_port}"
    factory = home / "factory"
    state_dir = home / "front-door"

    say(f"\n1. A device maker makes a batch of {BATCH_SIZE} locks; an installer claims one for {SITE}")
    say(f"    (the operator first creates the authorization server's home, {home / 'as'}: the factory records")
    say("    the devices there, their bootstrap keys sealed under its master key)")
    say(
        f"    $ export OSTIARY_BOOTSTRAP_DTLS_PORT={bootstrap_port}   # a free UDP port for this demo's bootstrap "
        "server (default 5684)"
    )
    demo.ostiary("as", "init")
    demo.ostiary("factory", "batch", "--count", str(BATCH_SIZE), "--model", MODEL, "--out", _arg(factory), show=7)
    say("      (the flashing station puts each lock's sealed bundle on it; the manifest lists serial numbers and")
    say("      the enrolment ids printed on the locks' labels)")
    with (factory / "manifest.jsonl").open() as manifest:
        first = json.loads(manifest.readline())
    front, enrolment_id = first["serial"], first["enrolment_id"]
    say(f"    the installer mounts lock {front} at the front door and types the enrolment id from its label:")
    demo.ostiary("factory", "claim", enrolment_id, "--site", SITE, show=1)
    say(f"    the front door is lock {front}: its serial number is its audience at the authorization server")

    say("\n2. The facility operator registers the apps, a manager and the policy")
    rs_out = demo.ostiary("as", "rs", "add", SERVER_ROOM, "--resources", "/lock:GET,PUT")
    server_room_key = _capture(r"hex:\s+([0-9a-f]+)", rs_out)
    say(f"      ({SERVER_ROOM} is an older lock, registered by hand: the AS prints its key once for its configuration)")
    secrets: dict[str, str] = {}
    for client, door in ((APP, front), (VISITOR, SERVER_ROOM), (CONTRACTOR, front), (CLEANER, front)):
        printed = demo.ostiary("as", "client", "add", client, "--audience", door)
        secrets[client] = _capture(r"client_secret:\s+(\S+)", printed)
    say("      (each app receives its client secret once; the AS keeps only a hash)")
    demo.env["OSTIARY_DEMO_MANAGER_PASSWORD"] = base64.urlsafe_b64encode(os.urandom(12)).decode()
    demo.ostiary("user", "add", MANAGER, "--role", "manager", "--password-env", "OSTIARY_DEMO_MANAGER_PASSWORD")
    say("      (a facility manager's account; the password is hashed with Argon2id)")
    (home / "as" / "policy.yaml").write_text(_policy(front))
    say(f"    policy.yaml: {APP} may GET/PUT /lock and GET /battery at {front}; {VISITOR} may open")
    say(f"                 {SERVER_ROOM} only; {CONTRACTOR} may PUT /lock at {front} for {SHORT_LIFETIME} s;")
    say(f"                 {CLEANER} may PUT /lock at {front} once {MANAGER} consents")

    device_secrets: set[str] = set()
    try:
        say("\n3. The authorization server starts; the front door lock bootstraps from its factory bundle")
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
        say(
            f"    AS on {as_uri} (and http://127.0.0.1:{http_port}/token); bootstrap server on "
            f"coaps://127.0.0.1:{bootstrap_port}"
        )
        demo.start(
            "lock",
            "lock",
            "serve",
            "--bootstrap",
            _arg(factory / "bundles.zip"),
            "--bundle-key",
            _arg(factory / "bundle.key"),
            "--serial",
            front,
            "--state-dir",
            _arg(state_dir),
            "--as-uri",
            as_uri,
            "--port",
            str(lock_port),
            "--pull-interval",
            str(PULL_INTERVAL),
            wait_for=(socket.SOCK_DGRAM, lock_port),
        )
        serving = demo.log_line("lock", r"^ostiary lock: serving")
        demo.check(
            "the lock bootstrapped over DTLS with its factory PSK and got key generation 1; its log says: "
            + serving.removeprefix("ostiary lock: "),
            f"key {front}#1" in serving,
        )
        device_secrets = _device_secrets(factory, front, state_dir)
        demo.ostiary_until("as", "rs", "keys", front, ready=_key_row(1, "current"), what="key delivery", show=2)
        demo.ostiary_until(
            "as",
            "rs",
            "show",
            front,
            ready=lambda shown: "last contact" in shown,
            what=f"the registration of {front}",
            show=("audience", "enabled", "resources", "key generations", "last contact", "registration"),
        )
        demo.check(f"{front} has key generation 1 and registered at the AS (LwM2M /rd); lock on {lock_uri}", True)
        asyncio.run(_story(demo, front, as_uri, lock_uri, secrets))
        _rotation(demo, front, as_uri, lock_uri, secrets, state_dir)
        device_secrets |= _device_secrets(factory, front, state_dir)
    finally:
        codes = demo.stop_all()
    say("\n9. Both stop on SIGTERM")
    for name, code in codes.items():
        demo.check(f"{name} exited with status {code}", code == 0)
    logs = "".join(path.read_text(errors="replace") for _, _, _, path in demo.processes)
    demo.check(
        "no client secret, AS<->lock key, bootstrap PSK or batch key appears in their logs",
        not any(secret in logs for secret in (*secrets.values(), server_room_key, *device_secrets)),
    )
    say("")
    if demo.failures:
        say(f"{demo.failures} step(s) did not behave as expected (logs in {home}).")
        return 1
    say(
        "Every step behaved as RFC 9200 and RFC 9203 say. `make test` runs the full suite; `make bench` the benchmarks."
    )
    return 0


async def _story(demo: _Demo, front: str, as_uri: str, lock_uri: str, secrets: dict[str, str]) -> None:
    from client_sdk.client import AceClient
    from client_sdk.errors import TokenUploadFailed
    from client_sdk.transport.coap import CoapTransport

    say, check = demo.say, demo.check
    open_door = AifScope.parse_spec("/lock:GET,PUT")

    say(f"\n4. The phone app opens the front door ({front})")
    app = AceClient(as_uri, APP, secrets[APP])
    try:
        hints = await app.discover(lock_uri + "/lock", "PUT")
        hinted_scope = AifScope.from_cbor(hints.scope) if isinstance(hints.scope, bytes) else hints.scope
        check(
            f"without a token: 4.01 with hints: AS {hints.as_uri}, audience {hints.audience}, "
            f"scope {hinted_scope.to_spec() if isinstance(hinted_scope, AifScope) else hinted_scope}",
            hints.audience == front,
        )
        session = await app.connect(lock_uri, audience=front, scope=open_door)
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
            await app.request_token(front, AifScope.parse_spec("/log:GET").to_cbor())
            check("the AS refuses GET /log (not in the policy): it did not", False)
        except OAuthError as exc:
            check(
                f"the AS refuses a token for GET /log (not in the policy): {type(exc).__name__} "
                f"({exc.status.coap_dotted})",
                isinstance(exc, InvalidScope),
            )
    finally:
        await app.close()

    say("\n5. A visitor's app, allowed only into the server room, tries the front door")
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

    await _consent(demo, front, as_uri, lock_uri, secrets)

    say(f"\n7. A contractor's token expires after {SHORT_LIFETIME} s")
    contractor = AceClient(as_uri, CONTRACTOR, secrets[CONTRACTOR])
    transport = CoapTransport()
    try:
        info = await contractor.request_token(front, AifScope.parse_spec("/lock:PUT").to_cbor())
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


async def _consent(demo: _Demo, front: str, as_uri: str, lock_uri: str, secrets: dict[str, str]) -> None:
    from client_sdk.client import AceClient

    say, check = demo.say, demo.check
    put_lock = AifScope.parse_spec("/lock:PUT")
    say("\n6. A cleaner's app needs the facility manager's consent")
    cleaner = AceClient(as_uri, CLEANER, secrets[CLEANER])
    try:
        try:
            await cleaner.request_token(front, put_lock.to_cbor())
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
        await cleaner.connect(lock_uri, audience=front, scope=put_lock)
        unlocked = await cleaner.request("PUT", lock_uri + "/lock", b"unlock")
        check(f"after the approval: token issued, PUT /lock over OSCORE: {unlocked.status_text()}", unlocked.ok)
        demo.ostiary("consent", "revoke", request_id, "--as", MANAGER, show=1)
        try:
            await cleaner.request_token(front, put_lock.to_cbor())
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


def _lock_generation(state_dir: Path) -> int | None:
    """The generation of the key the lock verifies tokens with first (``current`` in its credentials file)."""
    from resource_server.credentials import CredentialStore

    credentials = CredentialStore(state_dir / "credentials.cbor").load()
    return None if credentials is None else credentials.current.generation


def _rotation(demo: _Demo, front: str, as_uri: str, lock_uri: str, secrets: dict[str, str], state_dir: Path) -> None:
    say = demo.say
    say(f"\n8. The operator rotates the front door's key; the lock fetches it at its next pull ({PULL_INTERVAL} s)")
    demo.ostiary("as", "rs", "rotate-key", front, show=1)
    demo.ostiary_until(
        "as", "rs", "keys", front, ready=_key_row(2, "current"), what="the delivery of key generation 2", show=3
    )
    demo.check(
        "the lock fetched generation 2 (as its next key); the AS makes new tokens with it, generation 1 retires "
        "once every token made with it has expired",
        True,
    )
    asyncio.run(_open_after_rotation(demo, front, as_uri, lock_uri, secrets))
    deadline = time.monotonic() + READY_TIMEOUT
    while _lock_generation(state_dir) != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    demo.check(
        f"the first token under generation 2 made it the lock's current key (lock: generation "
        f"{_lock_generation(state_dir)})",
        _lock_generation(state_dir) == 2,
    )


async def _open_after_rotation(demo: _Demo, front: str, as_uri: str, lock_uri: str, secrets: dict[str, str]) -> None:
    from client_sdk.client import AceClient

    app = AceClient(as_uri, APP, secrets[APP])
    try:
        await app.connect(lock_uri, audience=front, scope=AifScope.parse_spec("/lock:GET,PUT"))
        unlocked = await app.request("PUT", lock_uri + "/lock", b"unlock")
        demo.check(
            f"the phone app's new token opens the door: PUT /lock over OSCORE: {unlocked.status_text()}",
            unlocked.ok and unlocked.protected,
        )
    finally:
        await app.close()
