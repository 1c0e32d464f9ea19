"""User-facing errors: every failure names what failed and what to do next."""
from __future__ import annotations


class SlimlineError(Exception):
    """An error meant for the user: a message plus a next action, no traceback.

    ``subject`` is the file, step or field the message is about.
    """

    def __init__(self, message: str, *, hint: str = "", subject: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.subject = subject

    def __str__(self) -> str:
        text = f"{self.subject}: {self.message}" if self.subject else self.message
        return f"{text}\n  → {self.hint}" if self.hint else text

    def to_dict(self) -> dict[str, str]:
        return {"message": self.message, "hint": self.hint, "subject": self.subject}


class ModelLoadError(SlimlineError):
    """A model file or folder could not be opened."""


class UntrustedFileError(ModelLoadError):
    """Opening the file would run pickled code; the user must trust it explicitly."""


class DataError(SlimlineError):
    """A dataset is unreadable or does not match the model's inputs."""


class PipelineError(SlimlineError):
    """A pipeline file or step is invalid."""


class StepFailed(SlimlineError):
    """A pipeline step failed while running."""


class Cancelled(Exception):
    """Raised inside a job when the user cancelled it."""
