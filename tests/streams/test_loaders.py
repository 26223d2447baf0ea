import gzip
import os
import pickle

import numpy as np
import pytest

from clflow.config import StreamConfig
from clflow.errors import StreamError
from clflow.streams import build_stream, loaders
from clflow.streams.loaders import load_cifar10, load_idx_dataset, read_idx


def write_idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_dir(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return tmp_path


def test_mnist_idx_in_torchvision_layout(mnist_dir):
    data = load_idx_dataset(mnist_dir, fashion=False)
    assert data.X_train.shape == (60, 784) and data.X_test.shape == (20, 784)
    assert 1.0 < data.X_train.max() <= 255.0 and data.shape == (1, 28, 28)  # raw pixel counts
    s = build_stream(StreamConfig(source="mnist", path=str(mnist_dir), experiences=5))
    assert s.n_experiences == 5 and s.n_features == 784


@pytest.fixture
def debian_fashion(tmp_path, monkeypatch):
    """A small Fashion-MNIST in the layout of Debian's dataset-fashion-mnist: four gzipped idx
    files in one flat directory, which `stream.path: ""` finds."""
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 50), ("t10k", 20)):
        for kind, arr in (
            ("images-idx3", rng.integers(0, 256, (n, 28, 28))),
            ("labels-idx1", np.arange(n) % 10),
        ):
            plain = tmp_path / f"{prefix}-{kind}-ubyte"
            write_idx(plain, arr)
            (tmp_path / f"{plain.name}.gz").write_bytes(gzip.compress(plain.read_bytes()))
            plain.unlink()
    monkeypatch.setattr(loaders, "FASHION_MNIST_DEBIAN", tmp_path)
    return tmp_path


def test_fashion_mnist_found_where_debian_installs_it(debian_fashion):
    cfg = StreamConfig(source="fashion_mnist", experiences=5)  # stream.path ""
    data = load_idx_dataset(cfg.path, fashion=True)
    assert data.X_train.shape == (50, 784) and data.X_test.shape == (20, 784)
    assert data.classes[0] == "T-shirt/top" and data.shape == (1, 28, 28)
    s = build_stream(cfg)
    assert s.n_experiences == 5 and s.classes[9] == "Ankle boot"


def test_fashion_mnist_absent_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(loaders, "FASHION_MNIST_DEBIAN", tmp_path / "none")
    with pytest.raises(StreamError, match="apt-get install dataset-fashion-mnist") as err:
        load_idx_dataset("", fashion=True)
    assert err.value.field == "stream.path" and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="set stream.path"):  # other file sources still need it
        StreamConfig(source="mnist")


def test_truncated_idx(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    write_idx(p, np.zeros((3, 4, 4)))
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(StreamError, match="truncated"):
        read_idx(p)


def test_missing_dir_never_downloads(tmp_path):
    with pytest.raises(StreamError, match="never downloads"):
        load_idx_dataset(tmp_path / "absent", fashion=True)
    with pytest.raises(StreamError, match="not found.*never downloads"):
        load_idx_dataset(tmp_path, fashion=False)


def test_cifar_pickles(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        X = rng.integers(0, 256, (10, 3072)).astype(np.uint8)
        batch = {b"data": X, b"labels": list(range(10))}
        # as the published files are: protocol 2, numpy 1's module name
        (base / name).write_bytes(
            pickle.dumps(batch, protocol=2).replace(b"numpy._core.", b"numpy.core.")
        )
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    data = load_cifar10(tmp_path)
    assert (
        data.X_train.shape == (50, 3072) and data.classes[3] == "c3" and data.shape == (3, 32, 32)
    )


class RunsCode:
    """What a crafted pickle does: call a function of the attacker's choice when loaded."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    (base / "data_batch_1").write_bytes(pickle.dumps({b"data": RunsCode(), b"labels": [0]}))
    with pytest.raises(StreamError) as err:
        load_cifar10(tmp_path)
    assert not (tmp_path / "pwned").exists()
    line = err.value.line()
    assert "data_batch_1" in line and "refers to posix.system" in line and "\n" not in line
    (base / "data_batch_1").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(StreamError, match="a list, not a dict"):
        load_cifar10(tmp_path)
