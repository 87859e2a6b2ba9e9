"""``ostiary as ...``: run and administer an authorization server deployment (``OSTIARY_HOME``).

Commands: ``init``, ``upgrade``, ``serve``, ``client add|list|show|disable|enable|rotate-secret``,
``rs add|list|show|rotate-key|revoke|keys``, ``token list|show`` and ``keys rotate`` (``keys generate|show`` live
in :mod:`ostiary.cli`).
Every command takes ``--home DIR`` (before or after the command name); without it ``OSTIARY_HOME`` or the default
home is used (:func:`as_server.config.default_home`).

Secrets (client secrets, the AS<->RS key, introspection secrets) are printed exactly once, when created, and are
stored only hashed (client and introspection secrets) or sealed under the master key (keys). ``show`` and ``list``
print them as ``(secret, N bytes)``.

The AS packages are imported inside the handlers, so building the parser (``--help``) needs no database driver.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ace_core.registry import AceProfile, CoseAlgorithm

if TYPE_CHECKING:
    from as_server.config import Settings
    from as_server.storage.base import Storage

__all__ = ["add_as_commands", "home_parent", "next_rs_kid"]

Formatter = argparse.RawDescriptionHelpFormatter

PROFILES = {"coap_oscore": AceProfile.COAP_OSCORE, "coap_dtls": AceProfile.COAP_DTLS}
_PROFILE_NAMES = {v: k for k, v in PROFILES.items()}
POP_KEYS = ("symmetric", "Ed25519", "P-256")
#: Grant types a client may be allowed (RFC 9200 §5.8.4.1 names); the password grant is not offered.
GRANT_TYPES = ("client_credentials", "authorization_code", "refresh_token")
TOKEN_FORMS = ("encrypt0", "sign1+encrypt0", "sign1", "mac0")
#: Longest ``as rs add --kid`` (bytes): every token for the RS carries the AS<->RS key id.
_MAX_KID_BYTES = 16

DEFAULT_CONFIG = """\
# Ostiary authorization server configuration (TOML). Every setting can also be given as an environment
# variable OSTIARY_<NAME> (e.g. OSTIARY_COAP_PORT=5683), which wins over this file.
# The values shown commented out are the defaults.

# "iss" of issued tokens (RFC 8392 section 3.1.1) and "issuer" of the metadata (RFC 8414 section 2).
# issuer = "coap://127.0.0.1/token"

# SQLAlchemy URL of the database; default: the SQLite file ostiary.db in this directory.
# database_url = "postgresql+psycopg://ostiary@localhost/ostiary"

# CoAP side (application/ace+cbor, RFC 9200 section 5): address, and threads running requests.
# coap_host = "127.0.0.1"
# coap_port = 5683
# coap_threads = 16

# HTTP side (gunicorn): address, worker processes, threads per worker, public base URL for the metadata.
# http_host = "127.0.0.1"
# http_port = 8080
# http_workers = 2
# http_threads = 8
# http_base_url = "https://as.example.com"

# Token lifetime in seconds when neither the policy nor the resource server asks for less.
# token_lifetime = 3600

# Resource servers without a clock ('as rs add --no-clock') get tokens with exi, a lifetime that starts when the
# lock first receives the token (RFC 9200 section 5.10.3). The AS counts such a token as possibly in use until
# issue time + lifetime + this window (seconds), e.g. when the RS introspects it.
# exi_upload_window = 86400

# Requests larger than this many bytes are refused before parsing (4.13 / 413).
# max_payload = 8192

# The policy file (YAML: rules that permit, deny or ask for consent; README "Policies"), read when the server
# starts: restart it after editing. Default: policy.yaml in this directory. Without it nothing is granted.
# policy_file = "/etc/ostiary/policy.yaml"

# Failed client authentications allowed per client_id and per source address within the window (seconds),
# counted in each server process on its own: up to about this x (http_workers + 1) failures get through.
# auth_failure_limit = 10
# auth_failure_window = 60

# log_level = "INFO"

# Consent workflow: an access request nobody decides expires after this many seconds.
# access_request_lifetime = 86400
# The CoAP side re-reads the access requests that clients observe (RFC 7641) this often (seconds), so that decisions
# made by other processes reach the observers; it keeps at most this many observations.
# consent_poll_interval = 1.0
# consent_max_observations = 1000
# Time zone of the weekly windows an approver gives without naming one (IANA name).
# consent_timezone = "UTC"

# Refused token requests are written to the audit log asynchronously: at most this many wait in memory (more are
# dropped and counted), and they are committed at most once per interval (seconds).
# audit_queue_size = 10000
# audit_flush_interval = 0.5

# Apps signing users in (/authorize, authorization code with PKCE): the code's lifetime, a refresh token's lifetime
# and its family's absolute lifetime (seconds), how long a sign-in page may be submitted, and how many failed
# sign-ins per user name and per address are allowed within auth_failure_window.
# authorization_code_lifetime = 60
# refresh_token_lifetime = 2592000
# refresh_family_lifetime = 7776000
# signin_page_lifetime = 600
# signin_failure_limit = 10

# The manager console (/console/): a session ends after this many seconds without a request, and at the latest this
# many seconds after sign-in.
# console_idle_timeout = 900
# console_session_lifetime = 43200

# The bootstrap server (LwM2M over DTLS with each device's factory PSK; 'ostiary factory batch' makes the devices):
# its UDP port on coap_host, where bootstrapped locks also register (0 turns it off).
# bootstrap_dtls_port = 5684
# Development only: also serve /bs and /bspack over plain CoAP on this port, where devices are NOT authenticated.
# bootstrap_plain_port = 0
# The LwM2M Server URI written to locks; default: coaps://<coap_host>:<bootstrap_dtls_port>.
# bootstrap_server_uri = "coaps://as.example.com:5684"
# The registration lifetime written to locks (seconds), and threads running the bootstrap server's requests.
# bootstrap_lifetime = 3600
# bootstrap_threads = 4
# A lock's key is replaced at its next bootstrap once it is this old (seconds; 0 = never by age), and the old key
# stays usable this long after the new one is delivered (seconds; 0 = the lock's maximum token lifetime).
# key_rotation_age = 2592000
# key_overlap = 0
"""


DEFAULT_POLICY = """\
# Ostiary policy: which client, acting alone or for a signed-in user, may get which rights at which resource
# server (audience), when, and who approves. Each rule has an effect: permit (the default) grants, deny takes
# rights away whatever else grants them, consent grants only once an approver agrees. A request gets at most what
# it asks for (RFC 9200 section 5.8.1); with no rule that grants, nothing is granted.
# Every key (users, groups, audience globs and groups, time windows, validity, approvers): README.md, section
# "Policies: who may open which door, when, and who approves". Check with 'ostiary policy validate FILE'.
# The server reads this file at start: restart 'ostiary as serve' after editing.
#
# rules:
#   - client: phone-app                      # a client_id, or "*" for every client (quote the star)
#     audience: front-door                   # an audience, or a glob such as "building-a/*"
#     scope: "/lock:GET,PUT /battery:GET"    # AIF-REST (RFC 9237) when it starts with "/", else text scopes
#     max_lifetime: 3600                     # optional, seconds
#   - effect: consent                        # the app waits until an approver agrees
#     users: "*"                             # any signed-in user
#     audience: front-door
#     scope: "/lock:PUT"
#     approvers: {groups: [facility]}
rules:
"""


class CommandError(Exception):
    """A one-line, user-fixable error (``ostiary: error: ...``, exit status 1; 2 with ``status=2``)."""

    def __init__(self, message: str, *, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# --- parser ------------------------------------------------------------------------------------------------


def home_parent() -> argparse.ArgumentParser:
    """The ``--home`` option, shared by the ``as`` group and every command under it."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--home",
        type=Path,
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the deployment directory (default: $OSTIARY_HOME, else ~/.local/share/ostiary)",
    )
    return parent


