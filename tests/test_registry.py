"""Registry promotion on a real MLflow SQLite registry: the rule, tags, rollback, concurrent registrations."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from clflow.registry import CHALLENGER, CHAMPION, Registry, RegistryError, decide


@pytest.fixture
def registry(tmp_path):
    reg = Registry("m", f"sqlite:///{tmp_path / 'mlflow.db'}", lock_timeout=60)
    reg.client.create_registered_model("m")
    return reg


def new_version(reg: Registry) -> str:
    return str(reg.client.create_model_version("m", source=str(reg.uri), run_id=None).version)


def alias(reg: Registry, name: str) -> str:
    return str(reg.version(name).version)


def test_rule():
    champ = {"avg_accuracy": 0.8, "forgetting": 0.10}
    assert decide({"avg_accuracy": 0.5, "forgetting": 0.5}, None, 0.02).promote
    assert decide({"avg_accuracy": 0.8, "forgetting": 0.12}, champ, 0.02).promote
    assert not decide({"avg_accuracy": 0.79, "forgetting": 0.0}, champ, 0.02).promote
    worse = decide({"avg_accuracy": 0.9, "forgetting": 0.13}, champ, 0.02)
    assert not worse.promote and "forgetting" in worse.reason
    assert not decide({"avg_accuracy": float("nan"), "forgetting": 0.0}, champ, 0.02).promote


def test_worse_challenger_is_not_promoted_and_better_one_is(registry):
    v1, v2, v3 = (new_version(registry) for _ in range(3))
    assert registry.consider(v1, {"avg_accuracy": 0.80, "forgetting": 0.10}, 0.02).promote
    worse = registry.consider(v2, {"avg_accuracy": 0.75, "forgetting": 0.05}, 0.02)
    assert not worse.promote
    assert alias(registry, CHAMPION) == v1 and alias(registry, CHALLENGER) == v2
    tags = registry.get(v2).tags
    assert tags["clflow.decision"] == "rejected" and "below champion" in tags["clflow.reason"]
    assert registry.consider(v3, {"avg_accuracy": 0.85, "forgetting": 0.11}, 0.02).promote
    assert alias(registry, CHAMPION) == v3
    assert registry.get(v3).tags["clflow.previous_champion"] == v1


def test_champion_is_rescored_on_the_same_test_set(registry):
    v1, v2 = new_version(registry), new_version(registry)
    registry.consider(v1, {"avg_accuracy": 0.95, "forgetting": 0.0}, 0.02)
    # on today's (harder) test set the champion scores 0.6: the candidate's 0.7 wins
    decision = registry.consider(v2, {"avg_accuracy": 0.7, "forgetting": 0.0}, 0.02, evaluate=lambda uri: 0.6)
    assert decision.promote and "0.6000" in decision.reason


def test_a_champion_that_cannot_be_rescored_keeps_its_recorded_score(registry):
    v1, v2 = new_version(registry), new_version(registry)
    registry.consider(v1, {"avg_accuracy": 0.9, "forgetting": 0.0}, 0.02)

    def broken(uri):
        raise OSError("artifacts deleted")

    decision = registry.consider(v2, {"avg_accuracy": 0.8, "forgetting": 0.0}, 0.02, evaluate=broken)
    assert not decision.promote and "0.9000" in decision.reason


def test_rollback_restores_previous_champion_and_promote_by_hand(registry):
    v1, v2 = new_version(registry), new_version(registry)
    registry.consider(v1, {"avg_accuracy": 0.8, "forgetting": 0.1}, 0.02)
    registry.consider(v2, {"avg_accuracy": 0.9, "forgetting": 0.1}, 0.02)
    assert registry.rollback() == v1
    assert alias(registry, CHAMPION) == v1 and registry.get(v2).tags["clflow.decision"] == "rolled_back"
    registry.promote(v2, "hotfix")
    assert alias(registry, CHAMPION) == v2 and registry.get(v2).tags["clflow.reason"] == "hotfix"
    with pytest.raises(RegistryError, match="no version 99"):
        registry.promote(99)


def test_rollback_without_predecessor_is_a_clear_error(registry):
    with pytest.raises(RegistryError, match="no champion"):
        registry.rollback()
    registry.consider(new_version(registry), {"avg_accuracy": 0.8, "forgetting": 0.1}, 0.02)
    with pytest.raises(RegistryError, match="no predecessor"):
        registry.rollback()


def _register(uri: str, version: str, acc: float, start) -> None:
    start.wait()
    Registry("m", uri, lock_timeout=120).consider(version, {"avg_accuracy": acc, "forgetting": 0.0}, 0.02)


@pytest.mark.parametrize("order", [[0.7, 0.9, 0.8, 0.6], [0.9, 0.6, 0.7, 0.8]])
def test_concurrent_registrations_never_leave_a_worse_champion(registry, order):
    versions = [new_version(registry) for _ in order]
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_register, args=(registry.uri, v, acc, start)) for v, acc in zip(versions, order)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    best = versions[order.index(max(order))]
    assert alias(registry, CHAMPION) == best
    # every promotion was an improvement over the champion it replaced
    for v in versions:
        tags = registry.get(v).tags
        if tags["clflow.decision"] == "promoted" and tags["clflow.previous_champion"]:
            prev = registry.get(tags["clflow.previous_champion"]).tags
            assert float(tags["avg_accuracy"]) >= float(prev["avg_accuracy"])
