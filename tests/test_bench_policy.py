"""``benchmarks/bench_policy.py`` at a tiny scale, so that the benchmark cannot rot: its synthetic policy loads
through the YAML loader and a rule source and decides, and ``main`` runs end to end. Nothing here is timed."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

from policies.base import AccessRequest
from policies.engine import PolicyEngine
from policies.policy_file import PolicyDocument
from policies.rules import Effect
from policies.sources import MemoryRuleSource

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.bench_policy")


def test_the_synthetic_policy_is_deterministic_and_loads(bench: ModuleType) -> None:
    policy = bench.generate(rules=300, audiences=120, users=200, seed=3)
    assert policy.yaml == bench.generate(rules=300, audiences=120, users=200, seed=3).yaml
    assert policy.yaml != bench.generate(rules=300, audiences=120, users=200, seed=4).yaml
    doc = PolicyDocument.from_yaml(policy.yaml, source="synthetic.yaml")
    assert len(doc.rules) == 300 and len(policy.audiences) == 120
    assert {rule.effect for rule in doc.rules} == set(Effect)
    assert any(rule.schedule is not None for rule in doc.rules)
    assert any(rule.valid_until is not None for rule in doc.rules)
    assert any(a.endswith("/*") for rule in doc.rules for a in rule.audiences)
    assert len({rule.schedule.zone.key for rule in doc.rules if rule.schedule is not None}) > 1


def test_the_synthetic_policy_decides_alike_from_a_file_and_a_source(bench: ModuleType) -> None:
    policy = bench.generate(rules=300, audiences=120, users=200, seed=3, extra_rules=[bench._client_rule("x")])
    rules = PolicyDocument.from_yaml(policy.yaml).rules
    from_file, from_source = PolicyEngine(rules), PolicyEngine(sources=[MemoryRuleSource(rules)])
    requests: list[AccessRequest] = policy.requests(400, seed=1) + policy.first_requests(seed=2)
    outcomes = set()
    for request in requests:
        decision = from_file.decide(request)
        assert decision == from_source.decide(request)
        assert decision == from_file.explain(request).decision
        outcomes.add(bench._outcome(decision))
    assert outcomes == {"granted", "consent required", "refused", "no matching rule"}


def test_latency_measurement_and_report(bench: ModuleType) -> None:
    policy = bench.generate(rules=50, audiences=20, users=30, seed=1)
    engine = PolicyEngine.from_yaml(policy.yaml)
    requests = policy.requests(20, seed=2)
    latency = bench.measure_latency({"engine": engine}, requests[:5], requests, rounds=2)["engine"]
    assert len(latency.wall) == len(latency.best) == len(latency.cpu) == 20
    assert all(b <= w for b, w in zip(latency.best, latency.wall, strict=True))
    assert sum(latency.outcomes.values()) == 20
    text = bench.report(policy, {"load": 0.5}, {"engine": latency}, None, None)
    assert "goal 1: p99 decision latency, engine" in text and "goal 2" in text


def test_main_runs_at_a_tiny_scale(bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "policy.json"
    argv = ["--rules", "60", "--audiences", "20", "--users", "40", "--decisions", "30", "--rounds", "1"]
    argv += ["--endpoint-rounds", "3"]
    assert bench.main([*argv, "--seconds", "0.05", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Decision latency" in printed and "TokenEndpoint.handle()" in printed and "Goals" in printed
    doc = json.loads(out.read_text())
    assert doc["rules"] == 61 and {g["goal"] for g in doc["goals"]} == {1, 2}
    assert set(doc["endpoint"]) == {"sqlite", "memory"}
