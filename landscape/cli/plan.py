"""``--plan``: print what a measurement will cost (see :mod:`landscape.metrics.plan`) and stop."""

from __future__ import annotations

from ..memory import fmt_bytes
from . import output
from .common import header


def show(ckpt, problem, names: list[str], settings, *, json_: bool) -> None:
    from ..metrics.plan import estimate

    est = estimate(problem, names, settings)
    report = {**header(ckpt, problem), "plan": est}
    if json_:
        output.emit_json(report)
        return
    rows = []
    for name, r in est["metrics"].items():
        secs = "-" if r["seconds"] is None else _duration(r["seconds"])
        rows.append((name, str(r["products"]), r["how"], str(r["passes"]), secs,
                     fmt_bytes(r["memory_bytes"])))
    cal = est["calibration"]
    output.table(f"Plan for {ckpt.path}", ["metric", "products", "count", "passes over the data",
                                           "time",
                                           "estimator memory"], rows)
    output.info(f"p = {est['p']}, n = {est['n']}, {est['dtype']} on {est['device']}; "
                f"{output.products_line({'products': est['products'], 'data': est['data']})}")
    output.info(
        f"one timed batch: {cal['seconds_per_sample_vector'] * 1e3:.3g} ms per sample and vector, "
        f"{cal['setup_seconds_per_sample'] * 1e3:.3g} ms per sample to build a batch's graph "
        f"({fmt_bytes(cal['graph_bytes_per_sample'])} per sample; "
        f"{100 * cal['graphs_cached_fraction']:.0f}% of the graphs fit the cache"
        + (
            ""
            if cal["wide_passes_cache"]
            else f", kept by passes of fewer than {cal['wide_width']} vectors only"
        )
        + ")"
    )
    output.info(
        f"expected: about {_duration(est['seconds'])} and a peak of {est['peak']} beyond the "
        "model and data"
    )


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
