"""Errors the ``paddle-kure`` command reports as one line (see :mod:`paddle_kure.cli`)."""
from __future__ import annotations

import contextlib

__all__ = ["UserError", "UserFileError", "DivergenceError", "reported_as_user_error"]


class UserError(Exception):
    """Something the user gave (a config, an argument, a file) cannot be used.

    The message names the file and the key first (``FILE: KEY: problem``); the
    command prints it as one line and exits with status 2, without a traceback.
    """


class UserFileError(UserError, FileNotFoundError):
    """A file or folder the user named is missing or of the wrong kind."""


class DivergenceError(ArithmeticError):
    """Training produced a NaN or infinite loss or weight.

    Attributes:
        stage: the name the training was given (a stage of ``paddle-kure run``).
        epoch, step: 1-based epoch and global step at which it was seen.
        cause: what was not finite (``"loss nan"``, ``"weight fc1.weight"``).
    """

    def __init__(self, stage: str, epoch: int, step: int, cause: str):
        super().__init__(f"{stage}: diverged at epoch {epoch}, step {step}: {cause} is not finite "
                         f"(lower the learning rate or the Kurtosis coeff)")
        self.stage, self.epoch, self.step, self.cause = stage, epoch, step, cause

    def record(self) -> dict:
        """The fields a results record keeps of the divergence."""
        return {"status": "diverged", "stage": self.stage, "epoch": self.epoch, "step": self.step,
                "cause": self.cause}


@contextlib.contextmanager
def reported_as_user_error(source: str):
    """Turns a TypeError, ValueError or YAML error raised while reading ``source``
    (a config file the user gave) into a :class:`UserError` that names it."""
    import yaml

    try:
        yield
    except UserError:
        raise
    except (TypeError, ValueError, yaml.YAMLError) as err:
        message = " ".join(str(err).split())
        raise UserError(message if source in message else f"{source}: {message}") from err
