"""DVC stage `register`: log the TAME model to the MLflow registry; promote it if it is better.

The model of one seed (`register.seed`, default the first of `train.seeds`) becomes
a version of `register.model_name` with the alias `challenger`. Challenger and
champion are both scored now, per experience, on the current test set; the
challenger is promoted to `champion` when its avg accuracy is not lower and no
experience's accuracy drops by more than `register.max_experience_drop`. Writes
the decision and the per-experience table to metrics/register.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from clflow.config import load_params
from clflow.errors import ConfigError, cli_errors
from clflow.metrics import forgetting
from clflow.ops.entry import stage_args
from clflow.ops.io import write_json
from clflow.streams import Stream, load_stream
from clflow.tame.persist import read_tame


def evaluator(stream: Stream):
    """model_uri -> accuracy of that registered model on each experience of the stream's test
    rows."""
    import mlflow.pyfunc

    from clflow.tame.pyfunc import experience_scores

    return lambda uri: experience_scores(mlflow.pyfunc.load_model(uri), stream)


def description(evidence: dict, decision: str, reason: str, run: str, flow_run: str) -> str:
    """The registry version's description: challenger vs champion per experience, the decision,
    and links to the MLflow run and the Prefect flow run that made it."""
    champ = evidence.get("champion")
    lines = ["| experience | challenger | champion |", "|---|---|---|"]
    for j, acc in enumerate(evidence["challenger"]):
        lines.append(f"| {j} | {acc:.4f} | {f'{champ[j]:.4f}' if champ else '-'} |")
    avg = sum(evidence["challenger"]) / len(evidence["challenger"])
    champ_avg = f"{sum(champ) / len(champ):.4f}" if champ else "-"
    lines += [f"| **mean** | **{avg:.4f}** | **{champ_avg}** |", ""]
    lines += [f"**{decision}**: {reason}", "", f"MLflow run: {run}"]
    return "\n".join(lines + ([f"Prefect flow run: {flow_run}"] if flow_run else []))


@cli_errors
def main(argv: list[str] | None = None) -> None:
    args = stage_args(
        __doc__,
        "`register`, `train.seeds`, `tracking`",
        argv,
        stream="data/stream",
        models="models/tame",
        metrics="metrics/register.json",
    )
    params = load_params(args.params)
    cfg = params.registry
    seed = params.train.seeds[0] if cfg.seed is None else cfg.seed
    if seed not in params.train.seeds:
        raise ConfigError(
            f"seed {seed} is not one of train.seeds {params.train.seeds}",
            file=args.params,
            field="register.seed",
        )
    ckpt_path = Path(args.models) / f"seed_{seed}.pt"
    ckpt = read_tame(ckpt_path)
    stream = load_stream(args.stream)
    evaluate = evaluator(stream)

    import mlflow

    from clflow.tame.pyfunc import log_tame_model
    from clflow.tracking.provenance import TAG_FLOW_URL
    from clflow.tracking.registry import TAG_EVIDENCE, Registry
    from clflow.tracking.runs import stage_run
    from clflow.tracking.store import run_url, tracking_uri

    with stage_run(
        "register", {"register": cfg.model_dump(), "seed": seed}, params.tracking.experiment
    ) as run:
        info = log_tame_model(ckpt_path, stream.test.X[:2], registered_model_name=cfg.model_name)
        version = str(info.registered_model_version)
        scores = evaluate(f"models:/{cfg.model_name}/{version}")
        forgot = forgetting(ckpt["R"])
        registry = Registry(cfg.model_name, tracking_uri(), cfg.lock_timeout)
        registry.tag(
            version,
            **{"clflow.run_id": run.info.run_id, "clflow.experiences": str(stream.n_experiences)},
        )
        decision = registry.consider(
            version, scores, cfg.max_experience_drop, evaluate, forgetting=forgot
        )
        champion = registry.version("champion")
        evidence = json.loads(registry.get(version).tags[TAG_EVIDENCE])
        out = {
            "avg_accuracy": sum(scores) / len(scores),
            "forgetting": forgot,
            "version": int(version),
            "promoted": int(decision.promote),
            "champion_version": int(champion.version) if champion else 0,
            "reason": decision.reason,
            "per_experience": evidence,
        }
        mlflow.log_metrics(
            {k: float(v) for k, v in out.items() if k not in ("reason", "per_experience")}
        )
        verdict = "promoted" if decision.promote else "rejected"
        mlflow.set_tags({"clflow.decision": verdict, "clflow.reason": decision.reason})
        link = run_url(run.info.experiment_id, run.info.run_id)
        flow_url = run.data.tags.get(TAG_FLOW_URL, "")
        registry.describe(version, description(evidence, verdict, decision.reason, link, flow_url))
    write_json(args.metrics, out)  # the decision itself is logged by the registry


if __name__ == "__main__":
    main()
