"""Safe incremental updates: continue a TAME checkpoint only on the rows it has not seen.

A checkpoint records a fingerprint (params, data shape, and the source of every
module that shapes an expert or the selector: TAME itself, the learners, models,
plugins and streams it imports) and a hash of the training rows it consumed. It is
continued only when both still match: the stream may have gained experiences at the
end, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from clflow.checkpoint import rows_hash
from clflow.evaluation import RunResult
from clflow.streams import Stream
from clflow.util.codedeps import source_closure

log = logging.getLogger("clflow.tame")
MODEL_CODE = sorted(
    source_closure(Path(__file__).with_name("learner.py"))
)  # code behind the weights


def fingerprint(config: dict, stream: Stream) -> str:
    """What a checkpoint must share with the current run to be continued."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    h.update(json.dumps([stream.n_features, stream.classes]).encode())
    for src in MODEL_CODE:  # changed model code retrains too
        h.update(src.name.encode())
        h.update(src.read_bytes())
    return h.hexdigest()


def consumed_hash(stream: Stream, n_experiences: int) -> str:
    rows = stream.train.experience < n_experiences
    return rows_hash(stream.train.X[rows], stream.train.y[rows])


def resume_point(path: Path, stream: Stream, fp: str) -> tuple[int, dict | None]:
    """(experiences already consumed, checkpoint) or (0, None) to train from scratch."""
    if not path.exists():
        return 0, None
    from clflow.tame.persist import read_tame

    ckpt = read_tame(path)  # a corrupt or old-format file stops the stage with one line
    k = int(ckpt["experiences"])
    if ckpt["fingerprint"] != fp:
        log.info("%s: params or code changed, retraining from scratch", path)
    elif k > stream.n_experiences or consumed_hash(stream, k) != ckpt["rows_hash"]:
        log.info("%s: earlier training rows changed, retraining from scratch", path)
    else:
        log.info("%s: continuing after experience %d of %d", path, k - 1, stream.n_experiences)
        return k, ckpt
    return 0, None


def merge(previous: dict, new: RunResult) -> RunResult:
    """Join the checkpoint's accuracy rows and batch log with the continued run's."""
    R = new.R.copy()
    old = np.asarray(previous["R"], dtype=float)
    k = int(previous["experiences"])
    R[: k - 1, : old.shape[1]] = old[: k - 1]
    batches = np.concatenate(
        [np.asarray(previous["batch_experience"], dtype=np.int64), new.batch_experience]
    )
    return RunResult(R, new.b, batches)
