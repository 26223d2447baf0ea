"""DemoBank: every labelled example kept as a demonstration in a FAISS index.

Index by size: exact `Flat` up to `flat_max` vectors, then IVF (nlist ≈ 4·√N,
trained once, retrained only when the bank has grown `retrain_factor`-fold) or
HNSW; optional PQ codes for IVF when memory matters. Inner product on L2-
normalised vectors (cosine) or L2. Ids are positions: appending keeps old ids.
faiss-gpu serves searches when GPUs are present; files are always CPU indexes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

try:
    import faiss
except ImportError:  # pragma: no cover - an install without either extra
    raise ImportError(
        "clflow needs FAISS: pip install -e '.[cpu]' (or '.[gpu]' on a CUDA machine)"
    ) from None
import numpy as np
import polars as pl

from clflow.errors import ClflowError
from clflow.util.io import atomic_dir
from clflow.util.progress import Progress

FORMAT = "clflow-demobank/1"
CHUNK = 65_536


class BankError(ClflowError):
    """Bad input to a demonstration bank, or a damaged bank on disk."""


@dataclass(frozen=True)
class BankConfig:
    metric: str = "ip"  # ip (cosine on normalised vectors) | l2
    index: str = "auto"  # auto | flat | ivf | hnsw
    flat_max: int = 50_000  # auto: exact search up to this many vectors
    nprobe: int = 8  # IVF lists visited per query
    hnsw_m: int = 32
    ef_construction: int = 200  # FAISS's 40 strands queries in the wrong cluster on clustered data
    ef_search: int = 128
    pq_m: int = 0  # >0: IVF stores PQ codes of pq_m bytes (memory), else full vectors
    retrain_factor: float = 4.0  # retrain IVF when the bank grew this much since training
    gpu: str = "auto"  # auto | off


def recall_at_k(got: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact k nearest ids that a search returned (recall@k)."""
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, exact)]))


def _kind(cfg: BankConfig, n: int) -> str:
    if cfg.index != "auto":
        return cfg.index
    return "flat" if n <= cfg.flat_max else "ivf"


