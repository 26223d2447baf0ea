"""The TAME checkpoint: the one module that writes and reads it (stage, registry, served model).

A checkpoint is plain data (clflow.checkpoint): the learner's hyperparameters as a
dict (the expert template's included, its normalizer as mean/std arrays), its
state (tensors, arrays, numbers), and what the caller adds (fingerprint, rows hash,
accuracy matrix, class names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clflow.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from clflow.learners import ContinualLearner
from clflow.streams.normalize import Normalizer
from clflow.tame.detector import chance_loss
from clflow.tame.learner import TameLearner

REQUIRED = ("params", "state")
# what a checkpoint written before these settings existed was trained with (a champion
# registered then must still load, serve and be compared)
LEGACY = {
    "router": "buffer",
    "selector_targets": "expert",
    "selector_backbone": "expert",
    "prune_sparsity": 0.0,
    "prune_agreement": 1.0,
    "selector_sparsity": 0.0,
    "route_by": "selector",
}


def tame_params(learner: TameLearner) -> dict[str, Any]:
    """The learner's hyperparameters as plain data."""
    params = learner.get_params()
    expert = params.pop("expert").get_params()
    if expert.pop("plugins"):
        raise ValueError("a TAME expert template has no plugins")
    norm = expert["normalizer"]
    expert["normalizer"] = None if norm is None else {"mean": norm.mean, "std": norm.std}
    return {**params, "expert": expert}


def upgrade(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint in today's terms: the absolute `min_jump` (nats) becomes `min_rise` (a share
    of log C), settings it predates get the values it was trained with, "prune" events are
    "remove" events."""
    params = {**LEGACY, **ckpt["params"]}
    if "min_jump" in params:
        classes = params["expert"]["n_classes"]
        params["min_rise"] = params.pop("min_jump") / chance_loss(classes)
    state = dict(ckpt["state"])
    state["events"] = [
        {**e, "kind": "remove" if e["kind"] == "prune" else e["kind"]} for e in state["events"]
    ]
    return {**ckpt, "params": params, "state": state}


def tame_from_params(params: dict[str, Any]) -> TameLearner:
    """An unfitted TameLearner from tame_params' output."""
    expert = dict(params["expert"])
    norm = expert["normalizer"]
    expert["normalizer"] = None if norm is None else Normalizer(norm["mean"], norm["std"])
    expert["shape"] = tuple(expert["shape"]) if expert["shape"] is not None else None
    rest = {k: v for k, v in params.items() if k != "expert"}
    return TameLearner(ContinualLearner(**expert), **rest)


def save_tame(path: str | Path, learner: TameLearner, **extra: Any) -> None:
    """Write the learner (hyperparameters and state) and `extra` plain data, atomically."""
    save_checkpoint(path, {"params": tame_params(learner), "state": learner.get_state(), **extra})


def read_tame(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents (params, state and extras), checked for the TAME keys."""
    ckpt = load_checkpoint(path)
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError("not a TAME checkpoint", file=path, field=missing[0])
    try:
        return upgrade(ckpt)
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"malformed ({type(exc).__name__})", file=path, field="params"
        ) from None


def restore(
    ckpt: dict[str, Any], path: str | Path, learner: TameLearner | None = None
) -> TameLearner:
    """The trained learner of a checkpoint (into `learner` when given); one line when it does not
    fit."""
    try:
        learner = tame_from_params(ckpt["params"]) if learner is None else learner
        return learner.set_state(ckpt["state"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"does not fit this code ({type(exc).__name__}); delete it to retrain",
            file=path,
            field="state",
        ) from None


def load_tame(path: str | Path) -> tuple[TameLearner, dict[str, Any]]:
    """(trained learner, checkpoint contents)."""
    ckpt = read_tame(path)
    return restore(ckpt, path), ckpt
