"""DVC stage `federated`: run the federated rounds and keep the merged prototypes.

`federated.engine: prefect` runs the Prefect flow flows/federated.py (clients as tasks);
`flower` runs a loopback Flower deployment (a SuperLink and one SuperNode per client, from
.venv-flower; logs under --flower-dir) and checks its merge against the in-process one.

Compares the merged prototypes with centrally computed ones, each client alone, and the
finetune baseline on the same class sequence.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import numpy as np
import polars as pl

from clflow.config import FederatedConfig, load_params
from clflow.errors import cli_errors
from clflow.evaluation import run_stream
from clflow.federated.simulate import accuracy_on_seen, partition
from clflow.learners import learner_from_config
from clflow.ops.entry import stage_args
from clflow.ops.io import StagedOuts, write_json, write_parquet
from clflow.streams import load_stream

log = logging.getLogger("clflow.federated")


def load_flow_module():
    """flows/federated.py as `flows.federated`, pickled by value so Dask workers can run its
    tasks."""
    import cloudpickle

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    module = importlib.import_module("flows.federated")
    cloudpickle.register_pickle_by_value(module)
    return module


def finetune_accuracy(stream, train) -> float:
    """The finetune baseline on the same class sequence: accuracy on all test rows at the end."""
    learner = learner_from_config(stream, train, train.seeds[0])
    run_stream(
        learner, stream, batch_size=train.batch_size, epochs=train.epochs, seed=train.seeds[0]
    )
    return float(np.mean(learner.predict(stream.test.X) == stream.test.y))


def run_rounds(stream, cfg: FederatedConfig, encoder_path: str, flower_dir: Path) -> dict:
    """The rounds on the configured engine: history, merged server, local accuracies, encoder."""
    if cfg.engine == "flower":
        from clflow.federated.flower.engine import federated_on_flower

        rounds = partition(stream, cfg.clients, cfg.overlap, cfg.seed)
        spec = (cfg.encoder, cfg.seed, encoder_path)
        return federated_on_flower(stream, rounds, cfg.clients, spec, cfg.metric, flower_dir)
    flows = load_flow_module()
    run = flows.federated.with_options(task_runner=flows.task_runner(cfg.runner, cfg.address))
    return run(
        stream,
        n_clients=cfg.clients,
        overlap=cfg.overlap,
        encoder_kind=cfg.encoder,
        metric=cfg.metric,
        seed=cfg.seed,
        group_size=cfg.group_size,
        encoder_path=encoder_path,
    )


@cli_errors
def main(argv: list[str] | None = None) -> None:
    args = stage_args(
        __doc__,
        "`federated`, `train`, `tracking`",
        argv,
        stream="data/stream",
        prototypes="models/federated/prototypes.parquet",
        metrics="metrics/federated.json",
        encoder="models/encoder/encoder.npz",
        flower_dir=".clflow/flower",
    )
    logging.getLogger("distributed").setLevel(logging.WARNING)  # Dask's per-worker chatter
    with StagedOuts(args.prototypes, args.metrics) as outs:  # all change, or none
        params = load_params(args.params)
        cfg = params.federated
        stream = load_stream(args.stream)
        out = run_rounds(stream, cfg, args.encoder, Path(args.flower_dir))
        server, last = out["server"], out["history"][-1]
        # the classes no encoder saw in training (those after the base experiences)
        novel = np.unique(stream.test.y[stream.test.experience >= cfg.base_experiences])
        metrics = {
            "merged_accuracy": last["merged_accuracy"],
            "central_accuracy": last["central_accuracy"],
            "max_prototype_diff": max(h["max_prototype_diff"] for h in out["history"]),
            "local_only_accuracy_mean": float(np.mean(out["local_accuracies"])),
            "local_only_accuracy_max": float(np.max(out["local_accuracies"])),
            "finetune_accuracy": finetune_accuracy(stream, params.train),
            "rejected_updates": float(sum(h["rejected"] for h in out["history"])),
            "novel_accuracy": accuracy_on_seen(server, stream, out["encoder"], novel),
            "rounds": out["history"],
            "engine": cfg.engine,
            **({"flower": out["flower"]} if "flower" in out else {}),
        }
        known = server.known
        write_parquet(
            outs[args.prototypes],
            pl.DataFrame(
                {
                    "label": known,
                    "name": [stream.classes[k] for k in known],
                    "count": server.counts[known],
                    "prototype": pl.Series(
                        "prototype", server.prototypes().astype(np.float32)
                    ).cast(pl.List(pl.Float32)),
                    "encoder_hash": [server.encoder_hash] * len(known),
                }
            ),
        )
        write_json(outs[args.metrics], metrics)
        log.info(
            "merged %.3f, central %.3f, local-only mean %.3f, finetune %.3f",
            metrics["merged_accuracy"],
            metrics["central_accuracy"],
            metrics["local_only_accuracy_mean"],
            metrics["finetune_accuracy"],
        )

        import mlflow

        from clflow.tracking.runs import stage_run

        with stage_run("federated", {"federated": cfg.model_dump()}, params.tracking.experiment):
            mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
            mlflow.log_dict(metrics["rounds"], "rounds.json")
            mlflow.log_artifact(outs[args.prototypes])


if __name__ == "__main__":
    main()
