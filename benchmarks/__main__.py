"""Run the benchmarks: every ``benchmarks/bench_*.py`` module's ``main()``, in name order, or the ones named.

Usage: ``python -m benchmarks [NAME ...] [-- ARGS ...]`` from the repository root, where NAME is ``cose`` or
``bench_cose``; ARGS are passed to each benchmark's ``main(argv)``. ``make bench`` and ``make bench BENCH=cose``
call this. A benchmark that raises or returns a non-zero status does not stop the others; the exit status is 1
if any failed, or if there is nothing to run.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
import time
import traceback
from typing import TextIO

PREFIX = "bench_"


def discover(package: str = "benchmarks") -> list[str]:
    """The benchmark modules of ``package`` (``bench_*``), sorted by name."""
    pkg = importlib.import_module(package)
    return sorted(
        info.name for info in pkgutil.iter_modules(pkg.__path__) if info.name.startswith(PREFIX) and not info.ispkg
    )


def resolve(names: list[str], available: list[str]) -> list[str]:
    """Map ``cose``, ``bench_cose`` or ``bench_cose.py`` to module names; raises ``LookupError`` if unknown."""
    chosen = []
    for name in names:
        module = name.removesuffix(".py")
        module = module if module.startswith(PREFIX) else PREFIX + module
        if module not in available:
            raise LookupError(name)
        chosen.append(module)
    return chosen


def run(
    names: list[str],
    *,
    package: str = "benchmarks",
    argv: list[str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Run each named module's ``main`` in turn; returns 0 if all succeeded, else 1."""
    out = out or sys.stdout
    failed: list[str] = []
    for name in names:
        print(f"== {name} ==", file=out, flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"{package}.{name}")
            main = module.main
            # Hand main() an explicit argv so a benchmark's own argparse never sees the runner's arguments.
            status = main(list(argv or [])) if inspect.signature(main).parameters else main()
        except Exception:
            traceback.print_exc()
            status = 1
        elapsed = time.perf_counter() - started
        ok = status in (None, 0)
        if not ok:
            failed.append(name)
        print(f"== {name}: {'ok' if ok else 'FAILED'} in {elapsed:.1f} s ==\n", file=out, flush=True)
    if failed:
        print(f"{len(failed)} of {len(names)} benchmarks failed: {', '.join(failed)}", file=out)
        return 1
    return 0


def main(argv: list[str] | None = None, *, package: str = "benchmarks") -> int:
    """Command-line entry point; ``package`` is where the ``bench_*`` modules live."""
    args = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, passthrough = args[:cut], args[cut + 1 :]
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    opts = parser.parse_args(args)

    available = discover(package)
    if opts.list:
        print("\n".join(name.removeprefix(PREFIX) for name in available))
        return 0
    if not available:
        print("no benchmarks found (benchmarks/bench_*.py)", file=sys.stderr)
        return 1
    try:
        chosen = resolve(opts.names, available) if opts.names else available
    except LookupError as exc:
        known = ", ".join(name.removeprefix(PREFIX) for name in available)
        parser.error(f"unknown benchmark {exc.args[0]!r}; available: {known}")
    return run(chosen, package=package, argv=passthrough)


if __name__ == "__main__":
    sys.exit(main())
