"""The ``ostiary`` command line (argparse, stdlib only).

Command groups: ``as`` (authorization server), ``lock`` (resource server / door lock), ``client`` (client
SDK), ``policy`` (policy files), ``user``/``group`` (local accounts), ``consent`` (access requests and grants),
``audit`` (the audit log), ``factory`` (device factory provisioning), ``bootstrap`` (LwM2M-style bootstrap server)
and ``demo``.
Groups whose capability has not landed yet have no commands and say so in their ``--help``.

:mod:`ace_core.keys` and :mod:`ostiary.demo` are imported inside the command handlers, so building the parser
(``ostiary --help``, the tests of the help texts) needs neither.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ace_core import __version__
from ace_core.registry import CoseAlgorithm, CoseCurve, CoseKeyParam, CoseKeyType, lookup

if TYPE_CHECKING:
    from ace_core.keys import CoseKey

__all__ = ["ALGORITHMS", "build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]

#: ``--alg`` spellings (as in the IANA COSE Algorithms registry, RFC 9053) -> registry member.
ALGORITHMS: dict[str, CoseAlgorithm] = {
    "EdDSA": CoseAlgorithm.EDDSA,
    "ES256": CoseAlgorithm.ES256,
    "ES384": CoseAlgorithm.ES384,
    "HMAC256/64": CoseAlgorithm.HMAC_256_64,
    "HMAC256/256": CoseAlgorithm.HMAC_256_256,
    "AES-CCM-16-64-128": CoseAlgorithm.AES_CCM_16_64_128,
    "AES-CCM-16-64-256": CoseAlgorithm.AES_CCM_16_64_256,
    "A128GCM": CoseAlgorithm.A128GCM,
    "A256GCM": CoseAlgorithm.A256GCM,
}
_ALGORITHM_NAMES = {alg: name for name, alg in ALGORITHMS.items()}
_ASYMMETRIC = frozenset({CoseAlgorithm.EDDSA, CoseAlgorithm.ES256, CoseAlgorithm.ES384})

FORMATS = ("cbor-hex", "json", "pem")

# COSE_Key labels holding secret material, per key type (RFC 9053 §7.1 d for OKP/EC2, §6.1 k for Symmetric).
_SECRET_LABELS: dict[int, frozenset[int]] = {
    CoseKeyType.OKP: frozenset({CoseKeyParam.D}),
    CoseKeyType.EC2: frozenset({CoseKeyParam.D}),
    CoseKeyType.SYMMETRIC: frozenset({CoseKeyParam.K}),
}
# Type-specific labels whose meaning is known and public (RFC 9053 §7.1, §7.2).
_PUBLIC_LABELS: dict[int, dict[int, str]] = {
    CoseKeyType.OKP: {CoseKeyParam.CRV: "crv", CoseKeyParam.X: "x"},
    CoseKeyType.EC2: {CoseKeyParam.CRV: "crv", CoseKeyParam.X: "x", CoseKeyParam.Y: "y"},
}
_KTY_NAMES = {CoseKeyType.OKP: "OKP", CoseKeyType.EC2: "EC2", CoseKeyType.SYMMETRIC: "Symmetric"}
# RFC 9053 Table 18 spellings.
_CURVE_NAMES = {
    CoseCurve.P_256: "P-256",
    CoseCurve.P_384: "P-384",
    CoseCurve.P_521: "P-521",
    CoseCurve.X25519: "X25519",
    CoseCurve.X448: "X448",
    CoseCurve.ED25519: "Ed25519",
    CoseCurve.ED448: "Ed448",
}


class CliError(Exception):
    """A command failed in a way the user can fix; printed without a traceback.

    :param status: the exit status (2 for a usage error, 1 otherwise).
    """

    def __init__(self, message: str, *, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# --- parser ------------------------------------------------------------------------------------------

_DESCRIPTION = """\
Ostiary: ACE-OAuth (RFC 9200) for door locks -- an authorization server issuing CWT proof-of-possession
tokens, a resource-server library for lock firmware, a client SDK, consent policies and device bootstrap."""

_GROUPS: dict[str, tuple[str, str, str]] = {
    # name: (one-line help, description, epilog)
    "as": (
        "authorization server: issues PoP access tokens; key management",
        "The authorization server (AS) authenticates clients with pre-established secrets, applies\n"
        "consent policies and issues CWT access tokens (RFC 8392) bound to the client's key by a cnf\n"
        "claim (RFC 8747), over CoAP and HTTP: token endpoint RFC 9200 section 5.8, introspection\n"
        "section 5.9.",
        "Typical first run:\n"
        "  ostiary as init                          # directory, master key, config, database, signing key\n"
        "  ostiary as rs add front-door --resources '/lock:GET,PUT'     # prints the key for the lock\n"
        "  ostiary as client add phone-app --audience front-door        # prints the client secret\n"
        "  $EDITOR $OSTIARY_HOME/policy.yaml        # who may get what (allow list)\n"
        "  ostiary as serve                         # CoAP on 5683, HTTP on 8080\n"
        "Every command takes --home DIR (default: $OSTIARY_HOME, else ~/.local/share/ostiary).\n"
        "'ostiary as keys' also generates and inspects COSE keys (token signing/MAC keys, keys shared with\n"
        "locks, client PoP keys).",
    ),
    "lock": (
        "resource server / door lock: run the reference lock, write its configuration",
        "A door lock is an ACE resource server (RS): it accepts access tokens at /authz-info (RFC 9200\n"
        "section 5.10.1), verifies them (section 5.10.1.1), enforces their scope on every request and,\n"
        "with the OSCORE profile (RFC 9203), derives a security context shared with the client.",
        "Typical first run (the key is the one 'ostiary as rs add front-door' printed):\n"
        "  ostiary lock init-config --audience front-door --issuer coap://127.0.0.1/token \\\n"
        "      --as-uri coap://127.0.0.1:5683/token --key a401... --port 5686 --out lock.toml\n"
        "  ostiary lock serve --config lock.toml     # CoAP on 127.0.0.1:5686; SIGTERM stops it",
    ),
    "client": (
        "client SDK for smartphone apps: get tokens, open a lock, protected requests",
        "The client SDK is what a smartphone app embeds: it requests an access token bound to its own key\n"
        "from the AS (RFC 9200 section 5.8.1, RFC 9201), uploads the token to a lock's /authz-info and then\n"
        "talks to the lock over OSCORE (RFC 9203, RFC 8613). These commands run the SDK from a shell.",
        "Credentials: --client-id ID (or $OSTIARY_CLIENT_ID) and the secret from an environment variable or a\n"
        "file, never from the command line (other users see arguments in ps; shells keep them in history):\n"
        "  export OSTIARY_CLIENT_SECRET=...   # or --secret-env VAR, or --secret-file FILE (mode 0600)\n"
        "The AS comes from --as URI (or $OSTIARY_AS_URI); 'open' and 'get' can also take it from the lock.\n"
        "\n"
        "examples:\n"
        "  ostiary client token --as coap://as.example/token --client-id phone-app \\\n"
        "      --audience front-door --scope '/lock:PUT'\n"
        "  ostiary client open coap://lock.example --as coap://as.example/token --client-id phone-app\n"
        "  ostiary client get coap://lock.example/battery --client-id phone-app --secret-file app.secret",
    ),
    "policy": (
        "policy files: validate them, explain decisions",
        "Policies decide which client (and user) may get which rights at which lock, when, and who\n"
        "approves: rules with subjects, audiences, scopes, time windows, validity and an effect (permit,\n"
        "deny, consent). The authorization server reads them from its policy file.",
        "examples:\n"
        "  ostiary policy validate $OSTIARY_HOME/policy.yaml\n"
        "  ostiary policy explain --file policy.yaml --client phone-app --user alice --group staff \\\n"
        "      --audience front-door --scope '/lock:PUT' --at 2025-03-31T17:55:00+02:00",
    ),
    "user": (
        "local users: add, list, disable, enable, set passwords (Argon2id)",
        "Local user accounts of the authorization server: people who approve access requests (role\n"
        "manager or admin) and people apps act for (role user). Passwords are hashed with Argon2id (RFC\n"
        "9106) and read from a prompt, a file or an environment variable, never from the command line.",
        "examples:\n"
        "  ostiary user add frank --role manager          # asks for the password twice\n"
        "  ostiary user add alice --password-file alice.pw\n"
        "  ostiary user disable alice                     # also revokes alice's tokens",
    ),
    "group": (
        "groups of users: add, list, add-member, remove-member",
        "Groups of local users. Policy rules name groups as subjects and as approvers of access requests.",
        "examples:\n  ostiary group add facility\n  ostiary group add-member facility frank",
    ),
    "consent": (
        "consent workflow: list, approve, deny access requests; revoke grants",
        "When a policy rule says a request needs consent, the authorization server records an access\n"
        "request and refuses the token with an error_uri naming it; the app waits on that URI. Approvers\n"
        "(users with role manager among the request's approvers, or admins) decide here or through the\n"
        "HTTP API (/consent/...). An approval becomes a grant the policy applies; revoking it also revokes\n"
        "the tokens issued under it.",
        "examples:\n"
        "  ostiary consent list --as frank\n"
        "  ostiary consent approve ID --as frank --window 'Mon-Fri 08:00-18:00' --timezone Europe/Berlin\n"
        "  ostiary consent revoke ID --as frank",
    ),
    "audit": (
        "the audit log: tokens issued and refused, consent decisions, revocations",
        "Print the audit log of the authorization server, filtered: every token issued or refused (with\n"
        "the reason), every access request, approval, denial and revocation, user and client changes,\n"
        "with actor and time. Newest entries are printed last.",
        "examples:\n"
        "  ostiary audit --since 24h\n"
        "  ostiary audit --action access_request --user alice --json\n"
        "  ostiary audit --client phone-app --action token.refused --limit 20",
    ),
    "factory": (
        "device factory provisioning: batches of devices, bundles, claiming and releasing",
        "Factory provisioning gives each device, at manufacturing time, its identity and the initial\n"
        "credentials it uses to reach the bootstrap server, and records them for the operator. A device is\n"
        "pre-assigned to a site at manufacture, or claimed later by the enrolment id printed on it.",
        "Typical use:\n"
        "  ostiary factory batch --count 1000 --model L1      # bundles.zip, manifest, bundle.key in ./BATCH_ID\n"
        "  ostiary factory show-bundle BATCH_ID/bundles.zip --serial L1-00000001 --key BATCH_ID/bundle.key\n"
        "  ostiary factory claim 7J2V-989J-BDV2-K6GJ --site building-a\n"
        "  ostiary factory release L1-00000001\n"
        "  ostiary factory list --unclaimed",
    ),
    "bootstrap": (
        "LwM2M-style bootstrap server: it runs inside 'ostiary as serve' (this group has no commands)",
        "The bootstrap server hands devices their operational credentials and configuration (which AS to\n"
        "trust, which keys to use) on first start and when credentials are rotated, in the manner of the\n"
        "OMA LwM2M bootstrap interface. It runs inside 'ostiary as serve' (DTLS on udp/5684: settings\n"
        "bootstrap_dtls_port and bootstrap_*), so this group has no commands of its own.",
        "Where the bootstrap work is:\n"
        "  ostiary as serve                       # the bootstrap server, beside the token endpoint\n"
        "  ostiary factory batch|claim|list       # devices and their factory credentials\n"
        "  ostiary as rs keys|rotate-key|revoke   # a lock's operational keys\n"
        "  ostiary lock serve --bootstrap BUNDLE  # a lock that bootstraps its credentials",
    ),
    "demo": (
        "run the end-to-end scenario (what 'make demo' runs)",
        "Runs the end-to-end scenario in one process and prints each step as it happens.",
        "",
    ),
}


def _help_handler(parser: argparse.ArgumentParser) -> Handler:
    """A handler for a group invoked without a command: show its help on stderr, exit status 2."""

    def handler(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return handler


def _kid_arg(value: str) -> bytes:
    """``--kid``: UTF-8 text, or ``hex:`` followed by the bytes in hex."""
    if value.startswith("hex:"):
        try:
            kid = bytes.fromhex(value[4:])
        except ValueError:
            raise argparse.ArgumentTypeError(f"not hex: {value[4:]!r}") from None
    else:
        kid = value.encode("utf-8")
    if not kid:
        raise argparse.ArgumentTypeError("the kid must not be empty")
    return kid


def _add_as_commands(as_parser: argparse.ArgumentParser) -> None:
    from ostiary.as_cli import add_as_commands, home_parent

    home = home_parent()
    as_parser.add_argument(
        "--home",
        type=Path,
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the deployment directory (default: $OSTIARY_HOME, else ~/.local/share/ostiary)",
    )
    as_commands = as_parser.add_subparsers(title="commands", metavar="COMMAND")
    keys = as_commands.add_parser(
        "keys",
        help="generate and inspect COSE keys",
        description="Generate and inspect COSE keys (COSE_Key, RFC 9052 section 7).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keys.set_defaults(handler=_help_handler(keys))
    key_commands = keys.add_subparsers(title="commands", metavar="COMMAND")

    gen = key_commands.add_parser(
        "generate",
        help="generate a new key",
        description="Generate a new random COSE key and print it or write it to a file.\n"
        "Files holding private or symmetric keys are created with mode 0600; an existing file is only\n"
        "replaced with --force.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument(
        "--alg",
        required=True,
        choices=list(ALGORITHMS),
        metavar="ALG",
        help=f"COSE algorithm the key is for: {', '.join(ALGORITHMS)}",
    )
    gen.add_argument("--kid", type=_kid_arg, help="key identifier: UTF-8 text, or hex:0a1b... for arbitrary bytes")
    gen.add_argument("--format", choices=FORMATS, default="cbor-hex", help="output format (default: cbor-hex)")
    gen.add_argument("--public", action="store_true", help="output only the public key (asymmetric only)")
    gen.add_argument("--out", type=Path, metavar="FILE", help="write to FILE instead of standard output")
    gen.add_argument("--force", action="store_true", help="replace FILE if it exists")
    gen.set_defaults(handler=_cmd_keys_generate)

    show = key_commands.add_parser(
        "show",
        help="describe a key file without revealing secrets",
        description="Print a key's type, algorithm, kid and thumbprint. The format (CBOR, CBOR in hex, JSON\n"
        "or PEM) is detected. Secret material is never printed, only its length.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("file", type=Path, metavar="FILE")
    show.set_defaults(handler=_cmd_keys_show)

    add_as_commands(as_commands, key_commands, [home], _help_handler)


def _add_admin_commands(name: str, group: argparse.ArgumentParser) -> None:
    from ostiary import admin_cli
    from ostiary.as_cli import home_parent

    group.add_argument(
        "--home",
        type=Path,
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the deployment directory (default: $OSTIARY_HOME, else ~/.local/share/ostiary)",
    )
    adders = {
        "user": admin_cli.add_user_commands,
        "group": admin_cli.add_group_commands,
        "consent": admin_cli.add_consent_commands,
    }
    adders[name](group, [home_parent()])


def build_parser() -> argparse.ArgumentParser:
    """The complete ``ostiary`` argument parser (tests inspect its help texts)."""
    parser = argparse.ArgumentParser(
        prog="ostiary",
        description=_DESCRIPTION,
        epilog="Run 'ostiary GROUP --help' for what a group does and its commands.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.set_defaults(handler=_help_handler(parser))
    groups = parser.add_subparsers(title="command groups", metavar="GROUP")
    for name, (help_, description, epilog) in _GROUPS.items():
        group = groups.add_parser(
            name,
            help=help_,
            description=description,
            epilog=epilog or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == "demo":
            group.set_defaults(handler=_cmd_demo)
        elif name == "audit":
            from ostiary.admin_cli import add_audit_options, cmd_audit

            add_audit_options(group)
            group.set_defaults(handler=cmd_audit)
        else:
            group.set_defaults(handler=_help_handler(group))
        if name == "as":
            _add_as_commands(group)
        if name == "lock":
            from ostiary.lock_cli import add_lock_commands

            add_lock_commands(group)
        if name == "client":
            from ostiary.client_cli import add_client_commands

            add_client_commands(group)
        if name == "policy":
            from ostiary.policy_cli import add_policy_commands

            add_policy_commands(group)
        if name in ("user", "group", "consent"):
            _add_admin_commands(name, group)
        if name == "factory":
            from ostiary.factory_cli import add_factory_commands

            add_factory_commands(group)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``ostiary`` command line and return its exit status.

    argparse exits through ``SystemExit`` for ``--help``, ``--version`` and usage errors. When the reader of
    standard output goes away (``ostiary factory list | head``), the command ends quietly with status 1, as the
    Python documentation recommends for SIGPIPE (library/signal, "Note on SIGPIPE"): standard output is pointed
    at ``/dev/null`` so that the interpreter's final flush does not report the broken pipe again.
    """
    try:
        try:
            return _run(argv)
        finally:
            if sys.stdout is not None:  # None when started with standard output closed
                sys.stdout.flush()  # here rather than at interpreter exit, where a broken pipe cannot be caught
    except BrokenPipeError:
        _discard_stdout()
        return 1


