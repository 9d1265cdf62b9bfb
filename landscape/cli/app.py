"""The ``landscape`` command: one module per command, registered here."""

from __future__ import annotations

from typing import Annotated

import typer

from . import (
    batch,
    compare,
    escape,
    fisher,
    info,
    interpolate,
    noise,
    output,
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
    ("plot", plot.plot), ("escape", escape.escape), ("batch", batch.batch), ("report", report.report),
]:
    app.command(_name)(_command)


def main() -> None:
    """Entry point; under torchrun, join the process group first (see landscape.distributed)."""
    import sys

    from .. import distributed

    if distributed.launched():
        device = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--device"), None)
        distributed.init_from_env(device)
        output.quiet_unless_main()
    try:
        app()
    except SystemExit as done:
        distributed.shutdown(wait=done.code in (0, None))
        raise


if __name__ == "__main__":
    main()