class DemoBank:
    """A FAISS index of labelled demonstrations with their metadata."""

    def __init__(self, dim: int, config: BankConfig | None = None, seed: int = 0):
        if dim < 1:
            raise BankError(f"dimension must be positive, got {dim}", field="dim")
        self.dim = dim
        self.config = config or BankConfig()
        if self.config.metric not in ("ip", "l2"):
            raise BankError(f"unknown metric {self.config.metric!r} (ip or l2)", field="metric")
        if self.config.index not in ("auto", "flat", "ivf", "hnsw"):
            raise BankError(
                f"unknown index {self.config.index!r} (auto, flat, ivf, hnsw)", field="index"
            )
        self.seed = seed
        self.kind = "flat"
        self.index = self._empty("flat", 0)
        self.trained_at = 0  # bank size when the IVF quantiser was last trained
        self.meta = pl.DataFrame(schema={"id": pl.Int64, "label": pl.Int64})
        self._gpu_index = None

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def nbytes(self) -> int:
        """Bytes the bank keeps: its FAISS index as serialized (vectors, and an IVF's lists and
        quantiser or an HNSW graph) and each row's id, label and metadata."""
        return int(faiss.serialize_index(self.index).nbytes) + int(self.meta.estimated_size())

    # -- building ------------------------------------------------------------------------
    @property
    def _faiss_metric(self) -> int:
        return faiss.METRIC_INNER_PRODUCT if self.config.metric == "ip" else faiss.METRIC_L2

    def _empty(self, kind: str, n: int) -> faiss.Index:
        d, cfg = self.dim, self.config
        if kind == "flat":
            return faiss.IndexFlatIP(d) if cfg.metric == "ip" else faiss.IndexFlatL2(d)
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, self._faiss_metric)
            index.hnsw.efConstruction = cfg.ef_construction
            index.hnsw.efSearch = cfg.ef_search
            return index
        nlist = max(
            1, min(int(4 * math.sqrt(n)), n // 39 or 1)
        )  # FAISS wants >= 39 points per list
        quantiser = faiss.IndexFlatIP(d) if cfg.metric == "ip" else faiss.IndexFlatL2(d)
        if cfg.pq_m:
            index = faiss.IndexIVFPQ(quantiser, d, nlist, cfg.pq_m, 8, self._faiss_metric)
        else:
            index = faiss.IndexIVFFlat(quantiser, d, nlist, self._faiss_metric)
        index.nprobe = min(cfg.nprobe, nlist)
        index.cp.seed = self.seed
        return index

    def _prepare(self, X: np.ndarray, what: str) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise BankError(
                f"expected vectors of dimension {self.dim}, got shape {X.shape}", field=what
            )
        if not np.isfinite(X).all():
            raise BankError(
                f"NaN or inf in {what} (first at row {int(np.argwhere(~np.isfinite(X))[0][0])})",
                field=what,
            )
        X = np.ascontiguousarray(X)
        if self.config.metric == "ip":
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        return X

    def _vectors(self) -> np.ndarray:
        """All stored vectors, in id order (for a rebuild)."""
        if self.kind == "ivf":
            self.index.make_direct_map()
        return self.index.reconstruct_n(0, len(self))

    def _rebuild(self, kind: str, X: np.ndarray) -> None:
        index = self._empty(kind, len(X))
        if kind == "ivf":
            rng = np.random.default_rng(self.seed)
            # 50 points per list trains the quantiser well (FAISS asks for 39+); more only costs
            # time
            n_train = 50 * index.nlist
            sample = X if len(X) <= n_train else X[rng.choice(len(X), n_train, replace=False)]
            index.train(sample)
            self.trained_at = len(X)
        self._add_chunks(index, X)
        self.index, self.kind, self._gpu_index = index, kind, None

    @staticmethod
    def _add_chunks(index: faiss.Index, X: np.ndarray) -> None:
        if len(X) <= 4 * CHUNK:  # small: one call, no progress to watch
            index.add(X)
            return
        with Progress(-(-len(X) // CHUNK), "FAISS index", unit="chunks") as progress:
            for start in range(0, len(X), CHUNK):
                chunk = X[start : start + CHUNK]
                index.add(chunk)
                progress.update(1, rows=len(chunk))

    def add(
        self,
        embeddings: np.ndarray,
        labels: np.ndarray,
        meta: dict[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Append demonstrations; returns their ids. Rebuilds only when the index kind or IVF lists
        must change."""
        X = self._prepare(embeddings, "embeddings")
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(X),):
            raise BankError(f"{len(labels)} labels for {len(X)} embeddings", field="labels")
        extra = {k: np.asarray(v) for k, v in (meta or {}).items()}
        for k, v in extra.items():
            if len(v) != len(X):
                raise BankError(f"{len(v)} values for {len(X)} embeddings", field=f"meta.{k}")
        start, total = len(self), len(self) + len(X)
        kind = _kind(self.config, total)
        needs_rebuild = kind != self.kind or (
            kind == "ivf"
            and (self.trained_at == 0 or total > self.config.retrain_factor * self.trained_at)
        )
        if needs_rebuild:
            self._rebuild(kind, np.concatenate([self._vectors(), X]) if start else X)
        else:
            self._add_chunks(self.index, X)
            self._gpu_index = None
        rows = pl.DataFrame(
            {
                "id": np.arange(start, total, dtype=np.int64),
                "label": labels,
                **{k: v for k, v in extra.items()},
            }
        )
        self.meta = pl.concat([self.meta, rows], how="diagonal_relaxed") if len(self.meta) else rows
        return rows["id"].to_numpy()

    # -- searching -----------------------------------------------------------------------
    def _search_index(self) -> faiss.Index:
        """The index searches run on: a GPU copy when GPUs are present (Flat/IVF), else the CPU
        index."""
        if (
            self.config.gpu == "off"
            or self.kind == "hnsw"
            or not hasattr(faiss, "get_num_gpus")
            or faiss.get_num_gpus() == 0
        ):
            return self.index
        if self._gpu_index is None:
            self._gpu_index = faiss.index_cpu_to_all_gpus(self.index)
        return self._gpu_index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores, ids, labels) of the k nearest demonstrations; ids/labels -1 where fewer
        exist."""
        if len(self) == 0:
            raise BankError("the demonstration bank is empty: add demonstrations before searching")
        if k < 1:
            raise BankError(f"k must be at least 1, got {k}", field="k")
        Q = self._prepare(queries, "queries")
        scores, ids = self._search_index().search(Q, k)
        labels = np.where(ids >= 0, self.meta["label"].to_numpy()[np.maximum(ids, 0)], -1)
        return scores, ids, labels

    def tune(self, queries: np.ndarray, recall: float = 0.95, k: int = 10) -> float:
        """Smallest IVF nprobe / HNSW efSearch whose recall@k on `queries` reaches `recall`; returns
        that recall.

        Exact neighbours come from a Flat index over the stored vectors.
        """
        if self.kind == "flat":
            return 1.0
        Q = self._prepare(queries, "queries")
        exact = (
            faiss.IndexFlatIP(self.dim)
            if self.config.metric == "ip"
            else faiss.IndexFlatL2(self.dim)
        )
        exact.add(self._vectors())
        _, ref = exact.search(Q, k)
        knob = "nprobe" if self.kind == "ivf" else "efSearch"
        target = self.index if self.kind == "ivf" else self.index.hnsw
        limit = self.index.nlist if self.kind == "ivf" else 4096
        value, got = (1 if self.kind == "ivf" else k), 0.0
        while True:
            setattr(target, knob, value)
            _, ids = self.index.search(Q, k)
            got = recall_at_k(ids, ref)
            if got >= recall or value >= limit:
                break
            value = min(value * 2, limit)
        self._gpu_index = None
        return got

    # -- files ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """index.faiss + meta.parquet + bank.json, swapped in atomically."""
        with atomic_dir(directory) as tmp:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            self.meta.write_parquet(tmp / "meta.parquet")
            info = {
                "format": FORMAT,
                "dim": self.dim,
                "kind": self.kind,
                "trained_at": self.trained_at,
                "size": len(self),
                "seed": self.seed,
                "config": asdict(self.config),
            }
            (tmp / "bank.json").write_text(json.dumps(info, indent=1) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> DemoBank:
        directory = Path(directory)
        info_path = directory / "bank.json"
        if not info_path.exists():
            raise BankError("not a demonstration bank (bank.json missing)", file=directory)
        try:
            info = json.loads(info_path.read_text())
            assert info.get("format") == FORMAT
            bank = cls(int(info["dim"]), BankConfig(**info["config"]), seed=int(info["seed"]))
        except Exception:
            raise BankError(f"not a {FORMAT} description", file=info_path) from None
        try:
            index = faiss.read_index(str(directory / "index.faiss"))
        except RuntimeError:
            raise BankError(
                "truncated or corrupt FAISS index", file=directory / "index.faiss"
            ) from None
        try:
            meta = pl.read_parquet(directory / "meta.parquet")
        except Exception:
            raise BankError("unreadable metadata", file=directory / "meta.parquet") from None
        if index.d != bank.dim or index.ntotal != info["size"] or len(meta) != info["size"]:
            raise BankError(
                f"index holds {index.ntotal} vectors of dim {index.d}, metadata {len(meta)} rows; "
                f"bank.json says {info['size']} of dim {bank.dim}",
                file=directory / "index.faiss",
            )
        bank.index, bank.kind, bank.trained_at, bank.meta = (
            index,
            info["kind"],
            int(info["trained_at"]),
            meta,
        )
        return bank
