"""The data-kind registry: a kind is one sub-package and one line here (see `model.kinds.base`)."""

from __future__ import annotations

from model.kinds.base import DataKind
from model.kinds.image.kind import ImageKind
from model.kinds.sequence.kind import SequenceKind
from model.kinds.tabular.kind import TabularKind

KINDS: dict[str, type[DataKind]] = {
    "tabular": TabularKind,
    "image": ImageKind,
    "sequence": SequenceKind,
}