def _command(
    sub: Any, name: str, *, help: str, description: str, example: str, parents: Sequence[argparse.ArgumentParser]
) -> argparse.ArgumentParser:
    return sub.add_parser(  # type: ignore[no-any-return]
        name,
        help=help,
        description=description,
        epilog="example:\n" + example,
        formatter_class=Formatter,
        parents=list(parents),
    )


def add_as_commands(
    as_commands: Any, key_commands: Any, parents: Sequence[argparse.ArgumentParser], help_handler: Any
) -> None:
    """Add the server commands to the ``as`` group's subparsers, and ``rotate`` to ``as keys``."""
    p = _command(
        as_commands,
        "init",
        help="create a deployment: directory, master key, config, database, signing key",
        description="Create (or complete) a deployment in OSTIARY_HOME: the directory (mode 0700), the master key\n"
        "that seals every stored key (master.key, mode 0600; skipped when OSTIARY_MASTER_KEY is set), a\n"
        "commented ostiary.toml, the database schema (migrations) and the AS's first token-signing key\n"
        "(Ed25519, for COSE_Sign1 tokens, RFC 8392 section 7.1). Safe to run again: it only does what is\n"
        "missing, and says what it did.",
        example="  ostiary as --home /var/lib/ostiary init",
        parents=parents,
    )
    p.set_defaults(handler=_cmd_init)

    p = _command(
        as_commands,
        "upgrade",
        help="apply database migrations",
        description="Bring the database schema to the newest revision (Alembic 'upgrade head'). Run it after\n"
        "installing a new Ostiary version, before 'serve'. Idempotent.",
        example="  OSTIARY_DATABASE_URL=postgresql+psycopg://ostiary@db/ostiary ostiary as upgrade",
        parents=parents,
    )
    p.set_defaults(handler=_cmd_upgrade)

    p = _command(
        as_commands,
        "serve",
        help="run the token and introspection endpoints over CoAP and HTTP",
        description="Serve the token endpoint (RFC 9200 section 5.8) and the introspection endpoint (section 5.9)\n"
        "over CoAP (application/ace+cbor, in this process) and HTTP (form, JSON or CBOR, in gunicorn worker\n"
        "processes), plus the RFC 8414 metadata at /.well-known/oauth-authorization-server. Stops cleanly\n"
        "on SIGTERM or Ctrl-C. Addresses come from ostiary.toml / OSTIARY_* or the options below.",
        example="  ostiary as serve --coap-port 5683 --http-port 8080",
        parents=parents,
    )
    p.add_argument("--coap-host", metavar="HOST", help="CoAP bind address (setting coap_host)")
    p.add_argument("--coap-port", type=int, metavar="PORT", help="CoAP UDP port (setting coap_port)")
    p.add_argument("--http-host", metavar="HOST", help="HTTP bind address (setting http_host)")
    p.add_argument("--http-port", type=int, metavar="PORT", help="HTTP TCP port (setting http_port)")
    p.set_defaults(handler=_cmd_serve)

    _add_client_commands(as_commands, parents, help_handler)
    _add_rs_commands(as_commands, parents, help_handler)
    _add_token_commands(as_commands, parents, help_handler)

    p = _command(
        key_commands,
        "rotate",
        help="start signing tokens with a new Ed25519 key",
        description="Generate a new Ed25519 token-signing key (COSE_Sign1, RFC 9052 section 4) and make it the\n"
        "active one. The previous key is retired but keeps verifying until every token it signed has\n"
        "expired (retire_after = now + the longest token lifetime). Give resource servers that verify\n"
        "signatures the new public key, printed below, before their cached copy matters.",
        example="  ostiary as keys rotate",
        parents=parents,
    )
    p.set_defaults(handler=_cmd_keys_rotate)


