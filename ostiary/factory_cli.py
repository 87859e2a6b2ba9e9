"""``ostiary factory ...``: make devices and manage who owns them (issue #7, "Factory side" and "Ownership").

* ``batch --count N --model M [--site S]`` makes N devices: unique bootstrap credentials recorded in the device
  store (``$OSTIARY_HOME/devices.db``, secrets sealed under the master key), one sealed bundle per device in
  ``bundles.zip``, a manifest (CSV and JSON Lines) and the batch's bundle key (:mod:`as_server.bootstrap.factory`).
* ``show-bundle FILE [--serial S] [--key KEYFILE] [--json]`` opens a bundle for the flashing station.
* ``claim ENROLMENT_ID --site S`` (first claim wins), ``release SERIAL|ENROLMENT_ID``, ``list``, ``batches`` and
  ``discard-batch BATCH``.

Every command takes ``--home DIR``; the deployment must exist (``ostiary as init``: the master key). The PSK is
printed only by ``show-bundle``, which is what it is for.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ostiary.cli import CliError

if TYPE_CHECKING:
    from as_server.bootstrap.device_db import SqliteDeviceStore
    from as_server.bootstrap.devices import BatchRecord, DeviceRecord
    from as_server.config import Settings
    from as_server.sealing import MasterKey

__all__ = ["add_factory_commands"]

Formatter = argparse.RawDescriptionHelpFormatter

#: The IANA default port of coaps (RFC 7252 §12.7), where the bootstrap server listens unless told otherwise.
DEFAULT_BOOTSTRAP_PORT = 5684

_BATCH_EPILOG = """\
examples:
  ostiary factory batch --count 1000 --model L1                      # unclaimed devices
  ostiary factory batch --count 50 --model L1 --site building-a \\
      --vendor 00A0C6 --bootstrap-uri coaps://bs.example.com:5684 --out /srv/line/batch-17

Output (DIR, default ./BATCH_ID; mode 0700, files 0600):
  bundles.zip      one sealed bundle per device, named SERIAL.bundle (AES-256-GCM under the batch key)
  manifest.csv     serial, model, endpoint, enrolment_id, psk_identity, site, batch, bundle -- no keys,
  manifest.jsonl   but an enrolment id claims an unclaimed device: treat the manifest as confidential
  bundle.key       the batch key (--key-out puts it elsewhere): only the flashing station needs it;
                   destroy it with the bundles once the batch is flashed
  BATCH.txt        what is what, for the people on the line
