"""Output sinks: rich tables and messages on stderr/stdout, one JSON object with --json, and
the error handler that turns a LandscapeError into one line and exit code 2."""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..errors import LandscapeError

# piped or redirected output has no width to wrap to: a wide console keeps every table row and
# number on one line (rich's default of 80 columns folded numbers mid-digit)
stdout = Console() if sys.stdout.isatty() else Console(width=400)
stderr = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=400)
_doing: str | None = None  # what the command is computing (named in an out-of-memory error)


def quiet_unless_main() -> None:
    """In a torchrun job only rank 0 prints: the other ranks' consoles write to nowhere."""
    from .. import distributed

    global stdout, stderr
    if not distributed.is_main():
        devnull = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
        stdout = Console(file=devnull)
        stderr = Console(file=devnull)
        sys.stdout = devnull


def emit_json(obj: dict) -> None:
    """Exactly one JSON object on stdout (:func:`landscape.results.to_plain`)."""
    from ..results import to_plain

    sys.stdout.write(json.dumps(to_plain(obj), indent=2) + "\n")
    sys.stdout.flush()


def table(title: str, columns: Iterable[str], rows: Iterable[Iterable[str]],
          caption: str | None = None, text: bool = False) -> None:
    """A rich table; numbers are never folded, only the first (label) column, unless ``text``
    (every column is prose, left-aligned and wrapped)."""
    t = Table(title=title, caption=caption, title_justify="left")
    for i, c in enumerate(columns):
        number = i > 0 and not text
        t.add_column(c, justify="right" if number else "left",
                     overflow="ellipsis" if number else "fold", no_wrap=number)
    for r in rows:
        t.add_row(*[escape(str(x)) for x in r])
    stdout.print(t)


def written(*paths) -> None:
    """``wrote PATH`` for each file a command wrote (None: not asked for)."""
    for path in paths:
        if path is not None:
            info(f"wrote {path}")


def info(msg: str) -> None:
    """One plain line on stderr (no markup: brackets in messages print as they are)."""
    stderr.print(msg, highlight=False, markup=False)


def warn(msg: str) -> None:
    """``warning: msg`` on stderr."""
    stderr.print(f"[yellow]warning:[/] {escape(msg)}", highlight=False, soft_wrap=True)


_FIGURE_SUFFIXES = {".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff",
                    ".webp"}


def check_writable(out: Path | None = None, plot: Path | None = None,
                   folder: Path | None = None) -> None:
    """Refuse an output path that cannot be written BEFORE any computation: a file path that is a
    directory, a run directory that is a file, a folder that cannot be created or written, a
    figure format matplotlib does not write."""
    for path, what, is_folder in (
        (out, "--out", False),
        (plot, "--plot", False),
        (folder, "--out", True),
    ):
        if path is None:
            continue
        path = Path(path)
        if is_folder:
            if path.exists() and not path.is_dir():
                raise LandscapeError(f"--out {path} is a file", "pass a directory for the run")
            path = path / "run.h5"  # what will be written inside it
        elif path.is_dir():
            raise LandscapeError(f"{what} {path} is a directory", "give a file name")
        if what == "--plot" and path.suffix.lower() not in _FIGURE_SUFFIXES:
            raise LandscapeError(
                f"{what} {path}: cannot write a {path.suffix or 'suffix-less'} figure",
                "use .png, .pdf or .svg",
            )
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise LandscapeError(f"{what} {path}: the folder {folder} is not writable",
                                 "choose another path")


def products_line(report: dict) -> str:
    """One line: what the products ran with, for the table's footer."""
    pr, data = report.get("products") or {}, report.get("data") or {}
    parts = [f"products: {pr['describe']}" if pr.get("describe") else "products"]
    if "cached_graphs" in pr:
        parts.append(
            f"{pr['cached_graphs']} batch graphs cached ({_mib(pr.get('cached_bytes', 0))})"
        )
    if data:
        parts.append(("data resident on the device" if data.get("resident") else "data streamed")
                     + (f" ({data['source']})" if data.get("source") else ""))
        parts.append(f"memory budget {data.get('memory')}")
    line = "; ".join(parts)
    if data.get("precision"):
        pr_ = data["precision"]
        line += (f"\nprecision: {pr_['dtype']} products differ from float32's by "
                 f"{pr_['max_relative_difference']:.2g} (largest relative difference of "
                 f"{pr_['products']} products)")
    if data.get("attention"):
        line += ("\nattention: SDPA's math kernel for the products (its fused kernels have no "
                 "double backward)")
    for note in pr.get("notes", []):
        line += f"\nnote: {note}"
    return line


