"""Datasets read from local files, never downloaded: ``file`` (.npz / .h5), ``mnist``,
``fashion-mnist`` (idx files) and ``cifar10`` (the binary version).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from landscape.data.split import Split, random_split
from landscape.errors import ConfigError, LandscapeError

# ---------------------------------------------------------------- .npz / .h5 arrays


def array_file(
    *,
    path: str,
    x_key: str = "x",
    y_key: str = "y",
    x_test_key: str = "x_test",
    y_test_key: str = "y_test",
    task: Literal["classification", "regression"] | None = None,
    num_classes: int | None = None,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> Split:
    """Arrays ``x_key`` / ``y_key`` (and, if present, ``x_test_key`` / ``y_test_key``) from a
    ``.npz`` or ``.h5`` / ``.hdf5`` file.

    ``task`` defaults to classification for integer targets and regression otherwise;
    ``num_classes`` defaults to ``max(label) + 1``. Inputs become float32; class labels int64; 1-D
    regression targets become ``[N, 1]``. Without test arrays a seeded ``test_fraction`` is held
    out."""
    p = Path(path)
    if not p.is_file():
        raise LandscapeError(
            f"data file not found: {p}",
            "pass the path of a .npz or .h5 file holding arrays 'x' and 'y'",
        )
    suffix = p.suffix.lower()
    if suffix == ".npz":
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    elif suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(p, "r") as f:
            arrays = {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}
    else:
        raise ConfigError(f"unsupported data file type {p.suffix!r}: {p}", "use .npz, .h5 or .hdf5")
    for key in (x_key, y_key):
        if key not in arrays:
            raise LandscapeError(
                f"{p} has no array {key!r} (it has: {', '.join(sorted(arrays)) or 'none'})",
                "name the arrays with x_key=... and y_key=...",
            )
    y_all = [arrays[y_key]] + ([arrays[y_test_key]] if y_test_key in arrays else [])
    if task is None:
        task = "classification" if np.issubdtype(arrays[y_key].dtype, np.integer) else "regression"
    if task == "classification" and num_classes is None:
        num_classes = int(max(int(y.max()) for y in y_all if y.size) + 1)

    def pair(xk: str, yk: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(np.asarray(arrays[xk]), dtype=torch.float32)
        y = torch.as_tensor(np.asarray(arrays[yk]))
        if task == "classification":
            y = y.to(torch.int64).reshape(-1)
        else:
            y = y.to(torch.float32)
            y = y.reshape(-1, 1) if y.dim() == 1 else y.reshape(y.shape[0], -1)
        return x, y

    train = pair(x_key, y_key)
    if x_test_key in arrays and y_test_key in arrays:
        test = pair(x_test_key, y_test_key)
    else:
        train, test = random_split(train, test_fraction, torch.Generator().manual_seed(int(seed)))
    return Split(
        train, test, task, num_classes, tuple(train[0].shape[1:]), {"source": str(p.resolve())}
    )


# ---------------------------------------------------------------- idx (MNIST) and CIFAR readers

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:
        raise LandscapeError(
            f"cannot read {path}: {e}", "the file is corrupt; fetch it again"
        ) from e


def read_idx(path: str | Path) -> np.ndarray:
    """An array from an idx file (LeCun's MNIST format), gzipped or not.

    Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    int32; then the data, big-endian, row-major.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise LandscapeError(f"{path} is not an idx file (bad header)", "fetch the file again")
    ndim = raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise LandscapeError(f"{path} is truncated (incomplete idx header)", "fetch the file again")
    dims = tuple(int(d) for d in np.frombuffer(raw[4:start], dtype=">i4"))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = start + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise LandscapeError(
            f"{path} is truncated or corrupt: {len(raw)} bytes, expected {expected} "
            f"for shape {dims}",
            "fetch the file again",
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=start).reshape(dims).astype(dtype.newbyteorder("="))
    )


CIFAR_RECORD = 1 + 3 * 32 * 32


def read_cifar_bin(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 3, 32, 32]`` and labels ``uint8 [N]`` from one CIFAR-10 binary batch.

    Each record is 3073 bytes: the label, then 1024 red, 1024 green and 1024 blue pixels."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) == 0 or len(raw) % CIFAR_RECORD:
        raise LandscapeError(
            f"{path} is truncated or not a CIFAR-10 binary batch "
            f"({len(raw)} bytes is not a multiple of {CIFAR_RECORD})",
            "fetch cifar-10-binary.tar.gz again",
        )
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    return rec[:, 1:].reshape(-1, 3, 32, 32).copy(), rec[:, 0].copy()


