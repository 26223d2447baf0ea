"""The merged prototypes file, `models/federated/prototypes.parquet` (this module owns its format).

One row per class the server knows: `label`, `name`, `count` (rows merged), `prototype`
(list of float32, the encoder's dimension) and `encoder_hash` (the encoder every client used).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from clflow.federated.protocol import PrototypeServer
from clflow.util.io import write_parquet


def write_prototypes(path: str | Path, server: PrototypeServer, classes: list[str]) -> None:
    """The server's merged prototypes, written atomically."""
    known = server.known
    frame = pl.DataFrame(
        {
            "label": known,
            "name": [classes[k] for k in known],
            "count": server.counts[known],
            "prototype": pl.Series("prototype", server.prototypes().astype(np.float32)).cast(
                pl.List(pl.Float32)
            ),
            "encoder_hash": [server.encoder_hash] * len(known),
        }
    )
    write_parquet(path, frame)
