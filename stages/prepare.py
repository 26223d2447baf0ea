"""DVC stage `prepare`: build the stream directory described by params.yaml `stream`.

Experiences accepted by the continual update (`data/experiences/`) are appended
after the built ones, in arrival order. Identical rows are counted, then kept,
dropped or refused (`stream.duplicates`); the counts, the test rows that leak from
train, and the input normalizer (`stream.normalize`) go into `meta.json`.
"""

from __future__ import annotations

import logging

from clflow.errors import ConfigError, cli_errors
from clflow.ops.entry import StageCommand

log = logging.getLogger("clflow.prepare")
STAGE = StageCommand(
    "prepare",
    __doc__,
    "`stream`, `lingo.encoder_path` (text streams), `tracking`",
    {"out": "data/stream", "experiences": "data/experiences"},
    outs=("out",),
)


@cli_errors
def main(argv: list[str] | None = None) -> None:
    with STAGE.run(argv) as st:
        from clflow.sentence import EmbeddingCache
        from clflow.streams import build_stream, write_stream
        from clflow.streams.duplicates import apply_policy
        from clflow.streams.experience import append_experiences
        from clflow.streams.sources import DIRECTORY_SOURCES

        cfg = st.params.stream
        cache = EmbeddingCache(st.params.lingo.encoder_path)  # text streams: encode new rows only
        try:
            stream = build_stream(cfg, cache.embed)
        except ValueError as exc:  # e.g. more experiences than classes
            field = getattr(exc, "field", "stream")
            raise ConfigError(str(exc), file=st.args.params, field=field) from None
        stream = append_experiences(stream, st.args.experiences, cache.embed)
        where = cfg.path if cfg.source in DIRECTORY_SOURCES else f"stream.source {cfg.source}"
        stream, dups = apply_policy(stream, cfg.duplicates, where)
        write_stream(stream, st.outs["out"], {"duplicates": dups.to_dict()})
        stats = {
            **stream.describe(),
            "duplicate_train_rows": dups.train,
            "duplicate_test_rows": dups.test,
            "test_rows_in_train": dups.test_in_train,
            "texts_embedded": cache.n_encoded_,  # 0 on a rerun: the cache had every text
        }
        log.info("wrote %s: %s", st.args.out, stats)
        with st.tracked("stream"):
            import mlflow

            mlflow.log_metrics(stats)


if __name__ == "__main__":
    main()
