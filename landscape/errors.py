"""User-facing errors: one line naming the problem, one hint naming the fix.

The CLI prints ``LandscapeError`` as ``error: <message> (<hint>)`` and exits with code 2;
``--debug`` re-raises it with its traceback.
"""

from __future__ import annotations


class LandscapeError(Exception):
    """A failure the user can fix: ``message`` says what is wrong, ``hint`` how to fix it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


def first_line(e: BaseException, limit: int = 200) -> str:
    """``"Type: first line of the message"``, cut at a word boundary within ``limit`` characters
    (with "…"): how an error from elsewhere is quoted in one line."""
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    if len(text) > limit:
        cut = text[:limit].rsplit(" ", 1)[0]
        text = (cut if len(cut) > limit // 2 else text[:limit]) + " …"
    return text


class CheckpointError(LandscapeError):
    """A checkpoint file that is missing, unreadable, corrupt or does not fit its model."""


class ConfigError(LandscapeError):
    """An unknown name (metric, model, dataset, optimizer) or a bad option value."""


class NumericalError(LandscapeError):
    """A NaN or infinite loss, or a quantity undefined for this model and loss."""


class OutOfMemory(LandscapeError):
    """Memory ran out even at the smallest product (one sample, one vector), or could not be
    shrunk (a data-parallel run): nothing was written."""
