"""DVC stage `federated`: run the federated rounds and keep the merged prototypes.

`federated.engine: prefect` runs clflow.federated.prefect_engine, a Prefect flow (clients as tasks);
`flower` runs a loopback Flower deployment (a SuperLink and one SuperNode per client, from
.venv-flower; logs under --flower-dir) and checks its merge against the in-process one.

Compares the merged prototypes with centrally computed ones, each client alone, and the
finetune baseline on the same class sequence.
"""

from __future__ import annotations

import logging
from pathlib import Path

from clflow.errors import cli_errors
from clflow.ops.entry import StageCommand

log = logging.getLogger("clflow.federated")
STAGE = StageCommand(
    "federated",
    __doc__,
    "`federated`, `train`, `tracking`",
    {
        "stream": "data/stream",
        "prototypes": "models/federated/prototypes.parquet",
        "metrics": "metrics/federated.json",
        "encoder": "models/encoder/encoder.npz",
        "flower_dir": ".clflow/flower",
    },
    outs=("prototypes", "metrics"),
)


@cli_errors
def main(argv: list[str] | None = None) -> None:
    logging.getLogger("distributed").setLevel(logging.WARNING)  # Dask's per-worker chatter
    with STAGE.run(argv) as st:
        import mlflow
        import numpy as np

        from clflow.baselines.methods import finetune_accuracy
        from clflow.federated.prefect_engine import run_rounds
        from clflow.federated.prototypes import write_prototypes
        from clflow.federated.simulate import accuracy_on_seen
        from clflow.util.io import write_json

        cfg, stream = st.params.federated, st.stream
        out = run_rounds(stream, cfg, st.args.encoder, Path(st.args.flower_dir), st.args.params)
        server, last = out["server"], out["history"][-1]
        # the classes no encoder saw in training (those after the base experiences)
        novel = np.unique(stream.test.y[stream.test.experience >= cfg.base_experiences])
        metrics = {
            "merged_accuracy": last["merged_accuracy"],
            "central_accuracy": last["central_accuracy"],
            "max_prototype_diff": max(h["max_prototype_diff"] for h in out["history"]),
            "local_only_accuracy_mean": float(np.mean(out["local_accuracies"])),
            "local_only_accuracy_max": float(np.max(out["local_accuracies"])),
            "finetune_accuracy": finetune_accuracy(stream, st.params.train),
            "rejected_updates": float(sum(h["rejected"] for h in out["history"])),
            "novel_accuracy": accuracy_on_seen(server, stream, out["encoder"], novel),
            "rounds": out["history"],
            "engine": cfg.engine,
            **({"flower": out["flower"]} if "flower" in out else {}),
        }
        write_prototypes(st.outs["prototypes"], server, stream.classes)
        write_json(st.outs["metrics"], metrics)
        log.info(
            "merged %.3f, central %.3f, local-only mean %.3f, finetune %.3f",
            metrics["merged_accuracy"],
            metrics["central_accuracy"],
            metrics["local_only_accuracy_mean"],
            metrics["finetune_accuracy"],
        )
        with st.tracked("federated"):
            mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
            mlflow.log_dict(metrics["rounds"], "rounds.json")
            mlflow.log_artifact(st.outs["prototypes"])


if __name__ == "__main__":
    main()
