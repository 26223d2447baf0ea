"""Task-shift detection from the training loss (TAME, Zhu et al. 2022).

A new task shows up as a statistically significant rise of the loss the current
expert sees on incoming batches. Each batch's loss (computed before the update)
is tested one-sided against the mean and spread of the expert's recent accepted
losses; `window` consecutive significant batches declare a shift.

Significance alone is not enough in practice: fresh rows of the *same* task
carry a generalisation gap (0.1 → 0.3 nats) that a tight loss history finds
"significant". A shift must also raise the loss by an effect size, `min_rise`
times log C: the loss of a uniform guess over the C classes. The floor scales
with the number of classes (a 2-class model's loss cannot rise by 1 nat above
chance as a 10-class model's can), not with an absolute number of nats.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

Status = Literal["ok", "suspect", "shift"]  # accepted, held, declared


def chance_loss(n_classes: int) -> float:
    """Cross-entropy of a uniform guess over `n_classes` (log C nats): the floor's unit."""
    return math.log(max(n_classes, 2))


def one_sided_p(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


class LossShiftDetector:
    """Online one-sided test of new losses against a reference window of accepted losses."""

    def __init__(
        self,
        alpha: float = 1e-3,
        window: int = 2,
        warmup: int = 10,
        history: int = 30,
        min_rise: float = 0.4,
        n_classes: int = 10,
        min_std: float = 1e-2,
    ):
        self.alpha = alpha
        self.window = window
        self.warmup = warmup
        self.history = history
        self.min_rise = min_rise
        self.n_classes = n_classes
        self.min_jump = min_rise * chance_loss(n_classes)  # the floor in nats
        self.min_std = min_std
        self.losses: deque[float] = deque(maxlen=history)
        self.n_accepted = 0
        self.n_suspect = 0

    @property
    def ready(self) -> bool:
        """Past warm-up: a fresh expert's falling loss is never tested."""
        return self.n_accepted >= self.warmup

    def reference(self) -> tuple[float, float]:
        """Mean and (floored) standard deviation of the accepted losses."""
        n = len(self.losses)
        mean = sum(self.losses) / n
        var = sum((x - mean) ** 2 for x in self.losses) / max(n - 1, 1)
        return mean, max(math.sqrt(var), self.min_std)

    def material(self, loss: float) -> bool:
        """Does `loss` exceed this expert's mean accepted loss by the floor (effect size)?"""
        return self.ready and loss - self.reference()[0] >= self.min_jump

    def significant(self, loss: float) -> bool:
        """Is `loss` a significant, material rise over this expert's normal range?"""
        if not self.material(loss):
            return False
        mean, std = self.reference()
        return one_sided_p((loss - mean) / std) < self.alpha

    def accept(self, loss: float) -> None:
        """Record a loss as normal for this expert."""
        self.losses.append(loss)
        self.n_accepted += 1
        self.n_suspect = 0

    def update(self, loss: float) -> Status:
        """Feed one batch loss: 'ok' (accepted), 'suspect' (held), or 'shift' (declared)."""
        if not self.significant(loss):
            self.accept(loss)
            return "ok"
        self.n_suspect += 1
        if self.n_suspect >= self.window:
            self.n_suspect = 0
            return "shift"
        return "suspect"

    def get_state(self) -> dict:
        return {
            "losses": list(self.losses),
            "n_accepted": self.n_accepted,
            "n_suspect": self.n_suspect,
        }

    def set_state(self, state: dict) -> LossShiftDetector:
        self.losses = deque(state["losses"], maxlen=self.history)
        self.n_accepted = int(state["n_accepted"])
        self.n_suspect = int(state["n_suspect"])
        return self
