"""Lineage of registered models: model version -> MLflow run -> Prefect flow run -> git commit
-> `dvc.lock` -> DVC hash of the stream -> accepted experience files -> promotion decision.

Each stage run logs `lineage.json` (see `clflow.tracking.lineage`); this module reads it back
for a version, a run or a Prefect flow run, and answers the reverse question: which versions
were trained on a given file or data version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clflow.errors import ClflowError
from clflow.tracking.provenance import (
    LINEAGE_FILE,
    TAG_FLOW_RUN,
    TAG_FLOW_URL,
    TAG_LOCK,
    TAG_STREAM,
    dvc_out_hash,
)
from clflow.tracking.registry import TAG_DECISION, TAG_PROMOTED_AT, TAG_REASON
from clflow.tracking.store import run_url

MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
RUN_ID = re.compile(r"[0-9a-f]{32}$")
FLOW_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class LineageError(ClflowError):
    """A reference that names no model version, run or flow run in the store."""


@dataclass
class Chain:
    """One model version (or one run, when no version came of it) and what made it."""

    run_id: str
    stage: str
    run_link: str
    lineage: dict[str, Any]
    tags: dict[str, str]
    model: str = ""
    version: str = ""
    aliases: list[str] = field(default_factory=list)
    registered: str = ""
    version_tags: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str]]:
        """(what, value) lines, in chain order."""
        lin, tags = self.lineage, self.tags
        flow = lin.get("prefect_flow_run", {})
        flow_id = flow.get("id") or tags.get(TAG_FLOW_RUN, "")
        rows = []
        if self.version:
            aliases = f" @{', @'.join(self.aliases)}" if self.aliases else ""
            rows.append(("model", f"models:/{self.model}/{self.version}{aliases}"))
            rows.append(("registered", self.registered))
        rows += [
            ("mlflow run", f"{self.run_id} ({self.stage})  {self.run_link}"),
            (
                "prefect run",
                f"{flow_id}  {flow.get('url') or tags.get(TAG_FLOW_URL, '')}".strip()
                if flow_id
                else "none (not run by a Prefect flow)",
            ),
            ("git commit", lin.get("git_commit") or tags.get("mlflow.source.git.commit", "?")),
            ("dvc.lock", self._lock_line()),
            ("data", f"data/stream dvc md5 {self.stream_md5 or 'not recorded'}"),
        ]
        exps = lin.get("experiences")
        if exps is None:
            rows.append(("experiences", "not recorded (a run logged before lineage.json)"))
        for exp in exps or []:
            came = f" <- {exp['source']} sha256 {exp['source_sha256']}" if exp["source"] else ""
            rows.append(("experience", f"{exp['name']} sha256 {exp['sha256']}{came}"))
        if exps == []:
            rows.append(("experiences", "none accepted (the built stream only)"))
        if self.version:
            decision = self.version_tags.get(TAG_DECISION, "undecided")
            when = self.version_tags.get(TAG_PROMOTED_AT, "")
            rows.append(("decision", decision + (f" at {when}" if when else "")))
            rows.append(("reason", self.version_tags.get(TAG_REASON, "")))
        return rows

    def _lock_line(self) -> str:
        after = self.lineage.get("dvc_lock_after_run")
        if after:
            return f"sha256 {after[:16]} (as the pipeline run left it)"
        start = self.lineage.get("dvc_lock") or self.tags.get(TAG_LOCK, "?")
        return f"sha256 {start[:16]} (when the stage started)"

    @property
    def stream_md5(self) -> str:
        """The DVC hash of the stream the run read ("" when not recorded)."""
        recorded = self.lineage.get("stream", {}).get("dvc_md5")
        return recorded or self.tags.get(TAG_STREAM, "")

    def matches(self, digest: str) -> str:
        """What in this chain has `digest` (a prefix of a SHA-256 or a DVC md5), or ""."""
        if self.stream_md5 and self.stream_md5.startswith(digest):
            return f"data/stream {self.stream_md5}"
        for exp in self.lineage.get("experiences") or []:
            if exp["sha256"].startswith(digest) or exp["source_sha256"].startswith(digest):
                return f"{exp['name']}" + (f" (from {exp['source']})" if exp["source"] else "")
        return ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "aliases": self.aliases,
            "registered": self.registered,
            "mlflow_run": {"id": self.run_id, "stage": self.stage, "url": self.run_link},
            **self.lineage,
            "decision": self.version_tags.get(TAG_DECISION, ""),
            "reason": self.version_tags.get(TAG_REASON, ""),
            "promoted_at": self.version_tags.get(TAG_PROMOTED_AT, ""),
        }


class Lineage:
    """Reads lineage from one MLflow tracking store and registry."""

    def __init__(self, uri: str, model: str = "clflow-tame"):
        from mlflow import MlflowClient

        self.uri, self.model = uri, model
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def chain(self, ref: str) -> list[Chain]:
        """The chains `ref` names: `models:/name@alias`, `models:/name/3`, an MLflow run id or a
        Prefect flow-run id."""
        from mlflow.exceptions import MlflowException

        ref = ref.strip()
        try:
            if m := MODEL_URI.match(ref):
                name = m["name"]
                mv = (
                    self.client.get_model_version_by_alias(name, m["alias"])
                    if m["alias"]
                    else self.client.get_model_version(name, m["version"])
                )
                return [self._version_chain(mv)]
            if RUN_ID.match(ref):
                run = self.client.get_run(ref)
        except MlflowException as exc:
            reason = exc.message.splitlines()[0] if exc.message else type(exc).__name__
            raise LineageError(f"not found ({reason})", file=self.uri, field=ref) from None
        if RUN_ID.match(ref):
            if "clflow.stage" not in run.data.tags:  # nothing clflow recorded: no chain to show
                experiment = self.client.get_experiment(run.info.experiment_id).name
                raise LineageError(
                    f"not a clflow run (experiment {experiment!r}: no clflow.stage tag)",
                    file=self.uri,
                    field=ref,
                )
            return self._run_chains([run])
        if FLOW_RUN_ID.match(ref):
            runs = self.client.search_runs(
                [e.experiment_id for e in self.client.search_experiments()],
                filter_string=f"tags.`{TAG_FLOW_RUN}` = '{ref}'",
            )
            if not runs:
                raise LineageError(
                    "no MLflow run names this Prefect flow run", file=self.uri, field=ref
                )
            return self._run_chains(runs)
        raise LineageError(
            "expected models:/NAME@ALIAS, models:/NAME/VERSION, an MLflow run id (32 hex) or a "
            "Prefect flow-run id (UUID)",
            field=ref,
        )

    def trained_on(self, digest: str) -> list[tuple[Chain, str]]:
        """Every version of the model whose run read data with this digest, and what matched."""
        found = []
        for mv in self.client.search_model_versions(f"name='{self.model}'"):
            chain = self._version_chain(self.client.get_model_version(mv.name, mv.version))
            hit = chain.matches(digest)
            if hit:
                found.append((chain, hit))
        return sorted(found, key=lambda pair: -int(pair[0].version))

    def _run_chains(self, runs: list) -> list[Chain]:
        """The model versions the runs registered; the runs themselves when they registered
        none (a flow run that stopped before `register`, a run of another stage)."""
        versions = [
            self._version_chain(self.client.get_model_version(v.name, v.version))
            for run in runs
            for v in self.client.search_model_versions(f"run_id='{run.info.run_id}'")
        ]
        return versions or [self._run_chain(run) for run in runs]

    def _run_chain(self, run) -> Chain:
        import mlflow.artifacts

        try:
            record = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/{LINEAGE_FILE}")
        except Exception:  # a run logged before lineage.json: the tags still tell part of it
            record = {}
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent:  # the pipeline run records dvc.lock as it left it (the commit to check out)
            record["dvc_lock_after_run"] = self.client.get_run(parent).data.tags.get(TAG_LOCK, "")
        return Chain(
            run_id=run.info.run_id,
            stage=run.data.tags.get("clflow.stage", "?"),
            run_link=run_url(run.info.experiment_id, run.info.run_id),
            lineage=record,
            tags=dict(run.data.tags),
        )

    def _version_chain(self, mv) -> Chain:
        from datetime import UTC, datetime

        chain = self._run_chain(self.client.get_run(mv.run_id))
        chain.model, chain.version, chain.aliases = mv.name, str(mv.version), list(mv.aliases)
        chain.registered = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(
            timespec="seconds"
        )
        chain.version_tags = dict(mv.tags)
        return chain


def data_digest(data: str, project: Path) -> str:
    """The digest to look for: a file's SHA-256, a DVC-tracked folder's md5 from dvc.lock, or
    the given hex prefix itself."""
    from clflow.streams.experience import file_digest

    path = Path(data)
    if path.is_file():
        return file_digest(path)
    if path.is_dir():
        try:
            rel = path.resolve().relative_to(project.resolve()).as_posix()
        except ValueError:
            raise LineageError("is outside the project", file=path, field="--data") from None
        found = dvc_out_hash(rel, project)
        if not found:
            raise LineageError("is not an out recorded in dvc.lock", file=path, field="--data")
        return found
    if not re.fullmatch(r"[0-9a-f]{8,64}(\.dir)?", data.lower()):
        raise LineageError(
            "neither a file nor a hex digest (8 to 64 characters)", file=path, field="--data"
        )
    return data.lower()
