import subprocess
import sys

import numpy as np
import pytest

from clflow.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from clflow.config import StreamConfig
from clflow.evaluation import run_stream
from clflow.learners import ContinualLearner
from clflow.streams import build_stream, iter_batches
from clflow.tame import TameLearner

FAST = dict(seed=0)  # default widths: an undertrained expert shows no loss jump


@pytest.fixture(scope="module")
def split_digits():
    return build_stream(StreamConfig(source="digits", experiences=3, seed=0))


@pytest.fixture(scope="module")
def trained(split_digits):
    learner = TameLearner(ContinualLearner(10), **FAST)
    result = run_stream(learner, split_digits, batch_size=32, epochs=3, seed=0)
    return learner, result


def task_batches(stream, task, epochs=3, seed=0):
    tr = stream.train
    rows = tr.task == task
    for ep in range(epochs):
        yield from iter_batches(tr.X[rows], tr.y[rows], 32, seed=seed + ep)


def test_one_expert_per_task_on_split_digits(trained):
    learner, result = trained
    assert learner.n_experts == 3
    assert [e.kind for e in learner.events_] == ["spawn", "spawn"]
    assert result.metrics()["avg_accuracy"] > 0.85


def test_selector_routes_buffered_samples_to_their_expert(trained):
    learner, _ = trained
    for eid, expert in learner.experts_.items():
        assert np.mean(learner.route(expert.buffer.X) == eid) > 0.95


def test_recurring_task_switches_back_to_its_expert():
    s = build_stream(StreamConfig(source="permuted_digits", experiences=2, tasks=[0, 1, 0], seed=0))
    learner = TameLearner(ContinualLearner(10), **FAST)
    run_stream(learner, s, batch_size=32, epochs=3, seed=0)
    assert [(e.kind, e.source, e.target) for e in learner.events_] == [
        ("spawn", 0, 1),
        ("switch", 1, 0),
    ]
    assert learner.n_experts == 2


def test_spurious_expert_is_removed_and_its_buffer_folded_back():
    s = build_stream(StreamConfig(source="permuted_digits", experiences=2, seed=0))
    learner = TameLearner(
        ContinualLearner(10), min_expert_batches=5, seed=0
    )  # default warm-up 10, window 2
    a = list(task_batches(s, 0, epochs=2))
    b = list(task_batches(s, 1, epochs=1))[:3]  # a blip of another distribution: 3 batches only
    for X, y in a + b + a[:10]:
        learner.partial_fit(X, y)
    kinds = [(e.kind, e.source, e.target) for e in learner.events_]
    # the blip spawns expert 1; in its warm-up the parent explains the data again: return, then
    # removal
    assert kinds == [("spawn", 0, 1), ("return", 1, 0), ("remove", 1, 0)]
    assert list(learner.experts_) == [0]
    buf = learner.experts_[0].buffer
    blip = {x.tobytes() for X, _ in b for x in X}
    assert any(
        x.tobytes() in blip for x in buf.X
    )  # the removed expert's samples live on in expert 0's buffer


def test_the_parent_is_asked_through_the_whole_warm_up():
    """A blip longer than the detection window (6 batches of another distribution) still
    returns to the parent: the parent is asked on every warm-up batch, also after it failed
    `window` in a row. The blip's expert learned enough batches to stay: the blip's 6 and the
    first batch that the parent explained again (the second one returns)."""
    s = build_stream(StreamConfig(source="permuted_digits", experiences=2, seed=0))
    learner = TameLearner(ContinualLearner(10), min_expert_batches=5, seed=0)
    a = list(task_batches(s, 0, epochs=2))
    b = list(task_batches(s, 1, epochs=1))[:6]
    for X, y in a + b + a[:10]:
        learner.partial_fit(X, y)
    assert [(e.kind, e.source, e.target) for e in learner.events_] == [
        ("spawn", 0, 1),
        ("return", 1, 0),
    ]
    assert learner.active_ == 0 and learner.experts_[1].n_batches == 7


