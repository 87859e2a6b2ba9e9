"""``python -m benchmarks`` (what ``make bench`` runs): discovery, selection and failure handling."""

from __future__ import annotations

import importlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The runner module, ``benchmarks/__main__.py``."""
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.__main__")


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package with three benchmarks: one taking ``argv``, one without parameters, one that raises."""
    name = f"fakebench_{tmp_path.name.replace('-', '_')}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bench_alpha.py").write_text(
        "CALLS = []\ndef main(argv=None):\n    CALLS.append(argv)\n    print('alpha ran', argv)\n    return 0\n"
    )
    (pkg / "bench_beta.py").write_text("def main():\n    print('beta ran')\n")
    (pkg / "bench_gamma.py").write_text("def main(argv=None):\n    raise RuntimeError('gamma broke')\n")
    (pkg / "helper.py").write_text("raise AssertionError('not a benchmark; must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def test_discover_finds_only_bench_modules(runner: ModuleType, fake_package: str) -> None:
    assert runner.discover(fake_package) == ["bench_alpha", "bench_beta", "bench_gamma"]


def test_resolve_accepts_short_and_full_names(runner) -> None:
    available = ["bench_cose", "bench_cwt"]
    assert runner.resolve(["cose", "bench_cwt", "cose.py"], available) == ["bench_cose", "bench_cwt", "bench_cose"]
    with pytest.raises(LookupError):
        runner.resolve(["nope"], available)


def test_run_passes_an_explicit_argv(runner: ModuleType, fake_package: str) -> None:
    out = io.StringIO()
    assert runner.run(["bench_alpha", "bench_beta"], package=fake_package, argv=["--quick"], out=out) == 0
    alpha = importlib.import_module(f"{fake_package}.bench_alpha")
    assert alpha.CALLS == [["--quick"]]
    assert "== bench_alpha: ok" in out.getvalue()
    assert "== bench_beta: ok" in out.getvalue()


def test_a_failing_benchmark_does_not_stop_the_others(
    runner: ModuleType,
    fake_package: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = io.StringIO()
    assert runner.run(["bench_gamma", "bench_beta"], package=fake_package, out=out) == 1
    assert "== bench_gamma: FAILED" in out.getvalue()
    assert "== bench_beta: ok" in out.getvalue()
    assert "1 of 2 benchmarks failed: bench_gamma" in out.getvalue()
    assert "RuntimeError: gamma broke" in capsys.readouterr().err


def test_main_runs_all_or_the_named_ones(runner: ModuleType, fake_package: str) -> None:
    assert runner.main(["alpha", "beta"], package=fake_package) == 0
    assert runner.main([], package=fake_package) == 1  # gamma fails


def test_main_unknown_benchmark_is_a_usage_error(
    runner: ModuleType, fake_package: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        runner.main(["no-such-benchmark"], package=fake_package)
    assert exc.value.code == 2
    assert "unknown benchmark 'no-such-benchmark'; available: alpha, beta, gamma" in capsys.readouterr().err


def test_main_with_nothing_to_run_fails(
    runner: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"emptybench_{tmp_path.name.replace('-', '_')}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert runner.main([], package=name) == 1
    finally:
        sys.modules.pop(name, None)
    assert "no benchmarks found" in capsys.readouterr().err
