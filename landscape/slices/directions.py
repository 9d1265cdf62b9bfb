"""Directions of a loss-surface slice, as flat ``[p, k]`` blocks (k = 1 or 2).

Li et al. 2018, "Visualizing the loss landscape of neural nets" (docs/algorithms.md §4):

- random Gaussian directions with *filter normalisation* (their Sec. 4): each filter ``d_f`` of a
  weight tensor (an output unit's row of a linear layer, an output channel of a convolution) is
  rescaled to ``d_f ← d_f ‖θ_f‖ / ‖d_f‖``; bias and normalisation parameters (``dim ≤ 1``) get 0
  unless asked for. ``norm="layer"`` rescales each parameter tensor as a whole, ``"none"`` not at
  all;
- the top Hessian eigenvectors (unit norm, so the slice's curvature at 0 is the eigenvalue);
- the principal components of a training trajectory (their Sec. 7): PCA of ``θ_t − θ_final``
  over the run's checkpoints, with the trajectory projected onto the plane; with several runs of
  one model and data (``runs/sgd,runs/sam``), of all their checkpoints together, so that every
  optimizer's path lies on one plane;
- the plane through a checkpoint and one or two other checkpoints (``d_i = θ_i − θ``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..curvature.layout import ParamLayout
from ..errors import CheckpointError, ConfigError
from ..problem import Problem
from ..schema import names

Norm = Literal["filter", "layer", "none"]
Kind = Literal["random", "eigen", "pca", "checkpoints"]
NORMS = ("filter", "layer", "none")
KINDS = ("random", "eigen", "pca", "checkpoints")


@dataclass
class Directions:
    """A slice's directions: ``vectors [p, k]`` through the origin ``theta [p]``.

    ``trajectory [T, k]`` holds coordinates of points drawn on the slice (a run's checkpoints for
    PCA, the other checkpoints for ``checkpoints``) with ``labels`` naming them; ``info`` holds
    plain values describing how the directions were made (seed, eigenvalues, ...)."""

    kind: str
    vectors: torch.Tensor
    theta: torch.Tensor
    norm: str = "none"
    include_bias_bn: bool = False
    info: dict = field(default_factory=dict)
    trajectory: torch.Tensor | None = None
    labels: list[str] = field(default_factory=list)

    @property
    def dims(self) -> int:
        return int(self.vectors.shape[1])

    def describe(self) -> dict:
        """Plain values (without the vectors) for reports and HDF5 attributes."""
        out = {"kind": self.kind, "dims": self.dims, "norm": self.norm,
               "include_bias_bn": self.include_bias_bn,
               "norms": [float(v) for v in self.vectors.double().norm(dim=0)]}
        out.update(self.info)
        if self.trajectory is not None:
            out["trajectory"] = self.trajectory.double().tolist()
            out["trajectory_labels"] = list(self.labels)
        return out


# ----------------------------------------------------------------------------- normalisation
def normalize(d: torch.Tensor, theta: torch.Tensor, layout: ParamLayout, norm: Norm = "filter",
              include_bias_bn: bool = False) -> torch.Tensor:
    """Rescale the flat direction ``d`` against the parameters ``theta`` (Li et al. 2018, Sec. 4).

    ``filter``: every filter (row ``i`` of a ``dim ≥ 2`` tensor reshaped to ``[out, -1]``) gets
    ``d_f ‖θ_f‖ / ‖d_f‖``; ``layer``: every tensor ``d_W ‖θ_W‖ / ‖d_W‖``; ``none``: unchanged.
    Parameters with ``dim ≤ 1`` (biases, BatchNorm/LayerNorm scales and shifts) are set to 0 unless
    ``include_bias_bn``; then each is normalised as one filter (``d_b ‖θ_b‖ / ‖d_b‖``)."""
    if norm not in NORMS:
        raise ConfigError(f"unknown --norm {norm!r}", f"choose one of {', '.join(NORMS)}")
    dd, th = layout.unflatten(d.clone()), layout.unflatten(theta)
    for name in layout.names:
        di, ti = dd[name], th[name]
        if ti.dim() <= 1:
            if not include_bias_bn:
                di.zero_()
            elif norm != "none":
                di.mul_(ti.norm() / di.norm().clamp_min(torch.finfo(di.dtype).tiny))
            continue
        if norm == "filter":
            rows, trows = di.reshape(di.shape[0], -1), ti.reshape(ti.shape[0], -1)
            scale = trows.norm(dim=1) / rows.norm(dim=1).clamp_min(torch.finfo(di.dtype).tiny)
            rows.mul_(scale[:, None])
        elif norm == "layer":
            di.mul_(ti.norm() / di.norm().clamp_min(torch.finfo(di.dtype).tiny))
    return layout.flatten(dd)


def random_directions(theta: torch.Tensor, layout: ParamLayout, k: int = 1, *, seed: int = 0,
                      norm: Norm = "filter", include_bias_bn: bool = False) -> torch.Tensor:
    """``[p, k]`` Gaussian directions, each normalised by :func:`normalize`.

    Drawn in float64 on the CPU from ``torch.Generator().manual_seed(seed)`` (one seed, the same
    directions on every device and dtype), then cast to ``theta``'s dtype and device."""
    g = torch.Generator().manual_seed(int(seed))
    th = theta.detach().double().cpu()
    cols = [normalize(torch.randn(layout.p, generator=g, dtype=torch.float64), th, layout, norm,
                      include_bias_bn) for _ in range(k)]
    return torch.stack(cols, dim=1).to(dtype=theta.dtype, device=theta.device)


