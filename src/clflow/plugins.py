"""Strategy plugins (Avalanche-style): hooks around each training step. The buffers they store
rows in are buffers.py's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from clflow.buffers import ClassBalancedBuffer, ExperienceBalancedBuffer, ReservoirBuffer

if TYPE_CHECKING:
    from clflow.learners import ContinualLearner


class Plugin:
    """Base plugin: override the hooks you need."""

    def before_step(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return X, y

    def loss(
        self,
        learner: ContinualLearner,
        X: np.ndarray,
        y: np.ndarray,
        logits: torch.Tensor,
        loss: torch.Tensor,
    ) -> torch.Tensor:
        """The batch's training loss, given the one so far (cross-entropy on `logits`, the
        model's output for X, the batch after `before_step`)."""
        return loss

    def after_step(self, X: np.ndarray, y: np.ndarray) -> None:
        return None

    def before_experience(
        self, X: np.ndarray, y: np.ndarray, learner: ContinualLearner | None = None
    ) -> None:
        """Called with an experience's training rows (and the learner) before it trains (only by
        boundary-aware harnesses)."""
        return None

    def after_experience(
        self, X: np.ndarray, y: np.ndarray, learner: ContinualLearner | None = None
    ) -> None:
        """Called with an experience's training rows (and the learner) when it ends (only by
        boundary-aware harnesses)."""
        return None


