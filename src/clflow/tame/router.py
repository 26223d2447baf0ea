"""TAME's router: which expert answers a row it has not seen.

Two ways to route, both trained on what the experts hold, never on a task label:

- a **selector** network trained on the experts' buffers (`mode: buffer`), or on every batch an
  expert learns while rehearsing the other experts' buffers (`mode: continual`); with
  `backbone: auto` an MLP or, where the stream has a shape, a CNN, whichever routes held-out
  buffer rows clearly better;
- the **class statistics** of every row the experts learned (statistics.py): a diagonal
  Gaussian per (expert, class), a few vectors instead of stored rows.

`route_by: auto` chooses between them on held-out buffer rows whenever experts were added, and
logs the choice. The router is handed the experts' buffers on every call (it keeps none of its
own rows), so the learner owns the experts and the router owns only how to choose among them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

import numpy as np

from clflow.buffers import ReservoirBuffer
from clflow.learners import ContinualLearner, ParamsMixin
from clflow.tame.pruning import prune_weights
from clflow.tame.selector import Selector
from clflow.tame.statistics import ClassStatistics

Mode = Literal["continual", "buffer"]  # selector trained on every batch, or on buffers only
Targets = Literal["class", "expert"]  # selector learns (expert, class) pairs or experts
# the selector's network: "expert" the experts' own, "auto" the one that routes the buffers best
Backbone = Literal["auto", "expert", "mlp", "cnn"]
# what routes test rows: the selector, the class statistics of every row the experts learned,
# or "auto": the one that routes held-out buffer rows better (the selector on a tie)
RouteBy = Literal["auto", "selector", "statistics"]
HELD_OUT = 0.25  # share of each expert's buffer that scores the candidates (auto)
STATE_KEYS = ("statistics", "routed_by", "route_choices")  # absent from older checkpoints

Buffers = Mapping[int, ReservoirBuffer]  # each expert's buffer, by expert id

log = logging.getLogger("clflow.tame")


def clearly_better(a: float, b: float, n: int) -> bool:
    """Whether accuracy `a` beats `b`, both measured on the same `n` rows, by more than two
    standard errors of their difference: a noisy held-out quarter (25 rows per expert) must not
    swap the selector's network on a coin flip."""
    se = np.sqrt((a * (1 - a) + b * (1 - b)) / max(n, 1))
    return a - b > 2 * se


def balanced(routed: np.ndarray, labels: np.ndarray, n: int) -> float:
    """Routing accuracy averaged over the experts (each expert's rows count alike)."""
    return float(np.mean([np.mean(routed[labels == s] == s) for s in range(n)]))


