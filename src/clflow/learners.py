"""Continual learners with an estimator shape: hyperparameters in __init__, state in *_
attributes."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from clflow.buffers import ClassBalancedBuffer, memory_held
from clflow.models import (
    Optimizer,
    adam,
    make_backbone,
    make_head,
    make_model,
    resolve_device,
    scaled_input,
    seeded,
)
from clflow.plugins import Plugin
from clflow.streams.batches import iter_batches
from clflow.streams.normalize import Normalizer
from clflow.streams.schema import Stream


class NotFittedError(RuntimeError):
    pass


class ParamsMixin:
    """scikit-learn's get_params: the constructor arguments, enough to rebuild an unfitted copy."""

    def get_params(self) -> dict:
        names: list[str] = []
        for cls in type(self).__mro__:  # a subclass's own arguments, then its parents'
            if "__init__" in vars(cls) and cls is not object:
                params = inspect.signature(vars(cls)["__init__"]).parameters.values()
                names += [
                    p.name
                    for p in params
                    if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                    and p.name != "self"
                    and p.name not in names
                ]
        return {n: getattr(self, n) for n in names}


class ContinualLearner(ParamsMixin):
    """A backbone and a linear head over all classes, trained one batch at a time.

    With no plugins this is naive finetuning; add a replay plugin for rehearsal. With a
    `normalizer` the model's first layer scales raw features, so it takes raw input.
    """

    def __init__(
        self,
        n_classes: int,
        *,
        backbone: str = "mlp",
        hidden: int = 256,
        lr: float = 1e-3,
        shape: tuple[int, ...] | None = None,
        device: str = "auto",
        seed: int = 0,
        plugins: Sequence[Plugin] = (),
        targets: np.ndarray | None = None,
        mask_unseen: bool = False,
        normalizer: Normalizer | None = None,
        anchored: float | None = None,
        zero_shot: bool = False,
    ):
        self.n_classes = n_classes
        self.backbone = backbone
        self.hidden = hidden
        self.lr = lr
        self.shape = shape
        self.device = device
        self.seed = seed
        self.plugins = list(plugins)
        self.targets = targets  # frozen class targets (LingoCL) instead of a one-hot head
        self.mask_unseen = mask_unseen  # the head only scores classes seen so far (a growing head)
        self.normalizer = normalizer
        # the targets live in the input's space (text streams): AnchoredTargetHead, with this
        # weight on its learnt term (None: a plain TargetHead)
        self.anchored = anchored
        # with mask_unseen: training still scores the seen classes only, but predictions cover
        # every class that has a target, labelled yet or not (zero-shot)
        self.zero_shot = zero_shot

    def initialize(self, n_features: int) -> ContinualLearner:
        """Build the untrained model (its accuracy is the FWT reference b_j)."""
        self.device_ = resolve_device(self.device)
        with seeded(self.seed):
            body = scaled_input(
                make_backbone(self.backbone, n_features, self.hidden, self.shape), self.normalizer
            )
            head = make_head(body.out_dim, self.n_classes, self.targets, self.anchored)
            self.model_ = make_model(body, head).to(self.device_)
        self.seen_ = torch.zeros(self.n_classes, dtype=torch.bool, device=self.device_)
        self._optimizer: Optimizer | None = None  # made on first use: optimizer_
        self._optimizer_state: dict | None = None  # a checkpoint's, for when it is made
        self.n_features_in_ = n_features
        self.n_steps_ = 0
        return self

    @property
    def optimizer_(self) -> Optimizer:
        """Adam over the model's parameters, made on first use (with the checkpoint's state when
        one was loaded): a learner loaded only to predict makes none."""
        if self._optimizer is None:
            self._optimizer = adam(self.model_.parameters(), lr=self.lr)
            if self._optimizer_state is not None:
                self._optimizer.load_state_dict(self._optimizer_state)
                self._optimizer_state = None
        return self._optimizer

    def clone(self, **overrides) -> ContinualLearner:
        """An unfitted copy with the same hyperparameters (and fresh, empty plugins)."""
        return type(self)(**{**self.get_params(), "plugins": [], **overrides})

    def _mode(self, training: bool) -> None:
        """Train or eval mode, set only on a change: `Module.train` walks every submodule, which
        cost as much as a forward pass on a 64-row batch (profiled, Split-Digits)."""
        if self.model_.training != training:
            self.model_.train(training)

    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(X, dtype=np.float32), device=self.device_)

    def labels(self, y: np.ndarray) -> torch.Tensor:
        """Class labels as a tensor on the model's device."""
        return torch.as_tensor(y, dtype=torch.long, device=self.device_)

    def logits(self, X: np.ndarray) -> torch.Tensor:
        """The model's output for raw rows X (with gradients; unseen classes masked if asked:
        while training only, for a zero-shot learner)."""
        logits = self.model_(self._tensor(X))
        masked = self.mask_unseen and (self.model_.training or not self.zero_shot)
        if masked and self.seen_.any():
            logits = logits.masked_fill(~self.seen_, float("-inf"))
        return logits

    def partial_fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        accept: Callable[[float], bool] | None = None,
    ) -> ContinualLearner:
        """One gradient step on a batch (plus whatever the plugins add).

        `accept` sees the batch loss before the step (one forward pass serves both);
        when it returns False the step is skipped: the batch is held, not learned.
        """
        if not hasattr(self, "model_"):
            self.initialize(X.shape[1])
        Xs, ys = X, y
        for p in self.plugins:
            Xs, ys = p.before_step(Xs, ys)
        self._mode(training=True)
        self.seen_[self.labels(ys)] = True
        logits = self.logits(Xs)
        loss = nn.functional.cross_entropy(logits, self.labels(ys))
        for p in self.plugins:  # DER's logit matching, ER-ACE's asymmetric loss
            loss = p.loss(self, Xs, ys, logits, loss)
        self.last_loss_ = float(loss.detach())
        if accept is not None and not accept(self.last_loss_):
            return self
        self.optimizer_.zero_grad()
        loss.backward()
        self.optimizer_.step()
        self.n_steps_ += 1
        for p in self.plugins:
            p.after_step(X, y)
        return self

    def begin_experience(self, X: np.ndarray, y: np.ndarray) -> ContinualLearner:
        """The harness's signal that an experience starts, with its rows (Avalanche's
        before_training_exp). Only learners that are told boundaries get it."""
        if not hasattr(self, "model_"):
            self.initialize(X.shape[1])
        for p in self.plugins:
            p.before_experience(X, y, self)
        return self

    def end_experience(self, X: np.ndarray, y: np.ndarray) -> ContinualLearner:
        """The harness's boundary signal with the experience's rows (Avalanche's
        after_training_exp).

        Only learners that are told boundaries get it: TAME never is.
        """
        for p in self.plugins:
            p.after_experience(X, y, self)
        return self

    def buffers(self) -> list:
        """The stores of stream rows it keeps (its plugins' buffers): what its memory is."""
        return [p.buffer for p in self.plugins if hasattr(p, "buffer")]

    def memory_report(self) -> dict[str, int]:
        """Rows it holds from the stream and the bytes they take (features, labels, sampling
        priorities and stored logits): its memory, as every method reports it."""
        return memory_held(self.buffers())

    def _check(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                f"{type(self).__name__} is not initialised; call partial_fit or initialize first"
            )

    @torch.no_grad()
    def predict_proba(self, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        self._check()
        self._mode(training=False)
        out = [
            torch.softmax(self.logits(X[i : i + batch_size]), 1).cpu().numpy()
            for i in range(0, len(X), batch_size)
        ]
        return np.concatenate(out) if out else np.empty((0, self.n_classes), np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(1)

    @torch.no_grad()
    def features(self, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Penultimate-layer features (the backbone's output), e.g. for a demonstration bank."""
        self._check()
        self._mode(training=False)
        body = self.model_[0]
        out = [
            body(self._tensor(X[i : i + batch_size])).cpu().numpy()
            for i in range(0, len(X), batch_size)
        ]
        return np.concatenate(out) if out else np.empty((0, body.out_dim), np.float32)

    @torch.no_grad()
    def batch_loss(self, X: np.ndarray, y: np.ndarray) -> float:
        """Mean cross-entropy on (X, y), without training."""
        self._check()
        self._mode(training=False)
        return float(nn.functional.cross_entropy(self.logits(X), self.labels(y)))

    def get_state(self) -> dict:
        """Weights and optimiser state (tensors), for a checkpoint writer outside the learner."""
        self._check()
        return {
            "model": self.model_.state_dict(),
            "optimizer": self.optimizer_.state_dict(),
            "n_features_in": self.n_features_in_,
            "n_steps": self.n_steps_,
            "seen": self.seen_.cpu(),
        }

    def set_state(self, state: dict) -> ContinualLearner:
        self.initialize(int(state["n_features_in"]))
        self.model_.load_state_dict(state["model"])
        self._optimizer_state = state["optimizer"]  # loaded into the optimiser when it is made
        self.n_steps_ = int(state["n_steps"])
        self.seen_ = torch.as_tensor(state["seen"], device=self.device_)
        return self


def learner_from_config(
    stream: Stream,
    train,
    seed: int,
    plugins: Sequence[Plugin] = (),
    cls: type[ContinualLearner] | None = None,
    **head,
) -> ContinualLearner:
    """The learner described by params.yaml `train` (a TrainConfig) for a stream (its classes, image
    shape and input normalizer); `cls` a ContinualLearner subclass (GDumb) and `head` further
    arguments (targets / mask_unseen, or the subclass's own)."""
    return (cls or ContinualLearner)(
        len(stream.classes),
        backbone=train.backbone,
        hidden=train.hidden,
        lr=train.lr,
        shape=stream.shape,
        device=train.device,
        seed=seed,
        plugins=plugins,
        normalizer=stream.normalizer,
        **head,
    )


class GDumbLearner(ContinualLearner):
    """GDumb (Prabhu et al., ECCV 2020) as Avalanche's GDumbPlugin runs it: a class-balanced
    memory of `memory` rows, updated with each experience's rows when it ends, and a model
    trained from its initial weights (and a fresh optimiser) on that memory alone, `epochs`
    passes of `batch_size`. The stream's batches themselves train nothing.
    """

    def __init__(
        self, n_classes: int, *, memory: int = 200, epochs: int = 5, batch_size: int = 32, **params
    ):
        super().__init__(n_classes, **params)
        self.memory = memory
        self.epochs = epochs
        self.batch_size = batch_size

    def initialize(self, n_features: int) -> GDumbLearner:
        super().initialize(n_features)
        self.memory_ = ClassBalancedBuffer(self.memory, seed=self.seed)
        self.n_experiences_ = 0
        return self

    def partial_fit(self, X, y, accept=None) -> GDumbLearner:
        """Nothing to learn from a batch: the memory is filled when the experience ends."""
        if not hasattr(self, "model_"):
            self.initialize(X.shape[1])
        return self

    def buffers(self) -> list:
        return [*super().buffers(), self.memory_]

    def end_experience(self, X: np.ndarray, y: np.ndarray) -> GDumbLearner:
        memory, n_experiences = self.memory_, self.n_experiences_ + 1
        memory.add_classes(X, y)
        self.initialize(self.n_features_in_)  # seeded: the same initial weights every time
        self.memory_, self.n_experiences_ = memory, n_experiences
        for epoch in range(self.epochs):
            seed = (self.seed * 1009 + n_experiences) * 1009 + epoch
            for xb, yb in iter_batches(memory.X, memory.y, self.batch_size, seed=seed):
                super().partial_fit(xb, yb)
        return self
