"""``ostiary lock ...``: run the reference door lock and write its configuration.

* ``ostiary lock init-config --audience A --as-uri URI --issuer ISS --key HEX [--out FILE]`` writes a TOML
  configuration (format: :mod:`resource_server.config`), mode 0600 because it holds the AS<->RS key.
* ``ostiary lock serve --config FILE`` runs :mod:`resource_server.examples.door_lock` until SIGTERM/SIGINT.
* ``ostiary lock serve --bootstrap BUNDLE --bundle-key KEYFILE [--serial S] [--state-dir DIR]`` runs it with
  credentials from the bootstrap server (issue #7): bootstrap first when ``DIR`` holds none, then register at the
  AS, pull rotations every ``--pull-interval`` seconds, de-register at SIGTERM. The port is checked before the
  bootstrap, so a lock that cannot serve takes no key.

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
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, metavar="FILE", help="the lock's TOML configuration")
    source.add_argument(
        "--bootstrap",
        type=Path,
        metavar="BUNDLE",
        help="get credentials from the bootstrap server: the device's sealed bundle (a .bundle file, or a batch's "
        "bundles.zip or directory with --serial)",
    )
    serve.add_argument("--serial", metavar="SERIAL", help="the device, when BUNDLE is an archive or batch directory")
    serve.add_argument("--bundle-key", type=Path, metavar="KEYFILE", help="the batch's bundle key file")
    serve.add_argument(
        "--state-dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where the credentials (credentials.cbor) and tokens (lock.state) are kept (default: .)",
    )
    serve.add_argument(
        "--bootstrap-method",
        choices=["pack", "classic"],
        default="pack",
        help="pack: Bootstrap-Pack-Request, classic on 4.04 (default); classic: POST /bs. The periodic pulls and "
        "re-bootstraps use the same method",
    )
    serve.add_argument(
        "--pull-interval",
        type=float,
        default=3600.0,
        metavar="S",
        help="seconds between bootstraps that pick up a rotated key; also caps the wait between registration retries "
        "(default: 3600)",
    )
    serve.add_argument(
        "--issuer",
        help="the AS's iss (default: coap://AS-HOST/token, the AS's default form; give it when the AS's issuer "
        "setting differs)",
    )
    serve.add_argument(
        "--as-uri",
        help="the AS token endpoint for creation hints (default: coap://AS-HOST:5683/token; give it when the AS's "
        "CoAP side is on another port)",
    )
    serve.add_argument(
        "--host", help="listen address (with --config: overrides [listen] host; with --bootstrap default: 127.0.0.1)"
    )
    serve.add_argument(
        "--port",
        type=int,
        help="UDP port (with --config: overrides [listen] port; with --bootstrap default: 5683, which 'ostiary as "
        "serve' holds on its machine: give the lock a port of its own there, e.g. 5686)",
    )
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


def _open_bundle(path: Path, serial: str | None, key_file: Path | None) -> Any:
    """The device's :class:`DeviceBundle`: a single sealed bundle, or ``SERIAL.bundle`` of a batch's
    ``bundles.zip`` (or its directory), opened with the batch key (as ``ostiary factory show-bundle``)."""
    from ace_core.lwm2m.bundle import BundleError, BundleKey, parse_key_file
    from as_server.bootstrap.archive import ArchiveError, read_member

    if key_file is None:
        raise CliError("--bootstrap needs the batch's key file: --bundle-key KEYFILE", status=2)
    archive = path / "bundles.zip" if path.is_dir() else path
    try:
        if archive.suffix == ".zip":
            if serial is None:
                raise CliError(f"{archive} is a batch archive: say which device with --serial SERIAL", status=2)
            blob = read_member(archive, f"{serial}.bundle")
        else:
            blob = archive.read_bytes()
        key = BundleKey(parse_key_file(key_file.read_text(encoding="utf-8")))
        bundle = key.open(blob)
    except OSError as exc:
        raise CliError(f"cannot read {exc.filename}: {exc.strerror}") from None
    except (ArchiveError, BundleError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot open the bundle: {exc}") from None
    if serial is not None and bundle.serial != serial:
        raise CliError(f"the bundle is for {bundle.serial}, not {serial}")
    return bundle


def _serve_bootstrapped(args: argparse.Namespace) -> int:
    import asyncio
    from urllib.parse import urlsplit

    from resource_server.bootstrap_client import BootstrapError
    from resource_server.credentials import CredentialKeeper, CredentialsError, CredentialStore
    from resource_server.examples import door_lock
    from resource_server.transport.lwm2m_client import BootstrapClient

    bundle = _open_bundle(args.bootstrap, args.serial, args.bundle_key)
    state_dir: Path = args.state_dir
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        keeper = CredentialKeeper(CredentialStore(state_dir / "credentials.cbor"))
    except OSError as exc:
        raise CliError(f"cannot use {state_dir}: {exc.strerror}") from None
    except CredentialsError as exc:
        raise CliError(str(exc)) from None
    as_host = urlsplit(bundle.bootstrap_uri).hostname or "127.0.0.1"
    if keeper.credentials is not None:
        as_host = urlsplit(keeper.credentials.server_uri).hostname or as_host
    host_part = f"[{as_host}]" if ":" in as_host else as_host
    client = BootstrapClient(bundle, keeper)
    try:
        return asyncio.run(
            door_lock.run_bootstrapped(
                client,
                issuer=args.issuer or f"coap://{host_part}/token",
                as_uri=args.as_uri or f"coap://{host_part}:5683/token",
                host=args.host or "127.0.0.1",
                port=args.port if args.port is not None else 5683,
                state_file=state_dir / "lock.state",
                method=args.bootstrap_method,
                pull_interval=args.pull_interval,
            )
        )
    except BootstrapError as exc:
        raise CliError(f"bootstrap failed (nothing stored): {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot serve: {exc.strerror or exc}") from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    if args.bootstrap is not None:
        logging.basicConfig(
            level=args.log_level.upper(),
            format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
            datefmt="%Y-%m-%d %H:%M:%S %z",
            stream=sys.stderr,
        )
        return _serve_bootstrapped(args)

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
