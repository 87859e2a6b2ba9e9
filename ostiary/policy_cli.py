"""``ostiary policy ...``: check policy files and explain decisions (issue #5).

* ``ostiary policy validate [FILE ...]`` loads each file (default: the deployment's policy file) and prints a summary,
  or every mistake as ``FILE:LINE: message`` on standard error (exit status 1). A rule whose validity has ended
  gets a warning on standard error (``FILE:LINE: warning: ...``) without failing the check.
* ``ostiary policy explain --client C [--user U [--group G ...]] --audience A --scope S [--at TIME] [--file FILE]``
  prints the decision the authorization server would make and what each matching rule contributed, with its line.

The file format is documented in :mod:`policies.policy_file`, the decision in :mod:`policies.engine`.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ostiary.cli import CliError

if TYPE_CHECKING:
    from policies.base import Scope
    from policies.engine import Explanation

__all__ = ["add_policy_commands"]

Formatter = argparse.RawDescriptionHelpFormatter

_VALIDATE_EPILOG = """\
examples:
  ostiary policy validate policy.yaml
  ostiary policy validate                   # the deployment's file ($OSTIARY_HOME/policy.yaml or policy_file)
  ostiary policy validate a.yaml b.yaml     # several files; exit status 1 if any has a mistake

Every mistake is printed on standard error as FILE:LINE: message, so editors can jump to it.
Rules whose validity has ended (valid_until in the past) get a warning there; they do not fail the check.
The file format (rules, subjects, targets, scopes, windows, consent) is in the README, "Policies"."""

_EXPLAIN_EPILOG = """\
examples:
  ostiary policy explain --file policy.yaml --client phone-app --audience front-door --scope '/lock:PUT'
  ostiary policy explain --file policy.yaml --client phone-app --user alice --group staff \\
      --audience building-a/floor-3/door-1 --scope '/lock:GET,PUT' --at 2025-03-31T17:55:00+02:00
  ostiary policy explain --client sensor-app --audience sensors/t1 --scope 'read write'

