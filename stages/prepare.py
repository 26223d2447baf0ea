"""DVC stage `prepare`: build the stream directory described by params.yaml `stream`.

Experiences accepted by the continual update (`data/experiences/`) are appended
after the built ones, in arrival order. Identical rows are counted, then kept,
dropped or refused (`stream.duplicates`); the counts, the test rows that leak from
train, and the input normalizer (`stream.normalize`) go into `meta.json`.
"""

from __future__ import annotations

import logging

import numpy as np

from clflow.config import load_params
from clflow.errors import ConfigError, cli_errors
from clflow.ops.entry import stage_args
from clflow.ops.io import atomic_dir
from clflow.streams import Stream, build_stream, write_stream
from clflow.streams.duplicates import apply_policy
from clflow.streams.experience import append_experiences
from clflow.tracking.runs import stage_run

log = logging.getLogger("clflow.prepare")


def describe(stream: Stream) -> dict[str, float]:
    """Row counts and shapes worth logging."""
    tr, te = stream.train, stream.test
    return {
        "n_train": len(tr),
        "n_test": len(te),
        "n_features": stream.n_features,
        "n_classes": len(stream.classes),
        "n_experiences": stream.n_experiences,
        "n_tasks": int(len(np.unique(tr.task))),
    }


@cli_errors
def main(argv: list[str] | None = None) -> None:
    args = stage_args(
        __doc__, "`stream`, `tracking`", argv, out="data/stream", experiences="data/experiences"
    )

    params = load_params(args.params)
    try:
        stream = build_stream(params.stream)
    except ValueError as exc:  # e.g. more experiences than classes
        field = getattr(exc, "field", "stream")
        raise ConfigError(str(exc), file=args.params, field=field) from None
    stream = append_experiences(stream, args.experiences)
    where = (
        params.stream.path
        if params.stream.source == "parquet"
        else f"stream.source {params.stream.source}"
    )
    stream, dups = apply_policy(stream, params.stream.duplicates, where)
    with atomic_dir(args.out) as tmp:
        write_stream(stream, tmp, {"duplicates": dups.to_dict()})
    stats = {
        **describe(stream),
        "duplicate_train_rows": dups.train,
        "duplicate_test_rows": dups.test,
        "test_rows_in_train": dups.test_in_train,
    }
    log.info("wrote %s: %s", args.out, stats)
    with stage_run("prepare", {"stream": params.stream.model_dump()}, params.tracking.experiment):
        import mlflow

        mlflow.log_metrics(stats)


if __name__ == "__main__":
    main()
