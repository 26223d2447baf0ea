"""Model registry: register versions, promote the better one to `champion`, roll back.

Every registered version gets the alias `challenger` and carries its metrics as
version tags. Champion and challenger are scored on the same evidence: the
accuracy on each experience of the current test set. The challenger becomes
`champion` only when its avg accuracy is not below the champion's and no
experience's accuracy drops by more than `max_experience_drop` below the
champion's. A champion that cannot be re-scored blocks the promotion (with the
reason recorded) rather than being compared by a stale number. The decision, its
reason and the per-experience table are version tags. Read-compare-promote runs
under a lock, so concurrent registrations never promote a worse model whatever
their order; the previous champion is recorded, so a rollback restores it. The lock
is a file beside a local store, and a lease in the registry itself for a shared one
(an MLflow server, a database URI): every workspace of a team sees it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from clflow.errors import ClflowError
from clflow.tracking.lease import registry_lease
from clflow.util.locks import file_lock

log = logging.getLogger("clflow.registry")
CHAMPION, CHALLENGER = "champion", "challenger"
TAG_DECISION, TAG_REASON, TAG_PREVIOUS = (
    "clflow.decision",
    "clflow.reason",
    "clflow.previous_champion",
)
TAG_BY, TAG_REGISTERED_BY = "clflow.decided_by", "clflow.registered_by"  # who, by name
TAG_PROMOTED_AT = "clflow.promoted_at"  # ISO 8601 UTC: when the alias moved to this version
TAG_EVIDENCE = "clflow.per_experience"  # JSON: accuracy per experience of challenger and champion
METRICS = ("avg_accuracy", "forgetting")
Scorer = Callable[
    [str], Sequence[float]
]  # model URI -> accuracy on each experience of the current test set
LOCAL_STORES = ("sqlite", "file", "")  # one workspace's store: a file lock guards it


def acting_user() -> str:
    """Who acts on the registry: the MLflow user in team mode (MLFLOW_TRACKING_USERNAME, the
    identity the server checks), else the OS user."""
    import getpass

    return os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()


class RegistryError(ClflowError):
    """A registry request that cannot be done (no such version, nothing to roll back to)."""


class NotAllowed(RegistryError):
    """The server refused to move `champion` for this user (team mode: not a maintainer)."""


AWAITING = "awaiting_maintainer"  # the gate would promote; the user may not move the alias


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    candidate: Sequence[float], champion: Sequence[float] | None, max_drop: float
) -> Decision:
    """The promotion rule on per-experience accuracies measured on the same test set; None: no
    champion."""
    if champion is None:
        return Decision(True, "no champion yet")
    cand, champ = [float(a) for a in candidate], [float(a) for a in champion]
    if len(cand) != len(champ):
        return Decision(False, f"scored on {len(cand)} experiences, the champion on {len(champ)}")
    if not all(math.isfinite(a) for a in cand):
        return Decision(False, f"candidate accuracies are not finite ({cand})")
    acc, champ_acc = sum(cand) / len(cand), sum(champ) / len(champ)
    if acc < champ_acc:
        return Decision(False, f"avg_accuracy {acc:.4f} below champion's {champ_acc:.4f}")
    drops = [c - a for a, c in zip(cand, champ)]
    worst = max(range(len(drops)), key=drops.__getitem__)
    if drops[worst] > max_drop:
        return Decision(
            False,
            f"experience {worst}: accuracy {cand[worst]:.4f} drops {drops[worst]:.4f} below "
            f"the champion's {champ[worst]:.4f} (more than {max_drop:g})",
        )
    return Decision(
        True,
        f"avg_accuracy {acc:.4f} >= champion's {champ_acc:.4f}; no experience drops by more "
        f"than {max_drop:g} (largest: {max(drops[worst], 0.0):.4f} on experience {worst})",
    )


def lock_path(uri: str, name: str) -> Path:
    """The file lock of a local store: beside the SQLite file, else in the temp directory."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite" and parsed.path:
        return Path(parsed.path).with_name(f".{Path(parsed.path).name}.{name}.lock")
    return (
        Path(tempfile.gettempdir())
        / f"clflow-registry-{hashlib.sha256(uri.encode()).hexdigest()[:12]}-{name}.lock"
    )


