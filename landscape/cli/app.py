"""The ``landscape`` command: one module per command, registered here."""

from __future__ import annotations

from typing import Annotated

import typer

from . import (
    batch,
    compare,
    doctor,
    escape,
    fisher,
    info,
    interpolate,
    noise,
    output,
    overlap,
    plot,
    report,
    sharpness,
    slice,
    stability,
    train,
)

app = typer.Typer(
    name="landscape",
    help="Measure the geometry of a neural network's loss landscape from its checkpoints, "
    "and train with sharpness-aware optimizers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"landscape {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Measure the geometry of a neural network's loss landscape from its checkpoints, and train
    with sharpness-aware optimizers."""


for _name, _command in [
    ("sharpness", sharpness.sharpness), ("info", info.info), ("train", train.train),
    ("fisher", fisher.fisher), ("noise", noise.noise), ("stability", stability.stability),
    ("compare", compare.compare), ("slice", slice.slice_), ("interpolate", interpolate.interpolate),
    ("plot", plot.plot), ("escape", escape.escape), ("batch", batch.batch),
    ("report", report.report), ("overlap", overlap.overlap), ("doctor", doctor.doctor),
]:
    app.command(_name)(_command)


def main() -> None:
    """Entry point. Under torchrun only rank 0 prints; each command joins the process group once
    its options are parsed, on the backend its ``--device`` calls for (:func:`.common.join`)."""
    from .. import distributed

    if distributed.launched():
        output.quiet_unless_main()
    try:
        app()
    except SystemExit as done:
        distributed.shutdown(wait=done.code in (0, None))
        raise


if __name__ == "__main__":
    main()
