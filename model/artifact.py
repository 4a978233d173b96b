"""The model artifact: `manifest.json` (everything but the weights) and `weights.safetensors`.

Nothing is ever unpickled. Saving writes into a temporary directory beside the target and renames
it into place, so a failed save leaves the previous artifact (or nothing) behind. Loading reads
regular files only, the manifest up to `MAX_MANIFEST_BYTES` (a FIFO or a link to /dev/zero cannot
hang or exhaust the loader), parses it as strict JSON (no NaN or Infinity), checks its own sha256
(`manifest_sha256`, over the canonical manifest without that field), the format version, every field
(every number finite, the active threshold one of the thresholds), then the weights' sha256 and the
tensor shapes in the safetensors header against the manifest's network before torch allocates a byte.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import shutil
import stat
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, model_validator
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vae_anomaly.model import __version__
from vae_anomaly.model.errors import ArtifactError
from vae_anomaly.model.families import FAMILIES
from vae_anomaly.model.families.base import FamilyConfig
from vae_anomaly.model.kinds import KINDS
from vae_anomaly.model.scoring import ScoringConfig
from vae_anomaly.model.thresholds import Threshold

FORMAT_VERSION: Literal[2] = 2
"""2: `kind_config` and `family_config` sections (the two axes of `model.kinds` and
`model.families`) replaced the top-level schema / image / network fields of version 1."""
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
"""Largest manifest read (a million calibration scores take ~20 MB): a bigger file is refused
before it is read, so a manifest that points at an endless file cannot exhaust memory."""

logger = logging.getLogger(__name__)


class Manifest(BaseModel):
    """Describes a trained model completely, apart from its weights.

    `kind` and `family` name registered entries of `model.kinds.KINDS` and `model.families.FAMILIES`;
    `kind_config` and `family_config` are validated against the models those entries register
    (a tabular kind's schema and preprocessing, an image kind's geometry; the family's latent size
    and options), so no field here is specific to one kind or family.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: Literal[2] = FORMAT_VERSION
    kind: str
    family: str
    model_id: str
    version: str
    created_at: str
    library_versions: dict[str, str]
    kind_config: SerializeAsAny[BaseModel]
    family_config: SerializeAsAny[FamilyConfig]
    scoring: ScoringConfig
    thresholds: dict[str, Threshold] = Field(min_length=1)
    active_threshold: str
    calibration_scores: list[float] = Field(min_length=1)
    training: dict[str, Any]
    weights_sha256: str
    manifest_sha256: str | None = Field(
        default=None,
        description="sha256 of the canonical manifest without this field (`manifest_digest`); absent in "
        "artifacts saved before it existed, which load without the check",
    )

    @model_validator(mode="before")
    @classmethod
    def _sections_of_registered_models(cls, data: Any) -> Any:
        """Validate each section with the model its kind or family registers."""
        if not isinstance(data, dict):
            return data
        kind, family = data.get("kind"), data.get("family")
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(family, str) or family not in FAMILIES:  # the registry's `in` does not narrow for mypy
            raise ValueError(f"family {family!r} is not one of {', '.join(FAMILIES)}")
        data = dict(data)
        for field, model in (
            ("kind_config", KINDS[kind].config_model),
            ("family_config", FAMILIES[family].config_model),
        ):
            section = data.get(field)
            if section is None:
                raise ValueError(f"'{field}' is missing")
            if isinstance(section, BaseModel):
                section = section.model_dump(by_alias=True)
            data[field] = model.model_validate(section)
        return data

    @model_validator(mode="after")
    def _score_method_of_the_family(self) -> Manifest:
        methods = FAMILIES[self.family].score_methods
        if self.scoring.method not in methods:
            raise ValueError(
                f"score method {self.scoring.method!r} is not offered by family {self.family!r} ({', '.join(methods)})"
            )
        return self

    @model_validator(mode="after")
    def _active_threshold_exists(self) -> Manifest:
        if self.active_threshold not in self.thresholds:
            raise ValueError(
                f"active_threshold {self.active_threshold!r} is not one of the thresholds "
                f"({', '.join(self.thresholds)})"
            )
        return self

    @model_validator(mode="after")
    def _every_number_finite(self) -> Manifest:
        """A NaN threshold never flags anything (`score > NaN` is false) and a NaN statistic poisons
        every score: no number anywhere in the manifest may be NaN or infinite."""
        where = _first_non_finite(self.model_dump(), ())
        if where is not None:
            path, value = where
            raise ValueError(f"{'.'.join(str(part) for part in path)} is {value}: every number must be finite")
        return self


