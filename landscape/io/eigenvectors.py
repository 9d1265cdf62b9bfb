"""Hessian eigenvectors kept in a result file (``landscape sharpness --metric eig --out s.h5``)
and read back (``landscape overlap a.h5 b.h5``).

The group ``eigenvectors`` holds ``vectors [p, k]`` (Ritz vectors, unit columns, in the order of
``values``), ``values`` and ``residuals`` (``‖Hx − θx‖``, which bounds each value's error), and
as attributes the parameter layout of the rows: ``names``, ``shapes`` (JSON) and ``offsets``, so
that column ``i`` reshapes into the checkpoint's tensors (:meth:`Eigenspace.tensors`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class Eigenspace:
    """Eigenvectors ``vectors [p, k]`` with their ``values`` and ``residuals``, the parameter
    ``names`` and ``shapes`` of their rows, ``which`` end of the spectrum, and the ``source``
    (the checkpoint they were computed at)."""

    vectors: torch.Tensor
    values: torch.Tensor
    residuals: torch.Tensor
    names: list[str]
    shapes: list[list[int]]
    which: str
    source: str

    @property
    def layout(self) -> list[tuple[str, list[int]]]:
        return list(zip(self.names, self.shapes))

    def tensors(self, i: int) -> dict[str, torch.Tensor]:
        """Eigenvector ``i`` as the checkpoint's tensors, by parameter name."""
        out, start = {}, 0
        for name, shape in self.layout:
            size = int(np.prod(shape, dtype=np.int64))
            out[name] = self.vectors[start:start + size, i].reshape(shape)
            start += size
        return out


def eigenspace_tree(eig, layout) -> dict:
    """The ``eigenvectors`` group of an :class:`~landscape.results.Eigen` with vectors, whose
    rows follow the :class:`~landscape.curvature.layout.ParamLayout` ``layout``."""
    return {"vectors": eig.vectors.detach().cpu(), "values": eig.values, "residuals": eig.residuals,
            "which": eig.which, "method": eig.method, "names": json.dumps(list(layout.names)),
            "shapes": json.dumps([list(s) for s in layout.shapes]),
            "offsets": json.dumps(list(layout.offsets))}


def read_eigenspace(path: str | Path) -> Eigenspace:
    """The eigenvectors stored in ``path`` (a ConfigError naming the file when it has none)."""
    from .hdf5 import opened

    with opened(path, "pass a file written by landscape sharpness --out") as f:
        if "eigenvectors" not in f:
            raise ConfigError(f"{path} holds no eigenvectors",
                              "write them with landscape sharpness CKPT --metric eig --top-k K "
                              "--out FILE.h5")
        g = f["eigenvectors"]
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
        return Eigenspace(torch.from_numpy(g["vectors"][()]), torch.from_numpy(g["values"][()]),
                          torch.from_numpy(g["residuals"][()]), json.loads(attrs["names"]),
                          json.loads(attrs["shapes"]), str(attrs.get("which", "top")),
                          str(f.attrs.get("checkpoint", path)))


def compare(a: Eigenspace, b: Eigenspace):
    """The principal angles and overlaps (:func:`landscape.estimators.subspace.overlap`) of two
    stored eigenspaces; a ConfigError when their parameter layouts differ."""
    from ..estimators.subspace import overlap

    if a.layout != b.layout:
        diff = next(((x, y) for x, y in zip(a.layout, b.layout) if x != y), None)
        where = (f"{diff[0][0]} {diff[0][1]} against {diff[1][0]} {diff[1][1]}" if diff
                 else f"{len(a.names)} against {len(b.names)} parameter tensors")
        raise ConfigError(f"the eigenvectors of {a.source} and {b.source} live in different "
                          f"parameter layouts ({where})",
                          "compare checkpoints of one model, measured with the same --params")
    return overlap(a.vectors, b.vectors)


__all__ = ["Eigenspace", "compare", "eigenspace_tree", "read_eigenspace"]
