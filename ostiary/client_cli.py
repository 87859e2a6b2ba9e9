"""``ostiary client ...``: the client SDK (:class:`client_sdk.client.AceClient`) on the command line.

Commands: ``token`` (ask the AS for an access token and show it), ``open`` (unlock a door: discovery, token,
``/authz-info`` upload, OSCORE-protected ``PUT /lock``) and ``get`` (an OSCORE-protected GET of any resource).

**Secrets are never command-line values.** Every local user can read a process's arguments (``ps``,
``/proc/PID/cmdline``) and shells keep them in their history, so the client secret comes from an environment
variable (``--secret-env VAR``, default ``OSTIARY_CLIENT_SECRET``) or a file (``--secret-file FILE``). The master
secret of the OSCORE material is never printed: ``token`` shows it as ``(secret, 16 bytes)``.

The SDK is imported inside the handlers, so building the parser (``--help``) needs neither aiocoap nor httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import stat
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ace_core.messages import AccessInformation, CreationHints
    from client_sdk.client import AceClient, SessionInfo
    from client_sdk.transport import Response

__all__ = ["add_client_commands"]

Formatter = argparse.RawDescriptionHelpFormatter

#: Environment variables read when the options are not given.
SECRET_ENV = "OSTIARY_CLIENT_SECRET"
CLIENT_ID_ENV = "OSTIARY_CLIENT_ID"
AS_ENV = "OSTIARY_AS_URI"
DEFAULT_TIMEOUT = 10.0
DEFAULT_OPEN_SCOPE = "/lock:PUT"

# --- parser ------------------------------------------------------------------------------------------------


def _credentials_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--client-id",
        metavar="ID",
        default=os.environ.get(CLIENT_ID_ENV),
        help=f"the client's id at the AS (RFC 9200 section 5.8.1; default: ${CLIENT_ID_ENV})",
    )
    source = parent.add_mutually_exclusive_group()
    source.add_argument(
        "--secret-env",
        metavar="VAR",
        help=f"read the client secret from environment variable VAR (default: ${SECRET_ENV})",
    )
    source.add_argument(
        "--secret-file",
        type=Path,
        metavar="FILE",
        help="read the client secret from FILE (first line; keep it mode 0600)",
    )
    parent.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_TIMEOUT,
        help=f"bound on each exchange with the AS or the lock (default {DEFAULT_TIMEOUT:g})",
    )
    return parent


def _command(
    sub: Any, name: str, *, help: str, description: str, example: str, parents: Sequence[argparse.ArgumentParser]
) -> argparse.ArgumentParser:
    return sub.add_parser(  # type: ignore[no-any-return]
        name,
        help=help,
        description=description,
        epilog="examples:\n" + example,
        formatter_class=Formatter,
        parents=list(parents),
    )


def add_client_commands(client_parser: argparse.ArgumentParser) -> None:
    """Add ``token``, ``open`` and ``get`` to the ``client`` group."""
    parents = [_credentials_parent()]
    sub = client_parser.add_subparsers(title="commands", metavar="COMMAND")

    p = _command(
        sub,
        "token",
        help="request an access token from the AS and show it (master secret hidden)",
        description="Ask the AS's token endpoint for an access token (RFC 9200 section 5.8.1) for AUDIENCE and\n"
        "SCOPE with the client credentials, and print the access information (section 5.8.2): the token,\n"
        "its lifetime, the ACE profile and the OSCORE input material (RFC 9203 section 3.2) -- with the\n"
        "master secret shown only as '(secret, N bytes)'. coap:// AS URIs use CoAP, http(s):// use HTTP.",
        example="  export OSTIARY_CLIENT_SECRET=...\n"
        "  ostiary client token --as coap://127.0.0.1:5683/token --client-id phone-app \\\n"
        "      --audience front-door --scope '/lock:GET,PUT'\n"
        "  ostiary client token --as http://127.0.0.1:8080/token --client-id phone-app \\\n"
        "      --secret-file phone-app.secret --audience sensors --scope read --json",
        parents=parents,
    )
    p.add_argument("--as", dest="as_uri", metavar="URI", default=os.environ.get(AS_ENV), help="token endpoint URI")
    p.add_argument("--audience", required=True, metavar="AUDIENCE", help="the lock (resource server) the token is for")
    p.add_argument(
        "--scope",
        required=True,
        metavar="SPEC",
        help="AIF 'path:METHODS ...' (RFC 9237) when it starts with '/', else a text scope",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=_cmd_token)

    p = _command(
        sub,
        "open",
        help="unlock a door: token, upload to /authz-info, OSCORE-protected PUT /lock",
        description="Open a lock the way an app does (RFC 9200 section 5, RFC 9203 section 4): ask the lock for\n"
        "its AS Request Creation Hints with an unprotected request (section 5.3), get a token for SCOPE\n"
        "(default '/lock:PUT'), POST it to the lock's /authz-info with a nonce and a recipient id, derive\n"
        "the OSCORE context and send PUT /lock 'unlock' over OSCORE. Each step is printed.\n"
        "Without --as the AS named by the lock's hints is used: the hints are not authenticated, so\n"
        "pass --as in any setting where the network is not trusted -- the client secret goes to that AS.",
        example="  ostiary client open coap://127.0.0.1:5690 --client-id phone-app\n"
        "  ostiary client open coap://lock.example --as coap://as.example/token --client-id phone-app \\\n"
        "      --secret-env PHONE_APP_SECRET",
        parents=parents,
    )
    p.add_argument("lock", metavar="LOCK_URI", help="the lock, coap://HOST[:PORT]")
    p.add_argument("--as", dest="as_uri", metavar="URI", default=os.environ.get(AS_ENV), help="token endpoint URI")
    p.add_argument("--audience", metavar="AUDIENCE", help="the lock's audience (default: from its hints)")
    p.add_argument("--scope", metavar="SPEC", default=DEFAULT_OPEN_SCOPE, help="default '/lock:PUT'")
    p.add_argument("--path", default="/lock", help="the lock resource (default /lock)")
    p.add_argument("--payload", default="unlock", help="what to PUT (default 'unlock')")
    p.set_defaults(handler=_cmd_open)

    p = _command(
        sub,
        "get",
        help="OSCORE-protected GET of a resource; prints the response",
        description="GET a resource of a lock over OSCORE (RFC 8613), connecting first like 'open' does\n"
        "(hints, token, /authz-info, context derivation). Prints the response code and payload; exits\n"
        "with status 0 for 2.xx, 1 otherwise (4.03: resource not covered by the token, 4.05: method not\n"
        "covered, RFC 9200 section 5.10.2).",
        example="  ostiary client get coap://127.0.0.1:5690/battery --client-id phone-app\n"
        "  ostiary client get coap://lock.example/lock --as coap://as.example/token --client-id phone-app \\\n"
        "      --scope '/lock:GET'",
        parents=parents,
    )
    p.add_argument("uri", metavar="URI", help="coap://HOST[:PORT]/PATH")
    p.add_argument("--as", dest="as_uri", metavar="URI", default=os.environ.get(AS_ENV), help="token endpoint URI")
    p.add_argument("--audience", metavar="AUDIENCE", help="the lock's audience (default: from its hints)")
    p.add_argument("--scope", metavar="SPEC", help="scope to request (default: from the lock's hints)")
    p.set_defaults(handler=_cmd_get)


# --- helpers -----------------------------------------------------------------------------------------------


def _fail(message: str, status: int = 1) -> Exception:
    from ostiary.cli import CliError

    return CliError(message, status=status)


def _secret(args: argparse.Namespace) -> str:
    """The client secret from ``--secret-file``, ``--secret-env`` or ``$OSTIARY_CLIENT_SECRET``."""
    path: Path | None = args.secret_file
    if path is not None:
        try:
            info = path.stat()
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise _fail(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise _fail(f"{path} is not UTF-8 text") from None
        if stat.S_IMODE(info.st_mode) & 0o077:
            print(f"ostiary: warning: {path} is readable by other users; chmod 600 it", file=sys.stderr)
        secret = text.splitlines()[0] if text else ""
        if not secret:
            raise _fail(f"{path} is empty")
        return secret
    var = args.secret_env or SECRET_ENV
    secret = os.environ.get(var, "")
    if not secret:
        raise _fail(
            f"no client secret: ${var} is not set. Give it with --secret-env VAR or --secret-file FILE; there is "
            "deliberately no option taking the secret itself (command lines are visible in ps and shell history)",
            status=2,
        )
    return secret


def _scope(spec: str) -> str | bytes:
    from ace_core.errors import WireFormatError
    from ace_core.scope import AifScope, TextScope

    try:
        if spec.startswith("/"):
            return AifScope.parse_spec(spec).to_cbor()
        return TextScope.parse(spec).encode()
    except (ValueError, WireFormatError) as exc:
        raise _fail(f"invalid scope {spec!r}: {exc}", status=2) from None


def _scope_text(scope: str | bytes | None) -> str:
    if scope is None:
        return "-"
    if isinstance(scope, bytes):
        from ace_core.scope import AifScope

        try:
            return AifScope.from_cbor(scope).to_spec() + " (AIF)"
        except ValueError:
            return f"h'{scope.hex()}'"
    return scope


def _client(args: argparse.Namespace, *, accept_hinted_as: bool = False) -> AceClient:
    from client_sdk.client import AceClient

    if not args.client_id:
        raise _fail(f"no client id: give --client-id ID or set ${CLIENT_ID_ENV}", status=2)
    secret = _secret(args)
    try:
        return AceClient(args.as_uri, args.client_id, secret, timeout=args.timeout, accept_hinted_as=accept_hinted_as)
    except ValueError as exc:
        raise _fail(str(exc), status=2) from None


def _run(client: AceClient, work: Callable[[AceClient], Awaitable[int]]) -> int:
    """Run ``work`` with ``client``, closing it; turn the SDK's and the AS's errors into one-line messages."""
    from ace_core.errors import AceError, OAuthError

    async def go() -> int:
        try:
            return await work(client)
        finally:
            await client.close()

    try:
        return asyncio.run(go())
    except OAuthError as exc:
        detail = f": {exc.description}" if exc.description else ""
        where = f" ({exc.uri})" if exc.uri else ""  # e.g. consent pending: where to poll or observe the request
        raise _fail(f"the AS refused: {exc.code.name.lower()}{detail}{where}") from None
    except AceError as exc:
        raise _fail(str(exc)) from None
    except ValueError as exc:
        raise _fail(str(exc), status=2) from None


def _bytes_text(value: bytes) -> str:
    return f"h'{value.hex()}'"


def _status_text(response: Response) -> str:
    from ace_core.status import Status

    text = response.status_text()
    try:
        return f"{text} {Status(response.status).name.replace('_', ' ').title()}"
    except ValueError:
        return text


def _payload_text(payload: bytes) -> str:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return _bytes_text(payload)
    return text if text.isprintable() or not text else _bytes_text(payload)


def _hints_text(hints: CreationHints) -> str:
    parts = [
        f"AS {hints.as_uri or '-'}",
        f"audience {hints.audience or '-'}",
        f"scope {_scope_text(hints.scope)}",
    ]
    if hints.cnonce is not None:
        parts.append(f"cnonce {_bytes_text(hints.cnonce)}")
    return ", ".join(parts)


def _session_text(info: SessionInfo) -> str:
    return (
        f"2.01, token for {info.audience} ({len(info.access_token)} bytes, {_scope_text(info.scope)}, "
        f"expires in {info.seconds_left:.0f} s); recipient ids: ours {_bytes_text(info.client_recipient_id)}, "
        f"the lock's {_bytes_text(info.server_recipient_id)}"
    )


# --- token -------------------------------------------------------------------------------------------------


def _access_information(info: AccessInformation, requested_scope: str | bytes) -> dict[str, Any]:
    """The access information as JSON-able data, the master secret replaced by its size. Without ``scope`` the
    AS granted the requested one (RFC 6749 §5.1, RFC 9200 §5.8.2)."""
    from ace_core.keys import b64url_encode
    from ace_core.pop import Confirmation
    from ace_core.registry import AceProfile, TokenType

    out: dict[str, Any] = {"access_token": b64url_encode(info.access_token)}
    token_type = info.effective_token_type
    out["token_type"] = token_type.name if isinstance(token_type, TokenType) else token_type
    if info.expires_in is not None:
        out["expires_in"] = info.expires_in
    if info.ace_profile is not None:
        profile = info.ace_profile
        out["ace_profile"] = profile.name.lower() if isinstance(profile, AceProfile) else profile
    if info.scope is not None:
        out["scope"] = _scope_text(info.scope)
    else:
        out["scope"] = _scope_text(requested_scope) + " -- as requested"
    if info.cnf is not None:
        cnf = Confirmation.from_cbor_map(dict(info.cnf))
        if cnf.osc is not None:
            osc = cnf.osc.to_json()
            if cnf.osc.ms is not None:
                osc["ms"] = f"(secret, {len(cnf.osc.ms)} bytes)"
            out["cnf"] = {"osc": osc}
        else:
            out["cnf"] = "(not OSCORE input material)"
    if info.rs_cnf is not None:
        out["rs_cnf"] = "(present)"
    return out


def _material(info: AccessInformation) -> list[tuple[str, str]] | None:
    """The OSCORE input material for text output: byte strings in hex, the master secret as its size."""
    from ace_core.pop import Confirmation

    if info.cnf is None:
        return None
    osc = Confirmation.from_cbor_map(dict(info.cnf)).osc
    if osc is None:
        return None
    rows = [("id", _bytes_text(osc.id) if osc.id is not None else "-")]
    rows.append(("ms", f"(secret, {len(osc.ms)} bytes)" if osc.ms is not None else "-"))
    for name, value in (("salt", osc.salt), ("contextId", osc.context_id)):
        if value is not None:
            rows.append((name, _bytes_text(value)))
    for name, number in (("alg", osc.alg), ("hkdf", osc.hkdf), ("version", osc.version)):
        if number is not None:
            rows.append((name, str(number)))
    return rows


def _cmd_token(args: argparse.Namespace) -> int:
    if not args.as_uri:
        raise _fail(f"no AS: give --as URI or set ${AS_ENV}", status=2)
    scope = _scope(args.scope)
    client = _client(args)

    async def work(client: AceClient) -> int:
        info = await client.request_token(args.audience, scope)
        shown = _access_information(info, scope)
        if args.json:
            print(json.dumps(shown, indent=2))
            return 0
        print(f"access token for {args.audience} from {args.as_uri} (RFC 9200 section 5.8.2):")
        print(f"  access_token: {len(info.access_token)} bytes")
        print(f"    {info.access_token.hex()}")
        for name in ("token_type", "ace_profile", "expires_in", "scope"):
            if name in shown:
                suffix = " s" if name == "expires_in" else ""
                print(f"  {name + ':':<13} {shown[name]}{suffix}")
        material = _material(info)
        if material is not None:
            print("  cnf: OSCORE_Input_Material (RFC 9203 section 3.2.1)")
            for key, value in material:
                print(f"    {key + ':':<10} {value}")
        return 0

    return _run(client, work)


# --- open / get --------------------------------------------------------------------------------------------


async def _connect(
    client: AceClient, uri: str, method: str, args: argparse.Namespace, scope: str | bytes | None
) -> None:
    """Discovery (unless AS and audience are known), then token + upload + derivation; prints each step."""
    from urllib.parse import urlsplit

    audience = args.audience
    if audience is None or client.as_uri is None or scope is None:
        hints = await client.discover(uri, method)
        print(f"{method} {urlsplit(uri).path or '/'} unprotected: 4.01 with hints: {_hints_text(hints)}")
        if client.as_uri is None and hints.as_uri is not None:
            print(
                f"using the AS the lock names ({hints.as_uri}); hints are unauthenticated -- pass --as to pin it",
                file=sys.stderr,
            )
    info = await client.connect(uri, audience=audience, scope=scope)
    print(f"token uploaded to /authz-info: {_session_text(info)}")


def _cmd_open(args: argparse.Namespace) -> int:
    from client_sdk.session import origin_of

    scope = _scope(args.scope)
    try:
        origin = origin_of(args.lock)
    except ValueError as exc:
        raise _fail(str(exc), status=2) from None
    uri = origin + "/" + args.path.lstrip("/")
    client = _client(args, accept_hinted_as=args.as_uri is None)

    async def work(client: AceClient) -> int:
        await _connect(client, uri, "PUT", args, scope)
        response = await client.request("PUT", uri, args.payload.encode())
        shown = f": {_payload_text(response.payload)}" if response.payload else ""
        print(f"PUT {args.path} {args.payload!r} over OSCORE: {_status_text(response)}{shown}")
        return 0 if response.ok else 1

    return _run(client, work)


def _cmd_get(args: argparse.Namespace) -> int:
    from client_sdk.session import origin_of

    scope = _scope(args.scope) if args.scope else None
    try:
        origin_of(args.uri)
    except ValueError as exc:
        raise _fail(str(exc), status=2) from None
    client = _client(args, accept_hinted_as=args.as_uri is None)

    async def work(client: AceClient) -> int:
        await _connect(client, args.uri, "GET", args, scope)
        response = await client.request("GET", args.uri)
        media = f" ({response.content_type})" if response.content_type else ""
        print(f"{_status_text(response)}{media}")
        if response.payload:
            print(_payload_text(response.payload))
        return 0 if response.ok else 1

    return _run(client, work)