class _Rehearsal(Plugin):
    """Join each batch with as many samples drawn from `self.buffer` (all of it when smaller)."""

    buffer: ReservoirBuffer | ExperienceBalancedBuffer

    def before_step(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(self.buffer):
            return X, y
        Xr, yr = self.buffer.sample(len(y))
        return np.concatenate([X, Xr]), np.concatenate([y, yr])


class ExperienceReplayPlugin(_Rehearsal):
    """Standard experience replay (Avalanche's `Replay` with its default storage policy).

    The buffer holds past experiences only and is updated when an experience ends;
    each training batch is joined by as many samples drawn from it.
    """

    def __init__(self, memory: int, seed: int = 0):
        self.buffer = ExperienceBalancedBuffer(memory, seed)

    def after_experience(self, X, y, learner=None) -> None:
        self.buffer.add_experience(X, y)


class ReplayPlugin(_Rehearsal):
    """Online replay: each batch is joined by as many samples from a reservoir of every row seen.

    The reservoir is updated after every step, so it needs no experience boundary
    (the fair peer of TAME); but while experience i trains, its own rows already
    fill the buffer and old classes are rehearsed less than with ExperienceReplayPlugin.
    """

    def __init__(self, memory: int, seed: int = 0):
        self.buffer = ReservoirBuffer(memory, seed)

    def after_step(self, X: np.ndarray, y: np.ndarray) -> None:
        self.buffer.add(X, y)


Storage = Literal["reservoir", "experience"]


class _StoringPlugin(Plugin):
    """A buffer filled after every step (`reservoir`: boundary-free, a uniform sample of every
    row seen) or at an experience's boundary (`experience`: class-balanced, Avalanche's form;
    before the experience trains when `store_before`, else when it ends)."""

    buffer: ReservoirBuffer | ClassBalancedBuffer
    store_before = False

    def __init__(self, memory: int, seed: int = 0, storage: Storage = "reservoir"):
        self.storage = storage
        self.experiences_ = 0  # experiences ended
        reservoir = storage == "reservoir"
        self.buffer = (
            ReservoirBuffer(memory, seed) if reservoir else ClassBalancedBuffer(memory, seed)
        )

    def payload(self, X: np.ndarray, learner: ContinualLearner | None) -> np.ndarray | None:
        """What rows stored at a boundary carry (nothing here)."""
        return None

    def step_payload(self, n: int) -> np.ndarray | None:
        """What the step's first `n` rows carry into the reservoir (nothing here)."""
        return None

    def after_step(self, X: np.ndarray, y: np.ndarray) -> None:
        if self.storage == "reservoir":
            self.buffer.add(X, y, extra=self.step_payload(len(y)))  # type: ignore[call-arg]

    def before_experience(self, X, y, learner=None) -> None:
        if self.storage == "experience" and self.store_before:
            self.buffer.add_classes(X, y, self.payload(X, learner))  # type: ignore[union-attr]

    def after_experience(self, X, y, learner=None) -> None:
        if self.storage == "experience" and not self.store_before:
            self.buffer.add_classes(X, y, self.payload(X, learner))  # type: ignore[union-attr]
        self.experiences_ += 1


class AsymmetricReplayPlugin(_StoringPlugin):
    """ER-ACE (Caccia et al., ICLR 2022). By default in its online, boundary-free form (as
    Mammoth runs it): a reservoir of every row seen, updated after each step.

    The incoming batch's cross-entropy counts only the classes present in it, so new classes do
    not push the logits of old ones down; a replay batch of the same size trains over all
    classes. The loss is their mean (Avalanche's ACECriterion).
    """

    # `experience` storage: the rows join before the experience trains, as Avalanche's ER_ACE
    # has it (so replay also holds the current classes)
    store_before = True

    def loss(self, learner, X, y, logits, loss):
        # `experience` storage replays from the second experience on (Avalanche's ER_ACE)
        if not len(self.buffer) or (self.storage == "experience" and not self.experiences_):
            return loss
        labels = learner.labels(y)
        present = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
        present[labels] = True
        current = nn.functional.cross_entropy(logits.masked_fill(~present, float("-inf")), labels)
        Xr, yr = self.buffer.sample(len(y))
        replay = nn.functional.cross_entropy(learner.logits(Xr), learner.labels(yr))
        return (current + replay) / 2


class DarkReplayPlugin(_StoringPlugin):
    """DER and DER++ (Buzzega et al., NeurIPS 2020). By default as the paper and Mammoth run
    them: a reservoir of every row seen (boundary-free) holding, with each row, the logits the
    model gave it at its latest presentation; with `storage="experience"` the rows and their
    logits are stored when an experience ends (Avalanche's form).

    Each step adds `alpha` x the mean squared error between the model's logits on a replay
    batch and their stored logits (DER), and with `beta` > 0, `beta` x the cross-entropy on a
    second replay batch's labels (DER++). The logits count in the buffer's `nbytes`.
    """

    def __init__(
        self,
        memory: int,
        alpha: float = 0.1,
        beta: float = 0.0,
        seed: int = 0,
        storage: Storage = "reservoir",
    ):
        super().__init__(memory, seed, storage)
        self.alpha = alpha
        self.beta = beta
        self._batch_logits: np.ndarray | None = None

    def loss(self, learner, X, y, logits, loss):
        self._batch_logits = logits.detach().cpu().numpy()  # stored in after_step
        if not len(self.buffer):
            return loss
        idx = self.buffer.sample_index(len(y))
        stored = self.buffer.extra[idx]  # type: ignore[index]
        replayed = learner.logits(self.buffer.X[idx])  # type: ignore[index]
        loss = loss + self.alpha * nn.functional.mse_loss(
            replayed, torch.as_tensor(stored, device=logits.device)
        )
        if self.beta > 0:
            Xr, yr = self.buffer.sample(len(y))
            loss = loss + self.beta * nn.functional.cross_entropy(
                learner.logits(Xr), learner.labels(yr)
            )
        return loss

    def step_payload(self, n: int) -> np.ndarray:
        # the step's batch comes first in what the model saw (other plugins append to it)
        return self._batch_logits[:n]  # type: ignore[index]

    @torch.no_grad()
    def payload(self, X: np.ndarray, learner: ContinualLearner) -> np.ndarray:
        """The logits of the model that has just learned the experience."""
        return np.concatenate(
            [learner.logits(X[i : i + 4096]).cpu().numpy() for i in range(0, len(X), 4096)]
        )