def _discard_stdout() -> None:
    """Point file descriptor 1 at ``/dev/null`` (the reader is gone; nothing more can be delivered)."""
    if sys.stdout is None:
        return
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # not a real file (a test's capture): nothing is flushed at exit
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _run(argv: list[str] | None) -> int:
    from ostiary.as_cli import CommandError

    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        raise  # the reader of standard output is gone: main() ends quietly
    except (CliError, CommandError) as exc:
        print(f"ostiary: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, no traceback (it could quote stored data)
        print(f"ostiary: error: {_describe_error(exc)}", file=sys.stderr)
        if os.environ.get("OSTIARY_DEBUG"):
            raise
        return 1


#: Errors (by class name, to avoid importing their modules here) whose message tells the user what to do.
_ACTIONABLE = frozenset({"PolicyError", "PolicyErrors", "SchemaError", "SealingError", "CorruptRecordError"})


def _describe_error(exc: Exception) -> str:
    """One line for an error a handler did not anticipate: the messages of errors the user can act on
    (configuration, policy, files, duplicates), only the class name of anything else (set OSTIARY_DEBUG=1 for
    the traceback)."""
    from as_server.config import ConfigError
    from as_server.storage.base import DuplicateError, NotFoundError

    if isinstance(exc, ConfigError | DuplicateError | NotFoundError | OSError) or type(exc).__name__ in _ACTIONABLE:
        return str(exc)
    return f"unexpected {type(exc).__name__} (set OSTIARY_DEBUG=1 for the traceback)"


# --- demo --------------------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from ostiary import demo

    return demo.run(out=sys.stdout)


# --- as keys -----------------------------------------------------------------------------------------


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    from ace_core.keys import CoseKey

    alg = ALGORITHMS[args.alg]
    symmetric = alg not in _ASYMMETRIC
    if symmetric and args.public:
        raise CliError(f"{args.alg} keys are symmetric and have no public part", status=2)
    if symmetric and args.format == "pem":
        raise CliError(f"{args.alg} keys are symmetric; PEM holds only asymmetric keys", status=2)
    out: Path | None = args.out
    if out is not None and (out.exists() or out.is_symlink()) and not args.force:
        raise CliError(f"{out} exists; use --force to replace it")

    key = CoseKey.generate(alg, kid=args.kid)
    if args.public:
        key = key.public()
    data = _encode_key(key, args.format)

    if out is None:
        sys.stdout.write(data.decode("ascii"))
        return 0
    _write_file(out, data, mode=0o644 if args.public else 0o600, replace=args.force)
    what = "public key" if args.public else ("symmetric key" if symmetric else "private key")
    print(f"wrote {what} ({args.alg}, {args.format}) to {out}", file=sys.stderr)
    return 0


def _encode_key(key: CoseKey, fmt: str) -> bytes:
    if fmt == "cbor-hex":
        return key.to_cbor().hex().encode("ascii") + b"\n"
    if fmt == "json":
        return json.dumps(key.to_json(), indent=2).encode("ascii") + b"\n"
    return key.to_pem()


def _write_file(path: Path, data: bytes, *, mode: int, replace: bool) -> None:
    """Write ``data`` to ``path`` with exactly ``mode``; never leaves a partly written or wider-mode file."""
    if not replace:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            raise CliError(f"{path} exists; use --force to replace it") from None
        except OSError as exc:
            raise CliError(f"cannot create {path}: {exc.strerror}") from None
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed it; a wider umask cannot widen 0600
            with os.fdopen(fd, "wb") as fp:
                fp.write(data)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return
    # --force: write a sibling temporary file (mkstemp creates it 0600), then rename it over the target.
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CliError(f"cannot write in {path.parent}: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_HEX_TEXT = re.compile(rb"^[0-9a-fA-F\s]+$")


def _load_key(data: bytes) -> tuple[CoseKey, str]:
    """Decode a key file, detecting its format; returns the key and the format's name."""
    from ace_core.keys import CoseKey

    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        return CoseKey.from_pem(data), "pem"
    if text.startswith(b"{"):
        obj = json.loads(text)
        if not isinstance(obj, dict):
            raise ValueError("JSON key is not an object")
        return CoseKey.from_json(obj), "json"
    if text and _HEX_TEXT.match(text):
        return CoseKey.from_cbor(bytes.fromhex(text.decode("ascii"))), "cbor-hex"
    return CoseKey.from_cbor(data), "cbor"


def _cmd_keys_show(args: argparse.Namespace) -> int:
    from ace_core import cbor

    path: Path = args.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    try:
        key, fmt = _load_key(data)
    except (ValueError, TypeError, KeyError) as exc:
        # The exception text is not shown: a parser's message may quote the (secret) input.
        kind = type(exc).__name__
        raise CliError(f"{path} is not a COSE key in CBOR, CBOR hex, JSON or PEM ({kind})") from None
    params = cbor.loads(key.to_cbor())
    if not isinstance(params, dict):
        raise CliError(f"{path}: the key does not encode to a COSE_Key map")
    _describe_key(params, key.thumbprint(), fmt, path, sys.stdout)
    return 0


def _describe_key(params: dict[Any, Any], thumbprint: bytes, fmt: str, path: Path, out: TextIO) -> None:
    """Print a COSE_Key map; values under secret (or unknown) labels appear only as their length."""
    kty: Any = params.get(CoseKeyParam.KTY)
    secret = _SECRET_LABELS.get(kty, frozenset()) if isinstance(kty, int) else frozenset()
    public = _PUBLIC_LABELS.get(kty, {}) if isinstance(kty, int) else {}
    lines = [("file", f"{path} ({fmt})"), ("kty", _named(kty, CoseKeyType, _KTY_NAMES))]
    if CoseKeyParam.ALG in params:
        lines.append(("alg", _named(params[CoseKeyParam.ALG], CoseAlgorithm, _ALGORITHM_NAMES)))
    lines.append(("kid", _describe_kid(params.get(CoseKeyParam.KID))))
    for label, value in params.items():
        if label in (CoseKeyParam.KTY, CoseKeyParam.ALG, CoseKeyParam.KID):
            continue
        if label in secret:
            name = "k" if kty == CoseKeyType.SYMMETRIC else "d"
            lines.append((name, f"(secret, {_length(value)})"))
        elif label in public:
            name = public[label]
            if name == "crv":
                lines.append(("crv", _named(value, CoseCurve, _CURVE_NAMES)))
            elif isinstance(value, bytes):
                lines.append((name, value.hex()))
            else:
                lines.append((name, repr(value)))
        elif label == CoseKeyParam.KEY_OPS:
            lines.append(("key_ops", repr(value)))
        else:
            # An unknown label may hold key material: show its size, never its value.
            lines.append((f"label {label}", f"(not shown, {_length(value)})"))
    lines.append(("private", "yes" if any(label in params for label in secret) else "no"))
    lines.append(("thumbprint", thumbprint.hex()))
    width = max(len(name) for name, _ in lines) + 1
    for name, value in lines:
        print(f"{name + ':':<{width}} {value}", file=out)


def _named(value: object, enum: type[IntEnum], names: Mapping[Any, str] | None = None) -> str:
    """``"Name (number)"`` for a registry value, the bare number if unregistered, ``repr`` if not an int."""
    if value is None:
        return "(missing)"
    if not isinstance(value, int) or isinstance(value, bool):
        return repr(value)
    member = lookup(enum, value)
    name = (names or {}).get(value) or (member.name if isinstance(member, IntEnum) else None)
    return f"{name} ({int(value)})" if name else str(int(value))


def _length(value: object) -> str:
    return f"{len(value)} bytes" if isinstance(value, bytes | bytearray) else type(value).__name__


def _describe_kid(kid: object) -> str:
    if kid is None:
        return "(none)"
    if not isinstance(kid, bytes):
        return repr(kid)
    text = kid.decode("ascii", "replace")
    printable = kid.isascii() and text.isprintable()
    return f"h'{kid.hex()}'" + (f' ("{text}")' if printable else "")