# ---------------------------------------------------------------- image datasets

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror of yann.lecun.com/exdb/mnist)"
FASHION_URL = "https://github.com/zalando-research/fashionmnist (folder data/fashion)"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"


def _find(data_dir: Path, subdirs: tuple[str, ...], filename: str, label: str, source: str) -> Path:
    """``filename`` or ``filename.gz`` in ``data_dir`` or one of its ``subdirs``."""
    for d in (data_dir, *(data_dir / s for s in subdirs)):
        for name in (filename, filename + ".gz"):
            if (d / name).is_file():
                return d / name
    raise LandscapeError(
        f"{label} file not found: {data_dir / filename} (or {filename}.gz)",
        f"download it from {source} into {data_dir}; landscape never downloads",
    )


def _images(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    image: bool,
    standardize: bool,
    info: dict,
) -> Split:
    """uint8 images ``[N, C, H, W]`` to float32 in [0, 1] (optionally standardised per channel
    with the train mean and std), int64 labels; ``image=False`` flattens to ``[N, C*H*W]``."""
    xs = [torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0) for x, _ in (train, test)]
    if standardize:
        mean = xs[0].mean(dim=(0, 2, 3), keepdim=True)
        std = xs[0].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
        xs = [(x - mean) / std for x in xs]
    if not image:
        xs = [x.reshape(x.shape[0], -1) for x in xs]
    ys = [torch.from_numpy(np.asarray(y).astype(np.int64)) for _, y in (train, test)]
    return Split((xs[0], ys[0]), (xs[1], ys[1]), "classification", 10, tuple(xs[0].shape[1:]), info)


def _idx_dataset(
    data_dir: str, subdirs: tuple[str, ...], label: str, source: str, image: bool, standardize: bool
) -> Split:
    root = Path(data_dir)
    parts = []
    for prefix in ("train", "t10k"):
        xp = _find(root, subdirs, f"{prefix}-images-idx3-ubyte", label, source)
        yp = _find(root, subdirs, f"{prefix}-labels-idx1-ubyte", label, source)
        x, y = read_idx(xp), read_idx(yp)
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise LandscapeError(
                f"{xp} and {yp} do not match: images {x.shape}, labels {y.shape}",
                "fetch the files again",
            )
        parts.append((x[:, None, :, :], y))
    return _images(parts[0], parts[1], image, standardize, {"source": str(root.resolve())})


def mnist(*, data_dir: str = "data/mnist", image: bool = True, standardize: bool = False) -> Split:
    """MNIST from the raw idx files in ``data_dir`` (``train-images-idx3-ubyte[.gz]``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``; also
    found under ``MNIST/raw`` as torchvision stores them). 60000 train / 10000 test,
    inputs ``[N, 1, 28, 28]`` in [0, 1] (``image=False``: ``[N, 784]``)."""
    return _idx_dataset(data_dir, ("raw", "MNIST/raw"), "MNIST", MNIST_URL, image, standardize)


def fashion_mnist(
    *, data_dir: str = "data/fashion-mnist", image: bool = True, standardize: bool = False
) -> Split:
    """Fashion-MNIST from raw idx files in ``data_dir`` (same names and layout as ``mnist``)."""
    return _idx_dataset(
        data_dir, ("raw", "FashionMNIST/raw"), "Fashion-MNIST", FASHION_URL, image, standardize
    )


def cifar10(
    *, data_dir: str = "data/cifar10", image: bool = True, standardize: bool = False
) -> Split:
    """CIFAR-10, binary version: ``data_dir/cifar-10-batches-bin/data_batch_{1..5}.bin`` and
    ``test_batch.bin`` (``data_dir`` may also be that folder itself). 50000 train / 10000 test,
    inputs ``[N, 3, 32, 32]`` in [0, 1] (``image=False``: ``[N, 3072]``)."""
    root = Path(data_dir)
    batches = root if (root / "data_batch_1.bin").is_file() else root / "cifar-10-batches-bin"
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        if not (batches / name).is_file():
            raise LandscapeError(
                f"CIFAR-10 file not found: {batches / name}",
                f"download {CIFAR_URL} and extract it in {root}; landscape never downloads",
            )
    read = [read_cifar_bin(batches / name) for name in names]
    train = (np.concatenate([x for x, _ in read[:5]]), np.concatenate([y for _, y in read[:5]]))
    return _images(train, read[5], image, standardize, {"source": str(batches.resolve())})
