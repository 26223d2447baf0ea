"""DVC stage `encoder`: train the prototype encoder that federated clients share.

Federated Reconnaissance's protocol: the base classes (the stream's first
`federated.base_experiences` experiences) train the encoder once, centrally; the
novel classes then arrive at clients over rounds (stage `federated`, with
`federated.encoder: trained`). The file's SHA-256 is the encoder id every client
update carries.
"""

from __future__ import annotations

import logging

from clflow.errors import ConfigError, cli_errors
from clflow.ops.entry import StageCommand

log = logging.getLogger("clflow.encoder")
STAGE = StageCommand(
    "encoder",
    __doc__,
    "`federated.base_experiences`, `federated.encoder_*`, `tracking`",
    {
        "stream": "data/stream",
        "out": "models/encoder/encoder.npz",
        "metrics": "metrics/encoder.json",
    },
    outs=("out", "metrics"),
)


@cli_errors
def main(argv: list[str] | None = None) -> None:
    with STAGE.run(argv) as st:
        import mlflow
        import numpy as np

        from clflow.federated import Encoder
        from clflow.federated.encoder import save_encoder, train_encoder
        from clflow.federated.simulate import novel_accuracy
        from clflow.util.io import write_json

        cfg, stream = st.params.federated, st.stream
        if cfg.base_experiences >= stream.n_experiences:
            raise ConfigError(
                f"{cfg.base_experiences} base experiences leave no novel class of the stream's "
                f"{stream.n_experiences}",
                file=st.args.params,
                field="federated.base_experiences",
            )
        tr = stream.train
        base = tr.experience < cfg.base_experiences  # the base classes' rows
        arrays = train_encoder(
            tr.X[base], tr.y[base], cfg.encoder_training, cfg.encoder_dim, cfg.encoder_epochs,
            cfg.seed,
        )  # fmt: skip
        encoder_id = save_encoder(st.outs["out"], arrays)
        novel_rows = np.flatnonzero(~base)
        novel = np.unique(tr.y[novel_rows])
        trained = Encoder("trained", stream.n_features, weights=arrays, weights_id=encoder_id)
        raw = Encoder("raw", stream.n_features)
        metrics = {
            "novel_prototype_accuracy": novel_accuracy(stream, novel_rows, novel, trained),
            "novel_prototype_accuracy_raw": novel_accuracy(stream, novel_rows, novel, raw),
            "base_classes": float(len(arrays["base_classes"])),
        }
        write_json(st.outs["metrics"], metrics)
        log.info("encoder %s: %s", encoder_id, metrics)
        with st.tracked("federated"):
            mlflow.log_metrics(metrics)
            mlflow.set_tag("clflow.encoder_id", encoder_id)
            mlflow.log_artifact(st.outs["out"])


if __name__ == "__main__":
    main()
