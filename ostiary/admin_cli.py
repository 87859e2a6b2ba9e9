"""``ostiary user|group|consent|audit``: people, their groups, the consent workflow and the audit log (issue #5).

* ``user add|list|show|disable|enable|passwd`` and ``group add|list|add-member|remove-member`` administer the local
  accounts (:mod:`as_server.identity`: Argon2id password hashes). A password is read from a prompt (``getpass``,
  asked twice), from ``--password-file FILE`` (first line) or from the environment variable ``--password-env VAR``
  names -- never from an argument, which other users see in ``ps`` and shells keep in their history.
* ``consent list|show|approve|deny|grants|revoke`` act on access requests and grants as a named approver
  (``--as USER``, a user with role ``manager`` or ``admin``), with the same rules as the HTTP API
  (:class:`as_server.consent.ConsentService`): whoever runs the command has the database and the master key, so no
  password is asked, but the user must exist, be enabled, have the role, and be among the request's approvers
  unless an admin; nobody approves their own request.
* ``audit`` prints the audit log (:mod:`as_server.audit`), filtered.

Every change is recorded in the audit log with its actor: ``user:NAME`` for consent decisions, ``cli:OS-USER`` for
account administration. The AS packages are imported inside the handlers, so ``--help`` needs no database driver.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import stat
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ostiary.as_cli import CommandError, _command, _now, _print_fields, _settings, _storage, _table, _when

if TYPE_CHECKING:
    from as_server.consent import Approver, ConsentService
    from as_server.storage.base import Storage

__all__ = ["actor", "add_audit_options", "add_consent_commands", "add_group_commands", "add_user_commands", "cmd_audit"]

ROLES = ("admin", "manager", "user")
REQUEST_STATUSES = ("pending", "approved", "denied", "expired", "all")
GRANT_STATUSES = ("active", "revoked", "all")
_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# --- helpers -----------------------------------------------------------------------------------------------


def actor() -> str:
    """``cli:OS-USER``: who ran an administrative command."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (containers)
        return f"cli:uid-{os.getuid()}"


def _password(args: argparse.Namespace, *, what: str = "password") -> str:
    """The new password from ``--password-file``, ``--password-env`` or a prompt (twice)."""
    path: Path | None = args.password_file
    if path is not None:
        try:
            info = path.stat()
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CommandError(f"{path} is not UTF-8 text") from None
        if stat.S_IMODE(info.st_mode) & 0o077:
            print(f"ostiary: warning: {path} is readable by other users; chmod 600 it", file=sys.stderr)
        password = text.splitlines()[0] if text else ""
        if not password:
            raise CommandError(f"{path} is empty")
        return password
    if args.password_env is not None:
        password = os.environ.get(args.password_env, "")
        if not password:
            raise CommandError(f"${args.password_env} is not set or empty", status=2)
        return password
    if not sys.stdin.isatty():
        raise CommandError(
            f"no {what}: give --password-file FILE or --password-env VAR, or run in a terminal to be asked; there is "
            "deliberately no option taking the password itself (command lines are visible in ps and shell history)",
            status=2,
        )
    first = getpass.getpass(f"{what}: ")
    if getpass.getpass(f"{what} again: ") != first:
        raise CommandError("the passwords differ")
    if not first:
        raise CommandError("the password is empty")
    return first


def _password_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--password-file", type=Path, metavar="FILE", help="read the password from FILE (first line; keep it mode 0600)"
    )
    source.add_argument("--password-env", metavar="VAR", help="read the password from environment variable VAR")


