"""Small torch backbones: an MLP for vectors, small CNNs for images and 1-D signals; device
auto-selected."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from clflow.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when a GPU is present, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


class FusedAdam:
    """torch.optim.Adam(fused=True), step for step and byte for byte (the same updates, the same
    `state_dict`, so checkpoints of either load in the other), without torch.optim's hooks.

    Every torch.optim optimizer imports torch._dynamo when it is made and at each step (its
    `add_param_group` and `step` wrappers do): ~1 s and ~70 MB in every process that trains,
    each stage of a pipeline run. This calls the same fused kernel, `torch._fused_adam_`.
    Adam's defaults otherwise: no weight decay, amsgrad or maximize.
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, tuple(betas), eps
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}  # first-step order

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        params = [p for p in self.params if p.grad is not None]
        if not params:
            return
        for p in params:
            if p not in self.state:  # as torch.optim.Adam's _init_group makes it
                self.state[p] = {
                    "step": torch.zeros((), dtype=torch.float32, device=p.device),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
        state = [self.state[p] for p in params]
        steps = [s["step"] for s in state]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(
            params, [p.grad for p in params], [s["exp_avg"] for s in state],
            [s["exp_avg_sq"] for s in state], [], steps, amsgrad=False, lr=self.lr,
            beta1=self.betas[0], beta2=self.betas[1], weight_decay=0.0, eps=self.eps,
            maximize=False, grad_scale=None, found_inf=None,
        )  # fmt: skip

    def state_dict(self) -> dict:
        """torch.optim.Adam(fused=True)'s layout: state by parameter index, one group."""
        index = {p: i for i, p in enumerate(self.params)}
        group = {
            "lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": 0,
            "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
            "differentiable": False, "fused": True, "decoupled_weight_decay": False,
            "params": list(range(len(self.params))),
        }  # fmt: skip
        state = {index[p]: dict(s) for p, s in self.state.items()}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict) -> None:
        (group,) = state_dict["param_groups"]
        if len(group["params"]) != len(self.params):
            raise ValueError("the optimizer state is for a different number of parameters")
        self.lr, self.betas, self.eps = group["lr"], tuple(group["betas"]), group["eps"]
        param = dict(zip(group["params"], self.params, strict=True))  # saved id -> parameter
        self.state = {}
        for i, saved in state_dict["state"].items():
            p = param[i]
            self.state[p] = {
                k: v.to(device=p.device) if k == "step" else v.to(dtype=p.dtype, device=p.device)
                for k, v in saved.items()
            }


Optimizer = FusedAdam | torch.optim.Adam


def adam(params, lr: float) -> Optimizer:
    """Adam with its fused kernel: one call per step for all parameters instead of six tensor ops
    per parameter (the unfused step was 40 % of a training step of the default MLP, profiled on
    Split-Fashion-MNIST); torch.optim.Adam where the kernel does not apply. FusedAdam makes one
    kernel call for all parameters, so they must share one device and one float dtype."""
    params = list(params)
    kinds = {(p.device, p.dtype) for p in params}
    if len(kinds) == 1 and all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                               for p in params):  # fmt: skip
        return FusedAdam(params, lr=lr)
    return torch.optim.Adam(params, lr=lr)