def _add_client_commands(as_commands: Any, parents: Sequence[argparse.ArgumentParser], help_handler: Any) -> None:
    group = as_commands.add_parser(
        "client",
        help="register and manage clients (apps that request tokens)",
        description="Clients are the applications that ask the AS for access tokens (RFC 6749 section 2,\n"
        "RFC 9200 section 5.8.1). Each has a client_id and a secret it authenticates with (RFC 6749\n"
        "section 2.3.1), the audiences it may ask for, the ACE profiles it speaks and the kinds of\n"
        "proof-of-possession key its tokens may be bound to (RFC 9201).",
        formatter_class=Formatter,
        parents=list(parents),
    )
    group.set_defaults(handler=help_handler(group))
    sub = group.add_subparsers(title="commands", metavar="COMMAND")

    p = _command(
        sub,
        "add",
        help="register a client and print its secret (once)",
        description="Register a client. A 256-bit secret is generated and printed ONCE; the AS stores only its\n"
        "hash. The client sends it with HTTP Basic or in the request (client_secret, RFC 9200 Table 5).\n"
        "--pop-key says which proof-of-possession keys its tokens may be bound to (RFC 9201 section 3.1):\n"
        "'symmetric' lets the AS generate one (e.g. OSCORE input material, RFC 9203), 'Ed25519' and 'P-256'\n"
        "accept the client's public key in req_cnf; --public-key registers that key.\n\n"
        "Apps that sign users in (authorization code with PKCE, RFC 6749 section 4.1, RFC 8252) need\n"
        "--redirect-uri: a loopback URI http://127.0.0.1/PATH (any port is accepted at /authorize, RFC 8252\n"
        "section 7.3), a private-use scheme com.example.app:/PATH (section 7.1) or an https URI. --public\n"
        "registers a native app without a secret, which must use PKCE. With --redirect-uri or --public the\n"
        "grant types default to authorization_code and refresh_token, else to client_credentials;\n"
        "--grant-type sets them (repeatable; the password grant is not offered).",
        example="  ostiary as client add phone-app --name 'Phone app' --audience front-door \\\n"
        "      --default-audience front-door --default-scope '/lock:GET,PUT' --profile coap_oscore\n"
        "  ostiary as client add door-app --public --audience front-door \\\n"
        "      --redirect-uri http://127.0.0.1/callback --redirect-uri com.example.doorapp:/callback",
        parents=parents,
    )
    p.add_argument("client_id", metavar="CLIENT_ID")
    p.add_argument("--name", default="", help="display name")
    p.add_argument(
        "--audience", action="append", default=[], metavar="AUDIENCE", help="an audience it may ask for (repeatable)"
    )
    p.add_argument("--default-audience", metavar="AUDIENCE", help="audience used when a request names none")
    p.add_argument(
        "--default-scope",
        metavar="SCOPE",
        help="scope used when a request names none: AIF ('/lock:GET,PUT') when it starts with '/', else text",
    )
    p.add_argument(
        "--profile", action="append", choices=list(PROFILES), help="ACE profile (repeatable; default coap_oscore)"
    )
    p.add_argument("--pop-key", action="append", choices=POP_KEYS, help="PoP key kind (repeatable; default symmetric)")
    p.add_argument("--public-key", type=Path, metavar="FILE", help="the client's public PoP key (COSE/JSON/PEM file)")
    p.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        metavar="URI",
        help="where /authorize may send the user back (repeatable; RFC 8252 section 7)",
    )
    p.add_argument("--public", action="store_true", help="a public client (native app): no secret, PKCE required")
    p.add_argument("--grant-type", action="append", choices=GRANT_TYPES, help="a grant type it may use (repeatable)")
    p.set_defaults(handler=_cmd_client_add)

    p = _command(
        sub,
        "list",
        help="list clients",
        description="List registered clients (no secrets).",
        example="  ostiary as client list",
        parents=parents,
    )
    p.set_defaults(handler=_cmd_client_list)

    p = _command(
        sub,
        "show",
        help="show one client",
        description="Show one client's registration; the secret\nappears only as the size of its stored hash.",
        example="  ostiary as client show phone-app",
        parents=parents,
    )
    p.add_argument("client_id", metavar="CLIENT_ID")
    p.set_defaults(handler=_cmd_client_show)

    p = _command(
        sub,
        "disable",
        help="refuse tokens to a client",
        description="Disable a client: the token\n"
        "endpoint answers invalid_client (RFC 6749 section 5.2), in a running server within 0.1 s, and\n"
        "the client's tokens that have not expired are revoked (introspection answers active: false;\n"
        "locks that do not introspect keep them until they expire). Recorded in the audit log.",
        example="  ostiary as client disable phone-app",
        parents=parents,
    )
    p.add_argument("client_id", metavar="CLIENT_ID")
    p.set_defaults(handler=_cmd_client_enable, enabled=False)

    p = _command(
        sub,
        "enable",
        help="re-enable a disabled client",
        description="Enable a disabled client again.",
        example="  ostiary as client enable phone-app",
        parents=parents,
    )
    p.add_argument("client_id", metavar="CLIENT_ID")
    p.set_defaults(handler=_cmd_client_enable, enabled=True)

    p = _command(
        sub,
        "rotate-secret",
        help="replace a client's secret and print the new one (once)",
        description="Generate a new secret for a client, print it ONCE, and forget the old one at once\n"
        "(a running server refuses the old secret within 0.1 s).",
        example="  ostiary as client rotate-secret phone-app",
        parents=parents,
    )
    p.add_argument("client_id", metavar="CLIENT_ID")
    p.set_defaults(handler=_cmd_client_rotate)


def _add_rs_commands(as_commands: Any, parents: Sequence[argparse.ArgumentParser], help_handler: Any) -> None:
    group = as_commands.add_parser(
        "rs",
        help="register and inspect resource servers (locks) and their keys",
        description="A resource server (RS) -- a door lock -- is named by its audience (RFC 9200 section 5.8.1,\n"
        "RFC 8693 section 4.3). The AS shares a symmetric key with it to protect the tokens it issues for\n"
        "it (COSE_Encrypt0, RFC 8392 section 7.1; RFC 9203 section 3.2 recommends encrypted tokens) and may\n"
        "give it a secret to call the introspection endpoint (RFC 9200 section 5.9).",
        formatter_class=Formatter,
        parents=list(parents),
    )
    group.set_defaults(handler=help_handler(group))
    sub = group.add_subparsers(title="commands", metavar="COMMAND")

    p = _command(
        sub,
        "add",
        help="register a resource server; print its AS<->RS key (once)",
        description="Register a resource server. A fresh AES-CCM-16-64-128 key is generated for the AS and the RS\n"
        "to share and printed ONCE, as a COSE_Key (RFC 9052 section 7) in hex and base64url: provision it\n"
        "into the lock. Its kid, which every token carries, is the smallest one no other resource server's\n"
        "key has (01, 02, ... ff, 0100, ...), or --kid. --resources says what the RS serves (AIF-REST\n"
        "'path:METHODS', RFC 9237, or text scopes); --token-form how its tokens are protected;\n"
        "--introspection-secret also prints (once) a secret the RS uses as client_id=AUDIENCE at /introspect.\n"
        "Tokens leave out iat, and ace_profile when the RS has one profile (--full-claims keeps both), and\n"
        "carry exp; --no-clock is for a lock without a clock: its tokens carry exi, a lifetime counted from\n"
        "when the lock first receives them, and a numbered cti (RFC 9200 section 5.10.3).",
        example="  ostiary as rs add front-door --profile coap_oscore --scope-format aif \\\n"
        "      --resources '/lock:GET,PUT /battery:GET' --max-lifetime 3600",
        parents=parents,
    )
    p.add_argument("audience", metavar="AUDIENCE")
    p.add_argument("--profile", action="append", choices=list(PROFILES), help="ACE profile (repeatable)")
    p.add_argument("--scope-format", choices=("aif", "text"), default="aif", help="scope syntax (default aif)")
    p.add_argument("--resources", metavar="SPEC", help="'/lock:GET,PUT /battery:GET' (aif) or 'read write' (text)")
    p.add_argument("--token-form", choices=TOKEN_FORMS, default="encrypt0", help="token protection (default encrypt0)")
    p.add_argument("--max-lifetime", type=int, metavar="N", default=3600, help="longest token lifetime, seconds")
    p.add_argument("--public-key", type=Path, metavar="FILE", help="the RS's public key, returned as rs_cnf (RFC 9201)")
    p.add_argument("--introspection-secret", action="store_true", help="generate and print an introspection secret")
    p.add_argument(
        "--kid", metavar="HEX", help="kid of the AS<->RS key, in hex (default: the smallest unused, 1 byte if possible)"
    )
    p.add_argument(
        "--full-claims", action="store_true", help="put iat and ace_profile in every token (default: left out)"
    )
    p.add_argument(
        "--no-clock", action="store_true", help="the RS has no clock: tokens carry exi instead of exp (RFC 9200 5.10.3)"
    )
    p.set_defaults(handler=_cmd_rs_add)

    p = _command(
        sub,
        "list",
        help="list resource servers",
        description="List resource servers (no secrets).",
        example="  ostiary as rs list",
        parents=parents,
    )
    p.set_defaults(handler=_cmd_rs_list)

    p = _command(
        sub,
        "show",
        help="show one resource server",
        description="Show one resource server; keys and\nsecrets appear only as their size.",
        example="  ostiary as rs show front-door",
        parents=parents,
    )
    p.add_argument("audience", metavar="AUDIENCE")
    p.set_defaults(handler=_cmd_rs_show)

    # Operational keys of bootstrapped locks (issue #7, docs/bootstrap-design.md).
    p = _command(
        sub,
        "rotate-key",
        help="give a bootstrapped lock a new operational key",
        description="Create a new generation of a bootstrapped lock's operational key (the AS<->lock token key,\n"
        "which is also the lock's DTLS PSK to the AS, identity LOCK#GENERATION). Nothing changes at once:\n"
        "the lock fetches the new key at its next periodic pull (or bootstrap); when it has it, the AS\n"
        "issues tokens with it and retires the previous generation after the overlap (by default the\n"
        "lock's longest token lifetime, so tokens made with the old key expire first). A revoked lock gets\n"
        "new keys only by bootstrapping again.",
        example="  ostiary as rs rotate-key L1-00000042",
        parents=parents,
    )
    p.add_argument("audience", metavar="LOCK", help="the lock's audience (its serial number)")
    p.set_defaults(handler=_cmd_rs_rotate_key)

    p = _command(
        sub,
        "revoke",
        help="revoke a lock: erase its keys, disable it, revoke its tokens",
        description="Revoke a lock's operational credentials at once: every key generation is retired and its\n"
        "key material erased (the AS refuses its DTLS identities), the resource server is disabled and its\n"
        "unexpired tokens are revoked (introspection answers active: false). A lock that bootstraps again\n"
        "gets a new key and is enabled again -- unless --decommission also takes the device out of service\n"
        "for good in $OSTIARY_HOME/devices.db (its bootstrap identity is then refused). Audited.",
        example="  ostiary as rs revoke L1-00000042\n  ostiary as rs revoke L1-00000042 --decommission",
        parents=parents,
    )
    p.add_argument("audience", metavar="LOCK", help="the lock's audience (its serial number)")
    p.add_argument(
        "--decommission",
        action="store_true",
        help="also refuse the device's bootstrap identity from now on (permanent)",
    )
    p.set_defaults(handler=_cmd_rs_revoke)

    p = _command(
        sub,
        "keys",
        help="list a lock's operational key generations (never the keys)",
        description="List the generations of a lock's operational key, oldest first: when each was created,\n"
        "delivered by a bootstrap and retires, and its state: 'current' (tokens are made with it),\n"
        "'pending' (created, not yet fetched by the lock), 'retiring' (still accepted until it retires),\n"
        "'delivered', or 'erased' (retired or revoked; its key material is gone). Key bytes are never shown.",
        example="  ostiary as rs keys L1-00000042",
        parents=parents,
    )
    p.add_argument("audience", metavar="LOCK", help="the lock's audience (its serial number)")
    p.set_defaults(handler=_cmd_rs_keys)


