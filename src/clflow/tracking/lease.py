"""A lease on a registered model's promotion decision, held in the MLflow registry itself.

Every workspace that can move the `champion` alias talks to the same registry, so the lock
lives there too: holding it means having created the registered model `<model>.lease`.
Creating a name that exists is refused by the store's unique key (RESOURCE_ALREADY_EXISTS),
which makes taking the lease atomic across processes and machines, whatever the backend
(PostgreSQL, SQLite). Its tags name the holder and when the lease ends: a holder that died
leaves a lease that others may break once it has expired. A holder re-reads its lease before
it moves the alias (`check`), so one that stalled past its lease and lost it does not move it.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from clflow.util.locks import LockTimeout

SUFFIX = ".lease"
TAG_OWNER, TAG_EXPIRES = "clflow.lease.owner", "clflow.lease.expires"


class LeaseLost(LockTimeout):
    """The lease expired and another workspace took it while this one held it."""


@dataclass(frozen=True)
class Lease:
    client: object  # MlflowClient
    name: str
    owner: str

    def check(self) -> None:
        """Raise LeaseLost unless this holder still owns the lease."""
        if _holder(self.client, self.name)[0] != self.owner:
            raise LeaseLost(
                "the registry lease expired and was taken by another workspace; nothing was "
                "moved (raise registry lease_seconds if decisions take this long)",
                file=self.name,
            )


def _holder(client, name: str) -> tuple[str | None, float]:
    """(owner, expiry in epoch seconds) of the lease `name`; (None, 0) when nobody holds it."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(name).tags
    except MlflowException:
        return None, 0.0
    return tags.get(TAG_OWNER, "?"), float(tags.get(TAG_EXPIRES, "0") or 0)


@contextmanager
def registry_lease(
    client, model: str, timeout: float, lease_seconds: float = 600.0
) -> Iterator[Lease]:
    """Hold the lease on `model`'s decision; wait up to `timeout` s, then LockTimeout."""
    from mlflow.exceptions import MlflowException

    name = f"{model}{SUFFIX}"
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline, delay = time.monotonic() + timeout, 0.05
    while True:
        expires = time.time() + lease_seconds
        try:
            client.create_registered_model(
                name,
                tags={TAG_OWNER: owner, TAG_EXPIRES: f"{expires:.3f}"},
                description=f"clflow: the promotion decision for `{model}` is in progress "
                "(deleted when it ends).",
            )
            break
        except MlflowException as exc:
            # taken; or taken and released at once: MLflow's store reads the existing model to
            # word its refusal, and answers "does not exist" when the holder deleted it between
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        holder, until = _holder(client, name)
        if holder is not None and until < time.time():
            _break(client, name, holder)  # its holder died: the lease ran out
            continue
        if time.monotonic() >= deadline:
            raise LockTimeout(
                f"the registry decision for {model} is held by {holder} (its lease ends in "
                f"{max(until - time.time(), 0):.0f} s); waited {timeout:g} s",
                file=name,
            )
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    lease = Lease(client, name, owner)
    try:
        yield lease
    finally:
        _break(client, name, owner)


def _break(client, name: str, owner: str) -> None:
    """Delete the lease if `owner` still holds it (someone else may have broken it)."""
    from mlflow.exceptions import MlflowException

    if _holder(client, name)[0] != owner:
        return
    try:
        client.delete_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