class Router(ParamsMixin):
    """Routes rows to experts by a selector network or by class statistics (see module doc).

    `template` is TAME's unfitted expert: the selector takes its device, input scaling, class
    count and shape (and its network, with `backbone: expert`).
    """

    def __init__(
        self,
        template: ContinualLearner,
        *,
        seed: int = 0,
        hidden: int = 512,
        epochs: int = 100,
        steps: int = 1,
        sparsity: float = 0.5,
        mode: Mode = "buffer",
        targets: Targets = "expert",
        backbone: Backbone = "auto",
        route_by: RouteBy = "auto",
    ):
        self.template = template
        self.seed = seed
        self.hidden = hidden
        self.epochs = epochs
        self.steps = steps
        self.sparsity = sparsity
        self.mode = mode
        self.targets = targets
        self.backbone = backbone
        self.route_by = route_by

    def initialize(self, n_features: int) -> Router:
        self.n_features_in_ = n_features
        kind = {"expert": self.template.backbone, "auto": self.candidates()[0]}
        self.selector_ = self._make_selector(kind.get(self.backbone, self.backbone))
        self.ids_: list[int] = []  # the expert behind each selector output
        # auto: each choice of the selector's network, with the held-out routing that made it
        self.choices_: list[dict] = []
        self.statistics_ = ClassStatistics()
        self.routed_by_: str = "statistics" if self.route_by == "statistics" else "selector"
        self.route_choices_: list[dict] = []  # auto: each choice, with the held-out routing
        self.stale_ = True
        return self

    def candidates(self) -> list[str]:
        """The networks `backbone: auto` chooses from: an MLP, and a CNN when the stream has a
        shape (a signal or an image)."""
        return ["mlp", "cnn"] if self.template.shape else ["mlp"]

    def _make_selector(self, backbone: str) -> Selector:
        return Selector(
            self.hidden,
            epochs=self.epochs,
            device=self.template.device,
            seed=self.seed,
            normalizer=self.template.normalizer,
            classes=self.template.n_classes if self.targets == "class" else 1,
            backbone=backbone,
            shape=self.template.shape,
        ).initialize(self.n_features_in_)

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        """Rows as the experts see them (the stream's input scaling), for the statistics."""
        norm = self.template.normalizer
        return X if norm is None else norm.transform(X)

    # -- learning -----------------------------------------------------------------------
    def learn(self, expert: int, X: np.ndarray, y: np.ndarray, buffers: Buffers) -> None:
        """Expert `expert` learned rows X (labels y): count them, and in `continual` mode teach
        the selector that they belong to it."""
        self.statistics_.partial_fit(self._scaled(X), y, expert)
        self.stale_ = True
        if self.mode == "continual":
            self._step(expert, X, y, buffers)

    def forget(self, expert: int, into: int | None) -> None:
        """A removed expert: its statistics fold into `into` (None: dropped)."""
        self.statistics_.merge(expert, into)
        self.stale_ = True

    def _align(self, buffers: Buffers) -> None:
        """Selector outputs follow the live experts that hold samples (kept ones keep weights)."""
        live = [eid for eid, buffer in buffers.items() if buffer.X is not None]
        keep = [pos for pos, eid in enumerate(self.ids_) if eid in live]
        kept_ids = [self.ids_[pos] for pos in keep]
        new_ids = [eid for eid in live if eid not in kept_ids]
        if new_ids or len(keep) < len(self.ids_):
            self.selector_.resize(keep, len(new_ids))
            self.ids_ = kept_ids + new_ids

    def _step(self, expert: int, X: np.ndarray, y: np.ndarray, buffers: Buffers) -> None:
        """Teach the selector that X belongs to `expert`, rehearsing the other experts' buffers
        (an equal share each), so it sees every row the experts learn, not only their buffers.

        `steps` steps per batch: the selector learns a harder problem than the active expert
        (every task at once) from the same batches (measured, README)."""
        self._align(buffers)
        others = [eid for eid in self.ids_ if eid != expert]
        if not others and self.selector_.classes == 1:
            return  # one expert, one output: nothing to learn yet
        share = -(-len(X) // max(len(others), 1))
        parts = [(X, y, self.ids_.index(expert))] + [
            (*buffers[eid].sample(share), self.ids_.index(eid)) for eid in others
        ]
        Xs = np.concatenate([p[0] for p in parts])
        ys = np.concatenate([p[1] for p in parts])
        labels = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
        for _ in range(self.steps):
            self.selector_.partial_fit(Xs, labels, ys)

    def refresh(self, buffers: Buffers) -> None:
        """Align selector outputs with the live experts, choose the network and the route
        (auto), then retrain the selector on the buffers."""
        if not self.stale_:
            return
        self._align(buffers)
        if len(self.ids_) > 1:
            X = np.concatenate([buffers[eid].X for eid in self.ids_])
            labels = np.concatenate(
                [np.full(len(buffers[eid]), pos) for pos, eid in enumerate(self.ids_)]
            )
            y = np.concatenate([buffers[eid].y for eid in self.ids_])
            replaced = self._choose_selector(X, labels, y)
            self._choose_route(X, labels, y)
            # continual: the body learned from every batch; refitting only the head on the
            # balanced buffers removes its bias toward the latest expert (a new body learns all)
            head_only = self.mode == "continual" and not replaced
            self.selector_.fit(X, labels, y, head_only=head_only)
            if self.sparsity > 0:  # prune, then refit with the masks held
                prune_weights(
                    self.selector_.network(),
                    self.sparsity,
                    finetune=lambda: self.selector_.fit(X, labels, y),
                )
        self.stale_ = False

    # -- choosing (auto) ----------------------------------------------------------------
    def _held_out(self, labels: np.ndarray, n: int) -> np.ndarray:
        """A seeded HELD_OUT share of each expert's buffer rows (at least one each)."""
        rng = np.random.default_rng(self.seed * 7919 + n)
        held = np.zeros(len(labels), dtype=bool)
        for slot in range(n):
            rows = np.flatnonzero(labels == slot)
            held[rng.choice(rows, size=max(1, int(len(rows) * HELD_OUT)), replace=False)] = True
        return held

    def _trial(
        self, kind: str, X: np.ndarray, labels: np.ndarray, y: np.ndarray, held: np.ndarray
    ) -> float:
        """Balanced routing of the held-out rows by a fresh `kind` selector trained on the rest."""
        n = len(self.ids_)
        trial = self._make_selector(kind)
        trial.resize([], n)
        trial.fit(X[~held], labels[~held], y[~held])
        return balanced(trial.route(X[held]), labels[held], n)

    def _choose_selector(self, X: np.ndarray, labels: np.ndarray, y: np.ndarray) -> bool:
        """`backbone: auto`: train each candidate network on three quarters of every expert's
        buffer and score its routing of the held-out quarter (balanced over the experts); the
        CNN replaces the simpler MLP only when it routes clearly better (by more than two
        standard errors). Chosen again whenever experts were added. Returns whether the
        selector was replaced."""
        n = len(self.ids_)
        candidates = self.candidates()
        chosen_for = self.choices_[-1]["experts"] if self.choices_ else 0
        if self.backbone != "auto" or len(candidates) < 2 or n <= chosen_for:
            return False
        held = self._held_out(labels, n)
        scores = {kind: self._trial(kind, X, labels, y, held) for kind in candidates}
        best = max(candidates, key=lambda kind: scores[kind])
        if best != candidates[0] and not clearly_better(
            scores[best], scores[candidates[0]], int(held.sum())
        ):
            best = candidates[0]  # the simpler MLP unless the other routes clearly better
        self.choices_.append({"experts": n, "scores": scores, "chosen": best})
        log.info(
            "selector for %d experts: %s (held-out routing %s)",
            n,
            best,
            ", ".join(f"{k} {v:.3f}" for k, v in scores.items()),
        )
        if best == self.selector_.backbone:
            return False
        self.selector_ = self._make_selector(best)
        self.selector_.resize([], n)
        return True

    def _choose_route(self, X: np.ndarray, labels: np.ndarray, y: np.ndarray) -> None:
        """`route_by: auto`: the class statistics route when they route the held-out buffer
        rows better than a selector trained on the other rows (a tie keeps the selector);
        chosen again whenever experts were added. No two-standard-error margin as for the
        selector's network: neither is the simpler default here, and on Split-Fortunes the
        margin kept a selector that routed 0.70 of the test rows against the statistics' 0.82.
        (The statistics have seen the held-out rows among thousands: nearly out of sample.)"""
        n = len(self.ids_)
        chosen_for = self.route_choices_[-1]["experts"] if self.route_choices_ else 0
        if self.route_by != "auto" or n <= chosen_for:
            return
        if not self.statistics_.covers(self.ids_):  # resumed from an older checkpoint
            self.routed_by_ = "selector"
            return
        held = self._held_out(labels, n)
        slots = self.statistics_.log_proba(self._scaled(X[held]), self.ids_).argmax(1)
        scores = {
            "selector": self._trial(self.selector_.backbone, X, labels, y, held),
            "statistics": balanced(slots, labels[held], n),
        }
        better = scores["statistics"] > scores["selector"]
        self.routed_by_ = "statistics" if better else "selector"
        self.route_choices_.append({"experts": n, "scores": scores, "chosen": self.routed_by_})
        log.info(
            "routing for %d experts: %s (held-out routing: selector %.3f, statistics %.3f)",
            n,
            self.routed_by_,
            scores["selector"],
            scores["statistics"],
        )

    # -- routing ------------------------------------------------------------------------
    def route_confidence(
        self, X: np.ndarray, buffers: Buffers, default: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Expert id for each row, and the router's probability of it (1 where a single expert
        holds rows; `default` answers where none does yet)."""
        self.refresh(buffers)
        if len(self.ids_) <= 1:
            only = self.ids_[0] if self.ids_ else default
            return np.full(len(X), only), np.ones(len(X), dtype=np.float32)
        if self.routed_by_ == "statistics" and self.statistics_.covers(self.ids_):
            log_proba = self.statistics_.log_proba(self._scaled(X), self.ids_)
        else:
            log_proba = self.selector_.log_proba(X)
        slots = log_proba.argmax(1)
        confidence = np.exp(log_proba[np.arange(len(X)), slots]).astype(np.float32)
        return np.asarray(self.ids_)[slots], confidence

    @property
    def nbytes(self) -> int:
        """Bytes the router keeps: the selector's weights (float32, counted dense: a pruned
        network stored sparse needs its indices as well) and the class statistics."""
        return 4 * self.selector_.n_parameters() + self.statistics_.nbytes

    # -- state (checkpoint keys as before the router had a module of its own) -----------
    def get_state(self) -> dict:
        return {
            "selector": self.selector_.get_state(),
            "selector_kind": self.selector_.backbone,
            "selector_choices": self.choices_,
            "selector_ids": self.ids_,
            "selector_stale": self.stale_,
            "statistics": self.statistics_.get_state(),
            "routed_by": self.routed_by_,
            "route_choices": self.route_choices_,
        }

    def set_state(self, state: dict) -> Router:
        """Restore an initialized router; a checkpoint from before the class statistics routes
        by its selector."""
        if state.get("selector_kind", self.selector_.backbone) != self.selector_.backbone:
            self.selector_ = self._make_selector(state["selector_kind"])  # chosen by auto
        self.choices_ = list(state.get("selector_choices", []))
        self.selector_.set_state(state["selector"])
        self.ids_ = list(state["selector_ids"])
        self.stale_ = bool(state["selector_stale"])
        if all(key in state for key in STATE_KEYS):
            self.statistics_.set_state(state["statistics"])
            self.routed_by_ = str(state["routed_by"])
            self.route_choices_ = list(state["route_choices"])
        else:
            self.routed_by_ = "selector"
        return self