def _add_token_commands(as_commands: Any, parents: Sequence[argparse.ArgumentParser], help_handler: Any) -> None:
    group = as_commands.add_parser(
        "token",
        help="inspect issued access tokens",
        description="The AS records every token it issues (its cti, RFC 8392 section 3.1.7, client, audience,\n"
        "scope and lifetime) for introspection (RFC 9200 section 5.9) and revocation. Key material is\n"
        "never shown.",
        formatter_class=Formatter,
        parents=list(parents),
    )
    group.set_defaults(handler=help_handler(group))
    sub = group.add_subparsers(title="commands", metavar="COMMAND")

    p = _command(
        sub,
        "list",
        help="list issued tokens, newest first",
        description="List issued tokens, newest\nfirst.",
        example="  ostiary as token list --client phone-app --limit 20",
        parents=parents,
    )
    p.add_argument("--client", metavar="CLIENT_ID")
    p.add_argument("--audience", metavar="AUDIENCE")
    p.add_argument("--limit", type=int, default=50, metavar="N")
    p.set_defaults(handler=_cmd_token_list)

    p = _command(
        sub,
        "show",
        help="show one token by its cti",
        description="Show one issued token, named by its\ncti in hex (as 'token list' prints it).",
        example="  ostiary as token show 3f2a9c01d4e5b6a7",
        parents=parents,
    )
    p.add_argument("cti", metavar="CTI_HEX")
    p.set_defaults(handler=_cmd_token_show)

    p = _command(
        sub,
        "revoke",
        help="revoke one token by its cti",
        description="Revoke an issued token: introspection (RFC 9200 section 5.9) then answers active: false.\n"
        "Audited as token.revoked. With --as, the manager's sites are checked as in the console.",
        example="  ostiary as token revoke 3f2a9c01d4e5b6a7\n  ostiary as token revoke 3f2a9c01d4e5b6a7 --as frank",
        parents=parents,
    )
    p.add_argument("cti", metavar="CTI_HEX")
    p.add_argument("--as", dest="as_user", metavar="USER", help="act as this manager (their sites are checked)")
    p.set_defaults(handler=_cmd_token_revoke)


# --- helpers -----------------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    from as_server.config import ConfigError, Settings

    try:
        return Settings.load(getattr(args, "home", None), **overrides)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


@contextlib.contextmanager
def _storage(settings: Settings) -> Iterator[Storage]:
    """Open the deployment's storage (master key + database); one-line errors for the usual mistakes."""
    from as_server.sealing import MasterKey
    from as_server.storage.sqlalchemy import open_storage

    try:
        master_key = MasterKey.load(settings.master_key_file)
    except FileNotFoundError:
        raise CommandError(f"no master key at {settings.master_key_file}; run 'ostiary as init' first") from None
    except PermissionError as exc:
        raise CommandError(str(exc)) from None
    except ValueError:
        raise CommandError("the master key is malformed (expected base64url of 32 bytes)") from None
    storage = open_storage(settings.effective_database_url, master_key)
    try:
        yield storage
    finally:
        storage.close()


def _now() -> int:
    return int(time.time())


