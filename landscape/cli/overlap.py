"""``landscape overlap``: how much two checkpoints' top-k Hessian eigenspaces agree (principal
angles and the overlap matrix of eigenvectors saved by ``landscape sharpness -m eig --out``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import output
from .options import DebugOpt, JsonOpt, PlotOpt

H5 = Annotated[Path, typer.Argument(help="Result file of landscape sharpness -m eig --out.",
                                    show_default=False)]


@output.handle_errors
def overlap(a: H5, b: H5, plot: PlotOpt = None, json_: JsonOpt = False,
            debug: DebugOpt = False) -> None:
    """Principal angles and eigenvector overlaps of two stored Hessian eigenspaces."""
    from ..io.eigenvectors import compare, read_eigenspace

    output.check_writable(None, plot)
    ea, eb = read_eigenspace(a), read_eigenspace(b)
    o = compare(ea, eb)
    report = {"a": str(a), "b": str(b), "checkpoint_a": ea.source, "checkpoint_b": eb.source,
              "values_a": ea.values.tolist(), "values_b": eb.values.tolist(), **o.to_dict()}
    if plot is not None:
        from ..io.figures import overlap_figure, save

        save(overlap_figure(o.matrix, o.cosines, (a.stem, b.stem)), plot)
    if json_:
        output.emit_json(report)
        return
    rows = [(f"principal angle {i + 1}", f"{d:.4g}°", f"cos {c:.6f}")
            for i, (c, d) in enumerate(zip(o.cosines.tolist(), o.angles_deg.tolist()))]
    rows.append(("overlap (mean cos²)", f"{o.overlap:.6f}", "1: same span, 0: orthogonal"))
    output.table(f"Eigenspaces of {a} and {b}", ["quantity", "value", "note"], rows)
    output.info(f"λ of {a.name}: {', '.join(f'{v:.5g}' for v in ea.values.tolist())}; "
                f"of {b.name}: {', '.join(f'{v:.5g}' for v in eb.values.tolist())}")
    output.written(plot)
