"""DVC stage `encoder`: train the prototype encoder that federated clients share.

Federated Reconnaissance's protocol: the base classes (the stream's first
`federated.base_experiences` experiences) train the encoder once, centrally; the
novel classes then arrive at clients over rounds (stage `federated`, with
`federated.encoder: trained`). The file's SHA-256 is the encoder id every client
update carries.
"""

from __future__ import annotations

import logging

import numpy as np

from clflow.config import load_params
from clflow.errors import ConfigError, cli_errors
from clflow.federated import Encoder
from clflow.federated.encoder import save_encoder, train_encoder
from clflow.federated.simulate import accuracy_on_seen, central_server
from clflow.ops.entry import stage_args
from clflow.ops.io import StagedOuts, write_json
from clflow.streams import load_stream

log = logging.getLogger("clflow.encoder")


def novel_accuracy(stream, rows: np.ndarray, novel: np.ndarray, encoder: Encoder) -> float:
    """Nearest prototype (cosine) of the novel classes' train `rows`, scored on their test rows:
    what the encoder is for, classes it never saw."""
    server = central_server(stream, rows, encoder, encoder.hash, "cosine")
    return accuracy_on_seen(server, stream, encoder, novel)


@cli_errors
def main(argv: list[str] | None = None) -> None:
    args = stage_args(
        __doc__,
        "`federated.base_experiences`, `federated.encoder_*`, `tracking`",
        argv,
        stream="data/stream",
        out="models/encoder/encoder.npz",
        metrics="metrics/encoder.json",
    )
    with StagedOuts(args.out, args.metrics) as outs:  # both change, or neither
        params = load_params(args.params)
        cfg = params.federated
        stream = load_stream(args.stream)
        if cfg.base_experiences >= stream.n_experiences:
            raise ConfigError(
                f"{cfg.base_experiences} base experiences leave no novel class of the stream's "
                f"{stream.n_experiences}",
                file=args.params,
                field="federated.base_experiences",
            )
        tr = stream.train
        base = tr.experience < cfg.base_experiences  # the base classes' rows
        arrays = train_encoder(
            tr.X[base], tr.y[base], cfg.encoder_training, cfg.encoder_dim, cfg.encoder_epochs,
            cfg.seed,
        )  # fmt: skip
        encoder_id = save_encoder(outs[args.out], arrays)
        novel_rows = np.flatnonzero(~base)
        novel = np.unique(tr.y[novel_rows])
        trained = Encoder("trained", stream.n_features, weights=arrays, weights_id=encoder_id)
        metrics = {
            "novel_prototype_accuracy": novel_accuracy(stream, novel_rows, novel, trained),
            "novel_prototype_accuracy_raw": novel_accuracy(
                stream, novel_rows, novel, Encoder("raw", stream.n_features)
            ),
            "base_classes": float(len(arrays["base_classes"])),
        }
        write_json(outs[args.metrics], metrics)
        log.info("encoder %s: %s", encoder_id, metrics)

        import mlflow

        from clflow.tracking.runs import stage_run

        with stage_run("encoder", {"federated": cfg.model_dump()}, params.tracking.experiment):
            mlflow.log_metrics(metrics)
            mlflow.set_tag("clflow.encoder_id", encoder_id)
            mlflow.log_artifact(outs[args.out])


if __name__ == "__main__":
    main()
