"""DVC stage `register`: log the TAME model to the MLflow registry; promote it if it is better.

The model of one seed (`register.seed`, default the first of `train.seeds`) becomes
a version of `register.model_name` with the alias `challenger`. Challenger and
champion are both scored now, per experience, on the current test set; the
challenger is promoted to `champion` when its avg accuracy is not lower and no
experience's accuracy drops by more than `register.max_experience_drop`. Writes
the decision and the per-experience table to metrics/register.json. A text
stream's model carries its sentence encoder and takes documents.
"""

from __future__ import annotations

from clflow.errors import ConfigError, cli_errors
from clflow.ops.entry import StageCommand

STAGE = StageCommand(
    "register",
    __doc__,
    "`register`, `train.seeds`, `tracking`, `lingo.encoder_path`, `stream.max_text_chars`",
    {"stream": "data/stream", "models": "models/tame", "metrics": "metrics/register.json"},
    outs=("metrics",),
)


@cli_errors
def main(argv: list[str] | None = None) -> None:
    with STAGE.run(argv) as st:
        # the library loads once the command line is read: `--help` needs no torch or MLflow
        import json
        from pathlib import Path

        import mlflow

        from clflow.metrics import forgetting
        from clflow.sentence import encoder_dir
        from clflow.tame.persist import read_tame
        from clflow.tame.pyfunc import log_tame_model, scorer
        from clflow.tracking.provenance import TAG_FLOW_URL
        from clflow.tracking.registry import (
            TAG_DECISION,
            TAG_EVIDENCE,
            Registry,
            version_description,
        )
        from clflow.tracking.store import run_url, tracking_uri
        from clflow.util.io import write_json

        params = st.params
        cfg = params.registry
        seed = params.train.seeds[0] if cfg.seed is None else cfg.seed
        if seed not in params.train.seeds:
            raise ConfigError(
                f"seed {seed} is not one of train.seeds {params.train.seeds}",
                file=st.args.params,
                field="register.seed",
            )
        ckpt_path = Path(st.args.models) / f"seed_{seed}.pt"
        ckpt = read_tame(ckpt_path)
        stream = st.stream
        evaluate = scorer(stream)
        with st.tracked(register=cfg.model_dump(), seed=seed) as run:
            text = stream.is_text  # the model takes documents and carries its encoder
            info = log_tame_model(
                ckpt_path,
                (stream.test.text if text else stream.test.X)[:2],
                registered_model_name=cfg.model_name,
                encoder=encoder_dir(params.lingo.encoder_path) if text else None,
                max_text_chars=params.stream.max_text_chars,
            )
            version = str(info.registered_model_version)
            scores = evaluate(f"models:/{cfg.model_name}/{version}")
            forgot = forgetting(ckpt["R"])
            registry = Registry(cfg.model_name, tracking_uri(), cfg.lock_timeout)
            registry.record_creator(version)
            registry.tag(
                version,
                **{
                    "clflow.run_id": run.info.run_id,
                    "clflow.experiences": str(stream.n_experiences),
                },
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
            numbers = {k: float(v) for k, v in out.items() if k not in ("reason", "per_experience")}
            mlflow.log_metrics(numbers)
            # promoted, rejected, or awaiting_maintainer (team mode: a member's better model)
            verdict = registry.get(version).tags.get(TAG_DECISION, "rejected")
            mlflow.set_tags({"clflow.decision": verdict, "clflow.reason": decision.reason})
            link = run_url(run.info.experiment_id, run.info.run_id)
            flow_url = run.data.tags.get(TAG_FLOW_URL, "")
            text = version_description(evidence, verdict, decision.reason, link, flow_url)
            registry.describe(version, text)
        write_json(st.outs["metrics"], out)  # the decision itself is logged by the registry


if __name__ == "__main__":
    main()