class Registry:
    """One registered model in an MLflow registry."""

    def __init__(
        self, name: str, uri: str, lock_timeout: float = 120.0, lease_seconds: float = 600.0
    ):
        from mlflow import MlflowClient

        self.name, self.uri, self.lock_timeout = name, uri, lock_timeout
        self.lease_seconds = lease_seconds
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

    def record_creator(self, version: str) -> str:
        """Name who registered `version`: a tag everywhere, and the version's own creator (the
        registry page's "Created by") in a local SQLite store. MLflow's REST API has no way to
        set it; the team's server writes the logged-in user there itself
        (clflow.tracking.authz.stamp_creator). Returns the name."""
        user = acting_user()
        self.tag(version, **{TAG_REGISTERED_BY: user})
        if urlparse(self.uri).scheme == "sqlite":
            from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
            from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

            with SqlAlchemyStore(self.uri).ManagedSessionMaker() as session:
                session.query(SqlModelVersion).filter_by(
                    name=self.name, version=int(version)
                ).update({"user_id": user})
        return user

    def describe(self, version: str, text: str) -> None:
        """Set the version's description (markdown, shown on its registry page)."""
        self.client.update_model_version(self.name, str(version), description=text)

    @contextmanager
    def _decision_lock(self) -> Iterator[Callable[[], None]]:
        """Held while the champion is read and moved, so decisions never interleave; yields the
        check to call right before the alias moves (a lease that was lost raises there)."""
        if urlparse(self.uri).scheme in LOCAL_STORES:
            path = lock_path(self.uri, self.name)
            with file_lock(path, self.lock_timeout, what="the registry decision"):
                yield lambda: None
        else:
            with registry_lease(
                self.client, self.name, self.lock_timeout, self.lease_seconds
            ) as lease:
                yield lease.check

    def consider(
        self,
        version: str,
        scores: Sequence[float],
        max_drop: float,
        evaluate: Scorer | None = None,
        forgetting: float | None = None,
    ) -> Decision:
        """Tag `version` as challenger with its per-experience `scores`; promote it if it beats the
        champion.

        `evaluate(model_uri)` scores the champion on the same test set. Without it the
        champion's recorded scores serve (the caller vouches they are the same evidence).
        """
        version = str(version)
        scores = [float(a) for a in scores]
        metrics = {"avg_accuracy": sum(scores) / len(scores)}
        if forgetting is not None:
            metrics["forgetting"] = float(forgetting)
        self.tag(version, **{k: repr(v) for k, v in metrics.items()})
        with self._decision_lock() as still_held:
            self.client.set_registered_model_alias(self.name, CHALLENGER, version)
            champ = self.version(CHAMPION)
            champ_scores, failure = None, ""
            if champ is not None:
                try:
                    champ_scores = (
                        [float(a) for a in evaluate(f"models:/{self.name}/{champ.version}")]
                        if evaluate is not None
                        else self.recorded_scores(champ)
                    )
                except (
                    Exception
                ) as exc:  # e.g. its artifacts were deleted: no stale number stands in
                    failure = (
                        f"champion version {champ.version} could not be re-scored "
                        f"({type(exc).__name__}: {exc})"
                    )
            decision = (
                Decision(False, failure) if failure else decide(scores, champ_scores, max_drop)
            )
            self.tag(
                version,
                **{TAG_EVIDENCE: json.dumps({"challenger": scores, "champion": champ_scores})},
            )
            if decision.promote:
                try:
                    self._promote(
                        version,
                        str(champ.version) if champ else "",
                        "promoted",
                        decision.reason,
                        still_held,
                    )
                except NotAllowed:  # team mode, a member: a maintainer promotes it by hand
                    decision = Decision(
                        False,
                        f"{decision.reason}; {acting_user()} may not move `{CHAMPION}`: a "
                        f"maintainer promotes it (clflow registry promote {version})",
                    )
                    self.tag(version, **{TAG_DECISION: AWAITING, TAG_REASON: decision.reason,
                                         TAG_BY: acting_user()})  # fmt: skip
            else:
                self.tag(version, **{TAG_DECISION: "rejected", TAG_REASON: decision.reason,
                                     TAG_BY: acting_user()})  # fmt: skip
        log.info(
            "%s version %s: %s (%s)",
            self.name,
            version,
            "promoted" if decision.promote else "not promoted",
            decision.reason,
        )
        return decision

    @staticmethod
    def recorded_scores(version) -> list[float]:
        """The per-experience scores a version was registered with."""
        return list(json.loads(version.tags[TAG_EVIDENCE])["challenger"])

    def _promote(
        self,
        version: str,
        previous: str,
        decision: str,
        reason: str,
        still_held: Callable[[], None],
    ) -> None:
        # tags first, alias last: a crash in between leaves the old champion in place; the lock is
        # checked before both, so a lost lease leaves no "promoted" tag on a version it did not move
        from datetime import UTC, datetime

        tags = {
            TAG_DECISION: decision,
            TAG_REASON: reason,
            TAG_BY: acting_user(),
            TAG_PREVIOUS: previous,
            TAG_PROMOTED_AT: datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._move_champion(version, version, tags, still_held)

    def _move_champion(
        self, target: str, tagged: str, tags: dict[str, str], still_held: Callable[[], None]
    ) -> None:
        """Tag `tagged`, then point `champion` at `target`. When the server refuses this user the
        move (403), the tags are put back and NotAllowed is raised."""
        from mlflow.exceptions import MlflowException

        before = self.get(tagged).tags
        still_held()
        self.tag(tagged, **tags)
        still_held()
        try:
            self.client.set_registered_model_alias(self.name, CHAMPION, target)
        except MlflowException as exc:
            if exc.error_code != "PERMISSION_DENIED":
                raise
            # as it was: the alias did not move. A tag that was absent becomes "" (every reader
            # takes "" for absent), since deleting a tag needs more than this user may have
            self.tag(tagged, **{key: before.get(key, "") for key in tags})
            raise NotAllowed(
                f"user '{acting_user()}' may not move `{CHAMPION}` (the maintainer role may); "
                "nothing was moved",
                file=self.uri,
                field=self.name,
            ) from None

    def promote(self, version: str | int, reason: str = "promoted by hand") -> str | None:
        """Make `version` the champion regardless of metrics (the previous one is recorded).

        Returns the version it replaced (None: there was none), or `version` itself when it
        already was the champion: what this call did, decided under the registry lock.
        """
        version = str(self.get(version).version)
        with self._decision_lock() as still_held:
            champ = self.version(CHAMPION)
            if champ is not None and str(champ.version) == version:
                return version
            previous = str(champ.version) if champ else ""
            self._promote(version, previous, "promoted_by_hand", reason, still_held)
            return str(champ.version) if champ else None

    def rollback(self, reason: str = "rolled back by hand") -> str:
        """Restore the champion's predecessor; return the restored version."""
        with self._decision_lock() as still_held:
            champ = self.version(CHAMPION)
            if champ is None:
                raise RegistryError("no champion to roll back", file=self.uri, field=self.name)
            previous = champ.tags.get(TAG_PREVIOUS, "")
            if not previous:
                raise RegistryError(
                    f"champion version {champ.version} has no predecessor",
                    file=self.uri,
                    field=self.name,
                )
            self.get(previous)
            tags = {TAG_DECISION: "rolled_back", TAG_REASON: reason, TAG_BY: acting_user()}
            self._move_champion(previous, str(champ.version), tags, still_held)
        return previous

    def table(self) -> list[dict[str, str]]:
        """Every version with its aliases, metrics and decision, newest first."""
        rows = []
        for found in self.client.search_model_versions(f"name='{self.name}'"):
            v = self.get(found.version)  # search results leave out aliases
            rows.append(
                {
                    "version": v.version,
                    "aliases": ",".join(v.aliases),
                    **{k: f"{float(v.tags[k]):.4f}" if k in v.tags else "" for k in METRICS},
                    "decision": v.tags.get(TAG_DECISION, ""),
                    "by": v.tags.get(TAG_BY, ""),
                    "reason": v.tags.get(TAG_REASON, ""),
                }
            )
        return sorted(rows, key=lambda r: -int(r["version"]))


def version_description(evidence: dict, decision: str, reason: str, run: str, flow_run: str) -> str:
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
