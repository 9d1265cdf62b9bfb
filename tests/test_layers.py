"""The import layering of the package: data flows one way, checkpoint -> problem -> operator ->
estimator -> result -> report -> writer, and no module imports from a layer above its own
(imports inside functions count too: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import landscape

#: bottom to top; a module belongs to the longest prefix listed (README "Architecture")
LAYERS = [
    ["landscape", "landscape.errors", "landscape.schema", "landscape.lazy", "landscape.memory",
     "landscape.distributed", "landscape.factory", "landscape.io.atomic", "landscape.data.batch"],
    ["landscape.losses", "landscape.results", "landscape.io.hdf5", "landscape.io.figures",
     "landscape.io.slice_figures", "landscape.io.run_figures", "landscape.io.escape_figures"],
    ["landscape.data", "landscape.models"],
    ["landscape.curvature.functional", "landscape.curvature.layout",
     "landscape.curvature.operator"],
    ["landscape.problem"],
    ["landscape.curvature"],
    ["landscape.estimators"],
    ["landscape.metrics", "landscape.optim"],
    ["landscape.io", "landscape.io.checkpoint"],
    ["landscape.slices", "landscape.train", "landscape.escape", "landscape.doctor"],
    ["landscape.study", "landscape.io.render"],
    ["landscape.cli", "landscape.__main__"],
]
ROOT = Path(landscape.__file__).parent


def layer(module: str) -> int:
    best, rank = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), i
    assert rank is not None, f"{module} has no layer: add it to LAYERS"
    return rank


def modules() -> dict[str, Path]:
    out = {}
    for f in sorted(ROOT.rglob("*.py")):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imported(module: str, path: Path) -> set[str]:
    """The landscape modules ``module`` imports (``from pkg import name`` counts as pkg.name when
    that is a module, else as pkg)."""
    known = modules()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("landscape"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("landscape"):
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            out.update(subs or [target])
    return out


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_module_imports_from_a_layer_above(module):
    path = modules()[module]
    mine = layer(module)
    above = sorted(t for t in imported(module, path) if layer(t) > mine)
    assert not above, f"{module} (layer {mine}) imports {above} from above"


def test_the_check_sees_an_upward_import_even_inside_a_function(tmp_path):
    f = tmp_path / "probe.py"
    f.write_text("def f():\n    from ..cli import app\n    from ..curvature import functional\n")
    found = imported("landscape.data.probe", f)
    assert found == {"landscape.cli.app", "landscape.curvature.functional"}
    assert layer("landscape.cli.app") > layer("landscape.data.probe") > layer("landscape.errors")
    assert (
        layer("landscape.curvature.functional")
        < layer("landscape.problem")
        < layer("landscape.curvature.hessian")
    )


def test_the_cli_starts_without_torch_and_reports_its_version():
    import subprocess
    import sys

    code = "import sys, landscape.cli.app, landscape; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    from typer.testing import CliRunner

    from landscape.cli.app import app

    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"landscape {landscape.__version__}"


@pytest.mark.parametrize("first", ["from landscape import Problem", "import landscape.problem",
                                   "from landscape import Hessian", "import landscape.estimators",
                                   "import landscape.study", "from landscape import load"])
def test_any_entry_point_imports_first_without_a_cycle(first):
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", first], check=True, capture_output=True)
