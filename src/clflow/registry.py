"""Model registry: register versions, promote the better one to `champion`, roll back.

Every registered version gets the alias `challenger` and carries its metrics as
version tags. It becomes `champion` only when its avg accuracy is not below the
champion's (both measured on the same, current test set when an evaluator is
given) and its forgetting is not worse by more than `max_forgetting_increase`.
The decision and its reason are written as version tags. Read-compare-promote runs
under a lock, so concurrent registrations never promote a worse model whatever
their order; the previous champion is recorded, so a rollback restores it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from clflow.errors import ClflowError
from clflow.locks import file_lock

log = logging.getLogger("clflow.registry")
CHAMPION, CHALLENGER = "champion", "challenger"
TAG_DECISION, TAG_REASON, TAG_PREVIOUS = "clflow.decision", "clflow.reason", "clflow.previous_champion"
METRICS = ("avg_accuracy", "forgetting")


class RegistryError(ClflowError):
    """A registry request that cannot be done (no such version, nothing to roll back to)."""


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(candidate: Mapping[str, float], champion: Mapping[str, float] | None,
           max_forgetting_increase: float) -> Decision:
    """The promotion rule; `champion` None means there is none yet."""
    if champion is None:
        return Decision(True, "no champion yet")
    acc, champ_acc = candidate["avg_accuracy"], champion["avg_accuracy"]
    forg, champ_forg = candidate["forgetting"], champion["forgetting"]
    if not (math.isfinite(acc) and math.isfinite(forg)):
        return Decision(False, f"candidate metrics are not finite (avg_accuracy {acc}, forgetting {forg})")
    if acc < champ_acc:
        return Decision(False, f"avg_accuracy {acc:.4f} below champion's {champ_acc:.4f}")
    if forg > champ_forg + max_forgetting_increase:
        return Decision(False, f"forgetting {forg:.4f} worse than champion's {champ_forg:.4f} "
                               f"by more than {max_forgetting_increase:g}")
    return Decision(True, f"avg_accuracy {acc:.4f} >= champion's {champ_acc:.4f}, forgetting {forg:.4f} "
                          f"within {max_forgetting_increase:g} of {champ_forg:.4f}")


def lock_path(uri: str, name: str) -> Path:
    """Beside the SQLite store (one project); otherwise per user (a shared server needs one host)."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite" and parsed.path:
        return Path(parsed.path).with_name(f".{Path(parsed.path).name}.{name}.lock")
    return Path(tempfile.gettempdir()) / f"clflow-registry-{hashlib.sha256(uri.encode()).hexdigest()[:12]}-{name}.lock"


class Registry:
    """One registered model in an MLflow registry."""

    def __init__(self, name: str, uri: str, lock_timeout: float = 120.0):
        from mlflow import MlflowClient

        self.name, self.uri, self.lock_timeout = name, uri, lock_timeout
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def version(self, alias: str):
        """The version behind `alias`, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
            return None

    def get(self, version: str | int):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(self.name, str(version))
        except MlflowException:
            raise RegistryError(f"no version {version}", file=self.uri, field=self.name) from None

    @staticmethod
    def metrics(version) -> dict[str, float]:
        return {k: float(version.tags[k]) for k in METRICS if k in version.tags}

    def tag(self, version: str, **tags: str) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, version, key, value)

    def _decision_lock(self):
        """Held while the champion is read and moved, so decisions never interleave."""
        return file_lock(lock_path(self.uri, self.name), self.lock_timeout, what="the registry decision")

    def consider(self, version: str, metrics: Mapping[str, float], max_forgetting_increase: float,
                 evaluate: Callable[[str], float] | None = None) -> Decision:
        """Tag `version` as challenger with its metrics; promote it if it beats the champion.

        `evaluate(model_uri)` measures the champion's avg accuracy on the candidate's test set.
        """
        version = str(version)
        self.tag(version, **{k: repr(float(metrics[k])) for k in METRICS})
        with self._decision_lock():
            self.client.set_registered_model_alias(self.name, CHALLENGER, version)
            champ = self.version(CHAMPION)
            champ_metrics = None
            if champ is not None:
                champ_metrics = self.metrics(champ)
                if evaluate is not None:
                    try:
                        champ_metrics["avg_accuracy"] = evaluate(f"models:/{self.name}/{champ.version}")
                    except Exception as exc:  # e.g. its artifacts were deleted: fall back to its recorded score
                        log.warning("champion version %s could not be re-scored (%s); using its recorded "
                                    "avg_accuracy", champ.version, exc)
            decision = decide(metrics, champ_metrics, max_forgetting_increase)
            if decision.promote:
                self._promote(version, str(champ.version) if champ else "", "promoted", decision.reason)
            else:
                self.tag(version, **{TAG_DECISION: "rejected", TAG_REASON: decision.reason})
        log.info("%s version %s: %s (%s)", self.name, version, "promoted" if decision.promote else "not promoted",
                 decision.reason)
        return decision

    def _promote(self, version: str, previous: str, decision: str, reason: str) -> None:
        # tags first, alias last: a crash in between leaves the old champion in place
        self.tag(version, **{TAG_DECISION: decision, TAG_REASON: reason, TAG_PREVIOUS: previous})
        self.client.set_registered_model_alias(self.name, CHAMPION, version)

    def promote(self, version: str | int, reason: str = "promoted by hand") -> None:
        """Make `version` the champion regardless of metrics (the previous one is recorded)."""
        version = str(self.get(version).version)
        with self._decision_lock():
            champ = self.version(CHAMPION)
            if champ is not None and str(champ.version) == version:
                return
            self._promote(version, str(champ.version) if champ else "", "promoted_by_hand", reason)

    def rollback(self, reason: str = "rolled back by hand") -> str:
        """Restore the champion's predecessor; return the restored version."""
        with self._decision_lock():
            champ = self.version(CHAMPION)
            if champ is None:
                raise RegistryError("no champion to roll back", file=self.uri, field=self.name)
            previous = champ.tags.get(TAG_PREVIOUS, "")
            if not previous:
                raise RegistryError(f"champion version {champ.version} has no predecessor", file=self.uri,
                                    field=self.name)
            self.get(previous)
            self.tag(str(champ.version), **{TAG_DECISION: "rolled_back", TAG_REASON: reason})
            self.client.set_registered_model_alias(self.name, CHAMPION, previous)
        return previous

    def table(self) -> list[dict[str, str]]:
        """Every version with its aliases, metrics and decision, newest first."""
        rows = []
        for found in self.client.search_model_versions(f"name='{self.name}'"):
            v = self.get(found.version)  # search results leave out aliases
            rows.append({"version": v.version, "aliases": ",".join(v.aliases),
                         **{k: f"{float(v.tags[k]):.4f}" if k in v.tags else "" for k in METRICS},
                         "decision": v.tags.get(TAG_DECISION, ""), "reason": v.tags.get(TAG_REASON, "")})
        return sorted(rows, key=lambda r: -int(r["version"]))
