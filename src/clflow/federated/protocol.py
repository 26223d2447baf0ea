"""Federated prototype learning (Federated Reconnaissance, Hendryx et al. 2021): clients and server.

A client embeds its rows with the shared encoder and sends per-class prototype
*sums* and *counts* of its new rows. The server adds them: count-weighted online
averaging, no gradient step. Sums are float64, so the merged state is the same
whatever the order of arrival (counts exactly, sums to float64 rounding).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("clflow.federated")


@dataclass(frozen=True)
class ClientUpdate:
    update_id: str
    client: str
    round: int
    encoder_hash: str
    classes: np.ndarray  # (C,) int64 labels
    sums: np.ndarray  # (C, D) float64 sum of embeddings per class
    counts: np.ndarray  # (C,) int64 rows per class


class Encoder:
    """A fixed, shared embedding, identified by a hash: raw features, a seeded random ReLU feature
    map, or a trained encoder (`clflow.federated.encoder`, whose file's SHA-256 is the hash)."""

    def __init__(
        self,
        kind: str,
        n_features: int,
        dim: int = 256,
        seed: int = 0,
        weights: dict[str, np.ndarray] | None = None,
        weights_id: str = "",
    ):
        self.kind, self.n_features, self.W, self.weights = kind, n_features, None, None
        if kind == "raw":
            self.dim = n_features
        elif kind == "random":
            self.W = np.random.default_rng(seed).standard_normal((n_features, dim)) / np.sqrt(
                n_features
            )
            self.dim = dim
        elif kind == "trained":
            if weights is None or len(weights["mean"]) != n_features:
                raise ValueError(f"a trained encoder needs its weights for {n_features} features")
            self.weights = weights
            self.dim = int(weights[f"b{sum(k.startswith('W') for k in weights) - 1}"].shape[0])
        else:
            raise ValueError(f"unknown encoder {kind!r} (raw, random or trained)")
        h = hashlib.sha256(f"{kind}:{n_features}:{self.dim}".encode())
        if self.W is not None:
            h.update(self.W.tobytes())
        self.hash = weights_id if kind == "trained" else h.hexdigest()[:16]

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if self.weights is not None:
            from clflow.federated.encoder import embed

            return embed(self.weights, X)
        X = np.asarray(X, dtype=np.float64)
        return X if self.W is None else np.maximum(X @ self.W, 0.0)


def make_encoder(kind: str, n_features: int, seed: int, path: str) -> Encoder:
    """The shared encoder: raw, random (seeded) or trained (read from `path`)."""
    if kind != "trained":
        return Encoder(kind, n_features, seed=seed)
    from clflow.federated.encoder import load_encoder

    weights, weights_id = load_encoder(path)
    if len(weights["mean"]) != n_features:
        from clflow.errors import ClflowError

        raise ClflowError(
            f"trained for {len(weights['mean'])} features, the stream has {n_features}; run "
            "`dvc repro encoder`",
            file=path,
            field="mean",
        )
    return Encoder("trained", n_features, weights=weights, weights_id=weights_id)


def client_update(
    X: np.ndarray,
    y: np.ndarray,
    encode: Callable[[np.ndarray], np.ndarray],
    encoder_hash: str,
    client: str,
    round_: int,
) -> ClientUpdate:
    """Per-class sums and counts of a client's new rows."""
    Z = encode(X)
    classes, inverse = np.unique(y, return_inverse=True)
    sums = np.zeros((len(classes), Z.shape[1]))
    np.add.at(sums, inverse, Z)
    counts = np.bincount(inverse, minlength=len(classes)).astype(np.int64)
    return ClientUpdate(
        f"{client}/r{round_}", client, round_, encoder_hash, classes.astype(np.int64), sums, counts
    )


@dataclass
class MergeReport:
    accepted: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (update id, reason)


class PrototypeServer:
    """Holds merged prototype sums and counts; classifies by the nearest merged prototype."""

    def __init__(self, dim: int, n_classes: int, encoder_hash: str, metric: str = "cosine"):
        self.dim, self.n_classes, self.encoder_hash, self.metric = (
            dim,
            n_classes,
            encoder_hash,
            metric,
        )
        self.sums = np.zeros((n_classes, dim))
        self.counts = np.zeros(n_classes, dtype=np.int64)
        self.seen_ids: set[str] = set()

    def check(self, u: ClientUpdate) -> str | None:
        """Why an update must be rejected, or None."""
        if u.update_id in self.seen_ids:
            return "duplicate update id"
        if u.encoder_hash != self.encoder_hash:
            return f"unknown encoder hash {u.encoder_hash}"
        sums, counts, classes = np.asarray(u.sums), np.asarray(u.counts), np.asarray(u.classes)
        if sums.ndim != 2 or sums.shape[1] != self.dim:
            return f"wrong dimension {sums.shape}, expected (C, {self.dim})"
        if not (len(classes) == len(counts) == len(sums)):
            return f"{len(classes)} classes, {len(counts)} counts, {len(sums)} sums"
        if not np.isfinite(sums).all():
            return "NaN or inf in prototype sums"
        if (counts <= 0).any():
            return "non-positive count"
        if ((classes < 0) | (classes >= self.n_classes)).any():
            return f"class outside 0..{self.n_classes - 1}"
        if len(np.unique(classes)) != len(classes):
            return "a class appears twice"
        return None

    def merge(self, updates: Iterable[ClientUpdate]) -> MergeReport:
        """Add every valid update; reject the rest with a logged reason. Nothing merged is lost."""
        report = MergeReport()
        for u in updates:
            reason = self.check(u)
            if reason:
                log.warning("rejected update %s from %s: %s", u.update_id, u.client, reason)
                report.rejected.append((u.update_id, reason))
                continue
            np.add.at(self.sums, u.classes, u.sums)
            np.add.at(self.counts, u.classes, u.counts)
            self.seen_ids.add(u.update_id)
            report.accepted += 1
        return report

    @property
    def known(self) -> np.ndarray:
        return np.flatnonzero(self.counts > 0)

    def prototypes(self) -> np.ndarray:
        """(known classes, D) mean embeddings."""
        k = self.known
        return self.sums[k] / self.counts[k, None]

    def predict(self, Z: np.ndarray) -> np.ndarray:
        P, k = self.prototypes(), self.known
        if not len(k):
            raise ValueError("no class merged yet")
        if self.metric == "cosine":
            P = P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
            Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
            return k[np.argmax(Z @ P.T, axis=1)]
        d = (Z**2).sum(1)[:, None] - 2 * Z @ P.T + (P**2).sum(1)[None]
        return k[np.argmin(d, axis=1)]