# ----------------------------------------------------------------------------- eigenvectors
def eigen_directions(problem: Problem, k: int = 1, *, tol: float = 1e-6, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` top Hessian eigenvectors ``[p, k]`` (unit norm) and their eigenvalues ``[k]``.

    Lanczos on :class:`~landscape.curvature.Hessian` (``landscape.estimators.top_eigenvalues``).
    Along a unit eigenvector ``v``, ``L(θ + αv) = L(θ) + α gᵀv + ½ λ α² + O(α³)``.
    """
    from ..curvature.hessian import Hessian
    from ..estimators import top_eigenvalues

    eig = top_eigenvalues(Hessian(problem), k=k, which="top", tol=tol, seed=seed,
                          return_vectors=True)
    V = eig.vectors.to(dtype=problem.dtype, device=problem.device)
    return V / V.norm(dim=0, keepdim=True), eig.values.double()


# ----------------------------------------------------------------------------- checkpoints
def theta_from_state(state_dict: dict[str, torch.Tensor], layout: ParamLayout, *,
                     like: torch.Tensor,
                     where: str = "checkpoint") -> torch.Tensor:
    """The flat ``[p]`` vector of ``layout``'s parameters read from a ``state_dict``.

    A missing name or a different shape raises CheckpointError: the architectures differ."""
    missing = [n for n in layout.names if n not in state_dict]
    shapes = [
        f"{n} {list(state_dict[n].shape)} vs {list(s)}"
        for n, s in zip(layout.names, layout.shapes)
        if n in state_dict and tuple(state_dict[n].shape) != tuple(s)
    ]
    if missing or shapes:
        parts = ([f"missing {', '.join(missing[:3])}"] if missing else []) + \
                ([f"shapes differ: {', '.join(shapes[:3])}"] if shapes else [])
        raise CheckpointError(
            f"the architectures differ: {where} does not fit the model ({'; '.join(parts)})",
            "use checkpoints of the same model (same layers and widths)",
        )
    return torch.cat([state_dict[n].reshape(-1) for n in layout.names]).to(
        dtype=like.dtype, device=like.device
    )


def checkpoint_directions(theta: torch.Tensor, others: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[p, k]`` with columns ``θ_i − θ``: the line (k = 1) or plane (k = 2) through the
    checkpoints; each other checkpoint sits at coordinate 1 of its own axis."""
    cols = [o.to(theta) - theta for o in others]
    for i, c in enumerate(cols):
        if float(c.norm()) == 0.0:
            raise ConfigError(f"checkpoint {i + 1} of --toward equals the origin checkpoint",
                              "pass a different checkpoint")
    return torch.stack(cols, dim=1)


# ----------------------------------------------------------------------------- PCA of a run
_STEP = re.compile(r"step-(\d+)\.pt$")


def run_checkpoints(run: str | Path) -> list[Path]:
    """A run directory's checkpoints sorted by step (``step-XXXXXX.pt``), then ``final.pt``."""
    run = Path(run)
    if not run.is_dir():
        raise ConfigError(
            f"--trajectory {run} is not a run directory",
            "pass the --out directory of landscape train (holding step-XXXXXX.pt files)",
        )
    steps = sorted((int(m.group(1)),
                    p) for p in run.glob("step-*.pt") if (m := _STEP.search(p.name)))
    files = [p for _, p in steps] + ([run / "final.pt"] if (run / "final.pt").is_file() else [])
    if len(files) < 2:
        raise ConfigError(f"{run} holds {len(files)} checkpoint(s); PCA needs at least 2",
                          "train with --checkpoint-every so the run saves its trajectory")
    return files


def pca_directions(theta: torch.Tensor, snapshots: torch.Tensor, k: int = 2
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Principal directions of a trajectory around its end point (Li et al. 2018, Sec. 7).

    ``M = [θ_0 − θ, …, θ_{T−1} − θ]`` (``snapshots [T, p]``), centred over t; its top ``k`` right
    singular vectors are orthonormal directions ``[p, k]``. Returns them, the trajectory's
    coordinates ``(θ_t − θ)ᵀ d_i`` (``[T, k]``: exact, since the directions are orthonormal and the
    plane passes through θ) and the fraction of the variance each direction explains."""
    M = (snapshots.to(theta) - theta).double()
    if M.shape[0] < 2:
        raise ConfigError("PCA needs at least 2 checkpoints", "train with --checkpoint-every")
    C = M - M.mean(dim=0, keepdim=True)
    _, S, Vh = torch.linalg.svd(C, full_matrices=False)
    if Vh.shape[0] < k or float(S[k - 1]) <= 1e-12 * float(S[0].clamp_min(1e-300)):
        raise ConfigError(f"the trajectory spans fewer than {k} directions",
                          "use --dims 1, or a run with more distinct checkpoints")
    D = Vh[:k].T.contiguous()
    # a deterministic sign: the first checkpoint has negative coordinates (starts left/below)
    coords = M @ D
    sign = torch.where(coords[0] > 0, -1.0, 1.0).to(D)
    D, coords = D * sign, coords * sign
    explained = (S[:k] ** 2 / (S**2).sum()).double()
    return D.to(theta), coords, explained


def split_runs(trajectory: str | Path) -> list[Path]:
    """``"runs/sgd,runs/sam"`` -> the run directories (one or more, comma-separated)."""
    return [Path(p) for p in names(str(trajectory))]


def runs_trajectory(runs: Sequence[str | Path], layout: ParamLayout, like: torch.Tensor
                    ) -> tuple[torch.Tensor, list[str], list[dict]]:
    """The checkpoints of one or more runs of the same model and data, stacked ``[T, p]`` in
    run order, their labels, and each run's ``{"name", "start", "count"}`` rows of the stack.
    Runs of another model, widths or data set are refused in one line."""
    from ..io.checkpoint import Checkpoint

    snaps, labels, segments, first = [], [], [], None
    for run in runs:
        files = run_checkpoints(run)
        ckpt = Checkpoint.load(files[-1])
        what = (ckpt.model, ckpt.data)
        if first is None:
            first = (run, what)
        elif what != first[1]:
            raise ConfigError(f"trajectories of different models or data: {first[0]} and {run} "
                              f"differ in {_difference(first[1], what)}",
                              "compare runs of one model on one data set")
        segments.append({"name": Path(run).name or str(run), "start": len(labels),
                         "count": len(files)})
        snaps += [_load_theta(f, layout, like) for f in files]
        labels += [f.stem if len(runs) == 1 else f"{Path(run).name}/{f.stem}" for f in files]
    return torch.stack(snaps), labels, segments


def _difference(a: tuple[dict, dict], b: tuple[dict, dict]) -> str:
    """The first of model, its options, data, its options where two ``(model, data)`` records
    differ, as ``"model option widths: [16] against [8]"``."""
    for what, x, y in (("model", a[0], b[0]), ("data", a[1], b[1])):
        if x.get("name") != y.get("name"):
            return f"{what}: {x.get('name')} against {y.get('name')}"
        xk, yk = x.get("kwargs") or {}, y.get("kwargs") or {}
        for key in sorted(set(xk) | set(yk)):
            if xk.get(key) != yk.get(key):
                return f"{what} option {key}: {xk.get(key)} against {yk.get(key)}"
    return "their records"


# ----------------------------------------------------------------------------- dispatcher
def _load_theta(path: str | Path, layout: ParamLayout, like: torch.Tensor) -> torch.Tensor:
    from ..io.checkpoint import Checkpoint

    ckpt = Checkpoint.load(path)
    return theta_from_state(ckpt.state_dict, layout, like=like, where=str(path))


def make_directions(
    kind: Kind,
    problem: Problem,
    dims: int = 1,
    *,
    seed: int = 0,
    norm: Norm | None = None,
    include_bias_bn: bool = False,
    trajectory: str | Path | Sequence[str | Path] | None = None,
    toward: Sequence[str | Path] | None = None,
    tol: float = 1e-6,
) -> Directions:
    """The ``dims`` directions of ``kind`` through the problem's parameters θ.

    ``random``: :func:`random_directions` (``norm`` default ``filter``); ``eigen``: the top ``dims``
    Hessian eigenvectors; ``pca``: principal directions of ``trajectory`` (a run directory, or a
    list of checkpoint files in training order); ``checkpoints``: ``θ_i − θ`` for the ``dims``
    checkpoint files of ``toward``. ``norm`` applies to ``random`` only.
    """
    if dims not in (1, 2):
        raise ConfigError(f"--dims must be 1 or 2, got {dims}", "pass --dims 1 or --dims 2")
    if kind not in KINDS:
        raise ConfigError(f"unknown --directions {kind!r}", f"choose one of {', '.join(KINDS)}")
    if norm is not None and kind != "random":
        raise ConfigError(f"--norm/--filter-norm applies to random directions, not {kind}",
                          "drop --norm: eigenvectors and principal directions are unit vectors and "
                          "checkpoint directions are differences of checkpoints")
    if kind != "pca" and trajectory is not None:
        raise ConfigError("--trajectory is for --directions pca", "add --directions pca")
    if kind != "checkpoints" and toward:
        raise ConfigError("--toward is for --directions checkpoints",
                          "add --directions checkpoints")
    theta = problem.theta.detach()
    if kind == "random":
        norm = norm or "filter"
        V = random_directions(theta, problem.layout, dims, seed=seed, norm=norm,
                              include_bias_bn=include_bias_bn)
        return Directions("random", V, theta, norm, include_bias_bn, {"seed": seed})
    if kind == "eigen":
        V, values = eigen_directions(problem, dims, tol=tol, seed=seed)
        return Directions("eigen", V, theta, "none", True, {"eigenvalues": values.tolist(),
                                                            "tol": tol, "seed": seed})
    if kind == "checkpoints":
        toward = list(toward or [])
        if len(toward) != dims:
            raise ConfigError(f"--directions checkpoints with --dims {dims} needs {dims} --toward "
                              f"checkpoint(s), got {len(toward)}",
                              "pass --toward B.pt (and --toward C.pt for 2-D)")
        others = [_load_theta(p, problem.layout, theta) for p in toward]
        V = checkpoint_directions(theta, others)
        traj = torch.eye(dims, dtype=torch.float64)
        return Directions("checkpoints", V, theta, "none", True,
                          {"toward": [str(p) for p in toward]},
                          torch.cat([torch.zeros(1, dims, dtype=torch.float64), traj]),
                          ["origin"] + [Path(p).stem for p in toward])
    # pca
    if trajectory is None:
        raise ConfigError("--directions pca needs --trajectory RUN",
                          "pass the run directory of landscape train")
    if isinstance(trajectory, (str, Path)):  # one run, or several: "runs/sgd,runs/sam"
        snaps, labels, segments = runs_trajectory(split_runs(trajectory), problem.layout, theta)
    else:
        files = [Path(p) for p in trajectory]
        snaps = torch.stack([_load_theta(p, problem.layout, theta) for p in files])
        labels, segments = [p.stem for p in files], [{"name": "trajectory", "start": 0,
                                                      "count": len(files)}]
    V, coords, explained = pca_directions(theta, snaps, dims)
    return Directions("pca", V, theta, "none", True,
                      {"explained_variance": explained.tolist(),
                       "run": str(trajectory) if isinstance(trajectory, (str, Path)) else None,
                       "checkpoints": len(labels), "runs": segments}, coords, labels)
