"""Settings of an authorization-server deployment: defaults < ``$OSTIARY_HOME/ostiary.toml`` < ``OSTIARY_*``.

All state of a deployment -- the configuration file, the master key, the SQLite database, the policy file -- lives
in one directory, ``OSTIARY_HOME`` (default ``$XDG_DATA_HOME/ostiary``, i.e. ``~/.local/share/ostiary``), so two
deployments never collide. Nothing is read at import time.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ace_core.cbor import DEFAULT_MAX_SIZE

__all__ = ["ConfigError", "Settings", "default_home"]

CONFIG_FILE = "ostiary.toml"


class ConfigError(ValueError):
    """A configuration value is missing or malformed (the message names it)."""


def default_home(env: Mapping[str, str] | None = None) -> Path:
    """``OSTIARY_HOME``, else ``$XDG_DATA_HOME/ostiary``, else ``~/.local/share/ostiary``."""
    env = os.environ if env is None else env
    if env.get("OSTIARY_HOME"):
        return Path(env["OSTIARY_HOME"]).expanduser()
    base = Path(env["XDG_DATA_HOME"]).expanduser() if env.get("XDG_DATA_HOME") else Path.home() / ".local/share"
    return base / "ostiary"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """One deployment's configuration. Each field maps to ``OSTIARY_<FIELD>`` and to ``<field>`` in the TOML."""

    home: Path
    #: ``iss`` of issued tokens (RFC 8392 §3.1.1) and the issuer of the metadata (RFC 8414 §2).
    issuer: str = "coap://127.0.0.1/token"
    #: SQLAlchemy URL; default ``sqlite:///$OSTIARY_HOME/ostiary.db`` (WAL mode).
    database_url: str = ""
    coap_host: str = "127.0.0.1"
    coap_port: int = 5683
    #: Threads running CoAP requests in the ``ostiary as serve`` process: introspection, the consent resources, and
    #: token requests that cannot run on the event loop (grants other than ``client_credentials``, resource servers
    #: without a clock, requests referred to consent; see :class:`as_server.transport.coap.TokenResource`). Such a
    #: request holds its thread until its writes are committed; the process is CPU-bound (one GIL) long before 16
    #: threads are busy, and more only cost memory.
    coap_threads: int = 16
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    #: gunicorn worker processes and threads per worker for HTTP. One worker runs Python on one core at a time (the
    #: GIL), so a second worker is what lets HTTP use a second core; threads cover the wait for the commit. With
    #: SQLite (the default) the workers' token writers take turns through a lock file instead of SQLite's sleeping
    #: busy handler (:class:`~as_server.storage.sqlalchemy.engine.WriteLock`), and each commit carries the tokens of
    #: all of that worker's waiting requests, so SQLite's single writer is not what limits two workers. Measured on
    #: two cores with 32 keep-alive clients (benchmarks/bench_as ``--workers/--threads``, median of 3 x 10 s): 2 x 8
    #: issued 1,079 tokens/s (p50 29 ms; 657-1,301 per run, depending on how gunicorn's workers happen to split the
    #: connections) against 706 (p50 44 ms; 700-719) for 1 x 16, whose single process is held to one core. More
    #: workers pay off with more cores, and more so on PostgreSQL, which has no single writer; on SQLite each commit
    #: is one fsync, so a disk with slow syncs favours fewer, fuller commits.
    http_workers: int = 2
    http_threads: int = 8
    #: Public base URL of the HTTP side, for the discovery metadata (default ``http://<http_host>:<http_port>``).
    http_base_url: str = ""
    #: Token lifetime when neither policy, RS nor client asks for less (seconds).
    token_lifetime: int = 3600
    #: For tokens of resource servers without a clock, which carry ``exi`` (lifetime from first receipt by the RS,
    #: RFC 9200 §5.10.3) instead of ``exp``: how long after issue the AS assumes the token may still be uploaded
    #: (seconds). The AS cannot know when the RS first sees the token, so it treats such a token as in use until
    #: issue time + ``exi`` + this window (introspection's ``active``, updates of access rights by ``kid``); a
    #: client that keeps tokens longer before uploading them (offline use) needs a larger value.
    exi_upload_window: int = 86400
    #: Requests larger than this are refused before parsing (4.13 / 413).
    max_payload: int = DEFAULT_MAX_SIZE
    #: The policy file (YAML: rules with effect permit, deny or consent; :mod:`policies.policy_file`, README
    #: "Policies"), read when the server starts; default ``$OSTIARY_HOME/policy.yaml``.
    policy_file: Path | None = None
    #: Failed client authentications allowed per client_id and per source address within the window (also per user
    #: name for approvers at the consent API). Counted in each server process on its own (:mod:`as_server.auth`):
    #: with ``http_workers`` gunicorn workers and the CoAP process, up to about this x (``http_workers`` + 1)
    #: failures get through per window.
    auth_failure_limit: int = 10
    auth_failure_window: int = 60
    log_level: str = "INFO"
    #: Consent workflow (:mod:`as_server.consent`): how long an access request waits for a decision before it
    #: expires (seconds). Expiry is applied lazily, whenever requests are read or listed.
    access_request_lifetime: int = 86400
    #: How often the CoAP side re-reads the access requests that clients observe (RFC 7641), so that decisions
    #: made by another process (a gunicorn worker, ``ostiary consent approve``) reach the observers (seconds).
    #: Decisions made in the CoAP process itself are notified at once. One query per interval, only while
    #: something is observed.
    consent_poll_interval: float = 1.0
    #: Access-request observations the CoAP side keeps at most; beyond that a GET with Observe is answered once,
    #: without registering the observer (RFC 7641 §4.1 lets a server decline).
    consent_max_observations: int = 1000
    #: Default time zone of the weekly windows an approver gives without one (IANA name).
    consent_timezone: str = "UTC"
    #: Audit entries of refused token requests are written asynchronously (:mod:`as_server.audit`): at most this
    #: many wait in memory; more are dropped and counted (an ``audit.dropped`` entry records how many).
    audit_queue_size: int = 10000
    #: ... and they are committed at most once per this interval (seconds), in one transaction per batch, so a
    #: flood of refused requests costs at most one audit commit per interval.
    audit_flush_interval: float = 0.5
    #: Apps signing users in (issue #5, :mod:`as_server.oauth`): how long an authorization code may be exchanged
    #: (seconds; RFC 6749 §4.1.2 recommends at most 10 minutes, a native app exchanges it at once).
    authorization_code_lifetime: int = 60
    #: How long a refresh token may be used (seconds); every use replaces it with a new one (rotation).
    refresh_token_lifetime: int = 30 * 86400
    #: The absolute end of a refresh-token family, counted from the sign-in, whatever the rotations (seconds):
    #: then the user signs in again.
    refresh_family_lifetime: int = 90 * 86400
    #: How long the sign-in page may be submitted after it was shown (seconds; the lifetime of its CSRF token).
    signin_page_lifetime: int = 600
    #: Failed sign-ins allowed per user name and per source address within ``auth_failure_window``, counted in each
    #: HTTP worker on its own (up to about this x ``http_workers`` per window, see ``auth_failure_limit``).
    signin_failure_limit: int = 10
    #: The manager console (issue #6, ``/console/``): a session ends after this many seconds without a request.
    console_idle_timeout: int = 900
    #: ... and at the latest this many seconds after sign-in, whatever the activity.
    console_session_lifetime: int = 12 * 3600

    #: The bootstrap server (issue #7, docs/bootstrap.md): devices bootstrap over DTLS (coaps, PSK) on this UDP port
    #: of ``coap_host``, and bootstrapped locks register there (LwM2M ``/rd``). 0 turns the bootstrap server off.
    bootstrap_dtls_port: int = 5684
    #: Development only: also serve ``/bs`` and ``/bspack`` over *plain* CoAP on this port, where devices are NOT
    #: authenticated (anyone who knows an endpoint name gets that lock's key). 0 (the default) = off.
    bootstrap_plain_port: int = 0
    #: The LwM2M Server URI written to locks (``/0/x/0``); default ``coaps://<coap_host>:<bootstrap_dtls_port>``.
    bootstrap_server_uri: str = ""
    #: The registration lifetime written to locks (``/1/x/1``, seconds): a lock updates its registration within it.
    bootstrap_lifetime: int = 3600
    #: Threads running the bootstrap server's requests in the ``ostiary as serve`` process (a pool of its own, beside
    #: the ``coap_threads``). A first bootstrap holds its thread until its key is committed, so these bound how many
    #: keys share one group commit (4 threads: 1.7 keys per commit with 50 devices bootstrapping at once), but every
    #: thread more contends for the one GIL: in benchmarks/bench_bootstrap ``--part dtls --devices 1000`` (two
    #: cores) a first bootstrap cost the server 1.3-2.1 ms of CPU with 4 threads, 1.8-2.2 ms with 16 (the CoAP pool,
    #: which it shared before).
    bootstrap_threads: int = 4
    #: A lock's AS<->lock key is replaced at its first bootstrap after it is this old (seconds; 0 = never by age).
    key_rotation_age: int = 30 * 86400
    #: After a new key is delivered, the old one stays usable this long (seconds; 0 = the lock's maximum token
    #: lifetime, so every token made with the old key has expired when it goes).
    key_overlap: int = 0

    @property
    def master_key_file(self) -> Path:
        """Where ``ostiary as init`` writes the master key (unless ``OSTIARY_MASTER_KEY`` is used)."""
        return self.home / "master.key"

    @property
    def effective_database_url(self) -> str:
        """:attr:`database_url`, or the SQLite file in :attr:`home`."""
        return self.database_url or f"sqlite:///{self.home / 'ostiary.db'}"

    @property
    def effective_policy_file(self) -> Path:
        """:attr:`policy_file`, or ``policy.yaml`` in :attr:`home`."""
        return self.policy_file or self.home / "policy.yaml"

    @property
    def effective_bootstrap_server_uri(self) -> str:
        """:attr:`bootstrap_server_uri`, or ``coaps://<coap_host>:<bootstrap_dtls_port>``."""
        if self.bootstrap_server_uri:
            return self.bootstrap_server_uri
        host = f"[{self.coap_host}]" if ":" in self.coap_host else self.coap_host
        return f"coaps://{host}:{self.bootstrap_dtls_port}"

    @property
    def effective_http_base_url(self) -> str:
        """:attr:`http_base_url`, or ``http://<http_host>:<http_port>``."""
        return self.http_base_url or f"http://{self.http_host}:{self.http_port}"

    @classmethod
    def load(
        cls, home: Path | str | None = None, *, env: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Defaults, then ``<home>/ostiary.toml``, then ``OSTIARY_*`` variables, then ``overrides``.

        :raises ConfigError: unknown keys in the TOML file or values of the wrong type.
        """
        env = os.environ if env is None else env
        home_path = Path(home).expanduser() if home is not None else default_home(env)
        values: dict[str, Any] = {}
        config_file = home_path / CONFIG_FILE
        if config_file.exists():
            try:
                data = tomllib.loads(config_file.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{config_file}: {exc}") from exc
            values.update(_validated(data, source=str(config_file)))
        for f in _FIELDS.values():
            key = f"OSTIARY_{f.name.upper()}"
            if key in env and f.name != "home":
                values[f.name] = _coerce(f, env[key], source=key)
        values.update(overrides)
        values["home"] = home_path
        return cls(**values)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(f: dataclasses.Field[Any], raw: Any, *, source: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "int":
            if isinstance(raw, bool):
                raise ValueError
            return int(raw)
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if kind == "Path | None":
            return Path(str(raw)).expanduser() if raw not in ("", None) else None
        if kind == "str":
            if not isinstance(raw, str):
                raise ValueError
            return raw
    except ValueError:
        raise ConfigError(f"{source}: {f.name} must be {kind}, got {raw!r}") from None
    raise ConfigError(f"{source}: {f.name} cannot be set")  # pragma: no cover - every field is handled


def _validated(data: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    unknown = sorted(set(data) - set(_FIELDS) | ({"home"} & set(data)))
    if unknown:
        raise ConfigError(f"{source}: unknown settings {', '.join(unknown)}")
    return {name: _coerce(_FIELDS[name], value, source=source) for name, value in data.items()}
