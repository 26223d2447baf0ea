"""The selector: routes each sample to an expert; trained on the experts' buffers."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clflow.models import (
    Optimizer,
    Standardize,
    adam,
    make_backbone,
    resolve_device,
    scaled_input,
    seeded,
)
from clflow.tame.pruning import count_parameters
from clflow.util.progress import Progress


class Selector:
    """A small network over the raw features with a block of outputs per expert: one hidden
    layer (`backbone` mlp), or the experts' CNN (`cnn`, with the stream's `shape`).

    With `classes` > 1 each expert's block has one output per class and the
    selector learns (expert, class) pairs: a finer target than the expert alone
    (measured: better routing on Split-MNIST-1D), summed over classes to route.
    It grows a block when an expert is added and drops it when an expert is
    removed, keeping the other blocks' weights (warm start).
    """

    def __init__(
        self,
        hidden: int = 128,
        lr: float = 1e-3,
        epochs: int = 50,
        batch_size: int = 64,
        device: str = "auto",
        seed: int = 0,
        normalizer=None,
        classes: int = 1,
        backbone: str = "mlp",
        shape: tuple[int, ...] | None = None,
    ):
        self.hidden = hidden
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self.normalizer = normalizer  # the stream's input scaling, as in the experts
        self.classes = classes
        self.backbone = backbone
        self.shape = shape

    def initialize(self, n_features: int) -> Selector:
        self.device_ = resolve_device(self.device)
        with seeded(self.seed):
            if self.backbone == "mlp":  # flat, so checkpoints of earlier versions still load
                scale = (
                    []
                    if self.normalizer is None
                    else [Standardize(self.normalizer.mean, self.normalizer.std)]
                )
                body = nn.Sequential(*scale, nn.Linear(n_features, self.hidden), nn.ReLU())
            else:
                body = scaled_input(
                    make_backbone(self.backbone, n_features, self.hidden, self.shape),
                    self.normalizer,
                )
            self.body_ = body.to(self.device_)
        self.head_: nn.Linear | None = None  # grows with the experts
        self.opt_: Optimizer | None = None  # continual training (partial_fit)
        self.n_features_in_ = n_features
        return self

    @property
    def n_outputs(self) -> int:
        """Expert slots."""
        return 0 if self.head_ is None else self.head_.out_features // self.classes

    def resize(self, keep: list[int], n_new: int) -> None:
        """Keep the outputs at positions `keep` (in order), then append `n_new` fresh ones."""
        old = self.head_
        if not keep and not n_new:
            self.head_ = None
            return
        with seeded(self.seed + 7919 * (len(keep) + n_new)):
            new = nn.Linear(self.hidden, (len(keep) + n_new) * self.classes).to(self.device_)
        with torch.no_grad():
            if keep and old is not None:
                rows = [slot * self.classes + c for slot in keep for c in range(self.classes)]
                new.weight[: len(rows)] = old.weight[rows]
                new.bias[: len(rows)] = old.bias[rows]
        self.head_ = new
        self.opt_ = None  # the parameters changed: a fresh optimiser on the next step

    def network(self) -> nn.Module:
        """Body and head as one module (to prune or count)."""
        return nn.ModuleList([self.body_] + ([] if self.head_ is None else [self.head_]))

    def n_parameters(self) -> int:
        return count_parameters(self.network())

    def _targets(self, labels: np.ndarray, y: np.ndarray) -> torch.Tensor:
        """Output index of each row: its slot's block, at its class when blocks have classes."""
        target = labels * self.classes + (y if self.classes > 1 else 0)
        return torch.as_tensor(target, dtype=torch.long, device=self.device_)

    def partial_fit(self, X: np.ndarray, labels: np.ndarray, y: np.ndarray) -> Selector:
        """One gradient step on a batch; labels are slots, y the rows' classes."""
        opt = self._optimizer()
        Xt = torch.as_tensor(X, dtype=torch.float32, device=self.device_)
        loss = nn.functional.cross_entropy(self.head_(self.body_(Xt)), self._targets(labels, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return self

    def fit(
        self, X: np.ndarray, labels: np.ndarray, y: np.ndarray, head_only: bool = False
    ) -> Selector:
        """Train on buffered samples; labels are slots, y the rows' classes. Balanced by sample
        weights over the outputs."""
        Xt = torch.as_tensor(X, dtype=torch.float32, device=self.device_)
        yt = self._targets(labels, y)
        counts = torch.bincount(yt, minlength=self.head_.out_features).float()
        counts[counts == 0] = float("inf")  # outputs without rows get no weight
        weight = (len(yt) / (int((counts < float("inf")).sum()) * counts)).to(self.device_)
        params = [*([] if head_only else self.body_.parameters()), *self.head_.parameters()]
        opt = adam(params, lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        # refitted at every new expert: a line only when a fit takes long (no summary line)
        with Progress(self.epochs, "selector", unit="epochs", summary=False) as progress:
            for _ in range(self.epochs):
                perm = torch.randperm(len(yt), generator=gen).to(self.device_)
                for start in range(0, len(yt), self.batch_size):
                    idx = perm[start : start + self.batch_size]
                    loss = nn.functional.cross_entropy(
                        self.head_(self.body_(Xt[idx])), yt[idx], weight=weight
                    )
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                progress.update(1, rows=len(yt))
        return self

    @torch.no_grad()
    def log_proba(self, X: np.ndarray) -> np.ndarray:
        """Log-probability of each expert slot for each row (summed over its classes)."""
        Xt = torch.as_tensor(X, dtype=torch.float32, device=self.device_)
        logits = self.head_(self.body_(Xt)).view(len(Xt), -1, self.classes)
        return torch.log_softmax(logits.logsumexp(2), 1).cpu().numpy()

    def route(self, X: np.ndarray) -> np.ndarray:
        """Output position (expert slot) for each row."""
        return self.log_proba(X).argmax(1)

    def _optimizer(self) -> Optimizer:
        """The continual-training optimiser (fresh after a resize: the parameters changed)."""
        if self.opt_ is None:
            params = [*self.body_.parameters(), *self.head_.parameters()]
            self.opt_ = adam(params, lr=self.lr)
        return self.opt_

    def get_state(self) -> dict:
        head = None if self.head_ is None else self.head_.state_dict()
        return {
            "body": self.body_.state_dict(),
            "head": head,
            "optimizer": None if self.opt_ is None else self.opt_.state_dict(),  # resumable
            "n_features_in": self.n_features_in_,
        }

    def set_state(self, state: dict) -> Selector:
        self.initialize(int(state["n_features_in"]))
        self.body_.load_state_dict(state["body"])
        if state["head"] is not None:
            self.head_ = nn.Linear(self.hidden, len(state["head"]["bias"])).to(self.device_)
            self.head_.load_state_dict(state["head"])
        self.opt_ = None
        if state.get("optimizer") is not None:  # checkpoints before the continual router: none
            self._optimizer().load_state_dict(state["optimizer"])
        return self