The devices are recorded in $OSTIARY_HOME/devices.db, their PSKs and the batch key sealed under the master key.
An endpoint name is urn:dev:ops:VENDOR-MODEL-NNNNNNNN (RFC 9039; give your IEEE OUI as --vendor); the PSK
identity is bs- and 16 random base32 characters (within tinydtls's 32 bytes); the enrolment id four groups of four
characters with a check character."""

_SHOW_EPILOG = """\
examples:
  ostiary factory show-bundle batch-L1/bundles.zip --serial L1-00000042 --key batch-L1/bundle.key
  unzip -p batch-L1/bundles.zip L1-00000042.bundle > b && ostiary factory show-bundle b --key batch-L1/bundle.key --json
  ostiary factory show-bundle batch-L1/bundles.zip --serial L1-00000042     # on the AS host: key from devices.db

The output includes the device's PSK: it is for the flashing station. For an LwM2M client the values go into
its bootstrap account (/0/x: URI in resource 0, security mode 0 = PSK, identity in 3, PSK in 5), e.g.
Anjay's demo: --bootstrap --security-mode psk --identity-as-string ID --key PSK_HEX --server-uri URI"""


def add_factory_commands(group: argparse.ArgumentParser) -> None:
    """Add the ``factory`` commands."""
    from ostiary.as_cli import home_parent

    group.add_argument(
        "--home",
        type=Path,
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the deployment directory (default: $OSTIARY_HOME, else ~/.local/share/ostiary)",
    )
    parents = [home_parent()]
    json_out = argparse.ArgumentParser(add_help=False)
    json_out.add_argument("--json", action="store_true", help="print JSON")
    sub = group.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser(
        "batch",
        help="make N devices: credentials, sealed bundles, manifest; record them",
        description="Make a factory batch: N devices, each with a serial number, an LwM2M endpoint name, a unique\n"
        "128-bit bootstrap PSK and PSK identity and an enrolment id; record them in the device store (the PSKs\n"
        "sealed under the master key), write one sealed credential bundle per device and a manifest for the\n"
        "production line. All or nothing: if anything fails, nothing of the batch is kept.",
        epilog=_BATCH_EPILOG,
        formatter_class=Formatter,
        parents=parents,
    )
    p.add_argument("--count", type=int, required=True, metavar="N", help="how many devices")
    p.add_argument("--model", required=True, metavar="M", help="model / product class: letters, digits, . or _")
    p.add_argument("--site", metavar="S", help="pre-assign every device to this site (default: unclaimed)")
    p.add_argument(
        "--vendor",
        metavar="OUI",
        help="organisation in endpoint names, ideally your IEEE OUI in hex (default: ostiary, a placeholder)",
    )
    p.add_argument(
        "--bootstrap-uri",
        metavar="URI",
        help="the bootstrap server's coaps:// URI, baked into every bundle (default: where 'ostiary as serve' runs "
        "it: the setting bootstrap_server_uri, else coaps://<coap_host>:<bootstrap_dtls_port>, or the plain "
        "coap:// port when only bootstrap_plain_port is on; give the public address for real devices)",
    )
    p.add_argument(
        "--plain-coap",
        action="store_true",
        help="allow a coap:// bootstrap URI (development only: no DTLS, the PSK is not used)",
    )
    p.add_argument(
        "--as-public-key", type=Path, metavar="FILE", help="put the AS's public COSE key from FILE in every bundle"
    )
    p.add_argument("--out", type=Path, metavar="DIR", help="the batch directory to create (default: ./BATCH_ID)")
    p.add_argument("--key-out", type=Path, metavar="FILE", help="write the batch key here (default: DIR/bundle.key)")
    p.set_defaults(handler=_cmd_batch)

    p = sub.add_parser(
        "show-bundle",
        help="open a sealed bundle for the flashing station (prints the PSK)",
        description="Decrypt and print one device's bundle: endpoint name, serial, model, bootstrap URI, PSK\n"
        "identity and PSK (hex), AS public key. FILE is a single bundle, or a batch's bundles.zip (or its\n"
        "directory) with --serial. The key comes from --key (the batch's bundle.key) or, on the AS host,\n"
        "from the device store. A bundle that was altered, or sealed under another key, is refused.",
        epilog=_SHOW_EPILOG,
        formatter_class=Formatter,
        parents=[*parents, json_out],
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--serial", metavar="SERIAL", help="the device, when FILE is an archive or batch directory")
    p.add_argument("--key", type=Path, metavar="KEYFILE", help="the batch's bundle key file")
    p.set_defaults(handler=_cmd_show_bundle)

    p = sub.add_parser(
        "claim",
        help="assign an unclaimed device to a site by its enrolment id (first claim wins)",
        description="Claim a device for a site with the enrolment id printed on it. The first claim wins; a\n"
        "device that already belongs to a site (pre-assigned or claimed) is refused, even for the same site.\n"
        "Case, spaces, hyphens and the look-alikes O/I/L do not matter; a mistyped character is detected.",
        epilog="example:\n  ostiary factory claim 7J2V-989J-BDV2-K6GJ --site building-a",
        formatter_class=Formatter,
        parents=[*parents, json_out],
    )
    p.add_argument("enrolment_id", metavar="ENROLMENT_ID")
    p.add_argument("--site", required=True, metavar="S", help="the site the device is for")
    p.set_defaults(handler=_cmd_claim)

    p = sub.add_parser(
        "release",
        help="return a device to unclaimed and revoke its operational credentials",
        description="Release a device from its site: it becomes unclaimed (claimable again with its enrolment\n"
        "id) and its operational credentials are marked revoked; the bootstrap server will not bootstrap it\n"
        "into a site until it is claimed again, and then issues new credentials.",
        epilog="examples:\n  ostiary factory release L1-00000042\n  ostiary factory release 7J2V-989J-BDV2-K6GJ",
        formatter_class=Formatter,
        parents=[*parents, json_out],
    )
    p.add_argument("device", metavar="SERIAL|ENROLMENT_ID")
    p.set_defaults(handler=_cmd_release)

    p = sub.add_parser(
        "list",
        help="list devices, by site or unclaimed",
        description="List recorded devices by serial number: endpoint name, site, how they were assigned, state (as\n"
        "the console's Devices page: bootstrapped, not bootstrapped, revoked, decommissioned; - in a factory-only\n"
        "home, where the AS's side is unknown), batch.",
        epilog="examples:\n  ostiary factory list --site building-a\n  ostiary factory list --unclaimed --limit 0",
        formatter_class=Formatter,
        parents=[*parents, json_out],
    )
    p.add_argument("--site", metavar="S", help="only this site's devices")
    p.add_argument("--unclaimed", action="store_true", help="only devices without a site")
    p.add_argument("--batch", metavar="BATCH", help="only this batch's devices")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N devices (default 100; 0: all)")
    p.set_defaults(handler=_cmd_list)

    p = sub.add_parser(
        "batches",
        help="list factory batches",
        description="List the factory batches: model, count, pre-assigned site, when, and whether complete.\n"
        "A pending batch was interrupted: its devices can be neither claimed nor bootstrapped.",
        epilog="example:\n  ostiary factory batches",
        formatter_class=Formatter,
        parents=[*parents, json_out],
    )
    p.set_defaults(handler=_cmd_batches)

    p = sub.add_parser(
        "discard-batch",
        help="delete an interrupted (pending) batch and its devices",
        description="Delete a batch that never completed (the process was killed) and its devices. A complete\n"
        "batch cannot be discarded: release its devices instead.",
        epilog="example:\n  ostiary factory discard-batch L1-20260323-153012-7K2Q",
        formatter_class=Formatter,
        parents=parents,
    )
    p.add_argument("batch", metavar="BATCH")
    p.set_defaults(handler=_cmd_discard)


# --- helpers ---------------------------------------------------------------------------------------------------


def _now() -> int:
    return int(time.time())


def _when(t: int | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _settings(args: argparse.Namespace) -> Settings:
    from as_server.config import ConfigError, Settings

    try:
        return Settings.load(getattr(args, "home", None))
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _master_key(settings: Settings) -> MasterKey:
    from as_server.sealing import MasterKey

    try:
        return MasterKey.load(settings.master_key_file)
    except FileNotFoundError:
        raise CliError(f"no master key at {settings.master_key_file}; run 'ostiary as init' first") from None
    except PermissionError as exc:
        raise CliError(str(exc)) from None
    except ValueError:
        raise CliError("the master key is malformed (expected base64url of 32 bytes)") from None


@contextlib.contextmanager
def _store(settings: Settings, *, create: bool = False) -> Iterator[SqliteDeviceStore]:
    """The deployment's device store; without ``create``, a missing file is an error (nothing recorded yet)."""
    from as_server.bootstrap.device_db import DEVICE_DB_FILE, SqliteDeviceStore
    from as_server.sealing import SealingError

    path = settings.home / DEVICE_DB_FILE
    if not create and not path.exists():
        raise CliError(f"no devices recorded yet ({path} does not exist); make some with 'ostiary factory batch'")
    master_key = _master_key(settings)
    try:
        store = SqliteDeviceStore(path, master_key)
    except SealingError:
        raise CliError(f"{path} was created under another master key") from None
    try:
        yield store
    finally:
        store.close()


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


def _identity_text(identity: bytes) -> str:
    text = identity.decode("ascii", "replace")
    return text if identity.isascii() and text.isprintable() else f"h'{identity.hex()}'"


def _device_view(record: DeviceRecord) -> dict[str, Any]:
    return {
        "serial": record.serial,
        "model": record.model,
        "endpoint": record.endpoint,
        "psk_identity": _identity_text(record.psk_identity),
        "batch": record.batch_id,
        "site": record.site,
        "assignment": record.assignment.value,
        "created_at": record.created_at,
        "assigned_at": record.assigned_at,
        "released_at": record.released_at,
        "revoked_at": record.revoked_at,
    }


def _batch_view(batch: BatchRecord) -> dict[str, Any]:
    return {
        "batch": batch.batch_id,
        "model": batch.model,
        "count": batch.count,
        "site": batch.site,
        "created_at": batch.created_at,
        "state": "complete" if batch.complete else "pending",
    }


def _site(value: str) -> str:
    from ace_core.lwm2m.identifiers import InvalidName, check_site

    try:
        return check_site(value)
    except InvalidName as exc:
        raise CliError(str(exc), status=2) from None


def _default_bootstrap_uri(settings: Settings) -> str:
    """Where ``ostiary as serve`` runs the bootstrap server: its DTLS port (under the public name
    ``bootstrap_server_uri`` when set: the same DTLS server locks register at), or the development plain-CoAP one
    when only that is on."""
    host = f"[{settings.coap_host}]" if ":" in settings.coap_host else settings.coap_host
    if settings.bootstrap_dtls_port:
        return settings.effective_bootstrap_server_uri
    if settings.bootstrap_plain_port:
        return f"coap://{host}:{settings.bootstrap_plain_port}"
    return f"coaps://{host}:{DEFAULT_BOOTSTRAP_PORT}"


def _is_loopback(uri: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(uri).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _as_public_key(path: Path) -> bytes:
    from ostiary.cli import _load_key

    try:
        key, _fmt = _load_key(path.read_bytes())
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise CliError(f"{path} is not a COSE key in CBOR, CBOR hex, JSON or PEM ({type(exc).__name__})") from None
    if key.is_symmetric or key.has_private:
        raise CliError(f"{path} must hold only a public key (ostiary as keys generate --public)")
    data: bytes = key.to_cbor()
    return data


# --- batch -----------------------------------------------------------------------------------------------------


def _cmd_batch(args: argparse.Namespace) -> int:
    from as_server.bootstrap.factory import (
        ARCHIVE_FILE,
        DEFAULT_VENDOR,
        MANIFEST_CSV,
        MANIFEST_JSONL,
        BatchSpec,
        FactoryError,
        run_batch,
    )
    from ostiary.progress import Progress

    settings = _settings(args)
    uri = args.bootstrap_uri or _default_bootstrap_uri(settings)
    try:
        spec = BatchSpec(
            count=args.count,
            model=args.model,
            bootstrap_uri=uri,
            vendor=args.vendor or DEFAULT_VENDOR,
            site=args.site,
            as_public_key=None if args.as_public_key is None else _as_public_key(args.as_public_key),
            allow_plain=args.plain_coap,
        )
    except FactoryError as exc:
        raise CliError(str(exc), status=2) from None
    if not settings.home.is_dir():
        raise CliError(f"no deployment at {settings.home}; run 'ostiary as init' first")
    if uri.startswith("coap:") or uri.startswith("coap+tcp:"):
        print("ostiary: warning: plain CoAP bootstrap URI: the devices will bootstrap without DTLS", file=sys.stderr)
    if _is_loopback(uri):
        print(
            f"ostiary: note: the bundles point devices at {uri} (loopback: fine for a demo; give --bootstrap-uri "
            "for real devices)",
            file=sys.stderr,
        )
    started = time.perf_counter()
    with _store(settings, create=True) as store, Progress(spec.count, "devices") as bar:
        try:
            result = run_batch(spec, store, now=_now(), out_dir=args.out, key_file=args.key_out, progress=bar.update)
        except FactoryError as exc:
            raise CliError(str(exc)) from None
    elapsed = time.perf_counter() - started
    batch = result.batch
    assigned = f"pre-assigned to site {batch.site}" if batch.site else "unclaimed"
    rows = [
        ("bootstrap server", spec.bootstrap_uri),
        ("directory", str(result.directory)),
        ("bundles", f"{result.directory / ARCHIVE_FILE} (one sealed SERIAL.bundle per device)"),
        ("manifest", f"{result.directory / MANIFEST_CSV}, {MANIFEST_JSONL} (enrolment ids: confidential)"),
        ("bundle key", f"{result.key_file} (mode 0600): for the flashing station only; destroy after flashing"),
        ("recorded in", str(store.path)),
        ("took", f"{elapsed:.1f} s ({spec.count / elapsed:,.0f} devices/s)"),
    ]
    print(
        f"batch {batch.batch_id}: {batch.count:,} devices of model {batch.model}, "
        f"serials {result.first_serial} .. {result.last_serial}, {assigned}"
    )
    width = max(len(name) for name, _ in rows) + 1
    for name, value in rows:
        print(f"  {name:<{width}} {value}")
    if result.redrawn:
        print(f"  note: {result.redrawn} device(s) got new random values after a collision", file=sys.stderr)
    return 0


# --- show-bundle -----------------------------------------------------------------------------------------------


def _read_bundle(path: Path, serial: str | None) -> bytes:
    from as_server.bootstrap.archive import ArchiveError, read_member
    from as_server.bootstrap.factory import ARCHIVE_FILE, bundle_member

    archive = path / ARCHIVE_FILE if path.is_dir() else path
    try:
        if zipfile.is_zipfile(archive):
            if serial is None:
                raise CliError(f"{archive} is a batch archive: say which device with --serial SERIAL", status=2)
            return read_member(archive, bundle_member(serial))
        if serial is not None and path.is_file():
            print("ostiary: note: FILE is a single bundle; --serial only checks it", file=sys.stderr)
        return archive.read_bytes()
    except ArchiveError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot read {archive}: {exc.strerror}") from None


def _cmd_show_bundle(args: argparse.Namespace) -> int:
    from ace_core.lwm2m.bundle import BundleError, BundleKey, parse_key_file, peek_header

    blob = _read_bundle(args.file, args.serial)
    try:
        header = peek_header(blob)
    except BundleError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    if args.serial is not None and header.serial != args.serial:
        raise CliError(f"the bundle is for {header.serial}, not {args.serial}")
    if args.key is not None:
        try:
            raw = parse_key_file(args.key.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CliError(f"cannot read {args.key}: {exc.strerror}") from None
        except (UnicodeDecodeError, BundleError) as exc:
            raise CliError(f"{args.key}: not a bundle key file ({exc})") from None
    else:
        from as_server.bootstrap.device_db import DEVICE_DB_FILE

        settings = _settings(args)
        if not (settings.home / DEVICE_DB_FILE).exists():
            raise CliError(f"no device store at {settings.home}; give the batch's key file with --key KEYFILE")
        with _store(settings) as store:
            found = store.bundle_key(header.batch_id)
        if found is None:
            raise CliError(f"batch {header.batch_id} is not in this deployment's device store; give --key KEYFILE")
        raw = found
    try:
        bundle = BundleKey(raw).open(blob)
    except BundleError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    print("ostiary: warning: the output includes the device's PSK; it is for the flashing station", file=sys.stderr)
    view = {"batch": header.batch_id, **bundle.to_json()}
    if args.json:
        _print_json(view)
        return 0
    identity = view["psk_identity"] or "(binary)"
    rows = [
        ("serial", bundle.serial),
        ("model", bundle.model),
        ("endpoint", bundle.endpoint),
        ("batch", header.batch_id),
        ("bootstrap URI", bundle.bootstrap_uri),
        ("PSK identity", f"{identity} (hex {bundle.psk_identity.hex()})"),
        ("PSK", f"{bundle.psk.hex()} (hex, {len(bundle.psk)} bytes)"),
        ("AS public key", "(none)" if bundle.as_public_key is None else bundle.as_public_key.hex() + " (COSE_Key)"),
    ]
    width = max(len(name) for name, _ in rows) + 1
    for name, value in rows:
        print(f"{name + ':':<{width}} {value}")
    return 0


# --- ownership -------------------------------------------------------------------------------------------------


def _enrolment_id(text: str) -> str:
    from ace_core.lwm2m.identifiers import EnrolmentIdError, parse_enrolment_id

    try:
        return parse_enrolment_id(text)
    except EnrolmentIdError as exc:
        raise CliError(f"not an enrolment id: {exc}", status=2) from None


def _cmd_claim(args: argparse.Namespace) -> int:
    from as_server.bootstrap.devices import AlreadyClaimed, UnknownDevice

    enrolment_id = _enrolment_id(args.enrolment_id)
    site = _site(args.site)
    with _store(_settings(args)) as store:
        try:
            record = store.claim(enrolment_id, site, now=_now())
        except UnknownDevice:
            raise CliError("no device has this enrolment id") from None
        except AlreadyClaimed as exc:
            raise CliError(f"{exc}: the first claim won; 'ostiary factory release' returns a device") from None
    if args.json:
        _print_json(_device_view(record))
    else:
        print(f"claimed {record.serial} ({record.endpoint}) for site {record.site}")
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    from ace_core.lwm2m.identifiers import InvalidName, parse_serial
    from as_server.bootstrap.devices import NotClaimed, UnknownDevice

    with _store(_settings(args)) as store:
        try:
            parse_serial(args.device)
            serial = args.device
        except InvalidName:
            found = store.by_enrolment_id(_enrolment_id(args.device))
            if found is None:
                raise CliError("no device has this enrolment id") from None
            serial = found.serial
        before = store.get(serial)
        try:
            record = store.release(serial, now=_now())
        except UnknownDevice:
            raise CliError(f"no device {serial}") from None
        except NotClaimed as exc:
            raise CliError(str(exc)) from None
    revoked = _revoke_operational(_settings(args), record.serial)
    if args.json:
        _print_json({**_device_view(record), "tokens_revoked": revoked})
    else:
        site = before.site if before is not None else "?"
        what = (
            "it was never bootstrapped"
            if revoked is None
            else f"its operational keys are erased, its resource server disabled, {revoked} tokens revoked"
        )
        print(
            f"released {record.serial} from site {site}: unclaimed now; {what} "
            "(it gets new credentials when it is claimed and bootstrapped again)"
        )
    return 0


def _revoke_operational(settings: Settings, serial: str) -> int | None:
    """Revoke the released lock's operational credentials at the AS (design: "Revocation"): the number of tokens
    revoked, or ``None`` when the lock was never bootstrapped (no resource server of that name)."""
    from as_server.bootstrap.operational import UnknownLock
    from ostiary.admin_cli import actor
    from ostiary.as_cli import _credentials, _storage

    if not settings.database_url and not (settings.home / "ostiary.db").exists():
        return None  # a factory-only home (no AS here): nothing was ever bootstrapped against it
    with _storage(settings) as storage:
        try:
            return int(_credentials(storage, settings).revoke(serial, now=_now(), actor=actor()))
        except UnknownLock:
            return None


def _rs_enabled(settings: Settings) -> dict[str, bool] | None:
    """Whether each of the AS's resource servers (a bootstrapped lock's serial) is enabled; ``None`` in a
    factory-only home (no AS database here)."""
    from ostiary.as_cli import _storage

    if not settings.database_url and not (settings.home / "ostiary.db").exists():
        return None
    with _storage(settings) as storage:
        return {rs.audience: rs.enabled for rs in storage.list_resource_servers()}


def _state(record: DeviceRecord, enabled: dict[str, bool] | None) -> str | None:
    """The console's Devices page's state (:func:`~as_server.bootstrap.devices.device_state`); ``None`` when it
    depends on an AS this home does not have (factory-only: the record alone says decommissioned or revoked)."""
    from as_server.bootstrap.devices import device_state

    state = device_state(record, None if enabled is None else enabled.get(record.serial))
    return None if enabled is None and state == "not bootstrapped" else state


def _cmd_list(args: argparse.Namespace) -> int:
    site = None if args.site is None else _site(args.site)
    if args.limit < 0:
        raise CliError("--limit must be 0 (all) or more", status=2)
    with _store(_settings(args)) as store:
        limit = None if args.limit == 0 else args.limit + 1
        records = list(store.list_devices(site=site, unclaimed=args.unclaimed, batch_id=args.batch, limit=limit))
    more = args.limit != 0 and len(records) > args.limit
    records = records[: args.limit] if more else records
    enabled = _rs_enabled(_settings(args)) if records else {}
    states = [_state(r, enabled) for r in records]
    if args.json:
        _print_json([{**_device_view(r), "state": state} for r, state in zip(records, states, strict=True)])
        return 0
    if not records:
        print("no devices")
        return 0
    _table(
        ("SERIAL", "ENDPOINT", "SITE", "ASSIGNED", "STATE", "BATCH"),
        [
            (r.serial, r.endpoint, r.site or "-", r.assignment.value, state or "-", r.batch_id)
            for r, state in zip(records, states, strict=True)
        ],
    )
    if more:
        print(f"(first {args.limit}; --limit 0 lists all)")
    return 0


def _cmd_batches(args: argparse.Namespace) -> int:
    with _store(_settings(args)) as store:
        batches = list(store.list_batches())
    if args.json:
        _print_json([_batch_view(b) for b in batches])
        return 0
    if not batches:
        print("no batches")
        return 0
    _table(
        ("BATCH", "MODEL", "COUNT", "SITE", "CREATED", "STATE"),
        [
            (b.batch_id, b.model, f"{b.count:,}", b.site or "-", _when(b.created_at), _batch_view(b)["state"])
            for b in batches
        ],
    )
    return 0


def _cmd_discard(args: argparse.Namespace) -> int:
    from as_server.bootstrap.devices import BatchStateError

    with _store(_settings(args)) as store:
        try:
            removed = store.discard_batch(args.batch)
        except BatchStateError as exc:
            raise CliError(str(exc)) from None
    print(f"discarded pending batch {args.batch} and its {removed:,} devices")
    return 0