def _time(text: str, *, now: int, future: bool) -> int:
    """``30d``/``12h``/``15m`` relative to now (ahead when ``future``, else back), ISO 8601, or epoch seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is not None:
        delta = int(match[1]) * _UNIT[match[2]]
        return now + delta if future else now - delta
    if text.strip().isascii() and text.strip().isdigit() and len(text.strip()) <= 12:
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"not a time: {text!r} (ISO 8601 such as 2025-07-01T09:00:00+02:00, epoch seconds, or 30d/12h/15m)",
            status=2,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _scope_text(scope: bytes | str) -> str:
    from as_server.audit import describe_scope

    return describe_scope(scope) or "-"


# --- users -------------------------------------------------------------------------------------------------


def add_user_commands(group: argparse.ArgumentParser, parents: Sequence[argparse.ArgumentParser]) -> None:
    """``ostiary user ...``."""
    sub = group.add_subparsers(title="commands", metavar="COMMAND")

    p = _command(
        sub,
        "add",
        help="add a local user (the password is prompted for, or read from a file or variable)",
        description="Add a local user account. The password is hashed with Argon2id (RFC 9106) and only the hash\n"
        "is stored. Roles: 'admin' (decides every access request, revokes every grant), 'manager' (decides\n"
        "the requests that name them or one of their groups as approvers), 'user' (asks through an app).",
        example="  ostiary user add frank --name 'Frank (facility)' --role manager\n"
        "  ostiary user add alice --password-file alice.pw",
        parents=parents,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--name", dest="display_name", default="", metavar="TEXT", help="display name")
    p.add_argument("--role", choices=ROLES, default="user", help="role (default user)")
    p.add_argument("--disabled", action="store_true", help="create the account disabled")
    _password_options(p)
    p.set_defaults(handler=_cmd_user_add)

    p = _command(
        sub,
        "list",
        help="list users",
        description="List the local users (no password hashes).",
        example="  ostiary user list",
        parents=parents,
    )
    p.set_defaults(handler=_cmd_user_list)

    p = _command(
        sub,
        "show",
        help="show one user and their groups",
        description="Show one user; the password\nappears only as the kind of its hash.",
        example="  ostiary user show frank",
        parents=parents,
    )
    p.add_argument("name", metavar="NAME")
    p.set_defaults(handler=_cmd_user_show)

    p = _command(
        sub,
        "disable",
        help="disable a user and revoke their tokens",
        description="Disable a user: they can no longer sign in or approve, the grants made for them stop counting,\n"
        "and the tokens issued for them (sub) that have not expired are revoked (introspection answers\n"
        "active: false). A running server sees it within 0.1 s.",
        example="  ostiary user disable alice",
        parents=parents,
    )
    p.add_argument("name", metavar="NAME")
    p.set_defaults(handler=_cmd_user_enable, enabled=False)

    p = _command(
        sub,
        "enable",
        help="enable a disabled user",
        description="Enable a disabled user again (revoked\ntokens stay revoked).",
        example="  ostiary user enable alice",
        parents=parents,
    )
    p.add_argument("name", metavar="NAME")
    p.set_defaults(handler=_cmd_user_enable, enabled=True)

    p = _command(
        sub,
        "passwd",
        help="set a user's password",
        description="Replace a user's password (Argon2id hash; the old one stops working at once).",
        example="  ostiary user passwd frank\n  ostiary user passwd frank --password-env NEW_PASSWORD",
        parents=parents,
    )
    p.add_argument("name", metavar="NAME")
    _password_options(p)
    p.set_defaults(handler=_cmd_user_passwd)

    p = _command(
        sub,
        "sites",
        help="set or show the sites a manager manages in the console",
        description="The sites of a manager (issue #6): audience patterns, exact ('front-door') or globs\n"
        "('building-a/*', '*' also matches '/'). In the manager console they see only the locks, tokens and\n"
        "audit entries of these audiences (access requests: those that name them as approver). Admins see\n"
        "everything. Without PATTERN the current sites are printed; --clear removes them all.",
        example="  ostiary user sites frank 'building-a/*' front-door\n  ostiary user sites frank",
        parents=parents,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("patterns", nargs="*", metavar="PATTERN")
    p.add_argument("--clear", action="store_true", help="remove every site")
    p.set_defaults(handler=_cmd_user_sites)


def _cmd_user_add(args: argparse.Namespace) -> int:
    from as_server.identity import PasswordHasher
    from as_server.models import User, UserRole
    from as_server.storage.base import DuplicateError

    password = _password(args)
    try:
        password_hash = PasswordHasher().hash(password)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    user = User(
        name=args.name,
        password_hash=password_hash,
        display_name=args.display_name,
        role=UserRole(args.role),
        enabled=not args.disabled,
        created_at=_now(),
    )
    with _storage(_settings(args)) as storage:
        try:
            storage.add_user(user, actor=actor(), now=_now())
        except DuplicateError:
            raise CommandError(f"user {args.name!r} exists (see 'user passwd')") from None
    print(f"added user {args.name} (role {args.role}{', disabled' if args.disabled else ''})")
    return 0


def _cmd_user_list(args: argparse.Namespace) -> int:
    with _storage(_settings(args)) as storage:
        users = storage.list_users()
        groups = {u.name: sorted(storage.groups_of(u.name)) for u in users}
    rows = [
        [u.name, str(u.role), "yes" if u.enabled else "no", ",".join(groups[u.name]) or "-", u.display_name or "-"]
        for u in users
    ]
    _table(["NAME", "ROLE", "ENABLED", "GROUPS", "DISPLAY_NAME"], rows)
    return 0


def _get_user(storage: Storage, name: str) -> Any:
    user = storage.get_user(name)
    if user is None:
        raise CommandError(f"no user {name!r}")
    return user


def _cmd_user_show(args: argparse.Namespace) -> int:
    with _storage(_settings(args)) as storage:
        user = _get_user(storage, args.name)
        groups = sorted(storage.groups_of(user.name))
    kind = "-" if user.password_hash is None else user.password_hash.split("$")[1] + " hash"
    _print_fields(
        [
            ("name", user.name),
            ("display name", user.display_name or "-"),
            ("role", str(user.role)),
            ("enabled", "yes" if user.enabled else "no"),
            ("groups", ", ".join(groups) or "-"),
            ("password", kind),
            ("created", _when(user.created_at)),
        ]
    )
    return 0


def _cmd_user_enable(args: argparse.Namespace) -> int:
    from as_server.storage.base import NotFoundError

    with _storage(_settings(args)) as storage:
        try:
            revoked = storage.set_user_enabled(args.name, args.enabled, actor=actor(), now=_now())
        except NotFoundError:
            raise CommandError(f"no user {args.name!r}") from None
    if args.enabled:
        print(f"enabled user {args.name}")
    else:
        print(f"disabled user {args.name}; {revoked} tokens revoked")
    return 0


def _cmd_user_sites(args: argparse.Namespace) -> int:
    from as_server.console import set_sites
    from as_server.errors import ApiError

    if args.clear and args.patterns:
        raise CommandError("--clear takes no PATTERN", status=2)
    with _storage(_settings(args)) as storage:
        if storage.get_user(args.name) is None:
            raise CommandError(f"no user {args.name!r}")
        if args.patterns or args.clear:
            try:
                sites = set_sites(storage, args.name, args.patterns, actor=actor(), now=_now())
            except ApiError as exc:
                raise CommandError(exc.description, status=2) from None
        else:
            sites = storage.manager_sites(args.name)
    print(f"sites of {args.name}: {' '.join(sites) or '(none)'}")
    return 0


def _cmd_user_passwd(args: argparse.Namespace) -> int:
    from as_server.identity import PasswordHasher
    from as_server.storage.base import NotFoundError

    settings = _settings(args)
    with _storage(settings) as storage:
        _get_user(storage, args.name)
        password = _password(args, what=f"new password for {args.name}")
        try:
            password_hash = PasswordHasher().hash(password)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        try:
            storage.set_password(args.name, password_hash, actor=actor(), now=_now())
        except NotFoundError:
            raise CommandError(f"no user {args.name!r}") from None
    print(f"new password set for {args.name}")
    return 0


# --- groups ------------------------------------------------------------------------------------------------


def add_group_commands(group: argparse.ArgumentParser, parents: Sequence[argparse.ArgumentParser]) -> None:
    """``ostiary group ...``."""
    sub = group.add_subparsers(title="commands", metavar="COMMAND")

    p = _command(
        sub,
        "add",
        help="add a group",
        description="Add a group of users. Policy rules name groups as subjects (who may open a door) and as\n"
        "approvers (approvers: {groups: [facility]}: every manager in the group may decide).",
        example="  ostiary group add facility --description 'Facility managers'",
        parents=parents,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--description", default="", metavar="TEXT")
    p.set_defaults(handler=_cmd_group_add)

    p = _command(
        sub,
        "list",
        help="list groups and their members",
        description="List the groups with their\nmembers.",
        example="  ostiary group list",
        parents=parents,
    )
    p.set_defaults(handler=_cmd_group_list)

    p = _command(
        sub,
        "add-member",
        help="put a user in a group",
        description="Make a user a member of a group.",
        example="  ostiary group add-member facility frank",
        parents=parents,
    )
    p.add_argument("group", metavar="GROUP")
    p.add_argument("user", metavar="USER")
    p.set_defaults(handler=_cmd_group_member, add=True)

    p = _command(
        sub,
        "remove-member",
        help="take a user out of a group",
        description="End a user's membership\nin a group.",
        example="  ostiary group remove-member facility frank",
        parents=parents,
    )
    p.add_argument("group", metavar="GROUP")
    p.add_argument("user", metavar="USER")
    p.set_defaults(handler=_cmd_group_member, add=False)


def _cmd_group_add(args: argparse.Namespace) -> int:
    from as_server.models import Group
    from as_server.storage.base import DuplicateError

    with _storage(_settings(args)) as storage:
        try:
            storage.add_group(
                Group(name=args.name, description=args.description, created_at=_now()), actor=actor(), now=_now()
            )
        except DuplicateError:
            raise CommandError(f"group {args.name!r} exists") from None
    print(f"added group {args.name}")
    return 0


def _cmd_group_list(args: argparse.Namespace) -> int:
    with _storage(_settings(args)) as storage:
        rows = [
            [g.name, ",".join(storage.members_of(g.name)) or "-", g.description or "-"] for g in storage.list_groups()
        ]
    _table(["GROUP", "MEMBERS", "DESCRIPTION"], rows)
    return 0


def _cmd_group_member(args: argparse.Namespace) -> int:
    from as_server.storage.base import DuplicateError, NotFoundError

    with _storage(_settings(args)) as storage:
        try:
            if args.add:
                storage.add_member(args.group, args.user, actor=actor(), now=_now())
            else:
                storage.remove_member(args.group, args.user, actor=actor(), now=_now())
        except (NotFoundError, DuplicateError) as exc:
            raise CommandError(str(exc)) from None
    print(f"{'added' if args.add else 'removed'} {args.user} {'to' if args.add else 'from'} group {args.group}")
    return 0


# --- consent -----------------------------------------------------------------------------------------------


def add_consent_commands(group: argparse.ArgumentParser, parents: Sequence[argparse.ArgumentParser]) -> None:
    """``ostiary consent ...``."""
    as_user = argparse.ArgumentParser(add_help=False)
    as_user.add_argument(
        "--as",
        dest="as_user",
        required=True,
        metavar="USER",
        help="act as this user (role manager or admin; an approver of the request unless admin)",
    )
    json_out = argparse.ArgumentParser(add_help=False)
    json_out.add_argument("--json", action="store_true", help="print JSON (as the HTTP API answers)")
    sub = group.add_subparsers(title="commands", metavar="COMMAND")
    with_user = [*parents, as_user]

    p = _command(
        sub,
        "list",
        help="list access requests the user may decide",
        description="List access requests (pending by default) that USER may decide: all of them for an admin,\n"
        "those naming USER or one of USER's groups as approvers for a manager. Requests nobody decided in\n"
        "time are marked expired first.",
        example="  ostiary consent list --as frank\n  ostiary consent list --as admin --status all --json",
        parents=[*with_user, json_out],
    )
    p.add_argument("--status", choices=REQUEST_STATUSES, default="pending")
    p.add_argument("--limit", type=int, default=100, metavar="N")
    p.set_defaults(handler=_cmd_consent_list)

    p = _command(
        sub,
        "show",
        help="show one access request",
        description="Show one access request: who asked\n"
        "for what, why the policy asks for consent, the approvers, and the decision.",
        example="  ostiary consent show 3q2-7wLdRnqh5xUh4Ogt9A --as frank",
        parents=[*with_user, json_out],
    )
    p.add_argument("request_id", metavar="ID")
    p.set_defaults(handler=_cmd_consent_show)

    p = _command(
        sub,
        "approve",
        help="approve a pending access request, optionally narrowed",
        description="Approve a pending access request. The approval becomes a grant: a permit rule the policy\n"
        "engine applies from now on, so the app's next token request succeeds. Narrow it with --scope (a\n"
        "subset of what was asked), --window (weekly time windows in --timezone), --valid-from/--until\n"
        "('remember until'; ISO 8601, epoch seconds, or relative: 30d, 12h) and --max-lifetime (token\n"
        "lifetime, seconds). Tokens never outlive a window or the validity. Nobody approves their own request.",
        example="  ostiary consent approve 3q2-7wLdRnqh5xUh4Ogt9A --as frank --scope '/lock:PUT' \\\n"
        "      --window 'Mon-Fri 08:00-18:00' --timezone Europe/Berlin --until 30d",
        parents=[*with_user, json_out],
    )
    p.add_argument("request_id", metavar="ID")
    p.add_argument("--scope", metavar="SCOPE", help="approve only this subset ('/lock:PUT', or text scopes)")
    _add_conditions(p)
    p.set_defaults(handler=_cmd_consent_approve)

    p = _command(
        sub,
        "grant",
        help="create a grant without a request (administrators): a database rule",
        description="Create a grant directly, without an app asking first: a permit rule stored in the database,\n"
        "which the policy engine applies beside the policy file (and which `consent revoke` removes). Only\n"
        "administrators may. It takes the conditions `consent approve` takes; a pending request of the same\n"
        "client, user, audience and scope is approved by it.",
        example="  ostiary consent grant --as admin --client cleaner-app --audience front-door --scope '/lock:PUT' \\\n"
        "      --window 'Mon-Fri 06:00-08:00' --timezone Europe/Berlin --until 90d",
        parents=[*with_user, json_out],
    )
    p.add_argument("--client", required=True, metavar="CLIENT_ID")
    p.add_argument("--user", metavar="USER", help="only when the app acts for this signed-in user")
    p.add_argument("--audience", required=True, metavar="AUDIENCE")
    p.add_argument("--scope", required=True, metavar="SCOPE", help="'/lock:PUT' (AIF), or text scopes")
    _add_conditions(p)
    p.set_defaults(handler=_cmd_consent_grant)

    p = _command(
        sub,
        "deny",
        help="deny a pending access request",
        description="Deny a pending access request;\nthe app learns it at the request's URI.",
        example="  ostiary consent deny 3q2-7wLdRnqh5xUh4Ogt9A --as frank --note 'not this week'",
        parents=[*with_user, json_out],
    )
    p.add_argument("request_id", metavar="ID")
    p.add_argument("--note", default="", metavar="TEXT")
    p.set_defaults(handler=_cmd_consent_deny)

    p = _command(
        sub,
        "grants",
        help="list grants the user may revoke",
        description="List grants (active by\ndefault) that USER may revoke.",
        example="  ostiary consent grants --as frank",
        parents=[*with_user, json_out],
    )
    p.add_argument("--status", choices=GRANT_STATUSES, default="active")
    p.add_argument("--limit", type=int, default=100, metavar="N")
    p.set_defaults(handler=_cmd_consent_grants)

    p = _command(
        sub,
        "revoke",
        help="revoke a grant and the tokens issued under it",
        description="Revoke a grant (its id is the approved request's id): new tokens under it stop at once (a\n"
        "running server sees it within 0.1 s) and the tokens already issued under it are marked revoked, so\n"
        "introspection answers active: false.",
        example="  ostiary consent revoke 3q2-7wLdRnqh5xUh4Ogt9A --as frank",
        parents=[*with_user, json_out],
    )
    p.add_argument("grant_id", metavar="ID")
    p.set_defaults(handler=_cmd_consent_revoke)


def _add_conditions(p: argparse.ArgumentParser) -> None:
    """The grant conditions `consent approve` and `consent grant` take (:func:`as_server.consent.parse_approval`)."""
    p.add_argument("--valid-from", metavar="TIME", help="in force from (default: now)")
    p.add_argument("--until", metavar="TIME", help="in force until, 'remember until' (default: until revoked)")
    p.add_argument("--window", action="append", default=[], metavar="'DAYS HH:MM-HH:MM'", help="repeatable")
    p.add_argument("--timezone", metavar="TZ", help="IANA time zone of the windows (default: consent_timezone)")
    p.add_argument("--max-lifetime", type=int, metavar="SECONDS", help="longest token lifetime under the grant")
    p.add_argument("--note", default="", metavar="TEXT", help="a note for the audit log")


def _conditions(args: argparse.Namespace, now: int) -> dict[str, Any]:
    """:func:`_add_conditions`' options as the approval body the HTTP API takes."""
    body: dict[str, Any] = {"note": args.note}
    if args.valid_from is not None:
        body["valid_from"] = _time(args.valid_from, now=now, future=True)
    if args.until is not None:
        body["valid_until"] = _time(args.until, now=now, future=True)
    if args.window:
        body["windows"] = list(args.window)
    if args.timezone is not None:
        body["timezone"] = args.timezone
    if args.max_lifetime is not None:
        body["max_lifetime"] = args.max_lifetime
    return body


