"""Running ``landscape`` as a user does, in-process (Typer's CliRunner), and the one-line error
contract every command keeps."""

from __future__ import annotations

from typer.testing import CliRunner

from landscape.cli.app import app

runner = CliRunner()


def run(*args):
    """``landscape ARGS`` (paths and numbers as strings)."""
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(r, *words) -> None:
    """Exit code 2, one ``error:`` line on stderr containing ``words``, no traceback."""
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in r.output
