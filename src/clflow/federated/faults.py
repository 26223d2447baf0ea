"""Client names and fault injection, shared by the in-process rounds and Flower's apps.

numpy and the standard library only: Flower's environment imports it too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, get_args

import numpy as np

from clflow.federated.protocol import ClientUpdate

Fault = Literal[
    "", "nan", "dimension", "negative-count", "encoder", "replay", "crash"
]  # "": honest
FAULTS: tuple[str, ...] = get_args(Fault)[1:]


def client_name(partition: int) -> str:
    """The same names as the in-process path (`simulate.partition`)."""
    return f"client-{partition:03d}"


def corrupt(u: ClientUpdate, fault: Fault, previous: ClientUpdate | None) -> ClientUpdate:
    """A malicious or broken client's version of an honest update (fault injection for tests and
    the bench): the server must reject it and go on. `replay` resends the previous round's
    update, id and all."""
    if fault == "" or not len(u.classes):
        return u
    if fault == "nan":
        return replace(u, sums=np.full_like(u.sums, np.nan))
    if fault == "dimension":
        return replace(u, sums=np.zeros((len(u.classes), u.sums.shape[1] + 1)))
    if fault == "negative-count":
        return replace(u, counts=-u.counts)
    if fault == "encoder":
        return replace(u, encoder_hash="0" * 16)
    if fault == "replay":
        return previous if previous is not None and len(previous.classes) else u
    raise ValueError(f"unknown fault {fault!r} (one of {', '.join(FAULTS)})")
