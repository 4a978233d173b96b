"""The data-kind registry: a kind is one sub-package and one line here (see `model.kinds.base`)."""

from __future__ import annotations

from vae_anomaly.model.kinds.base import DataKind
from vae_anomaly.model.kinds.image.kind import ImageKind
from vae_anomaly.model.kinds.sequence.kind import SequenceKind
from vae_anomaly.model.kinds.tabular.kind import TabularKind

KINDS: dict[str, type[DataKind]] = {
    "tabular": TabularKind,
    "image": ImageKind,
    "sequence": SequenceKind,
}
