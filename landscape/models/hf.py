"""Hugging Face models from a local directory (``hf:DIR``): the config and the weights that
``save_pretrained`` wrote, loaded with ``transformers`` (the optional extra ``.[hf]``), never from
the network."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ..errors import CheckpointError, ConfigError

PREFIX = "hf:"
_CAUSAL = ("ForCausalLM", "LMHeadModel")


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ConfigError("hf: models need the transformers package, which is not installed",
                          'pip install -e ".[hf]" (or pip install transformers)') from e
    return transformers


def architecture(directory: str | os.PathLike) -> str | None:
    """The model class the directory's config names (``GPT2LMHeadModel``, ...), if any."""
    config = _config(directory)
    return (getattr(config, "architectures", None) or [None])[0]


def default_loss(directory: str | os.PathLike) -> str | None:
    """``causal-lm`` for a causal language model's directory; None when the config does not
    say (the data then decide)."""
    arch = architecture(directory)
    return "causal-lm" if arch and arch.endswith(_CAUSAL) else None


def _config(directory: str | os.PathLike):
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"hf: directory not found: {path}",
                              "pass hf:DIR with the folder that save_pretrained wrote")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} has no config.json, so it is not a Hugging Face model "
                              "directory", "pass the folder that save_pretrained wrote")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return _transformers().AutoConfig.from_pretrained(path, local_files_only=True)


def load_pretrained(directory: str | os.PathLike) -> nn.Module:
    """The model of the directory, in the class its config names (else the causal-LM auto
    class), in eval mode, from local files only."""
    transformers = _transformers()
    transformers.utils.logging.disable_progress_bar()
    config = _config(directory)
    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    cls = cls or transformers.AutoModelForCausalLM
    try:
        model = cls.from_pretrained(Path(directory).expanduser(), local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot load the Hugging Face model in {directory}: "
                              f"{str(e).splitlines()[0]}",
                              "check that the directory holds the weights (model.safetensors)"
                              ) from e
    return model.eval()
