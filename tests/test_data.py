"""Contract tests over the DATASETS registry, the file readers on synthetic files, and each
generator's defining property."""

from __future__ import annotations

import gzip
import math
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from landscape.data import DATASETS, Split, load_dataset, read_cifar_bin, read_idx
from landscape.errors import ConfigError, LandscapeError

# ---------------------------------------------------------------- synthetic files


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """An idx file: 0, 0, type code, ndim, big-endian int32 dims, big-endian data."""
    codes = {
        np.uint8: 0x08,
        np.int8: 0x09,
        np.int16: 0x0B,
        np.int32: 0x0C,
        np.float32: 0x0D,
        np.float64: 0x0E,
    }
    code = codes[array.dtype.type]
    raw = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


def make_mnist(root: Path, n_train: int = 6, n_test: int = 4, gz: bool = True) -> dict:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for name, a in arrays.items():
        write_idx(root / name, a, gz=gz)
    return arrays


def make_cifar(root: Path, per_batch: int = 2, n_test: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Batches whose pixel value encodes (sample, channel) so the layout can be checked."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    images, labels = [], []
    k = 0
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        recs = []
        for _ in range(n_test if name == "test_batch.bin" else per_batch):
            img = np.zeros((3, 32, 32), np.uint8)
            for c in range(3):
                img[c] = (10 * k + c) % 256
            img[0, 0, 1] = 255  # one marked pixel: red plane, row 0, column 1
            label = k % 10
            recs.append(bytes([label]) + img.tobytes())
            images.append(img)
            labels.append(label)
            k += 1
        (folder / name).write_bytes(b"".join(recs))
    return np.stack(images), np.array(labels)


# one line per registry member: options (may use tmp_path) -> a small Split
EXAMPLES = {
    "digits": lambda tmp: {"test_fraction": 0.2},
    "gaussian-mixture": lambda tmp: {"n": 60, "dim": 4, "classes": 3, "n_test": 30},
    "teacher-student": lambda tmp: {"n": 40, "dim": 5, "width": 8, "out_dim": 2, "n_test": 10},
    "parity": lambda tmp: {"dim": 4},
    "file": lambda tmp: {"path": str(_npz(tmp))},
    "mnist": lambda tmp: {"data_dir": str(_mnist_dir(tmp))},
    "fashion-mnist": lambda tmp: {"data_dir": str(_mnist_dir(tmp))},
    "cifar10": lambda tmp: {"data_dir": str(_cifar_dir(tmp))},
}


def _npz(tmp: Path) -> Path:
    rng = np.random.default_rng(1)
    path = tmp / "arrays.npz"
    np.savez(
        path,
        x=rng.normal(size=(20, 3)),
        y=rng.integers(0, 4, 20),
        x_test=rng.normal(size=(5, 3)),
        y_test=rng.integers(0, 4, 5),
    )
    return path


def _mnist_dir(tmp: Path) -> Path:
    make_mnist(tmp / "idx")
    return tmp / "idx"


def _cifar_dir(tmp: Path) -> Path:
    make_cifar(tmp / "cifar")
    return tmp / "cifar"


def test_every_dataset_has_an_example():
    assert set(EXAMPLES) == set(DATASETS)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_dataset_contract(name, tmp_path):
    options = EXAMPLES[name](tmp_path)
    split = load_dataset(name, **options)
    assert isinstance(split, Split)
    for x, y in [split.train] + ([split.test] if split.test is not None else []):
        assert x.dtype == torch.float32
        assert tuple(x.shape[1:]) == split.input_shape
        assert x.shape[0] == y.shape[0] > 0
        if split.task == "classification":
            assert y.dtype == torch.int64 and y.dim() == 1
            assert 0 <= int(y.min()) and int(y.max()) < split.num_classes == split.output_dim
        else:
            assert y.dtype == torch.float32 and y.dim() == 2 and y.shape[1] == split.output_dim
    assert split.info["name"] == name and split.info["kwargs"] == options
    # the info record reloads exactly the same tensors
    again = load_dataset(split.info["name"], **split.info["kwargs"])
    assert torch.equal(again.train[0], split.train[0]) and torch.equal(
        again.train[1], split.train[1]
    )
    record = split.record()
    assert record["n_train"] == split.n_train and len(record["fingerprint"]) == 16
    # a seeded subset of the training set
    k = max(1, split.n_train // 2)
    sub = load_dataset(name, **options, n_train=k)
    assert sub.n_train == k
    rows = {tuple(r.tolist()) for r in split.train[0].reshape(split.n_train, -1)}
    assert all(tuple(r.tolist()) in rows for r in sub.train[0].reshape(k, -1))


# ---------------------------------------------------------------- digits


def _rows(x: torch.Tensor) -> list[tuple]:
    return sorted(tuple(r) for r in x.reshape(x.shape[0], -1).tolist())


def test_digits_is_the_sklearn_set_split_disjointly():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    full = load_dataset("digits", test_fraction=0.0)
    assert full.train[0].shape == (1797, 64) and full.test is None
    assert full.num_classes == 10 and set(full.train[1].tolist()) == set(range(10))
    assert float(full.train[0].min()) == 0.0 and float(full.train[0].max()) == 1.0
    np.testing.assert_array_equal(full.train[0].numpy(), (X / 16.0).astype(np.float32))
    np.testing.assert_array_equal(full.train[1].numpy(), y)

    split = load_dataset("digits", seed=5)
    assert (split.n_train, split.n_test) == (1797 - 359, 359)  # round(0.2 * 1797) = 359
    # train and test partition the labelled samples: multiset of (x, y) rows is preserved
    both = torch.cat(
        [
            torch.cat([split.train[0], split.train[1][:, None].float()], 1),
            torch.cat([split.test[0], split.test[1][:, None].float()], 1),
        ]
    )
    ref = torch.cat([full.train[0], full.train[1][:, None].float()], 1)
    assert _rows(both) == _rows(ref)
    assert torch.equal(load_dataset("digits", seed=5).test[0], split.test[0])
    assert not torch.equal(load_dataset("digits", seed=6).test[0], split.test[0])
    image = load_dataset("digits", image=True, seed=5)
    assert image.input_shape == (1, 8, 8)
    assert torch.equal(image.train[0].reshape(-1, 64), split.train[0])


# ---------------------------------------------------------------- generators


def test_gaussian_mixture_is_balanced_with_means_at_the_separation():
    n, dim, classes, sep = 3000, 5, 3, 4.0
    split = load_dataset("gaussian-mixture", n=n, dim=dim, classes=classes, separation=sep)
    x, y = split.train
    counts = torch.bincount(y, minlength=classes)
    assert counts.tolist() == [n // classes] * classes
    n_c = n // classes
    for c in range(classes):
        mean = x[y == c].mean(0)
        # ||mean_hat - mu|| ~ sqrt(dim / n_c); allow 5 standard deviations
        assert abs(float(mean.norm()) - sep) < 5 * math.sqrt(dim / n_c)
        # within-class covariance is the identity: per-coordinate variance 1 +- 5 stderr
        var = x[y == c].var(0)
        assert torch.all((var - 1).abs() < 5 * math.sqrt(2 / n_c))


def test_linear_teacher_is_fit_exactly_by_a_linear_student():
    split = load_dataset("teacher-student", n=200, dim=8, out_dim=3, teacher="linear")
    x, y = (t.double() for t in split.train)
    sol = torch.linalg.lstsq(x, y)
    residual = (x @ sol.solution - y).norm() / y.norm()
    assert residual < 1e-6  # float32 data: rounding only


def test_teacher_noise_has_the_requested_variance():
    n, dim, noise = 4000, 6, 0.3
    split = load_dataset("teacher-student", n=n, dim=dim, teacher="linear", noise=noise)
    x, y = (t.double() for t in split.train)
    r = x @ torch.linalg.lstsq(x, y).solution - y
    s2 = float(r.square().sum()) / (n - dim)  # unbiased noise variance estimate
    assert abs(s2 - noise**2) < 5 * noise**2 * math.sqrt(2 / (n - dim))


def test_two_layer_teacher_is_nonlinear_and_seeded():
    split = load_dataset("teacher-student", n=500, dim=4, width=16, seed=2)
    x, y = (t.double() for t in split.train)
    residual = (x @ torch.linalg.lstsq(x, y).solution - y).norm() / y.norm()
    assert residual > 0.1  # a linear student cannot fit a ReLU teacher
    again = load_dataset("teacher-student", n=500, dim=4, width=16, seed=2)
    assert torch.equal(again.train[1], split.train[1])
    other = load_dataset("teacher-student", n=500, dim=4, width=16, seed=3)
    assert not torch.equal(other.train[1], split.train[1])


def test_parity_enumerates_all_points_with_correct_labels():
    split = load_dataset("parity", dim=5)
    x, y = split.train
    assert x.shape == (32, 5) and y.shape == (32, 1)
    assert len({tuple(r) for r in x.tolist()}) == 32
    assert torch.equal(y[:, 0], x[:, 0] * x[:, 1])
    three = load_dataset("parity", dim=5, k=3)
    assert torch.equal(three.train[1][:, 0], x[:, 0] * x[:, 1] * x[:, 2])
    sampled = load_dataset("parity", dim=30, n=100, n_test=20, seed=1)
    xs, ys = sampled.train
    assert set(xs.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(ys[:, 0], xs[:, 0] * xs[:, 1]) and sampled.n_test == 20
    with pytest.raises(ConfigError):
        load_dataset("parity", dim=30)


# ---------------------------------------------------------------- files


def test_npz_and_h5_files(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 2, 3)), rng.normal(size=30)
    np.savez(tmp_path / "r.npz", inputs=x, targets=y)
    split = load_dataset(
        "file", path=str(tmp_path / "r.npz"), x_key="inputs", y_key="targets", test_fraction=0.2
    )
    assert split.task == "regression" and split.input_shape == (2, 3)
    assert (split.n_train, split.n_test) == (24, 6) and split.train[1].shape == (24, 1)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["x"] = x
        f["y"] = np.arange(30) % 3
        f["x_test"] = x[:4]
        f["y_test"] = np.array([0, 1, 2, 0])
    c = load_dataset("file", path=str(tmp_path / "c.h5"))
    assert c.task == "classification" and c.num_classes == 3 and c.n_test == 4
    np.testing.assert_allclose(c.train[0].numpy(), x.astype(np.float32))
    with pytest.raises(LandscapeError, match="has no array 'x'.*inputs, targets"):
        load_dataset("file", path=str(tmp_path / "r.npz"))
    with pytest.raises(LandscapeError, match="data file not found: .*nope.npz"):
        load_dataset("file", path=str(tmp_path / "nope.npz"))


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32, np.float64])
def test_idx_reader_round_trip(tmp_path, gz, dtype):
    a = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4)
    a = (a % 256 if dtype == np.uint8 else a * 1.5 if dtype != np.int32 else a).astype(dtype)
    path = write_idx(tmp_path / "a-idx3", a, gz=gz)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_idx_reader_rejects_truncated_and_foreign_files(tmp_path):
    path = write_idx(tmp_path / "a", np.zeros((3, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(LandscapeError, match="truncated"):
        read_idx(path)
    (tmp_path / "t").write_text("hello there")
    with pytest.raises(LandscapeError, match="not an idx file"):
        read_idx(tmp_path / "t")


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_reader_on_synthetic_files(tmp_path, layout):
    root = tmp_path / "m"
    arrays = make_mnist(root / "MNIST" / "raw" if layout == "torchvision" else root, gz=True)
    split = load_dataset("mnist", data_dir=str(root))
    assert split.input_shape == (1, 28, 28) and (split.n_train, split.n_test) == (6, 4)
    expected = arrays["train-images-idx3-ubyte"].astype(np.float32) / 255.0
    np.testing.assert_array_equal(split.train[0][:, 0].numpy(), expected)
    np.testing.assert_array_equal(split.test[1].numpy(), arrays["t10k-labels-idx1-ubyte"])
    flat = load_dataset("mnist", data_dir=str(root), image=False)
    assert flat.train[0].shape == (6, 784)
    std = load_dataset("mnist", data_dir=str(root), standardize=True)
    assert abs(float(std.train[0].mean())) < 1e-5 and abs(float(std.train[0].std()) - 1) < 1e-3


def test_mnist_missing_file_names_it(tmp_path):
    with pytest.raises(LandscapeError) as e:
        load_dataset("mnist", data_dir=str(tmp_path))
    assert str(tmp_path / "train-images-idx3-ubyte") in e.value.message
    assert "never downloads" in e.value.hint
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(LandscapeError, match="t10k-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path))


def test_cifar_reader_layout(tmp_path):
    images, labels = make_cifar(tmp_path)
    x, y = read_cifar_bin(tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin")
    np.testing.assert_array_equal(x, images[2:4])
    np.testing.assert_array_equal(y, labels[2:4])
    split = load_dataset("cifar10", data_dir=str(tmp_path))
    assert (split.n_train, split.n_test) == (10, 3) and split.input_shape == (3, 32, 32)
    x0 = split.train[0][1]
    assert float(x0[0, 0, 1]) == 1.0  # the marked red pixel
    assert float(x0[1, 5, 5]) == pytest.approx(11 / 255) and float(x0[2, 5, 5]) == pytest.approx(
        12 / 255
    )
    np.testing.assert_array_equal(split.test[1].numpy(), labels[10:])
    # data_dir may be the batches folder itself; image=False flattens
    flat = load_dataset("cifar10", data_dir=str(tmp_path / "cifar-10-batches-bin"), image=False)
    assert flat.train[0].shape == (10, 3072)


def test_cifar_missing_and_truncated_files(tmp_path):
    with pytest.raises(LandscapeError) as e:
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert str(tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin") in e.value.message
    assert "cifar-10-binary.tar.gz" in e.value.hint
    make_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    batch.write_bytes(batch.read_bytes()[:-7])
    with pytest.raises(LandscapeError, match="truncated"):
        load_dataset("cifar10", data_dir=str(tmp_path))


# ---------------------------------------------------------------- options and errors


def test_subsets_are_seeded_and_limit_caps_both_parts():
    a = load_dataset("digits", n_train=100, seed=1)
    b = load_dataset("digits", n_train=100, seed=1)
    assert a.n_train == 100 and torch.equal(a.train[0], b.train[0])
    assert a.n_test == 359  # n_train leaves the test split alone
    c = load_dataset("digits", limit=50)
    assert (c.n_train, c.n_test) == (50, 50)
    with pytest.raises(ConfigError, match="exceeds"):
        load_dataset("digits", n_train=5000)


def test_unknown_dataset_and_option():
    with pytest.raises(ConfigError) as e:
        load_dataset("imagenet")
    assert all(name in str(e.value) for name in DATASETS)
    with pytest.raises(ConfigError, match="no option 'dims'"):
        load_dataset("parity", dims=3)
    with pytest.raises(ConfigError, match="test_fraction"):
        load_dataset("digits", test_fraction=1.5)


@pytest.mark.parametrize("kind", ["tuple", "numpy", "tensor-dataset", "dataset", "loader", "dict"])
def test_user_data_factories(tmp_path, kind):
    f = tmp_path / "mydata.py"
    f.write_text(
        textwrap.dedent("""
        import numpy as np, torch
        from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
        X = torch.arange(24, dtype=torch.float32).reshape(12, 2)
        Y = torch.arange(12) % 3
        class Items(Dataset):
            def __len__(self): return 12
            def __getitem__(self, i): return X[i], int(Y[i])
        def make(kind):
            if kind == "tuple": return X, Y
            if kind == "numpy": return X.numpy(), Y.numpy()
            if kind == "tensor-dataset": return TensorDataset(X, Y)
            if kind == "dataset": return Items()
            if kind == "loader": return DataLoader(TensorDataset(X, Y), batch_size=5)
            return {"train": (X[:8], Y[:8]), "test": Subset(Items(), range(8, 12))}
    """)
    )
    from landscape.data.source import DataSource
    from landscape.data.split import to_tensors

    split = load_dataset(f"{f}:make", kind=kind)
    streamed = kind in ("dataset", "loader")  # read batch by batch when measured, never held whole
    assert isinstance(split.train, DataSource) == streamed
    assert split.task == "classification" and split.output_dim == 3 and split.num_classes == 3
    parts = [to_tensors(p) for p in (split.train, split.test) if p is not None]
    x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    assert torch.equal(x, torch.arange(24, dtype=torch.float32).reshape(12, 2))
    assert torch.equal(y, torch.arange(12) % 3) and y.dtype == torch.int64
    assert split.n_train == (8 if kind == "dict" else 12)


def test_for_loss_one_hot_encodes_classes_for_mse_only():
    split = load_dataset("digits")
    same = split.for_loss("cross-entropy")
    assert same is split
    hot = split.for_loss("mse")
    assert hot.task == "classification" and hot.train[1].shape == (split.n_train, 10)
    assert torch.equal(hot.train[1].argmax(1), split.train[1])
    assert hot.test is None or torch.equal(hot.test[1].argmax(1), split.test[1])
    assert hot.train[1].dtype == split.train[0].dtype
