"""`PrototypeStrategy`: a Flower strategy whose aggregation is clflow's validated prototype merge.

Flower's strategies average model weights (FedAvg and kin); none merges class prototypes or
checks an update before aggregating it (flower#2252). This one sends every connected node the
round number, decodes each reply into a `ClientUpdate`, and hands the round's updates to
`PrototypeServer.merge`, which rejects a malformed, poisoned, foreign or replayed update with a
reason and merges the rest. Runs in Flower's environment (imports flwr).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from clflow.federated.protocol import ClientUpdate, PrototypeServer

ARRAYS = ("classes", "sums", "counts")
FIELDS = ("update-id", "client", "encoder-hash", "round")


def named_arrays(**arrays: np.ndarray) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def encode_update(u: ClientUpdate) -> RecordDict:
    """A client update as a Flower message's content."""
    arrays = named_arrays(**{k: getattr(u, k) for k in ARRAYS})
    config = ConfigRecord(
        {"update-id": u.update_id, "client": u.client, "encoder-hash": u.encoder_hash,
         "round": u.round}
    )  # fmt: skip
    return RecordDict({"update": arrays, "meta": config})


def decode_update(content: RecordDict) -> ClientUpdate:
    """A reply's `ClientUpdate`; ValueError names what is missing or malformed."""
    try:
        arrays, meta = content.array_records["update"], content.config_records["meta"]
        values = {k: arrays[k].numpy() for k in ARRAYS}
        fields = {k: meta[k] for k in FIELDS}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed update: missing or unreadable {exc}") from None
    return ClientUpdate(
        str(fields["update-id"]),
        str(fields["client"]),
        int(fields["round"]),
        str(fields["encoder-hash"]),
        values["classes"],
        values["sums"],
        values["counts"],
    )


def payload_bytes(content: RecordDict) -> int:
    """Bytes of the arrays and config values a client sent (not gRPC framing)."""
    arrays = sum(len(a.data) for r in content.array_records.values() for a in r.values())
    config = sum(len(str(v)) for r in content.config_records.values() for v in r.values())
    return arrays + config


class PrototypeStrategy(Strategy):
    """Each round: every node reports its new rows' prototype sums and counts; the server merges
    the valid ones. `rounds` and `snapshots` keep what each round did and the merged state."""

    def __init__(self, server: PrototypeServer, min_nodes: int):
        self.server, self.min_nodes = server, min_nodes
        self.rounds: list[dict] = []
        self.snapshots: list[tuple[np.ndarray, np.ndarray]] = []
        self._sent = 0.0

    def summary(self) -> None:
        log(INFO, "\t├── clflow prototype merge, %d nodes", self.min_nodes)
        log(INFO, "\t└── encoder %s, %d classes", self.server.encoder_hash, self.server.n_classes)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Every node, once `min_nodes` are connected: all clients take part in every round."""
        while len(nodes := list(grid.get_node_ids())) < self.min_nodes:
            time.sleep(0.2)
        record = RecordDict({"config": ConfigRecord({"round": server_round - 1})})
        self._sent = time.perf_counter()
        return [Message(record, dst_node_id=n, message_type=MessageType.TRAIN) for n in nodes]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Decode, check and merge the round's updates in client order (as the in-process path
        does, so the float64 sums are the same to the last bit)."""
        updates, rejected, sizes, idle = [], [], {}, 0
        for msg in replies:
            node = f"node-{msg.metadata.src_node_id}"
            if msg.has_error():
                rejected.append((node, f"client error: {msg.error.reason}"))
                continue
            try:
                u = decode_update(msg.content)
            except ValueError as exc:
                rejected.append((node, str(exc)))
                continue
            sizes[u.client] = payload_bytes(msg.content)
            if len(u.classes) == 0 and len(u.counts) == 0:
                idle += 1  # no new rows this round
            else:
                updates.append(u)
        report = self.server.merge(sorted(updates, key=lambda u: (u.client, u.update_id)))
        rejected += report.rejected
        for who, reason in rejected:
            log(WARNING, "round %d: rejected %s: %s", server_round, who, reason)
        self.rounds.append(
            {
                "round": server_round - 1,
                "accepted": report.accepted,
                "idle": idle,
                "rejected": [list(r) for r in rejected],
                "seconds": time.perf_counter() - self._sent,
                "bytes": sizes,
            }
        )
        self.snapshots.append((self.server.sums.copy(), self.server.counts.copy()))
        merged = named_arrays(sums=self.server.sums, counts=self.server.counts)
        metrics = MetricRecord(
            {"accepted": report.accepted, "rejected": len(rejected), "idle": idle}
        )
        return merged, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []  # clflow scores the merged prototypes itself, on the stream's test rows

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return None
