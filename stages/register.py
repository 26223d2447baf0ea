"""DVC stage `register`: log the TAME model to the MLflow registry; promote it if it is better.

The model of one seed (`register.seed`, default the first of `train.seeds`) becomes
a version of `register.model_name` with the alias `challenger`. It is promoted to
`champion` when its avg accuracy on the current test set is not below the
champion's (measured on the same rows) and its forgetting is not worse by more
than `register.max_forgetting_increase`. Writes the decision to metrics/register.json.
"""

from __future__ import annotations

from pathlib import Path

from clflow.config import load_params
from clflow.errors import ConfigError, cli_errors
from clflow.io import write_json
from clflow.metrics import forgetting
from clflow.stage import stage_args
from clflow.streams import Stream, load_stream
from clflow.tame.persist import read_tame


def evaluator(stream: Stream):
    """model_uri -> avg accuracy of that registered model on the stream's test rows."""
    import mlflow.pyfunc

    from clflow.tame.pyfunc import stream_accuracy

    return lambda uri: stream_accuracy(mlflow.pyfunc.load_model(uri), stream)


@cli_errors
def main(argv: list[str] | None = None) -> None:
    args = stage_args(__doc__, "`register`, `train.seeds`, `tracking`", argv, stream="data/stream",
                      models="models/tame", metrics="metrics/register.json")
    params = load_params(args.params)
    cfg = params.registry
    seed = params.train.seeds[0] if cfg.seed is None else cfg.seed
    if seed not in params.train.seeds:
        raise ConfigError(f"seed {seed} is not one of train.seeds {params.train.seeds}", file=args.params,
                          field="register.seed")
    ckpt_path = Path(args.models) / f"seed_{seed}.pt"
    ckpt = read_tame(ckpt_path)
    stream = load_stream(args.stream)
    evaluate = evaluator(stream)

    import mlflow

    from clflow.registry import Registry
    from clflow.tame.pyfunc import log_tame_model
    from clflow.tracking import stage_run, tracking_uri

    with stage_run("register", {"register": cfg.model_dump(), "seed": seed}, params.tracking.experiment) as run:
        info = log_tame_model(ckpt_path, stream.test.X[:2], registered_model_name=cfg.model_name)
        version = str(info.registered_model_version)
        metrics = {"avg_accuracy": evaluate(f"models:/{cfg.model_name}/{version}"),
                   "forgetting": forgetting(ckpt["R"])}
        registry = Registry(cfg.model_name, tracking_uri(), cfg.lock_timeout)
        registry.tag(version, **{"clflow.run_id": run.info.run_id, "clflow.experiences": str(stream.n_experiences)})
        decision = registry.consider(version, metrics, cfg.max_forgetting_increase, evaluate)
        champion = registry.version("champion")
        out = {**metrics, "version": int(version), "promoted": int(decision.promote),
               "champion_version": int(champion.version) if champion else 0, "reason": decision.reason}
        mlflow.log_metrics({k: float(v) for k, v in out.items() if k != "reason"})
        mlflow.set_tag("clflow.decision", decision.reason)
    write_json(args.metrics, out)  # the decision itself is logged by the registry


if __name__ == "__main__":
    main()
