"""The federated Prefect flow on the thread pool and on a real Dask LocalCluster through
prefect-dask."""

from __future__ import annotations

import numpy as np
import pytest

from clflow.config import StreamConfig
from clflow.streams import build_stream

pytestmark = pytest.mark.slow


def test_dask_gives_the_same_prototypes_as_the_thread_pool(prefect_api):
    import clflow.federated.prefect_engine as fed

    stream = build_stream(StreamConfig(source="digits", experiences=3, seed=0))
    runs = {}
    for runner, group in (
        ("thread", 1),
        ("dask", 3),
    ):  # grouping clients per task changes nothing either
        runs[runner] = fed.federated.with_options(task_runner=fed.task_runner(runner))(
            stream, n_clients=4, overlap=2, group_size=group
        )
    a, b = runs["thread"]["server"], runs["dask"]["server"]
    assert np.array_equal(a.counts, b.counts) and np.allclose(a.sums, b.sums, rtol=0, atol=1e-9)
    assert runs["thread"]["history"] == runs["dask"]["history"]
    assert runs["thread"]["history"][-1]["max_prototype_diff"] <= 1e-5