class MLP(nn.Module):
    """Two hidden ReLU layers; `out_dim` features."""

    def __init__(self, n_features: int, hidden: int):
        super().__init__()
        self.out_dim = hidden
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks and a dense layer, for flattened (C, H, W) images."""

    def __init__(self, shape: tuple[int, int, int], hidden: int):
        super().__init__()
        self.shape = tuple(shape)
        c, h, w = self.shape
        self.out_dim = hidden
        self.conv = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4, hidden), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x.view(len(x), *self.shape)))


class SmallCNN1d(nn.Module):
    """Three Conv1d layers and a dense layer, for flattened (C, L) signals such as MNIST-1D.

    MNIST-1D's digits are shifted, scaled and noisy templates: an MLP on the raw samples
    tells its tasks apart at 0.60-0.65, this at over 0.9 (measured, README)."""

    def __init__(self, shape: tuple[int, int], hidden: int):
        super().__init__()
        self.shape = tuple(shape)
        self.out_dim = hidden
        self.conv = nn.Sequential(
            nn.Conv1d(self.shape[0], 32, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveMaxPool1d(4),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4, hidden), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x.view(len(x), *self.shape)))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's CPU generator seeded inside the block and restored after it, so a model's initial
    weights depend on its seed alone.

    Only the CPU generator: layers initialise on the CPU before `.to(device)`, and
    `torch.manual_seed` also queues a seeding of every accelerator backend with a stack trace
    each, 0.7 ms per new expert (profiled)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def make_backbone(
    kind: str, n_features: int, hidden: int, shape: tuple[int, ...] | None = None
) -> nn.Module:
    """Build the backbone named in `train.backbone`."""
    if kind == "mlp":
        return MLP(n_features, hidden)
    if kind == "cnn":
        if not shape or len(shape) not in (2, 3) or math.prod(shape) != n_features:
            # the stream's shape is what is missing: name the parameter that gives one
            raise ConfigError(
                f"a cnn network needs the stream's signal shape (C, L) or image shape (C, H, W) "
                f"of its {n_features} features, got {shape}: set it, e.g. [1, {n_features}]",
                field="stream.shape",
            )
        if len(shape) == 2:
            return SmallCNN1d(shape, hidden)  # type: ignore[arg-type]
        return SmallCNN(shape, hidden)  # type: ignore[arg-type]
    raise ValueError(f"unknown backbone {kind!r}")


class Standardize(nn.Module):
    """A fixed first layer: (x - mean) / std per feature (stream.normalize), saved with the
    weights."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def scaled_input(body: nn.Module, normalizer) -> nn.Module:
    """`body` behind a Standardize layer when a normalizer is given (keeps `out_dim`)."""
    if normalizer is None:
        return body
    scaled = nn.Sequential(Standardize(normalizer.mean, normalizer.std), body)
    scaled.out_dim = body.out_dim
    return scaled


class TargetHead(nn.Module):
    """Logits = learnable scale × cosine(projected features, frozen class targets).

    The projection has no bias, so scaling the input features leaves predictions unchanged.
    """

    def __init__(self, in_dim: int, targets: torch.Tensor, scale: float = 10.0):
        super().__init__()
        self.proj = nn.Linear(in_dim, targets.shape[1], bias=False)
        self.register_buffer("targets", nn.functional.normalize(targets.float(), dim=1))  # frozen
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = nn.functional.normalize(self.proj(z), dim=1)
        return self.log_scale.exp() * z @ self.targets.T


class AnchoredTargetHead(TargetHead):
    """Logits = scale × (cosine(x, targets) + w × cosine(projected features, targets)), for
    inputs that live in the targets' own space: a text stream's sentence embeddings, its class
    names embedded by the same encoder.

    The first term is the names alone, frozen: it scores every class, labelled yet or not
    (zero-shot), and no later experience can overwrite it. The second is learnt, bounded like
    the first (a cosine) and weighted by `w` (`lingo.learnt_weight`), so what the stream
    teaches corrects the names without drowning them. The input is the raw embedding: the
    stream's normalizer is not applied to it.
    """

    def __init__(
        self, in_dim: int, targets: torch.Tensor, scale: float = 10.0, learnt_weight: float = 0.3
    ):
        super().__init__(in_dim, targets, scale)
        self.learnt_weight = learnt_weight

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        names = nn.functional.normalize(x, dim=1) @ self.targets.T
        learnt = nn.functional.normalize(self.proj(z), dim=1) @ self.targets.T
        return self.log_scale.exp() * (names + self.learnt_weight * learnt)


class Anchored(nn.Sequential):
    """(body, head) where the head also sees the raw input: `model[0]` stays the body."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self[1](self[0](x), x)


def make_head(
    in_dim: int, n_classes: int, targets=None, anchored: float | None = None
) -> nn.Module:
    """One-hot linear head, or a frozen-target head when `targets` (n_classes × D) is given;
    `anchored`: the targets are in the input's space, and this is the learnt term's weight
    (AnchoredTargetHead)."""
    if targets is None:
        return nn.Linear(in_dim, n_classes)
    targets = torch.as_tensor(targets, dtype=torch.float32)
    if targets.shape[0] != n_classes:
        raise ValueError(f"{targets.shape[0]} targets for {n_classes} classes")
    if anchored is not None:
        return AnchoredTargetHead(in_dim, targets, learnt_weight=anchored)
    return TargetHead(in_dim, targets)


def make_model(body: nn.Module, head: nn.Module) -> nn.Sequential:
    """body then head; an anchored head gets the raw input too."""
    return (Anchored if isinstance(head, AnchoredTargetHead) else nn.Sequential)(body, head)