def _mib(n: int) -> str:
    from ..memory import fmt_bytes

    return fmt_bytes(n)


@contextmanager
def progress(enabled: bool = True) -> Iterator[Callable]:
    """A progress bar on stderr. Yields ``start(label, total)``; the returned ``advance(k)``
    moves it by k products (indeterminate when total is None)."""
    if not enabled or not stderr.is_terminal and not os.environ.get("LANDSCAPE_PROGRESS"):
        def quiet(label: str, total: int | None):
            global _doing
            _doing = label
            return lambda k: None

        yield quiet
        return
    cols = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn()]
    with Progress(*cols, console=stderr, transient=True) as bar:
        def start(label: str, total: int | None):
            global _doing
            _doing = label
            task = bar.add_task(label, total=total)
            return lambda k: bar.advance(task, k)

        yield start


@contextmanager
def aborted(hint: str) -> Iterator[None]:
    """A second Ctrl-C aborts at once: ``aborted; HINT`` on stderr, exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        line(f"aborted; {hint}")
        raise typer.Exit(130) from None


def line(msg: str) -> None:
    """One unwrapped line on stderr."""
    stderr.print(msg, highlight=False, soft_wrap=True)


class TrainProgress:
    """A rich progress bar on stderr with the current loss and the last tracked metric."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and (
            stderr.is_terminal or bool(os.environ.get("LANDSCAPE_PROGRESS"))
        )
        self.bar = None
        self.task = None

    def __enter__(self):
        if not self.enabled:
            return None
        self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"), console=stderr,
                            transient=True)
        self.bar.__enter__()
        return self

    def __call__(self, event: dict) -> None:
        if self.task is None:
            self.task = self.bar.add_task("train", total=event["total"],
                                          completed=event["step"] - 1, info="")
        info = f"loss {event['loss']:.4g}"
        if event.get("metric"):
            name, value = event["metric"]
            info += f"  {name} {value:.4g}"
        self.bar.update(self.task, completed=event["step"], total=event["total"], info=info)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def handle_errors(fn: Callable) -> Callable:
    """Decorator of every command: LandscapeError → ``error: … `` on one stderr line and exit 2
    (``--debug`` or LANDSCAPE_DEBUG=1 re-raises with the traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = kwargs.get("debug", False) or os.environ.get("LANDSCAPE_DEBUG") == "1"
        if not debug:  # a warning is one line, like an error
            warnings.showwarning = lambda message, category, *a, **k: warn(str(message))
        try:
            return fn(*args, **kwargs)
        except LandscapeError as e:
            if debug:
                raise
            msg = e.message if not e.hint else f"{e.message}; {e.hint}"
            from ..errors import OutOfMemory

            if isinstance(e, OutOfMemory) and _doing:
                msg = f"while computing {_doing}: {msg}; nothing was written"
            stderr.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        # an internal error: say so in one line, keep the traceback for --debug
        except Exception as e:
            if debug:
                raise
            from ..memory import is_out_of_memory

            if is_out_of_memory(e):
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                where = f" while computing {_doing}" if _doing else ""
                stderr.print(
                    f"[bold red]error:[/] out of memory{escape(where)} ({escape(first[:200])}); "
                    "nothing was written. "
                    "Set --memory below what the device has free (products then shrink to fit), or "
                    "measure fewer samples (--samples) or parameters (--params)",
                    highlight=False,
                    soft_wrap=True,
                )
                raise typer.Exit(2)
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            stderr.print(
                f"[bold red]internal error:[/] {type(e).__name__}: {first}; rerun with --debug "
                "for the traceback and report it",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1)

    return wrapper