def test_max_experts_caps_growth(split_digits):
    learner = TameLearner(ContinualLearner(10), max_experts=2, **FAST)
    run_stream(learner, split_digits, batch_size=32, epochs=2, seed=0)
    assert learner.n_experts == 2
    assert learner.events_[-1].kind == "reuse"
    assert learner.router_.selector_.n_outputs == 2


def test_without_detection_one_expert(split_digits):
    learner = TameLearner(ContinualLearner(10), detect=False, **FAST)
    run_stream(learner, split_digits, batch_size=32, epochs=1, seed=0)
    assert learner.n_experts == 1 and not learner.events_


def test_checkpoint_reload_gives_identical_predictions(trained, split_digits, tmp_path):
    from clflow.tame.persist import load_tame, save_tame

    learner, _ = trained
    save_tame(tmp_path / "c.pt", learner, classes=split_digits.classes)
    again, ckpt = load_tame(tmp_path / "c.pt")
    assert ckpt["classes"] == split_digits.classes
    X = split_digits.test.X
    assert np.array_equal(again.route(X), learner.route(X))
    assert np.array_equal(again.predict(X), learner.predict(X))
    # loaded to predict, it makes no optimiser, and a fresh process (a serving worker) never
    # imports torch._dynamo (~1.8 s, ~70 MB)
    code = (
        "import sys; import numpy as np; from clflow.tame.persist import load_tame; "
        f"load_tame(sys.argv[1])[0].predict(np.zeros((2, {X.shape[1]}), np.float32)); "
        "print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.pt")], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    assert out.strip() == "False"


def test_resumed_run_equals_the_run_it_continues(split_digits, tmp_path):
    full = TameLearner(ContinualLearner(10), **FAST)
    full_result = run_stream(full, split_digits, batch_size=32, epochs=2, seed=0)
    first = build_stream(StreamConfig(source="digits", experiences=3, tasks=[0, 1], seed=0))
    part = TameLearner(ContinualLearner(10), **FAST)
    run_stream(part, first, batch_size=32, epochs=2, seed=0)
    save_checkpoint(tmp_path / "c.pt", {"state": part.get_state()})
    resumed = TameLearner(ContinualLearner(10), **FAST).set_state(
        load_checkpoint(tmp_path / "c.pt")["state"]
    )
    res = run_stream(resumed, split_digits, batch_size=32, epochs=2, seed=0, start=2)
    assert np.allclose(res.R[-1], full_result.R[-1])
    assert resumed.log_.loss == pytest.approx(full.log_.loss)
    assert np.array_equal(resumed.predict(split_digits.test.X), full.predict(split_digits.test.X))


def test_checkpoint_with_pickled_objects_is_refused_unloaded(trained, tmp_path):
    """The old format pickled a learner object: loading it could run code, so it is refused, not
    read."""
    import torch

    path = tmp_path / "old.pt"
    torch.save({"format": "clflow-checkpoint/1", "params": {"expert": ContinualLearner(10)}}, path)
    with pytest.raises(
        CheckpointError, match=r"old.pt: holds pickled objects .*delete it to retrain$"
    ):
        load_checkpoint(path)


def test_checkpoint_round_trips_plain_data(tmp_path):
    state = {
        "a": np.arange(3, dtype=np.float32),
        "b": [(1, b"k")],
        "c": {"n": np.int64(4)},
        "d": None,
    }
    save_checkpoint(tmp_path / "p.pt", state)
    back = load_checkpoint(tmp_path / "p.pt")
    assert np.array_equal(back["a"], state["a"]) and back["a"].dtype == np.float32
    assert back["b"] == [(1, b"k")] and back["c"] == {"n": 4} and back["d"] is None
    save_checkpoint(tmp_path / "p2.pt", state)  # deterministic bytes: DVC sees no change
    assert (tmp_path / "p.pt").read_bytes() == (tmp_path / "p2.pt").read_bytes()
    with pytest.raises(TypeError, match="not ContinualLearner"):
        save_checkpoint(tmp_path / "q.pt", {"obj": ContinualLearner(3)})
    assert not (tmp_path / "q.pt").exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign"])
