"""The ``landscape`` command: one module per command, registered here."""

from __future__ import annotations

import typer

from . import info, output, sharpness

app = typer.Typer(
    name="landscape",
    help="Measure the geometry of a neural network's loss landscape from its checkpoints, "
    "and train with sharpness-aware optimizers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("sharpness")(sharpness.sharpness)
app.command("info")(info.info)


def _register_optional() -> None:
    """Commands whose modules exist (added issue by issue)."""
    import importlib

    for name, attr in [("train", "train"), ("fisher", "fisher"), ("noise", "noise"), ("stability", "stability"),
                       ("compare", "compare"), ("slice", "slice_"), ("interpolate", "interpolate"),
                       ("plot", "plot"), ("escape", "escape"), ("batch", "batch"), ("report", "report")]:
        try:
            mod = importlib.import_module(f"landscape.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"landscape.cli.{name}":
                raise
            continue
        app.command(name)(getattr(mod, attr))


_register_optional()


def main() -> None:
    """Entry point; under torchrun, join the process group first (see landscape.distributed)."""
    import sys

    from .. import distributed

    if distributed.launched():
        device = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--device"), None)
        distributed.init_from_env(device)
        output.quiet_unless_main()
    app()


if __name__ == "__main__":
    main()
