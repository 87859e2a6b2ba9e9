"""Errors of policy files: each one names the file and the 1-based line of the offending YAML node.

A loader that finds several mistakes reports them all at once (``ostiary policy validate`` lists every one) by
raising :class:`PolicyErrors`, which is itself a :class:`PolicyError` carrying the first mistake's place.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["PolicyError", "PolicyErrors"]


class PolicyError(ValueError):
    """A policy file is malformed. The message starts with ``source:line:`` (1-based YAML line).

    :ivar source: the file name (or ``"<string>"``).
    :ivar line: the 1-based line of the offending YAML node, or ``None`` when unknown.
    :ivar message: the message without the ``source:line:`` prefix.
    :ivar errors: every mistake found; ``(self,)`` for a single one.
    """

    def __init__(self, message: str, *, source: str, line: int | None) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line
        self.message = message
        self.errors: tuple[PolicyError, ...] = (self,)


class PolicyErrors(PolicyError):
    """Several mistakes in one file, in the order of their lines; ``str()`` has one ``source:line: ...`` each.

    :param errors: at least one error.
    :raises ValueError: if ``errors`` is empty.
    """

    def __init__(self, errors: Sequence[PolicyError]) -> None:
        if not errors:
            raise ValueError("PolicyErrors needs at least one error")
        flat = [inner for error in errors for inner in error.errors]
        first = flat[0]
        super().__init__(first.message, source=first.source, line=first.line)
        self.args = ("\n".join(str(error) for error in flat),)
        self.errors = tuple(flat)

    def __str__(self) -> str:
        return str(self.args[0])