def _consent(storage: Storage, args: argparse.Namespace) -> tuple[ConsentService, Approver]:
    from as_server.consent import ConsentService
    from as_server.identity import LocalIdentityProvider

    service = ConsentService(settings=_settings(args), storage=storage, identity=LocalIdentityProvider(storage))
    return service, _api(lambda: service.approver(args.as_user))


def _api(call: Any) -> Any:
    """Run a :class:`~as_server.consent.ConsentService` call; its API errors become one-line CLI errors."""
    from as_server.errors import ApiError

    try:
        return call()
    except ApiError as exc:
        raise CommandError(exc.description) from None


def _request_rows(requests: Sequence[Any]) -> list[list[str]]:
    return [
        [
            r.id,
            str(r.status),
            r.client_id,
            r.subject or "-",
            r.audience,
            _scope_text(r.scope),
            _when(r.created_at),
            _when(r.expires_at) if r.status == "pending" else (r.decided_by or "-"),
        ]
        for r in requests
    ]


def _cmd_consent_list(args: argparse.Namespace) -> int:
    from as_server.endpoints.consent import request_view
    from as_server.models import AccessRequestStatus

    if not 1 <= args.limit <= 1000:
        raise CommandError("--limit must be 1 to 1000", status=2)
    status = None if args.status == "all" else AccessRequestStatus(args.status)
    with _storage(_settings(args)) as storage:
        service, approver = _consent(storage, args)
        found = service.list_requests(approver, now=_now(), status=status, limit=args.limit)
    if args.json:
        _print_json([request_view(r, None) for r in found])
        return 0
    _table(
        ["ID", "STATUS", "CLIENT", "SUBJECT", "AUDIENCE", "SCOPE", "ASKED", "EXPIRES/DECIDED_BY"], _request_rows(found)
    )
    return 0


