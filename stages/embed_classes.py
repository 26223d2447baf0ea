"""DVC stage `embed_classes`: encode the stream's class names into frozen, L2-normalised targets."""

from __future__ import annotations

import logging
from pathlib import Path

from clflow.errors import cli_errors
from clflow.ops.entry import StageCommand

log = logging.getLogger("clflow.embed_classes")
STAGE = StageCommand(
    "embed_classes",
    __doc__,
    "`lingo.template`, `lingo.encoder_path`",
    {"classes": "data/stream/classes.json", "out": "data/class_targets.parquet"},
    outs=("out",),
)


@cli_errors
def main(argv: list[str] | None = None) -> None:
    with STAGE.run(argv) as st:
        import mlflow

        from clflow.lingo.targets import encode_names, load_encoder, target_stats, targets_frame
        from clflow.streams.schema import read_class_names
        from clflow.util.io import write_parquet

        cfg = st.params.lingo
        names = read_class_names(Path(st.args.classes))
        targets = encode_names(names, cfg.template, load_encoder(cfg.encoder_path or None))
        write_parquet(st.outs["out"], targets_frame(names, cfg.template, targets))
        stats = target_stats(targets)
        log.info("wrote %s: %s", st.args.out, stats)
        with st.tracked("lingo"):
            mlflow.log_metrics(stats)
            mlflow.log_artifact(st.outs["out"])


if __name__ == "__main__":
    main()
