import numpy as np
import pytest

from clflow.retrieval import BankConfig, BankError, DemoBank, recall_at_k


def clustered(n=6000, d=32, k=60, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32) * 3
    labels = rng.integers(0, k, n)
    return (centres[labels] + rng.normal(size=(n, d)).astype(np.float32)), labels


@pytest.fixture(scope="module")
def data():
    return clustered()


def recall_at(bank, flat, Q, k=10):
    return recall_at_k(bank.search(Q, k)[1], flat.search(Q, k)[1])


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_save_load_round_trip_returns_identical_neighbours(tmp_path, data, kind, metric):
    X, y = data
    bank = DemoBank(32, BankConfig(index=kind, metric=metric))
    bank.add(X, y, {"experience": np.arange(len(X)) // 1000})
    bank.save(tmp_path / "bank")
    again = DemoBank.load(tmp_path / "bank")
    s1, i1, l1 = bank.search(X[:100], 10)
    s2, i2, l2 = again.search(X[:100], 10)
    assert np.array_equal(i1, i2) and np.array_equal(l1, l2) and np.allclose(s1, s2)
    assert again.meta["experience"].to_list() == bank.meta["experience"].to_list()
    # its memory: at least every vector in float32, and each row's id, label and experience
    assert bank.nbytes >= len(X) * (32 * 4 + 3 * 8) and again.nbytes == bank.nbytes


@pytest.mark.parametrize("kind,floor", [("ivf", 0.9), ("hnsw", 0.95)])
def test_approximate_recall_against_flat(data, kind, floor):
    X, y = data
    flat = DemoBank(32, BankConfig(index="flat"))
    flat.add(X, y)
    approx = DemoBank(32, BankConfig(index=kind, nprobe=16))
    approx.add(X, y)
    Q, _ = clustered(200, seed=1)
    assert recall_at(approx, flat, Q) >= floor


def test_appending_keeps_old_ids(data):
    X, y = data
    bank = DemoBank(32, BankConfig(flat_max=2000, retrain_factor=2.0))
    ids1 = bank.add(X[:1500], y[:1500])
    assert bank.kind == "flat"
    ids2 = bank.add(X[1500:2500], y[1500:2500])  # crosses flat_max: rebuilt as IVF
    assert bank.kind == "ivf" and bank.trained_at == 2500
    bank.add(X[2500:4000], y[2500:4000])  # 4000 <= 2 x 2500: appended, no retrain
    assert bank.trained_at == 2500
    bank.add(X[4000:], y[4000:])  # 6000 > 5000: coarse quantiser retrained
    assert bank.trained_at == 6000
    assert ids1.tolist() == list(range(1500)) and ids2[0] == 1500
    _, ids, labels = bank.search(X[[0, 1600, 5999]], 1)
    assert (
        ids[:, 0].tolist() == [0, 1600, 5999]
        and labels[:, 0].tolist() == y[[0, 1600, 5999]].tolist()
    )


def test_dimension_mismatch(data):
    bank = DemoBank(32)
    with pytest.raises(BankError, match="dimension 32, got shape \\(3, 16\\)"):
        bank.add(np.zeros((3, 16)), np.zeros(3))
    bank.add(data[0][:10], data[1][:10])
    with pytest.raises(BankError, match="field 'queries'.*dimension 32"):
        bank.search(np.zeros((2, 8)), 3)


def test_nan_queries(data):
    bank = DemoBank(32)
    bank.add(data[0][:10], data[1][:10])
    Q = np.zeros((4, 32), np.float32)
    Q[2, 5] = np.nan
    with pytest.raises(BankError, match="NaN or inf in queries \\(first at row 2\\)"):
        bank.search(Q, 3)


def test_empty_bank():
    with pytest.raises(BankError, match="bank is empty"):
        DemoBank(8).search(np.zeros((1, 8)), 1)


def test_label_count_checked():
    with pytest.raises(BankError, match="3 labels for 2 embeddings"):
        DemoBank(4).add(np.zeros((2, 4)), np.zeros(3))


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_index_file_is_a_clear_error(tmp_path, data, damage):
    bank = DemoBank(32, BankConfig(index="ivf"))
    bank.add(*data)
    bank.save(tmp_path / "b")
    path = tmp_path / "b" / "index.faiss"
    path.write_bytes(path.read_bytes()[:500] if damage == "truncate" else b"\x00garbage" * 50)
    with pytest.raises(BankError) as err:
        DemoBank.load(tmp_path / "b")
    assert err.value.line() == f"{path}: truncated or corrupt FAISS index"


def test_not_a_bank(tmp_path):
    with pytest.raises(BankError, match="bank.json missing"):
        DemoBank.load(tmp_path)


def test_fewer_demonstrations_than_k(data):
    bank = DemoBank(32)
    bank.add(data[0][:3], data[1][:3])
    _, ids, labels = bank.search(data[0][:1], 5)
    assert (ids[0, 3:] == -1).all() and (labels[0, 3:] == -1).all()