def _times(count: int) -> str:
    """``once``, ``2 times``, ...: how often an app asked.

    >>> _times(1), _times(3)
    ('once', '3 times')
    """
    return "once" if count == 1 else f"{count} times"


def _print_request(request: Any, grant: Any) -> None:
    from as_server.audit import describe_grant

    rows = [
        ("id", request.id),
        ("status", str(request.status)),
        ("client", request.client_id),
        ("subject", request.subject or "-"),
        ("audience", request.audience),
        ("scope", _scope_text(request.scope)),
        ("reason", request.reason or "-"),
        ("approvers", ", ".join(request.approvers) or "-"),
        ("asked", f"{_when(request.created_at)} ({_times(request.request_count)}, last {_when(request.updated_at)})"),
        ("expires", _when(request.expires_at)),
        ("decided", f"{_when(request.decided_at)} by {request.decided_by}" if request.decided_at else "-"),
        ("note", request.note or "-"),
    ]
    if grant is not None:
        rows += [
            ("grant", f"{grant.status}: {_scope_text(grant.scope)}; {describe_grant(grant)}"),
        ]
    _print_fields(rows)


def _cmd_consent_show(args: argparse.Namespace) -> int:
    from as_server.endpoints.consent import request_view

    with _storage(_settings(args)) as storage:
        service, approver = _consent(storage, args)
        request, grant = _api(lambda: service.get_request(approver, args.request_id, now=_now()))
    if args.json:
        _print_json(request_view(request, grant))
    else:
        _print_request(request, grant)
    return 0


