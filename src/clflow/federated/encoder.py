"""A trained prototype encoder for federated reconnaissance, and its file (`encoder.npz`).

Federated Reconnaissance (Hendryx et al. 2021) merges prototypes of a *trained* encoder shared
by every client: base classes train it once, centrally; clients then embed novel classes with
it. Two ways to train it (measured in bench/federated.py): a classifier on the base classes
whose last hidden layer is the embedding, or episodic prototypical-network training (Snell et
al. 2017). The encoder is an MLP; clients run it in numpy (`Encoder.trained`), so a client needs
no torch. The file holds plain arrays (`np.load(allow_pickle=False)`); its SHA-256 is the
encoder id every client update carries.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from clflow.errors import ClflowError

Training = Literal["classifier", "protonet"]
HIDDEN = 256
FORMAT = "clflow-encoder/1"


def train_encoder(
    X: np.ndarray,
    y: np.ndarray,
    training: Training = "classifier",
    dim: int = 64,
    epochs: int = 30,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Train an MLP encoder on base-class rows; return its arrays (the `encoder.npz` content)."""
    import torch
    from torch import nn

    from clflow.models import adam

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = X.mean(0), X.std(0) + 1e-6  # fixed input scaling, part of the encoder
    Xt = torch.tensor((X - mean) / std, dtype=torch.float32)
    classes, labels = np.unique(y, return_inverse=True)
    yt = torch.tensor(labels)
    net = nn.Sequential(
        nn.Linear(X.shape[1], HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
        nn.Linear(HIDDEN, dim),
    )  # fmt: skip
    head = nn.Linear(dim, len(classes))
    opt = adam([*net.parameters(), *head.parameters()], lr=1e-3)
    for _ in range(epochs):
        if training == "classifier":  # the embedding is the ReLU of the last layer
            order = torch.randperm(len(Xt))
            for start in range(0, len(Xt), 64):
                b = order[start : start + 64]
                loss = nn.functional.cross_entropy(head(torch.relu(net(Xt[b]))), yt[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        else:  # protonet: 50 episodes per epoch, every base class, 5 support + 10 query rows
            for _ in range(50):
                support, query, target = [], [], []
                for k in range(len(classes)):
                    rows = rng.permutation(np.flatnonzero(labels == k))[:15]
                    support.append(net(Xt[rows[:5]]).mean(0))
                    query.append(Xt[rows[5:]])
                    target += [k] * len(rows[5:])
                logits = -(torch.cdist(net(torch.cat(query)), torch.stack(support)) ** 2)
                loss = nn.functional.cross_entropy(logits, torch.tensor(target))
                opt.zero_grad()
                loss.backward()
                opt.step()
    linear = [m for m in net if isinstance(m, nn.Linear)]
    arrays = {"mean": mean, "std": std, "final_relu": np.array(training == "classifier")}
    for i, layer in enumerate(linear):
        arrays[f"W{i}"] = layer.weight.detach().numpy().T.astype(np.float64)
        arrays[f"b{i}"] = layer.bias.detach().numpy().astype(np.float64)
    arrays["base_classes"] = classes.astype(np.int64)
    return arrays


def embed(arrays: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """The encoder's forward pass in numpy (float64): what every client computes."""
    h = (np.asarray(X, dtype=np.float64) - arrays["mean"]) / arrays["std"]
    n = sum(1 for k in arrays if k.startswith("W"))
    for i in range(n):
        h = h @ arrays[f"W{i}"] + arrays[f"b{i}"]
        if i < n - 1 or bool(arrays["final_relu"]):
            h = np.maximum(h, 0.0)
    return h


def save_encoder(path: str | Path, arrays: dict[str, np.ndarray]) -> str:
    """Write `encoder.npz` atomically; return its id (the file's SHA-256, first 16 hex)."""
    from clflow.util.io import atomic_path  # here: reading and embedding need numpy alone (clients)

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, format=np.array(FORMAT), **arrays)
    return file_id(path)


def file_id(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def load_encoder(path: str | Path) -> tuple[dict[str, np.ndarray], str]:
    """The arrays of `encoder.npz` and its id; a missing or foreign file is one line."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # missing, cut, not npz
        raise ClflowError(
            f"cannot read the encoder ({exc}); run `dvc repro encoder`", file=path
        ) from None
    if str(arrays.pop("format", "")) != FORMAT:
        raise ClflowError(f"not a {FORMAT} file", file=path, field="format")
    problem = shape_problem(arrays)
    if problem:
        raise ClflowError(
            f"{problem}; run `dvc repro encoder`", file=path, field=problem.split()[0]
        )
    return arrays, file_id(path)


def shape_problem(arrays: dict[str, np.ndarray]) -> str:
    """Why the arrays are not an encoder `embed` can run ("" when they are): the input scaling,
    then layers W0, b0, W1, ... whose sizes chain."""
    for key in ("mean", "std", "final_relu", "W0", "b0"):
        if key not in arrays:
            return f"{key} is missing"
    d = arrays["mean"].shape
    if len(d) != 1 or arrays["std"].shape != d:
        return f"std {arrays['std'].shape} does not match mean {d}"
    width = d[0]
    n = sum(k.startswith("W") for k in arrays)
    for i in range(n):
        W, b = arrays.get(f"W{i}"), arrays.get(f"b{i}")
        if W is None or b is None:
            return f"W{i} {'is missing' if W is None else 'has no bias b' + str(i)}"
        if W.ndim != 2 or W.shape[0] != width or b.shape != (W.shape[1],):
            return f"W{i} {W.shape} and b{i} {b.shape} do not follow a layer of width {width}"
        if not (np.issubdtype(W.dtype, np.number) and np.isfinite(W).all()):
            return f"W{i} holds values that are not finite numbers"
        width = W.shape[1]
    return ""
