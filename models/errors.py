"""Errors raised by models/: one root, ``ModelError``."""

from __future__ import annotations

__all__ = ["ModelError", "NotFittedError", "ModelFitError", "ModelFormatError"]


class ModelError(Exception):
    """Root of every error raised by ``models/``."""


class NotFittedError(ModelError, AttributeError):
    """A model was used before ``fit``; the message names the class and says to call ``fit``."""

    def __init__(self, model: object) -> None:
        name = type(model).__name__
        super().__init__(f"{name} is not fitted; call fit(log) first")
        self.model_name = name


class ModelFitError(ModelError):
    """Training produced an unusable model (NaN factors, empty catalogue...)."""


class ModelFormatError(ModelError):
    """A saved model directory is missing a file, has the wrong version or wrong shapes."""
