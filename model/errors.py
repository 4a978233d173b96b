"""The error hierarchy of the model package.

Callers (the CLI, the service) map these to exit codes and HTTP statuses; nothing here knows about
either. Every message names the thing at fault and, where it helps, what to do next.
"""

from __future__ import annotations

from dataclasses import dataclass


class ModelError(Exception):
    """Base class of every error raised on purpose by `model`."""


class ArtifactError(ModelError):
    """A model directory is missing, truncated, altered or of an unknown format."""


class SchemaError(ModelError):
    """A schema file or inferred schema is inconsistent (unknown type, duplicate names, ...)."""


@dataclass(frozen=True)
class InputIssue:
    """One problem in one place of the input.

    `loc` follows FastAPI's convention without the leading "body": e.g. ("records", 3, "amount").
    """

    loc: tuple[str | int, ...]
    msg: str
    type: str


class InputError(ModelError):
    """Input records or columns that cannot be scored. Carries every issue found (up to a cap)."""

    def __init__(self, issues: list[InputIssue]):
        self.issues = issues
        first = issues[0]
        where = " ".join(str(part) for part in first.loc)
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(f"{where}: {first.msg}{more}")


class InputTooLargeError(InputError):
    """Inputs each within their own limits that together cost too much to decode (the decoded
    pixels of one request): the service answers 413, not 422."""


class UnsupportedError(ModelError):
    """A request the loaded model cannot serve by its nature: samples from a family without a
    generative model, a picture grid of records. `field` names the request field at fault, `type`
    is a short machine-readable reason ("cannot_sample", "wrong_model_kind")."""

    def __init__(self, msg: str, field: str | None = None, type: str = "unsupported"):
        super().__init__(msg)
        self.field = field
        self.type = type
