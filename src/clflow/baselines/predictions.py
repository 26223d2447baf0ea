"""The baselines' test predictions file (`models/baselines/predictions.npz`).

For every method and seed: class probabilities on every test row of the stream, from the
untrained model and after each experience, shape (T + 1, n_test, n_classes), float32. The
`retrieval` stage blends them with its k-NN vote instead of training the same learners a second
time (same stream, seeds, memory and code, so the same numbers).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from clflow.errors import ClflowError
from clflow.streams import Split, Stream
from clflow.util.io import atomic_path

FORMAT = "clflow-predictions/1"
Predictions = dict[str, dict[int, np.ndarray]]  # method -> seed -> (T + 1, n_test, n_classes)


def test_digest(test: Split) -> str:
    """What the probabilities were computed on: the test rows' features and labels."""
    h = hashlib.sha256()
    for a in (test.X, test.y, test.experience):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def save_predictions(path: str | Path, predictions: Predictions, stream: Stream) -> None:
    if any(p is None for seeds in predictions.values() for p in seeds.values()):
        raise ValueError("runs without kept probabilities (run_stream keep_proba=True)")
    arrays = {
        f"{method}/seed_{seed}": np.asarray(p, dtype=np.float32)
        for method, seeds in predictions.items()
        for seed, p in seeds.items()
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                format=np.array(FORMAT),
                test_digest=np.array(test_digest(stream.test)),
                **arrays,
            )


def load_predictions(path: str | Path, stream: Stream) -> Predictions:
    """The predictions for `stream`; {} when the file is absent. A file of another stream, or one
    that is not a predictions file, is one readable error naming the file."""
    path = Path(path)
    if not path.exists():
        return {}
    shape = (stream.n_experiences + 1, len(stream.test.y), len(stream.classes))
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data.get("format", "")) != FORMAT:
                raise ClflowError(f"not a {FORMAT} file", file=path, field="format")
            if str(data["test_digest"]) != test_digest(stream.test):
                raise ClflowError(
                    "computed on another stream's test rows: run the baselines stage again",
                    file=path,
                    field="test_digest",
                )
            out: Predictions = {}
            for key in data.files:
                if "/seed_" not in key:
                    continue
                method, seed = key.rsplit("/seed_", 1)
                proba = data[key]
                if proba.shape != shape or not np.isfinite(proba).all():
                    raise ClflowError(
                        f"shape {proba.shape}, expected {shape} of finite probabilities",
                        file=path,
                        field=key,
                    )
                out.setdefault(method, {})[int(seed)] = proba
            return out
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ClflowError(f"not a readable predictions file ({exc})", file=path) from None