def _when(t: int | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_fields(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows) + 1
    for name, value in rows:
        print(f"{name + ':':<{width}} {value}")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


def _secret_note(what: str) -> None:
    print(
        f"WARNING: store the {what} now: shown only this once, the AS keeps only a hash or a sealed copy.",
        file=sys.stderr,
    )


def _read_public_key(path: Path) -> Any:
    from ostiary.cli import _load_key

    try:
        key, _fmt = _load_key(path.read_bytes())
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise CommandError(f"{path} is not a COSE key in CBOR, CBOR hex, JSON or PEM ({type(exc).__name__})") from None
    if key.is_symmetric:
        raise CommandError(f"{path} holds a symmetric key; a public key is expected")
    if key.has_private:
        raise CommandError(f"{path} holds a private key; register only the public key (keys generate --public)")
    return key


def _scope_value(spec: str, *, aif: bool) -> str | bytes:
    """A scope given on the command line: AIF spec -> AIF CBOR bytes (RFC 9237), else an RFC 6749 text scope."""
    from ace_core.errors import WireFormatError
    from ace_core.scope import AifScope, TextScope

    try:
        if aif:
            return AifScope.parse_spec(spec).to_cbor()
        return TextScope.parse(spec).encode()
    except (ValueError, WireFormatError) as exc:
        raise CommandError(f"invalid scope {spec!r}: {exc}", status=2) from None


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


def _profiles(names: Sequence[str] | None, default: frozenset[AceProfile]) -> frozenset[AceProfile]:
    return frozenset(PROFILES[n] for n in names) if names else default


def _profile_text(profiles: frozenset[AceProfile] | AceProfile | None) -> str:
    if profiles is None:
        return "-"
    if isinstance(profiles, AceProfile | int):
        return _PROFILE_NAMES.get(AceProfile(profiles), str(int(profiles)))
    return ",".join(sorted(_PROFILE_NAMES.get(p, str(int(p))) for p in profiles)) or "-"


def _key_text(key: Any) -> str:
    if key is None:
        return "-"
    return f"{key.kty.name} kid h'{(key.kid or b'').hex()}' thumbprint {key.thumbprint().hex()}"


def _hidden(value: bytes | None, what: str = "secret") -> str:
    return "-" if value is None else f"({what}, {len(value)} bytes)"


# --- init / upgrade / serve --------------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    from as_server.config import CONFIG_FILE
    from as_server.sealing import MasterKey
    from as_server.storage.sqlalchemy import current_revision, upgrade

    home = _settings(args).home
    if not home.exists():
        home.mkdir(mode=0o700, parents=True)
        print(f"created {home} (mode 0700)")
    else:
        print(f"using {home}")
    config = home / CONFIG_FILE
    if not config.exists():
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fp:
            fp.write(DEFAULT_CONFIG)
        print(f"wrote {config} (every setting commented out at its default)")
    settings = _settings(args)
    if os.environ.get("OSTIARY_MASTER_KEY"):
        print("master key: from OSTIARY_MASTER_KEY (no key file written)")
    elif settings.master_key_file.exists():
        print(f"master key: {settings.master_key_file} exists")
    else:
        MasterKey.create_file(settings.master_key_file)
        print(f"master key: created {settings.master_key_file} (mode 0600); back it up: no stored key opens without it")
    url = settings.effective_database_url
    before = current_revision(url)
    upgrade(url)
    after = current_revision(url)
    if before == after:
        print(f"database: at revision {after}, nothing to do")
    else:
        print(f"database: migrated {before or '(empty)'} -> {after}")
    with _storage(settings) as storage:
        key = storage.signing_key()
        if key is None:
            key = _new_signing_key()
            storage.add_signing_key(key)
            print(f"signing key: created Ed25519 key kid h'{key.kid.hex()}'")
        else:
            print(f"signing key: kid h'{key.kid.hex()}' in use")
    policy = settings.effective_policy_file
    if not policy.exists() and policy.parent == settings.home:
        fd = os.open(policy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fp:
            fp.write(DEFAULT_POLICY)
        print(f"wrote {policy} (no rules yet: every token request is refused until you add some)")
    elif not policy.exists():
        print(f"note: no policy file at {policy}; every token request is refused until it exists")
    return 0


def _new_signing_key() -> Any:
    from ace_core.keys import CoseKey
    from as_server.models import SigningKey

    key = CoseKey.generate(CoseAlgorithm.EDDSA)
    assert key.kid is not None
    return SigningKey(kid=key.kid, alg=CoseAlgorithm.EDDSA, key=key, created_at=_now())


def _cmd_upgrade(args: argparse.Namespace) -> int:
    from as_server.storage.sqlalchemy import current_revision, upgrade
    from as_server.storage.sqlalchemy.engine import safe_url

    settings = _settings(args)
    url = settings.effective_database_url
    before = current_revision(url)
    upgrade(url)
    after = current_revision(url)
    where = safe_url(url)
    if before == after:
        print(f"{where}: at revision {after}, nothing to do")
    else:
        print(f"{where}: migrated {before or '(empty)'} -> {after}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from as_server.server import configure_logging, serve

    overrides = {
        name: getattr(args, name)
        for name in ("coap_host", "coap_port", "http_host", "http_port")
        if getattr(args, name) is not None
    }
    settings = _settings(args, **overrides)
    configure_logging(settings.log_level)
    try:
        return serve(settings)
    except FileNotFoundError as exc:
        if exc.filename is not None and Path(exc.filename) == settings.master_key_file:
            raise CommandError(f"no master key at {settings.master_key_file}; run 'ostiary as init' first") from None
        raise


# --- client ------------------------------------------------------------------------------------------------


def _cmd_client_add(args: argparse.Namespace) -> int:
    from as_server.audit import simple_entry
    from as_server.models import Client, PopKeyType, glob_audiences
    from as_server.sealing import generate_secret, hash_secret
    from as_server.storage.base import DuplicateError
    from ostiary.admin_cli import actor

    default_scope = None
    if args.default_scope is not None:
        default_scope = _scope_value(args.default_scope, aif=args.default_scope.startswith("/"))
    public_key = _read_public_key(args.public_key) if args.public_key else None
    audiences = frozenset(args.audience) | ({args.default_audience} if args.default_audience else set())
    if globs := glob_audiences(audiences):
        raise CommandError(
            f"a client's audiences are exact lock names, not patterns ({', '.join(globs)}): repeat --audience for"
            " each lock; policy rules may use globs",
            status=2,
        )
    redirect_uris, grant_types = _app_registration(args)
    secret = generate_secret()
    client = Client(
        client_id=args.client_id,
        secret_hash=b"" if args.public else hash_secret(secret),
        redirect_uris=redirect_uris,
        public=args.public,
        grant_types=grant_types,
        display_name=args.name,
        audiences=audiences,
        profiles=_profiles(args.profile, frozenset({AceProfile.COAP_OSCORE})),
        pop_key_types=frozenset(PopKeyType(k) for k in (args.pop_key or ["symmetric"])),
        public_key=public_key,
        default_audience=args.default_audience,
        default_scope=default_scope,
        created_at=_now(),
    )
    with _storage(_settings(args)) as storage:
        try:
            storage.add_client(client)
        except DuplicateError:
            raise CommandError(f"client {args.client_id!r} exists (see 'client rotate-secret')") from None
        storage.append_audit(
            [simple_entry("client.created", actor=actor(), at=client.created_at, client_id=args.client_id)]
        )
    print(f"added client {args.client_id}")
    if args.public:
        print("public client: no secret (it proves itself with PKCE and refresh-token rotation)")
        return 0
    print(f"client_secret: {secret}")
    _secret_note("client secret")
    return 0


def _app_registration(args: argparse.Namespace) -> tuple[tuple[str, ...], frozenset[Any]]:
    """The redirect URIs (checked, RFC 8252 section 7) and grant types of ``client add``.

    :raises CommandError: a redirect URI that cannot be registered, or grant types that do not fit the client.
    """
    from ace_core.registry import GrantType
    from as_server.oauth.redirect_uris import InvalidRedirectUri, normalize

    try:
        uris = tuple(dict.fromkeys(normalize(uri) for uri in args.redirect_uri))
    except InvalidRedirectUri as exc:
        raise CommandError(f"--redirect-uri: {exc}") from None
    if args.grant_type:
        names = set(args.grant_type)
    elif uris or args.public:
        names = {"authorization_code", "refresh_token"}
    else:
        names = {"client_credentials"}
    if args.public and "client_credentials" in names:
        raise CommandError("a public client has no secret, so it cannot use client_credentials")
    if "authorization_code" in names and not uris:
        raise CommandError("authorization_code needs at least one --redirect-uri")
    if uris and "authorization_code" not in names:
        raise CommandError("--redirect-uri is only used by the authorization_code grant")
    return uris, frozenset(GrantType[name.upper()] for name in names)


def _get_client(storage: Storage, client_id: str) -> Any:
    client = storage.get_client(client_id)
    if client is None:
        raise CommandError(f"no client {client_id!r}")
    return client


def _cmd_client_list(args: argparse.Namespace) -> int:
    with _storage(_settings(args)) as storage:
        clients = storage.list_clients()
    rows = [
        [
            c.client_id,
            "yes" if c.enabled else "no",
            ",".join(sorted(c.audiences)) or "-",
            _profile_text(c.profiles),
            c.display_name or "-",
        ]
        for c in clients
    ]
    _table(["CLIENT_ID", "ENABLED", "AUDIENCES", "PROFILES", "NAME"], rows)
    return 0


def _cmd_client_show(args: argparse.Namespace) -> int:
    with _storage(_settings(args)) as storage:
        c = _get_client(storage, args.client_id)
    _print_fields(
        [
            ("client_id", c.client_id),
            ("name", c.display_name or "-"),
            ("enabled", "yes" if c.enabled else "no"),
            ("secret", "none (public client)" if c.public else _hidden(c.secret_hash, "secret hash")),
            ("grant types", ",".join(sorted(g.name.lower() for g in c.grant_types))),
            ("public", "yes (no secret; PKCE)" if c.public else "no"),
            ("redirect uris", " ".join(c.redirect_uris) or "-"),
            ("audiences", ",".join(sorted(c.audiences)) or "-"),
            ("default audience", c.default_audience or "-"),
            ("default scope", _scope_text(c.default_scope)),
            ("profiles", _profile_text(c.profiles)),
            ("pop keys", ",".join(sorted(str(k) for k in c.pop_key_types))),
            ("public key", _key_text(c.public_key)),
            ("created", _when(c.created_at)),
        ]
    )
    return 0


def _cmd_client_enable(args: argparse.Namespace) -> int:
    from ostiary.admin_cli import actor

    with _storage(_settings(args)) as storage:
        _get_client(storage, args.client_id)
        revoked = storage.set_client_enabled(args.client_id, args.enabled, actor=actor(), now=_now())
    if args.enabled:
        print(f"enabled client {args.client_id}")
    else:
        print(f"disabled client {args.client_id}; {revoked} tokens revoked")
    return 0


def _cmd_client_rotate(args: argparse.Namespace) -> int:
    from as_server.audit import simple_entry
    from as_server.sealing import generate_secret, hash_secret
    from ostiary.admin_cli import actor

    secret = generate_secret()
    with _storage(_settings(args)) as storage:
        client = _get_client(storage, args.client_id)
        if client.public:
            raise CommandError(f"client {args.client_id!r} is public: it has no secret")
        storage.update_client(dataclasses.replace(client, secret_hash=hash_secret(secret)))
        storage.append_audit(
            [simple_entry("client.secret_rotated", actor=actor(), at=_now(), client_id=args.client_id)]
        )
    print(f"new secret for client {args.client_id} (the old one no longer works)")
    print(f"client_secret: {secret}")
    _secret_note("client secret")
    return 0


# --- rs ----------------------------------------------------------------------------------------------------


def _cmd_rs_add(args: argparse.Namespace) -> int:
    from ace_core.keys import CoseKey, b64url_encode
    from as_server.models import AuditEntry, ResourceServer, ScopeFormat, TokenForm
    from as_server.sealing import generate_secret, hash_secret
    from as_server.storage.base import DuplicateError
    from ostiary.admin_cli import actor

    if args.max_lifetime < 1:
        raise CommandError("--max-lifetime must be at least 1 second", status=2)
    aif = args.scope_format == "aif"
    resources = _scope_value(args.resources, aif=aif) if args.resources else None
    public_key = _read_public_key(args.public_key) if args.public_key else None
    wanted_kid = _kid_value(args.kid) if args.kid is not None else None
    secret = generate_secret() if args.introspection_secret else None
    with _storage(_settings(args)) as storage:
        if storage.get_resource_server(args.audience) is not None:
            raise CommandError(f"resource server {args.audience!r} exists")
        owners = {
            other.shared_key.kid: other.audience
            for other in storage.list_resource_servers()
            if other.shared_key is not None and other.shared_key.kid is not None
        }
        if wanted_kid is not None and wanted_kid in owners:
            raise CommandError(
                f"kid {wanted_kid.hex()} is already the AS<->RS key id of resource server {owners[wanted_kid]!r}; "
                "choose another --kid, or leave it out to get the smallest unused one"
            )
        shared_key = CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128, kid=wanted_kid or next_rs_kid(owners))
        rs = ResourceServer(
            audience=args.audience,
            shared_key=shared_key,
            public_key=public_key,
            profiles=_profiles(args.profile, frozenset({AceProfile.COAP_OSCORE})),
            scope_format=ScopeFormat(args.scope_format),
            resources=resources,
            token_form=TokenForm(args.token_form),
            max_lifetime=args.max_lifetime,
            introspection_secret_hash=hash_secret(secret) if secret is not None else None,
            created_at=_now(),
            compact_claims=not args.full_claims,
            has_clock=not args.no_clock,
        )
        try:
            storage.add_resource_server(rs)
        except DuplicateError:  # added by someone else since the check above
            raise CommandError(f"resource server {args.audience!r} exists") from None
        storage.append_audit(
            [AuditEntry(at=rs.created_at, action="resource_server.created", actor=actor(), audience=args.audience)]
        )
    encoded = shared_key.to_cbor()
    print(f"added resource server {args.audience}")
    print(f"AS<->RS key (COSE_Key, AES-CCM-16-64-128, kid h'{(shared_key.kid or b'').hex()}'):")
    print(f"  hex:       {encoded.hex()}")
    print(f"  base64url: {b64url_encode(encoded)}")
    if secret is not None:
        print(f"introspection client_id: {args.audience}")
        print(f"introspection secret: {secret}")
    print(f"token claims: {_claims_text(rs)}")
    print(f"expiry: {_expiry_text(rs)}")
    if not rs.has_clock:
        print("  configure the lock with has_clock = false (ostiary lock init-config --no-clock)")
    _secret_note("AS<->RS key" + (" and the introspection secret" if secret is not None else ""))
    return 0


def next_rs_kid(used: Collection[bytes]) -> bytes:
    """The smallest AS<->RS key id not in ``used``: 1, 2, ... as a big-endian unsigned integer in as few bytes as
    it needs (``01`` .. ``ff``, then ``0100`` ..). Every token carries it in its protected header, so the first
    255 resource servers cost one byte each.

    >>> next_rs_kid([]).hex(), next_rs_kid([b"\\x01", b"\\x03"]).hex()
    ('01', '02')
    >>> next_rs_kid([bytes([n]) for n in range(1, 256)]).hex()
    '0100'
    """
    taken = set(used)
    n = 1
    while (kid := n.to_bytes((n.bit_length() + 7) // 8, "big")) in taken:
        n += 1
    return kid


def _kid_value(text: str) -> bytes:
    """``--kid``: 1 to 16 bytes in hex."""
    try:
        kid = bytes.fromhex(text)
    except ValueError:
        raise CommandError(f"--kid must be hex, e.g. 01 or 0a1b: {text!r}", status=2) from None
    if not 1 <= len(kid) <= _MAX_KID_BYTES:
        raise CommandError(f"--kid must be 1 to {_MAX_KID_BYTES} bytes", status=2)
    return kid


def _claims_text(rs: Any) -> str:
    if not rs.compact_claims:
        return "full (iat and ace_profile in every token)"
    if len(rs.profiles) == 1:
        return "compact (no iat; no ace_profile: the RS has one profile)"
    return "compact (no iat; ace_profile, the RS has several profiles)"


def _expiry_text(rs: Any) -> str:
    if rs.has_clock:
        return "exp (the RS has a clock)"
    return "exi + sequence-numbered cti (the RS has no clock, RFC 9200 section 5.10.3)"


def _cmd_rs_list(args: argparse.Namespace) -> int:
    with _storage(_settings(args)) as storage:
        servers = storage.list_resource_servers()
        contacts = {r.audience: r.last_contact for r in storage.list_registrations()}
    rows = [
        [
            rs.audience,
            "yes" if rs.enabled else "no",
            _profile_text(rs.profiles),
            str(rs.scope_format),
            str(rs.token_form),
            str(rs.max_lifetime),
            "-" if rs.shared_key is None or rs.shared_key.kid is None else rs.shared_key.kid.hex(),
            _contact_cell(contacts.get(rs.audience)),
            "compact" if rs.compact_claims else "full",
            "exp" if rs.has_clock else "exi",
        ]
        for rs in servers
    ]
    # LAST_CONTACT: the lock's last LwM2M Register or Update (issue #7); one word, so columns split on spaces.
    header = ["AUDIENCE", "ENABLED", "PROFILES", "SCOPES", "TOKEN_FORM", "MAX_LIFETIME", "KID", "LAST_CONTACT"]
    _table([*header, "CLAIMS", "EXPIRY"], rows)
    return 0


def _cmd_rs_show(args: argparse.Namespace) -> int:
    with _storage(_settings(args)) as storage:
        rs = storage.get_resource_server(args.audience)
        registration = storage.registration_of(args.audience)
        keys = storage.operational_keys(args.audience)
    if rs is None:
        raise CommandError(f"no resource server {args.audience!r}")
    shared = rs.shared_key
    extra: list[tuple[str, str]] = []
    if keys:
        extra.append(("key generations", f"{len(keys)} (newest {keys[-1].generation}; 'rs keys' lists them)"))
    if registration is not None:
        extra += [
            ("last contact", _contact_text(registration.last_contact, _now())),
            (
                "registration",
                f"rd/{registration.location} endpoint {registration.endpoint} from {registration.source or '-'}, "
                f"lifetime {registration.lifetime} s, binding {registration.binding}, "
                f"LwM2M {registration.lwm2m_version}, since {_when(registration.registered_at)}",
            ),
        ]
    _print_fields(
        [
            ("audience", rs.audience),
            ("enabled", "yes" if rs.enabled else "no"),
            ("profiles", _profile_text(rs.profiles)),
            ("scope format", str(rs.scope_format)),
            ("resources", _scope_text(rs.resources)),
            ("token form", str(rs.token_form)),
            ("max lifetime", f"{rs.max_lifetime} s"),
            (
                "shared key",
                "-"
                if shared is None or shared.k is None
                else f"kid h'{(shared.kid or b'').hex()}' (secret, {len(shared.k)} bytes)",
            ),
            ("public key", _key_text(rs.public_key)),
            ("token claims", _claims_text(rs)),
            ("expiry", _expiry_text(rs)),
            ("introspection", _hidden(rs.introspection_secret_hash, "secret hash")),
            ("created", _when(rs.created_at)),
            *extra,
        ]
    )
    return 0


def _contact_cell(t: int | None) -> str:
    """A last contact as one word: ``never`` or ``2025-08-05T12:00:00Z``."""
    return "never" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _contact_text(t: int | None, now: int) -> str:
    """A lock's last contact (LwM2M Register or Update): ``never``, or the time and how long ago."""
    if t is None:
        return "never"
    return f"{_when(t)} ({_ago(now - t)})"


def _ago(seconds: int) -> str:
    if seconds < 0:
        return "in the future"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _credentials(storage: Storage, settings: Settings) -> Any:
    from as_server.bootstrap.operational import OperationalCredentials

    return OperationalCredentials(
        storage,
        rotation_age=settings.key_rotation_age,
        overlap=settings.key_overlap or None,
        exi_upload_window=settings.exi_upload_window,
    )


def _cmd_rs_rotate_key(args: argparse.Namespace) -> int:
    from as_server.bootstrap.operational import IdentityTooLong, LockRevoked, UnknownLock
    from ostiary.admin_cli import actor

    settings = _settings(args)
    with _storage(settings) as storage:
        try:
            key = _credentials(storage, settings).rotate(args.audience, now=_now(), actor=actor())
        except (UnknownLock, LockRevoked, IdentityTooLong) as exc:
            raise CommandError(str(exc)) from None
    print(f"created key generation {key.generation} of {args.audience} (identity {key.identity.decode()})")
    print(
        "the lock picks it up at its next pull or bootstrap; tokens switch to it once it has, and the previous "
        "generation retires after the overlap"
    )
    return 0


def _cmd_rs_revoke(args: argparse.Namespace) -> int:
    from as_server.bootstrap.operational import UnknownLock
    from ostiary.admin_cli import actor

    settings = _settings(args)
    now = _now()
    with _storage(settings) as storage:
        try:
            revoked = _credentials(storage, settings).revoke(args.audience, now=now, actor=actor())
        except UnknownLock as exc:
            raise CommandError(str(exc)) from None
    print(f"revoked {args.audience}: key material erased, resource server disabled, {revoked} tokens revoked")
    if args.decommission:
        print(_decommission(settings, args.audience, now))
    else:
        print("a bootstrap of the lock gives it a new key and enables it again (--decommission prevents that)")
    return 0


def _decommission(settings: Settings, serial: str, now: int) -> str:
    """Decommission the device ``serial`` in ``$OSTIARY_HOME/devices.db``, if it is there; what happened."""
    from as_server.bootstrap.device_db import DEVICE_DB_FILE, SqliteDeviceStore
    from as_server.bootstrap.devices import UnknownDevice
    from as_server.sealing import MasterKey, SealingError

    path = settings.home / DEVICE_DB_FILE
    if not path.exists():
        return f"no device store at {path}: nothing to decommission"
    try:
        store = SqliteDeviceStore(path, MasterKey.load(settings.master_key_file))
    except SealingError:
        raise CommandError(f"{path} was created under another master key") from None
    try:
        record = store.decommission(serial, now=now)
    except UnknownDevice:
        return f"no device {serial} in {path}: nothing to decommission"
    finally:
        store.close()
    return (
        f"decommissioned device {serial} (since {_when(record.decommissioned_at)}): its bootstrap identity is refused"
    )


def _key_state(key: Any, current: int | None, now: int) -> str:
    if key.key is None:
        return "erased"
    if key.retire_at is not None and key.retire_at <= now:
        return "retired"
    if key.generation == current:
        return "current"
    if key.retire_at is not None:
        return "retiring"
    if key.delivered_at is None:
        return "pending"
    return "delivered"


def _cmd_rs_keys(args: argparse.Namespace) -> int:
    with _storage(_settings(args)) as storage:
        rs = storage.get_resource_server(args.audience)
        keys = storage.operational_keys(args.audience)
    if rs is None and not keys:
        raise CommandError(f"no resource server {args.audience!r}")
    if not keys:
        print(f"{args.audience} has no operational keys (it was not bootstrapped; 'rs show' for its registration)")
        return 0
    now = _now()
    token_key = None if rs is None or rs.shared_key is None else rs.shared_key.k
    current = next((k.generation for k in reversed(keys) if k.key is not None and k.key == token_key), None)
    rows = [
        [
            str(k.generation),
            k.identity.decode(),
            _when(k.created_at),
            _when(k.delivered_at),
            _when(k.retire_at),
            _key_state(k, current, now),
        ]
        for k in keys
    ]
    _table(["GENERATION", "IDENTITY", "CREATED", "DELIVERED", "RETIRES", "STATE"], rows)
    return 0


# --- token -------------------------------------------------------------------------------------------------


def _cmd_token_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CommandError("--limit must be at least 1", status=2)
    with _storage(_settings(args)) as storage:
        tokens = storage.list_tokens(client_id=args.client, audience=args.audience, limit=args.limit)
    now = _now()
    rows = [
        [
            t.cti.hex(),
            t.client_id,
            t.audience,
            _scope_text(t.scope),
            _when(t.exp),
            str(t.status) if t.status != "active" or t.exp > now else "expired",
        ]
        for t in tokens
    ]
    _table(["CTI", "CLIENT", "AUDIENCE", "SCOPE", "EXPIRES", "STATUS"], rows)
    return 0


def _cmd_token_show(args: argparse.Namespace) -> int:
    try:
        cti = bytes.fromhex(args.cti)
    except ValueError:
        raise CommandError(f"not hex: {args.cti!r}", status=2) from None
    with _storage(_settings(args)) as storage:
        t = storage.get_by_cti(cti)
    if t is None:
        raise CommandError(f"no token with cti {args.cti}")
    _print_fields(
        [
            ("cti", t.cti.hex()),
            ("client", t.client_id),
            ("audience", t.audience),
            ("scope", _scope_text(t.scope)),
            ("profile", _profile_text(t.profile)),
            ("issued", _when(t.iat)),
            ("expires", _when(t.exp) if t.exi is None else f"at the latest {_when(t.exp)} (AS bound)"),
            ("exi", "-" if t.exi is None else f"{t.exi} s from first receipt by the RS (RFC 9200 section 5.10.3)"),
            ("status", str(t.status)),
            ("subject", t.subject or "-"),
            ("pop key id", "-" if t.pop_kid is None else f"h'{t.pop_kid.hex()}'"),
            ("cnf", _hidden(t.cnf, "key material, not shown")),
            ("token hash", t.token_hash.hex()),
        ]
    )
    return 0


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    from as_server.console import matches_sites, revoke_token
    from as_server.errors import ApiError
    from as_server.models import UserRole
    from ostiary.admin_cli import actor

    with _storage(_settings(args)) as storage:
        who, may_see = actor(), lambda audience: True
        if args.as_user is not None:
            user = storage.get_user(args.as_user)
            if user is None or not user.enabled or user.role not in (UserRole.ADMIN, UserRole.MANAGER):
                raise CommandError(f"{args.as_user!r} is not an enabled manager or admin")
            sites = storage.manager_sites(user.name)
            who = f"user:{user.name}"
            if user.role != UserRole.ADMIN:
                may_see = lambda audience: matches_sites(audience, sites)  # noqa: E731
        try:
            token = revoke_token(storage, args.cti, may_see=may_see, actor=who, now=_now())
        except ApiError as exc:
            raise CommandError(exc.description) from None
    print(f"revoked token {token.cti.hex()} (client {token.client_id}, audience {token.audience})")
    return 0


# --- keys rotate -------------------------------------------------------------------------------------------


def _cmd_keys_rotate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    now = _now()
    with _storage(settings) as storage:
        # exi tokens (RSs without a clock) may be in use until issue + lifetime + exi_upload_window (token.py).
        lifetime = max(
            [
                settings.token_lifetime,
                *(
                    rs.max_lifetime + (0 if rs.has_clock else settings.exi_upload_window)
                    for rs in storage.list_resource_servers()
                ),
            ]
        )
        old = storage.signing_key()
        new = _new_signing_key()
        storage.add_signing_key(new)
        if old is not None:
            storage.retire(old.kid, at=now, retire_after=now + lifetime)
    print(f"signing key: new Ed25519 key kid h'{new.kid.hex()}' is active")
    print(f"  public COSE_Key: {new.key.public().to_cbor().hex()}")
    if old is not None:
        print(f"  previous key h'{old.kid.hex()}' retired; it verifies tokens until {_when(now + lifetime)}")
    return 0