def _cmd_consent_approve(args: argparse.Namespace) -> int:
    from as_server.consent import grant_scope, parse_approval
    from as_server.endpoints.consent import request_view

    now = _now()
    body = _conditions(args, now)
    if args.scope is not None:
        body["scope"] = args.scope
    with _storage(_settings(args)) as storage:
        service, approver = _consent(storage, args)
        request, _ = _api(lambda: service.get_request(approver, args.request_id, now=now))
        approval = _api(lambda: parse_approval(body, grant_scope(request.scope), now=now))
        grant = _api(lambda: service.approve(approver, args.request_id, approval, now=now))
        decided, _ = _api(lambda: service.get_request(approver, args.request_id, now=now))
    if args.json:
        _print_json(request_view(decided, grant))
        return 0
    print(f"approved access request {decided.id} as {approver.actor}")
    _print_request(decided, grant)
    return 0


def _cmd_consent_grant(args: argparse.Namespace) -> int:
    from as_server.consent import parse_approval
    from as_server.endpoints.consent import grant_view
    from policies.builtin.allow_list import parse_scope_spec

    now = _now()
    try:
        scope = parse_scope_spec(args.scope)  # AIF when it starts with "/", else text scope tokens
    except ValueError as exc:  # WireFormatError is a ValueError too
        raise CommandError(f"--scope {args.scope!r}: {exc}", status=2) from None
    body = _conditions(args, now)
    with _storage(_settings(args)) as storage:
        service, approver = _consent(storage, args)
        approval = _api(lambda: parse_approval(body, scope, now=now))
        grant = _api(
            lambda: service.grant_directly(
                approver,
                client_id=args.client,
                subject=args.user,
                audience=args.audience,
                scope=scope,
                approval=approval,
                now=now,
            )
        )
    if args.json:
        _print_json(grant_view(grant))
        return 0
    print(
        f"granted {_scope_text(grant.scope)} at {grant.audience} to {grant.client_id}"
        f"{' for ' + grant.subject if grant.subject else ''}: grant {grant.id} (revoke with `ostiary consent revoke`)"
    )
    return 0


