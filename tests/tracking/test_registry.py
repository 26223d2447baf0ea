"""Registry promotion on a real MLflow SQLite registry: the rule, tags, rollback, concurrent
registrations."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from clflow.tracking.registry import CHALLENGER, CHAMPION, Registry, RegistryError, decide


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
    champ = [0.9, 0.7]  # avg 0.8
    assert decide([0.5, 0.5], None, 0.05).promote
    assert decide([0.87, 0.75], champ, 0.05).promote  # 0.03 lower on experience 0: tolerated
    low = decide([0.9, 0.69], champ, 0.05)
    assert not low.promote and "below champion" in low.reason
    drop = decide([0.8, 0.9], champ, 0.05)  # better on average, but experience 0 falls by 0.10
    assert not drop.promote and drop.reason.startswith("experience 0: accuracy 0.8000 drops 0.1000")
    assert not decide([float("nan"), 1.0], champ, 0.05).promote
    assert not decide([0.9, 0.8, 0.9], champ, 0.05).promote  # different evidence is never compared


def test_worse_challenger_is_not_promoted_and_better_one_is(registry):
    v1, v2, v3 = (new_version(registry) for _ in range(3))
    assert registry.consider(v1, [0.85, 0.75], 0.05).promote
    worse = registry.consider(v2, [0.80, 0.70], 0.05)
    assert not worse.promote
    assert alias(registry, CHAMPION) == v1 and alias(registry, CHALLENGER) == v2
    tags = registry.get(v2).tags
    assert tags["clflow.decision"] == "rejected" and "below champion" in tags["clflow.reason"]
    assert json.loads(tags["clflow.per_experience"]) == {
        "challenger": [0.80, 0.70],
        "champion": [0.85, 0.75],
    }
    assert registry.consider(v3, [0.85, 0.85], 0.05, forgetting=0.1).promote
    assert alias(registry, CHAMPION) == v3
    assert registry.get(v3).tags["clflow.previous_champion"] == v1
    assert float(registry.get(v3).tags["forgetting"]) == 0.1


def test_champion_is_rescored_on_the_same_test_set(registry):
    v1, v2 = new_version(registry), new_version(registry)
    registry.consider(v1, [0.95, 0.95], 0.05)
    # on today's (longer, harder) test set the champion scores less: the candidate wins on the same
    # rows
    decision = registry.consider(v2, [0.9, 0.8, 0.7], 0.05, evaluate=lambda uri: [0.9, 0.8, 0.6])
    assert decision.promote and "0.7667" in decision.reason


def test_a_champion_that_cannot_be_rescored_blocks_promotion(registry):
    v1, v2 = new_version(registry), new_version(registry)
    registry.consider(v1, [0.5, 0.5], 0.05)

    def broken(uri):
        raise OSError("artifacts deleted")

    decision = registry.consider(v2, [0.9, 0.9], 0.05, evaluate=broken)
    assert not decision.promote and decision.reason == (
        f"champion version {v1} could not be re-scored (OSError: artifacts deleted)"
    )
    assert (
        alias(registry, CHAMPION) == v1
        and registry.get(v2).tags["clflow.reason"] == decision.reason
    )


def test_rollback_restores_previous_champion_and_promote_by_hand(registry):
    v1, v2 = new_version(registry), new_version(registry)
    registry.consider(v1, [0.8, 0.8], 0.05)
    registry.consider(v2, [0.9, 0.9], 0.05)
    assert registry.rollback() == v1
    assert (
        alias(registry, CHAMPION) == v1
        and registry.get(v2).tags["clflow.decision"] == "rolled_back"
    )
    assert registry.promote(v2, "hotfix") == v1  # what it replaced, decided under the lock
    assert alias(registry, CHAMPION) == v2 and registry.get(v2).tags["clflow.reason"] == "hotfix"
    assert registry.promote(v2) == v2  # a second, concurrent promote of it changes nothing
    with pytest.raises(RegistryError, match="no version 99"):
        registry.promote(99)


def test_every_decision_and_the_created_by_column_name_who(registry, monkeypatch):
    import getpass

    me = getpass.getuser()
    v1, v2 = new_version(registry), new_version(registry)
    assert registry.record_creator(v1) == me
    # the registry page's "Created by" is the version's user_id
    assert registry.client.get_model_version("m", v1).user_id == me
    assert registry.get(v1).tags["clflow.registered_by"] == me
    registry.consider(v1, [0.9], 0.05)
    assert registry.get(v1).tags["clflow.decided_by"] == me
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "carol")  # team mode: the MLflow user
    registry.consider(v2, [0.5], 0.05)  # rejected: the decision still names who
    registry.promote(v2)
    assert registry.get(v2).tags["clflow.decided_by"] == "carol"
    assert registry.table()[0]["by"] == "carol"
    registry.rollback()
    assert registry.get(v2).tags["clflow.decision"] == "rolled_back"


def test_rollback_without_predecessor_is_a_clear_error(registry):
    with pytest.raises(RegistryError, match="no champion"):
        registry.rollback()
    registry.consider(new_version(registry), [0.8, 0.8], 0.05)
    with pytest.raises(RegistryError, match="no predecessor"):
        registry.rollback()


def _register(uri: str, version: str, acc: float, start) -> None:
    start.wait()
    Registry("m", uri, lock_timeout=120).consider(version, [acc, acc], 0.05)


@pytest.mark.slow  # four spawned processes, each importing MLflow
@pytest.mark.parametrize("order", [[0.7, 0.9, 0.8, 0.6], [0.9, 0.6, 0.7, 0.8]])
def test_concurrent_registrations_never_leave_a_worse_champion(registry, order):
    versions = [new_version(registry) for _ in order]
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_register, args=(registry.uri, v, acc, start))
        for v, acc in zip(versions, order)
    ]
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