--scope is AIF-REST when it starts with '/' (path:METHOD[,METHOD] entries separated by spaces) or '['
(application/aif+json, e.g. '[["/lock",5]]'); otherwise text scope tokens separated by spaces.
Times are printed in the UTC offset of --at. The exit status is 0 whatever the decision; 1 if the file
has mistakes."""


def add_policy_commands(group: argparse.ArgumentParser) -> None:
    """Add ``validate`` and ``explain`` to the ``policy`` group."""
    commands = group.add_subparsers(title="commands", metavar="COMMAND")
    validate = commands.add_parser(
        "validate",
        help="check policy files and list every mistake with its line",
        description="Load policy files as the authorization server does and report every mistake\n"
        "(YAML syntax, unknown keys, malformed scopes, windows, times, time zones, unknown audience groups,\n"
        "duplicate rule ids, ...) as FILE:LINE: message. Prints a summary of each valid file.",
        epilog=_VALIDATE_EPILOG,
        formatter_class=Formatter,
    )
    validate.add_argument(
        "files", nargs="*", type=Path, metavar="FILE", help="policy files (default: the deployment's policy file)"
    )
    validate.set_defaults(handler=_cmd_validate)

    explain = commands.add_parser(
        "explain",
        help="show the decision for a request and the rules that produced it",
        description="Evaluate one token request against a policy file, as the authorization server would at\n"
        "the given time, and print the granted scope, the latest expiry (not after), the maximum token\n"
        "lifetime, the approvers if consent is required, or the reason for a refusal -- and every rule that\n"
        "matches the request with its file and line and what it did (* marks the rules that decided).",
        epilog=_EXPLAIN_EPILOG,
        formatter_class=Formatter,
    )
    explain.add_argument(
        "--file", type=Path, metavar="FILE", help="the policy file (default: the deployment's policy file)"
    )
    explain.add_argument("--client", required=True, metavar="C", help="the client_id asking")
    explain.add_argument("--user", metavar="U", help="the signed-in user the client acts for, if any")
    explain.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="G",
        help="a group the user belongs to (repeat for several; needs --user)",
    )
    explain.add_argument("--audience", required=True, metavar="A", help="the resource server (audience) asked for")
    explain.add_argument("--scope", required=True, metavar="S", help="the requested scope (see below)")
    explain.add_argument(
        "--at",
        metavar="TIME",
        help="the time of the request, ISO 8601 with a UTC offset, e.g. 2025-03-31T17:55:00+02:00 (default: now)",
    )
    explain.set_defaults(handler=_cmd_explain)


def _default_policy_file() -> Path:
    from as_server.config import Settings

    return Settings.load().effective_policy_file


# --- validate --------------------------------------------------------------------------------------------------


def _cmd_validate(args: argparse.Namespace) -> int:
    from policies.errors import PolicyError
    from policies.policy_file import PolicyDocument

    files: list[Path] = args.files or [_default_policy_file()]
    failed = 0
    for path in files:
        try:
            document = PolicyDocument.from_file(path)
        except FileNotFoundError:
            print(f"{path}: no such file", file=sys.stderr)
            failed += 1
            continue
        except IsADirectoryError:
            print(f"{path}: is a directory", file=sys.stderr)
            failed += 1
            continue
        except PolicyError as exc:
            for error in exc.errors:
                print(str(error), file=sys.stderr)
            count = len(exc.errors)
            print(f"{path}: {count} {'mistake' if count == 1 else 'mistakes'}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: valid, {document.summary()}")
        for rule in document.ended(int(time.time())):
            assert rule.valid_until is not None
            ended = datetime.fromtimestamp(rule.valid_until, UTC).isoformat().replace("+00:00", "Z")
            print(
                f"{rule.where}: warning: rule {rule.id} ended {ended} (valid_until); it no longer applies",
                file=sys.stderr,
            )
    return 1 if failed else 0


# --- explain ---------------------------------------------------------------------------------------------------


def _parse_scope(text: str) -> Scope:
    from ace_core.scope import AifScope
    from policies.builtin.allow_list import parse_scope_spec

    try:
        if text.lstrip().startswith("["):
            return AifScope.from_json_text(text)
        scope = parse_scope_spec(text)
    except ValueError as exc:  # WireFormatError is a ValueError too
        raise CliError(f"--scope {text!r}: {exc}", status=2) from None
    if scope.is_empty:
        raise CliError("--scope must not be empty", status=2)
    return scope


def _parse_time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--at {text!r} is not an ISO 8601 time such as 2025-03-31T17:55:00+02:00", status=2) from None
    if moment.tzinfo is None:
        raise CliError(f"--at {text!r} needs a UTC offset, e.g. {text}+02:00 or {text}Z", status=2)
    return moment


def _duration(seconds: int) -> str:
    """``3725`` -> ``1 h 2 min 5 s``."""
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts)


def _cmd_explain(args: argparse.Namespace) -> int:
    from policies.base import AccessRequest
    from policies.engine import PolicyEngine

    if args.group and args.user is None:
        raise CliError("--group needs --user (groups are those of the signed-in user)", status=2)
    scope = _parse_scope(args.scope)
    moment = _parse_time(args.at)
    path: Path = args.file or _default_policy_file()
    try:
        engine = PolicyEngine.from_file(path)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    request = AccessRequest(
        client_id=args.client,
        audience=args.audience,
        scope=scope,
        now=int(moment.timestamp()),
        subject=args.user,
        subject_groups=frozenset(args.group),
    )
    _print_explanation(engine.explain(request), request.now, moment.tzinfo or UTC, sys.stdout)
    return 0


def _print_explanation(explanation: Explanation, now: int, zone: tzinfo, out: TextIO) -> None:
    from policies.scopes import format_scope

    decision = explanation.decision
    lines: list[tuple[str, str]] = []
    if decision.permits:
        verdict = "granted" if decision.consent is None else "granted in part (the rest needs consent)"
    elif decision.consent is not None:
        verdict = "consent required (nothing is granted until someone approves)"
    else:
        verdict = "refused"
    lines.append(("decision", verdict))
    if decision.permits:
        lines.append(("granted", format_scope(decision.granted)))
        if decision.not_after is not None:
            until = datetime.fromtimestamp(decision.not_after, zone).isoformat()
            lines.append(("not after", f"{until} (in {_duration(decision.not_after - now)})"))
        lines.append(("max lifetime", f"{decision.max_lifetime} s" if decision.max_lifetime else "no limit"))
    if decision.consent is not None:
        consent = decision.consent
        lines.append(("needs consent", format_scope(consent.scope)))
        lines.append(("approvers", ", ".join(consent.approvers)))
    lines.append(("reason", decision.reason))
    width = max(len(name) for name, _ in lines) + 1
    write = out.write
    for name, value in lines:
        write(f"{name + ':':<{width}} {value}\n")
    if not explanation.outcomes:
        write(f"{'rules:':<{width}} none match the client, user and audience\n")
        return
    write("rules (* decided):\n")
    id_width = max(len(o.rule.id) for o in explanation.outcomes)
    where_width = max(len(o.rule.where) for o in explanation.outcomes)
    for outcome in explanation.outcomes:
        rule = outcome.rule
        mark = "*" if outcome.decisive else " "
        text = f"  {mark} {rule.id:<{id_width}}  {rule.where:<{where_width}}  {rule.effect:<7}  {outcome.outcome}"
        conditions = rule.describe_conditions()
        if conditions and "not in force" not in outcome.outcome:
            text += f" [{conditions}]"
        write(text.rstrip() + "\n")