def _cmd_consent_deny(args: argparse.Namespace) -> int:
    from as_server.endpoints.consent import request_view

    with _storage(_settings(args)) as storage:
        service, approver = _consent(storage, args)
        denied = _api(lambda: service.deny(approver, args.request_id, note=args.note, now=_now()))
    if args.json:
        _print_json(request_view(denied, None))
    else:
        print(f"denied access request {denied.id} as {approver.actor}")
    return 0


def _cmd_consent_grants(args: argparse.Namespace) -> int:
    from as_server.audit import describe_grant
    from as_server.endpoints.consent import grant_view
    from as_server.models import GrantStatus

    if not 1 <= args.limit <= 1000:
        raise CommandError("--limit must be 1 to 1000", status=2)
    status = None if args.status == "all" else GrantStatus(args.status)
    with _storage(_settings(args)) as storage:
        service, approver = _consent(storage, args)
        found = service.list_grants(approver, status=status, limit=args.limit)
        disabled = service.disabled_users()
    if args.json:
        _print_json([grant_view(g, disabled_users=disabled) for g in found])
        return 0
    rows = [
        [
            g.id,
            f"{g.status} (user disabled)" if g.subject in disabled else str(g.status),
            g.client_id,
            g.subject or "-",
            g.audience,
            _scope_text(g.scope),
            describe_grant(g),
            g.created_by,
        ]
        for g in found
    ]
    _table(["ID", "STATUS", "CLIENT", "SUBJECT", "AUDIENCE", "SCOPE", "CONDITIONS", "APPROVED_BY"], rows)
    return 0


