"""``ostiary lock ...``: run the reference door lock and write its configuration.

* ``ostiary lock init-config --audience A --as-uri URI --issuer ISS --key HEX [--out FILE]`` writes a TOML
  configuration (format: :mod:`resource_server.config`), mode 0600 because it holds the AS<->RS key.
* ``ostiary lock serve --config FILE`` runs :mod:`resource_server.examples.door_lock` until SIGTERM/SIGINT.

The resource-server modules are imported inside the handlers, so building the parser needs neither them nor
aiocoap.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ostiary.cli import CliError

__all__ = ["add_lock_commands"]


def add_lock_commands(group: argparse.ArgumentParser) -> None:
    """Add ``serve`` and ``init-config`` to the ``lock`` group."""
    commands = group.add_subparsers(title="commands", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the reference door lock (CoAP + OSCORE) until SIGTERM",
        description="Run the reference door lock: /authz-info for ACE tokens (RFC 9200 section 5.10.1,\n"
        "RFC 9203) and /lock, /battery, /log over OSCORE. Logs to stderr (no key material): every refused\n"
        "request and token, and every unlock with the token that did it; every granted request too with\n"
        "audit_granted = true under [rs] in the config. SIGTERM or SIGINT stops it cleanly (exit status 0).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--config", type=Path, required=True, metavar="FILE", help="the lock's TOML configuration")
    serve.add_argument("--host", help="listen address (overrides [listen] host)")
    serve.add_argument("--port", type=int, help="UDP port (overrides [listen] port)")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level (default: info)",
    )
    serve.set_defaults(handler=_cmd_serve)

    init = commands.add_parser(
        "init-config",
        help="write a lock configuration file",
        description="Write a TOML configuration for a lock. The key is the AS<->RS key that\n"
        "'ostiary as rs add' printed (COSE_Key, hex or base64url); the file is created with mode 0600.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("--audience", required=True, action="append", help="audience the lock identifies with")
    init.add_argument("--as-uri", required=True, help="the AS token endpoint, sent in creation hints")
    init.add_argument("--issuer", required=True, help="the AS's iss (its 'issuer' setting)")
    init.add_argument("--key", required=True, action="append", help="AS<->RS key, COSE_Key hex or base64url")
    init.add_argument("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    init.add_argument("--port", type=int, default=5683, help="UDP port (default: 5683)")
    init.add_argument("--state-file", help="keep tokens across restarts in this file")
    init.add_argument("--no-clock", action="store_true", help="the lock has no wall clock (exi tokens only)")
    init.add_argument("--out", type=Path, metavar="FILE", help="write to FILE instead of standard output")
    init.add_argument("--force", action="store_true", help="replace FILE if it exists")
    init.set_defaults(handler=_cmd_init_config)


def _cmd_init_config(args: argparse.Namespace) -> int:
    from resource_server.config import ConfigError, parse_key, render_config, rs_config_from_mapping

    try:
        for key in args.key:
            parse_key(key)
    except ConfigError as exc:
        raise CliError(str(exc), status=2) from None
    if not 0 <= args.port <= 65535:
        raise CliError("--port must be 0..65535", status=2)
    text = render_config(
        audiences=args.audience,
        issuer=args.issuer,
        as_uri=args.as_uri,
        keys=["".join(k.split()) for k in args.key],
        host=args.host,
        port=args.port,
        state_file=args.state_file,
        has_clock=not args.no_clock,
    )
    import tomllib

    try:
        rs_config_from_mapping(tomllib.loads(text))  # what we write must load
    except ConfigError as exc:
        raise CliError(str(exc), status=2) from None
    out: Path | None = args.out
    if out is None:
        sys.stdout.write(text)
        return 0
    _write_private(out, text.encode("utf-8"), replace=args.force)
    print(f"wrote lock configuration to {out} (mode 0600: it holds the AS<->RS key)", file=sys.stderr)
    return 0


def _write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """Create ``path`` with mode 0600 (atomically replacing it only with ``replace``)."""
    if path.exists() and not replace:
        raise CliError(f"{path} exists; use --force to replace it")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CliError(f"cannot write in {path.parent}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path appeared meanwhile: never clobber without --force
            os.unlink(tmp)
    except FileExistsError:
        Path(tmp).unlink(missing_ok=True)
        raise CliError(f"{path} exists; use --force to replace it") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cmd_serve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from resource_server.config import ConfigError, load_config
    from resource_server.examples import door_lock

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise CliError(str(exc), status=2) from None
    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if overrides:
        config = replace(config, **overrides)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S %z",
        stream=sys.stderr,
    )
    try:
        return door_lock.main(config)
    except OSError as exc:
        raise CliError(f"cannot serve on {config.host}:{config.port}: {exc.strerror or exc}") from None
    except ValueError as exc:  # an unreadable state file: refuse to start rather than lose replay state silently
        raise CliError(f"cannot restore the lock's state: {exc}") from None
