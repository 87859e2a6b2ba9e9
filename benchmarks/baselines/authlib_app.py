"""The peer baseline: Authlib's Flask ``client_credentials`` endpoint issuing RFC 9068 JWT access tokens (ES256).

This is what a Python developer would build today for "OAuth client credentials, JWT tokens, tokens recorded in a
database" (library-notes §4):

* ``authlib.integrations.flask_oauth2.AuthorizationServer`` with ``ClientCredentialsGrant`` and
  ``client_secret_basic``;
* a ``JWTBearerTokenGenerator`` (``authlib.oauth2.rfc9068``) subclass signing ES256 with a ``joserfc`` KeySet,
  lifetime 3600 s (passed as ``expires_generator``: the RFC 9068 generator ignores ``OAUTH2_TOKEN_EXPIRES_IN``);
* ``query_client`` reads the client from SQLite (SQLAlchemy Core; the secret is stored as a SHA-256 hash and
  compared in constant time, like ours);
* ``save_token`` inserts ``(jti, client_id, scope, exp, jwt)`` into SQLite in WAL mode with ``synchronous=FULL``
  (or what ``synchronous=`` says), and returns only after the commit, so the token is durable before the
  response leaves.

Commit modes (``commit=``):

* ``"group"`` (default): group commit, the same scheme as ``as_server.storage.sqlalchemy.group_commit``. Request
  threads hand their row to one writer thread per worker process and wait; the writer takes the rows waiting in
  its queue (at most :data:`MAX_BATCH`), inserts them in one transaction and commits once (one WAL fsync for the
  batch), then wakes the waiters. Under load a batch holds about as many rows as there are request threads
  waiting.
* ``"each"``: one transaction and one commit (fsync) per token, as Authlib's documentation examples do.

Run: ``gunicorn -k gthread -w W --threads T
'benchmarks.baselines.authlib_app:create_app(db="/tmp/x/authlib.db", key="/tmp/x/authlib-es256.pem")'``
after :func:`prepare` created the database, the client and the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import queue
import threading
from pathlib import Path
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from flask import Flask
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, create_engine, event, insert, select
from sqlalchemy.engine import Engine

__all__ = ["ISSUER", "LIFETIME", "PATH", "create_app", "prepare"]

PATH = "/token"
ISSUER = "https://as.example.com"
LIFETIME = 3600
COMMIT_MODES = ("group", "each")
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: Rows per group commit at most (ours: ``DEFAULT_MAX_BATCH`` = 256).
MAX_BATCH = 256

metadata = MetaData()
clients = Table(
    "oauth2_client",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("secret_hash", String(64), nullable=False),  # hex SHA-256
    Column("scope", Text, nullable=False),  # space-separated allowed scopes
    Column("audience", String(255), nullable=False),
)
tokens = Table(
    "oauth2_token",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("scope", Text, nullable=False),
    Column("exp", Integer, nullable=False),
    Column("access_token", Text, nullable=False),
)


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _engine(db: str | Path, synchronous: str) -> Engine:
    if synchronous.upper() not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS}")
    engine = create_engine(f"sqlite:///{db}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()

    return engine


def prepare(db: str | Path, key: str | Path, *, client_id: str, client_secret: str, scope: str, audience: str) -> None:
    """Create the SQLite database (WAL) with one client, and a fresh ES256 key in ``key`` (PEM)."""
    engine = _engine(db, "FULL")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(clients).values(
                client_id=client_id, secret_hash=_hash_secret(client_secret), scope=scope, audience=audience
            )
        )
    engine.dispose()
    pem = ECKey.generate_key("P-256", parameters={"kid": "authlib-bench", "alg": "ES256"}).as_pem(private=True)
    Path(key).write_bytes(pem)
    Path(key).chmod(0o600)


class Client(ClientMixin):  # type: ignore[misc]
    """A confidential client using ``client_secret_basic`` and the ``client_credentials`` grant only."""

    def __init__(self, client_id: str, secret_hash: str, scope: str, audience: str) -> None:
        self.client_id = client_id
        self.secret_hash = secret_hash
        self.scopes = frozenset(scope.split())
        self.audience = audience

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        return " ".join(s for s in scope.split() if s in self.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(_hash_secret(client_secret), self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic"

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class TokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    """RFC 9068 JWT access tokens signed ES256 with one key; ``aud`` is the client's registered audience."""

    def __init__(self, keys: KeySet) -> None:
        super().__init__(issuer=ISSUER, alg="ES256", expires_generator=LIFETIME)
        self._keys = keys

    def get_jwks(self) -> KeySet:
        return self._keys

    def get_audiences(self, client: Client, user: Any, scope: str) -> str:
        return client.audience


class GroupCommitter:
    """One writer thread per process: callers block in :meth:`record` until their row's batch is committed."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def record(self, row: dict[str, Any]) -> None:
        if self._thread is None:  # started lazily, in the gunicorn worker (after the fork)
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
                    self._thread.start()
        pending = _Pending(row)
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                with self._engine.begin() as conn:
                    conn.execute(insert(tokens), [p.row for p in batch])
            except Exception as exc:  # every waiter of the batch sees the failure
                for p in batch:
                    p.error = exc
            for p in batch:
                p.done.set()


class _Pending:
    __slots__ = ("done", "error", "row")

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        self.done = threading.Event()
        self.error: BaseException | None = None


def _jwt_claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def create_app(db: str, key: str, commit: str = "group", synchronous: str = "FULL") -> Flask:
    """The Authlib token endpoint ``POST /token`` over the database and key made by :func:`prepare`."""
    if commit not in COMMIT_MODES:
        raise ValueError(f"commit must be one of {COMMIT_MODES}")
    engine = _engine(db, synchronous)
    keys = KeySet([ECKey.import_key(Path(key).read_bytes(), {"kid": "authlib-bench", "alg": "ES256"})])
    committer = GroupCommitter(engine) if commit == "group" else None

    def query_client(client_id: str) -> Client | None:
        with engine.connect() as conn:
            row = conn.execute(select(clients).where(clients.c.client_id == client_id)).first()
        return None if row is None else Client(row.client_id, row.secret_hash, row.scope, row.audience)

    def save_token(token: dict[str, Any], request: Any) -> None:
        claims = _jwt_claims(token["access_token"])
        row = {
            "jti": claims["jti"],
            "client_id": request.client.get_client_id(),
            "scope": token.get("scope", ""),
            "exp": claims["exp"],
            "access_token": token["access_token"],
        }
        if committer is not None:
            committer.record(row)
        else:
            with engine.begin() as conn:
                conn.execute(insert(tokens), row)

    app = Flask(__name__)
    server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
    server.register_grant(grants.ClientCredentialsGrant)
    server.register_token_generator("default", TokenGenerator(keys))

    @app.post(PATH)
    def issue_token() -> Any:
        return server.create_token_response()

    return app