def _cmd_consent_revoke(args: argparse.Namespace) -> int:
    with _storage(_settings(args)) as storage:
        service, approver = _consent(storage, args)
        count = _api(lambda: service.revoke(approver, args.grant_id, now=_now()))
    if args.json:
        _print_json({"id": args.grant_id, "status": "revoked", "tokens_revoked": count})
    else:
        print(f"revoked grant {args.grant_id} as {approver.actor}; {count} tokens revoked")
    return 0


# --- audit -------------------------------------------------------------------------------------------------


def add_audit_options(parser: argparse.ArgumentParser) -> None:
    """``ostiary audit`` (a group without commands: the options filter the log)."""
    parser.add_argument("--since", metavar="TIME", help="from (inclusive): ISO 8601, epoch seconds, or 24h/7d ago")
    parser.add_argument("--until", metavar="TIME", help="up to (exclusive), same forms")
    parser.add_argument("--actor", metavar="ACTOR", help="e.g. user:frank, client:phone-app, cli:root, system")
    parser.add_argument("--client", metavar="CLIENT_ID")
    parser.add_argument("--user", metavar="USER", help="entries about USER (subject) or by USER (actor user:USER)")
    parser.add_argument("--audience", metavar="AUDIENCE")
    parser.add_argument("--action", metavar="ACTION", help="an action (token.refused) or a family (access_request)")
    parser.add_argument("--limit", type=int, default=100, metavar="N", help="the N newest entries (default 100)")
    parser.add_argument("--json", action="store_true", help="one JSON array, oldest first")
    from as_server.audit import ACTIONS

    width = max(map(len, ACTIONS))
    listing = "\n".join(f"  {name:<{width}}  {meaning}" for name, meaning in ACTIONS.items())
    parser.epilog = f"{parser.epilog}\n\nactions:\n{listing}" if parser.epilog else f"actions:\n{listing}"
    parser.add_argument(
        "--home",
        type=Path,
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the deployment directory (default: $OSTIARY_HOME, else ~/.local/share/ostiary)",
    )


