"""Federated prototype merging: clients learn their own classes, a server averages prototypes."""

from clflow.federated.protocol import (
    ClientUpdate,
    Encoder,
    MergeReport,
    PrototypeServer,
    client_update,
    make_encoder,
)

__all__ = [
    "ClientUpdate",
    "Encoder",
    "MergeReport",
    "PrototypeServer",
    "client_update",
    "make_encoder",
]