def test_damaged_checkpoint_is_one_clear_error(trained, tmp_path, damage):
    import torch

    path = tmp_path / "c.pt"
    save_checkpoint(path, {"state": trained[0].get_state()})
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint")
    else:
        torch.save({"weights": 1}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert err.value.line().startswith(str(path)) and "\n" not in err.value.line()


def test_predict_before_fit():
    from clflow.learners import NotFittedError

    with pytest.raises(NotFittedError):
        TameLearner(ContinualLearner(10)).predict(np.zeros((1, 64), np.float32))


def test_a_checkpoint_from_before_the_router_and_pruning_still_loads(split_digits, tmp_path):
    """A champion registered by an earlier version (absolute min_jump, buffer-trained
    expert-level selector, no pruning, "prune" events) loads and predicts as it did."""
    from clflow.tame.persist import load_tame, save_tame

    old = dict(router="buffer", selector_targets="expert", prune_sparsity=0.0)
    learner = TameLearner(ContinualLearner(10), seed=0, selector_sparsity=0.0, **old)
    run_stream(learner, split_digits, batch_size=32, epochs=2, seed=0)
    save_tame(tmp_path / "new.pt", learner)
    ckpt = load_checkpoint(tmp_path / "new.pt")
    keys = (
        "router",
        "selector_targets",
        "selector_backbone",
        "prune_sparsity",
        "prune_agreement",
        "selector_sparsity",
    )
    for key in keys:
        del ckpt["params"][key]
    ckpt["params"]["min_jump"] = 1.0  # nats, as params.yaml then said
    del ckpt["params"]["min_rise"]
    ckpt["state"]["events"].append({"batch": 3, "kind": "prune", "source": 7, "target": 0})
    save_checkpoint(tmp_path / "old.pt", ckpt)
    again, _ = load_tame(tmp_path / "old.pt")
    assert again.router == "buffer" and again.selector_targets == "expert"
    assert again.selector_backbone == "expert"
    assert again.min_rise == pytest.approx(1.0 / np.log(10))
    assert again.events_[-1].kind == "remove"
    X = split_digits.test.X
    assert np.array_equal(again.predict(X), learner.predict(X))


def test_two_class_unscaled_tabular_stream_gets_its_shifts_and_no_false_alarm():
    """Breast-cancer features (up to ~4,000, no input scaling), 2 classes, 3 tasks of permuted
    features: the floor is a share of log 2, and a noisy loss does not undo a true spawn."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from clflow.metrics import detection_scores, shift_points
    from clflow.streams.builders import domain_incremental
    from clflow.streams.loaders import RawData
    from clflow.tame.evaluate import batch_tasks

    X, y = load_breast_cancer(return_X_y=True)
    parts = train_test_split(X.astype(np.float32), y, test_size=0.3, random_state=0, stratify=y)
    Xtr, Xte, ytr, yte = parts
    data = RawData(Xtr, ytr, Xte, yte, ["malignant", "benign"], (1, X.shape[1]))
    cfg = StreamConfig(source="permuted_digits", experiences=3, normalize="none")
    stream = domain_incremental(data, cfg)
    assert stream.normalizer is None and np.abs(stream.train.X).max() > 1000
    for seed in (0, 1):
        learner = TameLearner(ContinualLearner(2), seed=seed)
        result = run_stream(learner, stream, batch_size=32, epochs=5, seed=seed)
        true = shift_points(batch_tasks(stream, result.batch_experience))
        scores = detection_scores(true, learner.detections_, 5)
        assert scores["detection_f1"] == 1.0 and scores["false_alarms"] == 0


def buffered_tame(source: str, experiences: int):
    """TAME over a 5-experience stream with one expert per experience whose buffer holds that
    experience's rows (as after a run with perfect detection): what the selector learns from.
    Its refits take 30 epochs, not 100: the choice compares both candidates trained alike, and
    the margins are those of 100 (measured on MNIST-1D: cnn 0.69 vs mlp 0.34 at 30 epochs, 0.76
    vs 0.38 at 100), in a third of the time."""
    from clflow.config import TameConfig, TrainConfig
    from clflow.tame.training import make_tame

    stream = build_stream(StreamConfig(source=source, experiences=5))
    config = TameConfig(selector_epochs=30)
    learner = make_tame(stream, TrainConfig(), config, seed=0).initialize(stream.n_features)
    for e in range(experiences):
        add_expert(learner, stream, e)
    return stream, learner


def add_expert(learner, stream, experience):
    expert = learner.experts_[learner.active_] if experience == 0 else learner._new_expert()
    rows = stream.train.experience == experience
    expert.buffer.add(stream.train.X[rows], stream.train.y[rows])


@pytest.mark.slow  # trains CNN selectors on MNIST-1D
def test_auto_selector_is_a_cnn_where_it_routes_signals_better(tmp_path):
    from clflow.tame.persist import load_tame, save_tame

    stream, learner = buffered_tame("mnist1d", 4)
    learner.route(stream.test.X[:5])  # refits the selector: chooses its network
    add_expert(learner, stream, 4)  # an expert is added: chosen again
    routed = learner.route(stream.test.X)
    assert [c["experts"] for c in learner.router_.choices_] == [4, 5]
    choice = learner.router_.choices_[-1]
    assert choice["chosen"] == "cnn" == learner.router_.selector_.backbone
    assert choice["scores"]["cnn"] > choice["scores"]["mlp"] + 0.2  # measured 0.69 vs 0.34
    assert np.mean(routed == stream.test.experience) > 0.7
    save_tame(tmp_path / "c.pt", learner)  # the chosen network comes back from a checkpoint
    again, _ = load_tame(tmp_path / "c.pt")
    assert (
        again.router_.selector_.backbone == "cnn"
        and again.router_.choices_ == learner.router_.choices_
    )
    assert np.array_equal(again.route(stream.test.X), routed)


@pytest.mark.slow  # trains CNN selectors on MNIST-1D
def test_auto_selector_stays_an_mlp_where_locality_is_gone():
    stream, learner = buffered_tame("permuted_mnist1d", 5)  # a permutation per experience
    learner.route(stream.test.X[:5])
    [choice] = learner.router_.choices_
    assert choice["chosen"] == "mlp" == learner.router_.selector_.backbone
    assert choice["scores"]["mlp"] > choice["scores"]["cnn"] + 0.1  # measured 0.86 vs 0.64


def test_auto_selector_without_a_shape_is_an_mlp(split_digits):
    learner = TameLearner(ContinualLearner(10), seed=0).initialize(64)  # no shape given
    assert learner.router_.candidates() == ["mlp"] and learner.router_.selector_.backbone == "mlp"


def test_tame_config_declares_the_learners_defaults():
    """params.yaml's tame section and TameLearner's keyword defaults must agree, key for key."""
    import inspect

    from clflow.config import TameConfig

    declared = {
        name: p.default
        for name, p in inspect.signature(TameLearner.__init__).parameters.items()
        if name not in {"self", "expert", "seed"}
    }
    configured = TameConfig().model_dump(exclude={"match_tolerance", "head", "resume"})
    assert configured == declared
    # and the router's own defaults are the learner's, under its shorter names
    from clflow.tame.router import Router

    names = {"hidden": "selector_hidden", "epochs": "selector_epochs", "steps": "selector_steps",
             "sparsity": "selector_sparsity", "mode": "router", "targets": "selector_targets",
             "backbone": "selector_backbone", "route_by": "route_by"}  # fmt: skip
    router = inspect.signature(Router.__init__).parameters
    assert {names[n]: router[n].default for n in names} == {v: declared[v] for v in names.values()}
