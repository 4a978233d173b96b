"""Fleet-wide thresholds: an override file (e.g. a mounted ConfigMap) that every worker of every
replica reads, so all of them decide `is_anomaly` alike.

`VAE_ANOMALY_THRESHOLDS_FILE` names a JSON file

    {"active": "critical", "thresholds": {"warn": {"target_fpr": 0.02}, "page": {"value": 31.5}}}

applied over the artifact's thresholds: each entry sets a threshold by score value or by target
false-positive rate (computed on the artifact's calibration scores, so replicas serving the same
artifact agree), `active` picks the one behind `is_anomaly`; both parts are optional. The file is
applied when a model is activated (start-up, reload) and whenever it changes: each worker polls its
signature (inode, size, mtime) every `VAE_ANOMALY_THRESHOLDS_POLL_SECONDS`, which also catches the
kubelet's atomic symlink swap of a ConfigMap volume. A file that cannot be read or applied is logged
and the thresholds in force stay.

`PUT /thresholds/{name}` and `PUT /active-threshold` write through to the file when one is set:
read, change the entry, write a temporary file beside it and rename it over (atomic), under an
advisory lock so concurrent writers on one machine do not lose each other's changes. The response
says whether the change reached the file (every worker and replica reading it) or this worker only.
A read-only mount (a ConfigMap) answers 409: change the ConfigMap instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vae_anomaly.model.detector import Detector
from vae_anomaly.model.thresholds import THRESHOLD_NAME, ThresholdSet
from vae_anomaly.service.state import ServiceState

logger = logging.getLogger(__name__)


class ThresholdFileError(ValueError):
    """The thresholds file cannot be read, parsed, applied or written; the message says which."""


class ThresholdEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: float | None = None
    target_fpr: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_of(self) -> ThresholdEntry:
        if (self.value is None) == (self.target_fpr is None):
            raise ValueError("give exactly one of value or target_fpr")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError("value must be finite")
        return self


class ThresholdFileContent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: str | None = None
    thresholds: dict[str, ThresholdEntry] = Field(default_factory=dict)


def signature(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime ns) of the file, following symlinks; None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def read_content(path: Path) -> ThresholdFileContent:
    """The file's content; an absent file is an empty override."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return ThresholdFileContent()
    except OSError as exc:
        raise ThresholdFileError(f"{path}: cannot read the thresholds file: {exc}") from exc
    try:
        return ThresholdFileContent.model_validate(json.loads(text) if text.strip() else {})
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ThresholdFileError(f"{path}: not a valid thresholds file: {exc}") from exc


def apply_content(base: ThresholdSet, content: ThresholdFileContent, path: Path) -> ThresholdSet:
    """`base` (the artifact's thresholds) with the file's entries and active threshold."""
    updated = base
    for name, entry in content.thresholds.items():
        if not THRESHOLD_NAME.fullmatch(name):
            raise ThresholdFileError(f"{path}: threshold name {name!r} is not of the form [a-z0-9_-]{{1,64}}")
        if entry.value is not None:
            updated = updated.with_value(name, entry.value)
        else:
            assert entry.target_fpr is not None
            updated = updated.with_target(name, entry.target_fpr)
    if content.active is not None:
        if content.active not in updated.thresholds:
            known = ", ".join(sorted(updated.thresholds))
            raise ThresholdFileError(f"{path}: active threshold {content.active!r} is not defined; known: {known}")
        updated = updated.with_active(content.active)
    return updated


def apply_file(base: ThresholdSet, path: Path) -> ThresholdSet:
    return apply_content(base, read_content(path), path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An advisory lock on `<file>.lock` beside the file: one writer at a time on this machine."""
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomic(path: Path, content: ThresholdFileContent) -> None:
    data = json.dumps(content.model_dump(mode="json", exclude_none=True), indent=2, sort_keys=True) + "\n"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_through(path: Path, base: ThresholdSet, change: dict[str, Any]) -> ThresholdSet:
    """Apply one change to the file (`{"name", "value"}`, `{"name", "target_fpr"}` or
    `{"active"}`) and return the thresholds the file now gives over `base`. Raises
    `ThresholdFileError` when the file cannot be written (a read-only ConfigMap) or the change
    does not apply (an unknown active threshold)."""
    try:
        with _locked(path):
            content = read_content(path)
            if "active" in change:
                content = content.model_copy(update={"active": change["active"]})
            else:
                entry = ThresholdEntry(value=change.get("value"), target_fpr=change.get("target_fpr"))
                content = content.model_copy(update={"thresholds": {**content.thresholds, change["name"]: entry}})
            applied = apply_content(base, content, path)  # refuse before writing
            _write_atomic(path, content)
    except OSError as exc:
        raise ThresholdFileError(
            f"{path}: cannot write the thresholds file ({exc.strerror or exc}); on a read-only mount such as a "
            "ConfigMap, change the ConfigMap instead"
        ) from exc
    return applied


def artifact_thresholds(detector: Detector) -> ThresholdSet:
    """The thresholds the artifact itself gives: what the file is applied over."""
    manifest = detector.manifest
    return ThresholdSet(detector.thresholds.calibration, dict(manifest.thresholds), manifest.active_threshold)


def apply_on_activation(detector: Detector, path: Path | None) -> None:
    """Give a model about to serve the file's thresholds (start-up and reload); a bad file is
    logged and the artifact's thresholds serve."""
    if path is None:
        return
    try:
        detector.thresholds = apply_file(artifact_thresholds(detector), path)
    except ThresholdFileError as exc:
        logger.error("thresholds file not applied, the artifact's thresholds serve: %s", exc)


class ThresholdWatcher:
    """Polls the thresholds file and applies it to the serving model when it changes."""

    def __init__(self, state: ServiceState, path: Path, poll_seconds: float):
        self.state, self.path, self.poll_seconds = state, path, poll_seconds
        self.seen = signature(path)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vae-anomaly-thresholds-file")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def check(self) -> bool:
        """Apply the file if its signature changed since the last look; True when applied."""
        current = signature(self.path)
        if current == self.seen:
            return False
        self.seen = current
        with self.state.threshold_lock:
            detector, _ = self.state.loaded()
            try:
                updated = apply_file(artifact_thresholds(detector), self.path)
            except ThresholdFileError as exc:
                logger.error("thresholds file changed but not applied, the thresholds in force stay: %s", exc)
                return False
            self.state.replace_thresholds(updated)
        logger.info("thresholds file %s applied: active %s", self.path, updated.active)
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            self.check()