def _first_non_finite(value: Any, path: tuple[str | int, ...]) -> tuple[tuple[str | int, ...], float] | None:
    """The location and value of the first NaN or infinity inside nested dicts and lists."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _first_non_finite(item, (*path, key))
        if found is not None:
            return found
    return None


def manifest_digest(raw: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a manifest (sorted keys, no spaces, strict numbers),
    `manifest_sha256` itself left out: what `manifest_sha256` must equal."""
    content = {key: value for key, value in raw.items() if key != "manifest_sha256"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_manifest(directory: Path, raw: dict[str, Any]) -> None:
    """Write `raw` as `directory/manifest.json` with a fresh `manifest_sha256`. Saving uses it; so
    can an operator who edits a manifest on purpose (any other edit is refused at load)."""
    sealed = {**raw, "manifest_sha256": manifest_digest(raw)}
    (Path(directory) / MANIFEST).write_text(json.dumps(sealed, indent=1, allow_nan=False))


def library_versions() -> dict[str, str]:
    return {
        "vae_anomaly": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_artifact(directory: Path, manifest_fields: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Manifest:
    """Write weights and manifest atomically into `directory`; returns the manifest written.

    `manifest_fields` holds every `Manifest` field except `model_id`, `weights_sha256` and
    `library_versions`, which are derived here. An existing directory is replaced.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        weights = staging / WEIGHTS
        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(weights))
        sha = _sha256(weights)
        manifest = Manifest.model_validate(
            {**manifest_fields, "model_id": sha[:12], "weights_sha256": sha, "library_versions": library_versions()}
        )
        raw = manifest.model_dump(mode="json", by_alias=True, exclude={"manifest_sha256"})
        write_manifest(staging, raw)
        manifest = manifest.model_copy(update={"manifest_sha256": manifest_digest(raw)})
        _publish_permissions(staging)
        if directory.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
            try:
                os.replace(directory, retired / directory.name)
            except BaseException:
                retired.rmdir()
                raise
            try:
                os.replace(staging, directory)
            except BaseException:
                os.replace(retired / directory.name, directory)  # put the previous artifact back
                retired.rmdir()
                raise
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _publish_permissions(directory: Path) -> None:
    """mkdtemp makes a 0700 directory: give the artifact the modes a plain mkdir would (umask), so
    a server running as another user (a container's non-root user) can read it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for path in directory.iterdir():
        os.chmod(path, 0o666 & ~umask)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number (every number must be finite)")


def _open_regular(path: Path, missing: str, irregular: str = "") -> tuple[int, os.stat_result]:
    """A read-only descriptor of `path` and its stat, once it is a regular file; else `ArtifactError`
    (`missing` ends the message for an absent file, `irregular` the one for a directory, FIFO or device).

    Opened without blocking and checked on the open descriptor (no race with a swap in between): a
    FIFO would block the open until a writer comes, a character device such as /dev/zero never ends.
    The caller closes the descriptor.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: missing; {missing}") from exc
    except PermissionError as exc:
        raise ArtifactError(f"{path}: permission denied; the server's user must be able to read it") from exc
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot be opened ({exc.strerror or exc})") from exc
    try:
        info = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise ArtifactError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ArtifactError(f"{path}: not a regular file (a directory, FIFO or device){irregular}")
    return fd, info


def read_regular_file(path: Path, limit: int | None, what: str) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes; else `ArtifactError`."""
    fd, info = _open_regular(path, what, f"; {what}")
    try:
        if limit is not None and info.st_size > limit:
            raise ArtifactError(f"{path}: {info.st_size} bytes exceed the limit of {limit} bytes")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1 if limit is not None else -1)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)
    if limit is not None and len(data) > limit:
        raise ArtifactError(f"{path}: more than {limit} bytes (it grew while being read)")
    return data


def _model_directory(directory: Path) -> Path:
    directory = Path(directory)
    try:
        found = directory.is_dir()
    except OSError as exc:  # e.g. a path longer than the system allows
        raise ArtifactError(f"{directory}: not a usable model directory ({exc.strerror or exc})") from exc
    if not found:
        raise ArtifactError(f"{directory}: model directory not found; train one with `vae-anomaly train`")
    return directory


def read_manifest(directory: Path) -> Manifest:
    """Read and validate `manifest.json`; raises `ArtifactError` naming the file and the problem."""
    directory = _model_directory(directory)
    path = directory / MANIFEST
    data = read_regular_file(path, MAX_MANIFEST_BYTES, f"is {directory} a model directory?")
    try:
        raw = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON (truncated or altered?): {exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {version!r} is not supported by this release (reads {FORMAT_VERSION}); "
            "retrain the model or upgrade vae-anomaly"
            + (
                " (version 1 predates the kind/family layout: retrain it with `vae-anomaly train`)"
                if version == 1
                else ""
            )
        )
    _check_manifest_digest(path, raw)
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(f"{path}: invalid manifest: {exc}") from exc


def _check_manifest_digest(path: Path, raw: dict[str, Any]) -> None:
    recorded = raw.get("manifest_sha256")
    if recorded is None:
        logger.warning("%s: no manifest_sha256 (saved by an older release); its content is not checked", path)
        return
    where = _first_non_finite(raw, ())  # an overflowing number such as 1e999 parses as infinity
    if where is not None:
        location, value = where
        raise ArtifactError(
            f"{path}: invalid manifest: {'.'.join(str(part) for part in location)} is {value}: "
            "every number must be finite"
        )
    actual = manifest_digest(raw)
    if actual != recorded:
        raise ArtifactError(
            f"{path}: sha256 {actual[:12]}… does not match its manifest_sha256 {str(recorded)[:12]}… "
            "(altered after it was saved; re-save a deliberate edit with model.artifact.write_manifest)"
        )


def weight_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape, from the safetensors header alone (no tensor is read)."""
    weights = Path(directory) / WEIGHTS
    try:
        with safe_open(str(weights), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights}: unreadable safetensors file: {exc}") from exc


def check_weights_file(directory: Path, manifest: Manifest) -> Path:
    """The weights path once it is a regular file whose sha256 is the manifest's."""
    weights = Path(directory) / WEIGHTS
    fd, _ = _open_regular(weights, "the model directory is incomplete")
    os.close(fd)
    try:
        sha = _sha256(weights)
    except OSError as exc:
        raise ArtifactError(f"{weights}: cannot be read ({exc.strerror or exc})") from exc
    if sha != manifest.weights_sha256:
        raise ArtifactError(
            f"{weights}: sha256 {sha[:12]}… does not match the manifest's {manifest.weights_sha256[:12]}… "
            "(truncated, altered, or from another model)"
        )
    return weights


def load_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Load the (already checked) weights; every value must be finite."""
    weights = Path(directory) / WEIGHTS
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights}: unreadable safetensors file: {exc}") from exc
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ArtifactError(f"{weights}: tensor {name!r} holds NaN or infinite values; the weights are unusable")
    return tensors


def load_artifact(directory: Path) -> tuple[Manifest, dict[str, torch.Tensor]]:
    """Read the manifest, verify the weights' checksum, then load them with safetensors."""
    manifest = read_manifest(directory)
    check_weights_file(directory, manifest)
    return manifest, load_weights(directory)