def cmd_audit(args: argparse.Namespace) -> int:
    """Print the newest ``--limit`` matching entries, oldest first."""
    from as_server.audit import FAMILIES, known_action
    from as_server.storage.base import AuditQuery

    if not 1 <= args.limit <= 100_000:
        raise CommandError("--limit must be 1 to 100000", status=2)
    if args.action is not None and not known_action(args.action):
        raise CommandError(
            f"unknown --action {args.action!r}; families: {', '.join(FAMILIES)} ('ostiary audit --help' lists the"
            " actions)",
            status=2,
        )
    now = _now()
    query = AuditQuery(
        since=None if args.since is None else _time(args.since, now=now, future=False),
        until=None if args.until is None else _time(args.until, now=now, future=False),
        actor=args.actor,
        client_id=args.client,
        user=args.user,
        audience=args.audience,
        action=args.action,
        limit=args.limit,
    )
    with _storage(_settings(args)) as storage:
        entries = list(reversed(storage.list_audit(query)))
    if args.json:
        _print_json(
            [
                {
                    "at": e.at,
                    "time": _when(e.at),
                    "action": e.action,
                    "actor": e.actor,
                    "client_id": e.client_id,
                    "subject": e.subject,
                    "audience": e.audience,
                    "scope": e.scope,
                    "request_id": e.request_id,
                    "grant_id": e.grant_id,
                    "cti": None if e.cti is None else e.cti.hex(),
                    "detail": e.detail,
                }
                for e in entries
            ]
        )
        return 0
    rows = [
        [
            _when(e.at),
            e.action,
            e.actor,
            e.client_id or "-",
            e.subject or "-",
            e.audience or "-",
            e.scope or "-",
            e.request_id or e.grant_id or (e.cti.hex() if e.cti is not None else "-"),
            e.detail or "-",
        ]
        for e in entries
    ]
    _table(["TIME", "ACTION", "ACTOR", "CLIENT", "SUBJECT", "AUDIENCE", "SCOPE", "REF", "DETAIL"], rows)
    return 0
