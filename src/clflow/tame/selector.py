"""The selector: routes each sample to an expert; trained on the experts' buffers."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clflow.models import Standardize, resolve_device


class Selector:
    """A small MLP over the raw features with one output per expert.

    It grows an output when an expert is added and drops it when an expert is
    pruned, keeping the other outputs' weights (warm start).
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
    ):
        self.hidden = hidden
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self.normalizer = normalizer  # the stream's input scaling, as in the experts

    def initialize(self, n_features: int) -> Selector:
        self.device_ = resolve_device(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            scale = (
                []
                if self.normalizer is None
                else [Standardize(self.normalizer.mean, self.normalizer.std)]
            )
            self.body_ = nn.Sequential(*scale, nn.Linear(n_features, self.hidden), nn.ReLU()).to(
                self.device_
            )
        self.head_: nn.Linear | None = None  # grows with the experts
        self.n_features_in_ = n_features
        return self

    @property
    def n_outputs(self) -> int:
        return 0 if self.head_ is None else self.head_.out_features

    def resize(self, keep: list[int], n_new: int) -> None:
        """Keep the outputs at positions `keep` (in order), then append `n_new` fresh ones."""
        old = self.head_
        if not keep and not n_new:
            self.head_ = None
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 7919 * (len(keep) + n_new))
            new = nn.Linear(self.hidden, len(keep) + n_new).to(self.device_)
        with torch.no_grad():
            if keep and old is not None:
                new.weight[: len(keep)] = old.weight[keep]
                new.bias[: len(keep)] = old.bias[keep]
        self.head_ = new

    def n_parameters(self) -> int:
        head = [] if self.head_ is None else list(self.head_.parameters())
        return sum(p.numel() for p in (*self.body_.parameters(), *head))

    def fit(self, X: np.ndarray, labels: np.ndarray) -> Selector:
        """Train on buffered samples; labels are output positions. Class-balanced by sample
        weights."""
        Xt = torch.as_tensor(X, dtype=torch.float32, device=self.device_)
        yt = torch.as_tensor(labels, dtype=torch.long, device=self.device_)
        counts = torch.bincount(yt, minlength=self.n_outputs).clamp(min=1).float()
        weight = (counts.sum() / (len(counts) * counts)).to(self.device_)
        params = [*self.body_.parameters(), *self.head_.parameters()]
        opt = torch.optim.Adam(params, lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
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
        return self

    @torch.no_grad()
    def route(self, X: np.ndarray) -> np.ndarray:
        """Output position (expert slot) for each row."""
        Xt = torch.as_tensor(X, dtype=torch.float32, device=self.device_)
        return self.head_(self.body_(Xt)).argmax(1).cpu().numpy()

    def get_state(self) -> dict:
        head = None if self.head_ is None else self.head_.state_dict()
        return {"body": self.body_.state_dict(), "head": head, "n_features_in": self.n_features_in_}

    def set_state(self, state: dict) -> Selector:
        self.initialize(int(state["n_features_in"]))
        self.body_.load_state_dict(state["body"])
        if state["head"] is not None:
            self.head_ = nn.Linear(self.hidden, len(state["head"]["bias"])).to(self.device_)
            self.head_.load_state_dict(state["head"])
        return self
