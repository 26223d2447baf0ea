"""DVC stage `embed_classes`: encode the stream's class names into frozen, L2-normalised targets."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from clflow.config import load_params
from clflow.errors import cli_errors
from clflow.lingo.targets import encode_names, load_encoder, targets_frame
from clflow.ops.entry import stage_args
from clflow.ops.io import write_parquet
from clflow.streams.schema import read_class_names

log = logging.getLogger("clflow.embed_classes")


@cli_errors
def main(argv: list[str] | None = None) -> None:
    args = stage_args(
        __doc__,
        "`lingo.template`, `lingo.encoder_path`",
        argv,
        classes="data/stream/classes.json",
        out="data/class_targets.parquet",
    )
    params = load_params(args.params)
    cfg = params.lingo
    names = read_class_names(Path(args.classes))
    targets = encode_names(names, cfg.template, load_encoder(cfg.encoder_path or None))
    write_parquet(args.out, targets_frame(names, cfg.template, targets))
    cos = targets @ targets.T
    stats = {
        "n_classes": len(names),
        "dim": targets.shape[1],
        "mean_pairwise_cosine": float(cos[np.triu_indices(len(names), 1)].mean())
        if len(names) > 1
        else 1.0,
    }
    log.info("wrote %s: %s", args.out, stats)

    import mlflow

    from clflow.tracking.runs import stage_run

    with stage_run("embed_classes", {"lingo": cfg.model_dump()}, params.tracking.experiment):
        mlflow.log_metrics(stats)
        mlflow.log_artifact(args.out)


if __name__ == "__main__":
    main()
