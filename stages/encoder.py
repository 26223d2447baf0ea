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
from clflow.federated.encoder import embed, save_encoder, train_encoder
from clflow.io import StagedOuts, write_json
from clflow.stage import stage_args
from clflow.streams import load_stream

log = logging.getLogger("clflow.encoder")


def base_rows(experience: np.ndarray, base_experiences: int) -> np.ndarray:
    """Mask of the rows of the base experiences."""
    return experience < base_experiences


def prototype_accuracy(Z: np.ndarray, y: np.ndarray, Zq: np.ndarray, yq: np.ndarray) -> float:
    """Nearest class mean (cosine) of the `Z` rows, scored on the query rows."""
    classes = np.unique(y)
    P = np.stack([Z[y == c].mean(0) for c in classes])
    P /= np.linalg.norm(P, axis=1, keepdims=True) + 1e-12
    Zq = Zq / (np.linalg.norm(Zq, axis=1, keepdims=True) + 1e-12)
    return float(np.mean(classes[np.argmax(Zq @ P.T, 1)] == yq))


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
        tr, te = stream.train, stream.test
        base = base_rows(tr.experience, cfg.base_experiences)
        arrays = train_encoder(
            tr.X[base], tr.y[base], cfg.encoder_training, cfg.encoder_dim, cfg.encoder_epochs,
            cfg.seed,
        )  # fmt: skip
        encoder_id = save_encoder(outs[args.out], arrays)
        # what it is for: prototypes of classes it never saw (novel rows, embedded vs raw)
        novel, query = ~base, ~base_rows(te.experience, cfg.base_experiences)
        metrics = {
            "novel_prototype_accuracy": prototype_accuracy(
                embed(arrays, tr.X[novel]), tr.y[novel], embed(arrays, te.X[query]), te.y[query]
            ),
            "novel_prototype_accuracy_raw": prototype_accuracy(
                tr.X[novel], tr.y[novel], te.X[query], te.y[query]
            ),
            "base_classes": float(len(arrays["base_classes"])),
        }
        write_json(outs[args.metrics], metrics)
        log.info("encoder %s: %s", encoder_id, metrics)

        import mlflow

        from clflow.tracking import stage_run

        with stage_run("encoder", {"federated": cfg.model_dump()}, params.tracking.experiment):
            mlflow.log_metrics(metrics)
            mlflow.set_tag("clflow.encoder_id", encoder_id)
            mlflow.log_artifact(outs[args.out])


if __name__ == "__main__":
    main()
