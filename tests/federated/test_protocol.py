import dataclasses
import logging
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from clflow.config import StreamConfig
from clflow.federated import Encoder, PrototypeServer, client_update
from clflow.federated.simulate import accuracy_on_seen, central_server, partition
from clflow.streams import build_stream


@pytest.fixture(scope="module")
def stream():
    return build_stream(StreamConfig(source="digits", experiences=5, seed=0))


@pytest.fixture(scope="module")
def updates(stream):
    enc = Encoder("random", stream.n_features, dim=64, seed=0)
    tr = stream.train
    ups = [
        client_update(tr.X[rows], tr.y[rows], enc, enc.hash, c, r)
        for r, clients in enumerate(partition(stream, n_clients=7, overlap=2, seed=0))
        for c, rows in clients.items()
    ]
    return enc, ups


def fresh(stream, enc):
    return PrototypeServer(enc.dim, len(stream.classes), enc.hash)


def test_partition_is_uneven_overlapping_and_complete(stream):
    rounds = partition(stream, n_clients=7, overlap=2, seed=0)
    assert len(rounds) == 5
    every = np.concatenate([rows for rd in rounds for rows in rd.values()])
    assert len(every) == len(np.unique(every)) == len(stream.train)  # disjoint rows, all of them
    for rd in rounds:
        for c in np.unique(stream.train.y[np.concatenate(list(rd.values()))]):
            holders = [k for k, rows in rd.items() if (stream.train.y[rows] == c).any()]
            assert 1 <= len(holders) <= 2
    sizes = [len(rows) for rd in rounds for rows in rd.values()]
    assert max(sizes) > 2 * min(sizes)


def test_merge_is_order_invariant(stream, updates):
    enc, ups = updates
    servers = []
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(len(ups))
        s = fresh(stream, enc)
        assert s.merge(ups[i] for i in order).accepted == len(ups)
        servers.append(s)
    for s in servers[1:]:
        assert np.array_equal(s.counts, servers[0].counts)
        assert np.allclose(s.sums, servers[0].sums, rtol=0, atol=1e-9)  # float64 rounding only
        assert np.array_equal(s.predict(enc(stream.test.X)), servers[0].predict(enc(stream.test.X)))


def test_merged_equals_central(stream, updates):
    enc, ups = updates
    merged = fresh(stream, enc)
    merged.merge(ups)
    central = central_server(stream, np.arange(len(stream.train)), enc, enc.hash, "cosine")
    assert np.abs(merged.prototypes() - central.prototypes()).max() <= 1e-5
    seen = np.arange(10)
    assert (
        abs(
            accuracy_on_seen(merged, stream, enc, seen)
            - accuracy_on_seen(central, stream, enc, seen)
        )
        <= 0.005
    )


def test_a_later_update_for_a_known_class_adds_only_new_samples(stream):
    enc = Encoder("raw", stream.n_features)
    tr = stream.train
    rows = np.flatnonzero(tr.y == 3)
    first, later = rows[:20], rows[20:50]
    s = fresh(stream, enc)
    s.merge(
        [
            client_update(tr.X[first], tr.y[first], enc, enc.hash, "a", 0),
            client_update(tr.X[later], tr.y[later], enc, enc.hash, "a", 1),
        ]
    )
    assert s.counts[3] == 50
    assert np.allclose(s.prototypes()[0], tr.X[rows[:50]].mean(0))


BAD = {
    "wrong dimension": lambda u: dataclasses.replace(u, sums=u.sums[:, :10]),
    "nan": lambda u: dataclasses.replace(
        u, sums=np.where(np.arange(u.sums.size).reshape(u.sums.shape) == 3, np.nan, u.sums)
    ),
    "inf": lambda u: dataclasses.replace(u, sums=u.sums + np.inf),
    "zero count": lambda u: dataclasses.replace(u, counts=u.counts * 0),
    "negative count": lambda u: dataclasses.replace(u, counts=-u.counts),
    "unknown encoder": lambda u: dataclasses.replace(u, encoder_hash="feedbeef"),
    "duplicate id": lambda u: u,  # the same update twice
    "class out of range": lambda u: dataclasses.replace(u, classes=u.classes + 100),
    "ragged": lambda u: dataclasses.replace(u, counts=np.concatenate([u.counts, u.counts])),
}


def test_each_bad_update_is_rejected_counted_and_the_rest_merged(stream, updates, caplog):
    enc, ups = updates
    good = ups[:6]
    bad = [
        dataclasses.replace(
            BAD[k](ups[0]), update_id=ups[0].update_id if k == "duplicate id" else f"bad-{k}"
        )
        for k in BAD
    ]
    s = fresh(stream, enc)
    with caplog.at_level(logging.WARNING, logger="clflow.federated"):
        report = s.merge(good[:3] + bad + good[3:])
    assert report.accepted == 6 and len(report.rejected) == len(BAD)
    reasons = dict(report.rejected)
    assert reasons["bad-wrong dimension"].startswith("wrong dimension")
    assert reasons["bad-nan"] == reasons["bad-inf"] == "NaN or inf in prototype sums"
    assert reasons["bad-zero count"] == reasons["bad-negative count"] == "non-positive count"
    assert reasons["bad-unknown encoder"].startswith("unknown encoder hash")
    assert reasons[ups[0].update_id] == "duplicate update id"
    assert len(caplog.records) == len(BAD)
    clean = fresh(stream, enc)
    clean.merge(good)
    assert np.array_equal(s.counts, clean.counts) and np.allclose(
        s.sums, clean.sums
    )  # nothing merged is lost


def test_encoders_are_fixed_and_hashed(stream):
    a, b = Encoder("random", 64, seed=0), Encoder("random", 64, seed=0)
    assert a.hash == b.hash != Encoder("random", 64, seed=1).hash != Encoder("raw", 64).hash
    assert np.array_equal(a(stream.test.X[:3]), b(stream.test.X[:3]))


def test_the_in_process_path_imports_no_flower_adapter():
    """The Prefect flow and its rounds run without `clflow.federated.flower` (Flower's adapter)."""
    code = (
        "import sys, clflow.federated.prefect_engine, clflow.federated.simulate; "
        "print(sorted(m for m in sys.modules if 'flower' in m or m.startswith('flwr')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
