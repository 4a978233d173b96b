"""Reading image data sets: MNIST-style IDX files, `.npz` with X (n, H, W) or (n, C, H, W), and
folders of PNG/JPEG files (sub-folders as labels). Also tells an image data set from a table.

Images come back as they are stored (uint8 or float) with their labels; `model.kinds.image.images` conforms
them to a model's geometry, the same code that conforms images sent to the service.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vae_anomaly.model.kinds.image.images import image_to_array, resize, to_channels
from vae_anomaly.training.data import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IDX_TYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class ImageSet:
    """Images (N, C, H, W) as uint8 0..255 or float32 0..1, and their labels (N,) or None."""

    pixels: np.ndarray
    labels: np.ndarray | None
    names: list[str] | None = None  # a folder's files, relative to it (what `score` reports as `file`)

    def __len__(self) -> int:
        return len(self.pixels)

    def rows(self, part: slice) -> ImageSet:
        """The images in `part` (see `training.data.holdout_rows`), with their labels and names."""
        return ImageSet(
            self.pixels[part],
            None if self.labels is None else self.labels[part],
            None if self.names is None else self.names[part],
        )


def is_image_source(path: Path) -> bool:
    """A folder, an IDX file, or an .npz whose X has 3 or 4 dimensions."""
    path = Path(path)
    if path.is_dir():
        return True
    name = path.name.lower()
    if name.endswith((".idx", ".idx.gz")) or "-idx" in name or name.endswith("-ubyte") or name.endswith("-ubyte.gz"):
        return True
    if path.suffix.lower() == ".npz" and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return "X" in data and data["X"].ndim in (3, 4)
        except (OSError, ValueError):
            return False
    return False


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped), the format of MNIST: magic 0x0000 TT DD, DD big-endian
    uint32 dimensions, then the data (http://yann.lecun.com/exdb/mnist/)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: unreadable: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(IDX_TYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 0
    offset = 4 + 4 * ndim
    if len(raw) - offset < count * dtype.itemsize:
        raise DataError(f"{path}: truncated: header says {dims} but the file is too short")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(dims)


def _labels_path_for(images: Path) -> Path | None:
    """MNIST naming: t10k-images-idx3-ubyte.gz → t10k-labels-idx1-ubyte.gz beside it."""
    name = images.name
    if "images-idx3" in name:
        candidate = images.with_name(name.replace("images-idx3", "labels-idx1"))
        return candidate if candidate.is_file() else None
    return None


def read_folder(path: Path, size: tuple[int, int] | None = None) -> ImageSet:
    """Image files under `path`. Files in sub-folders are labelled by the sub-folder's name (e.g.
    normal/, defect/); files directly in `path` are unlabelled. All images must share one size
    unless `size` (height, width) resizes them."""
    files = sorted(p for p in Path(path).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    arrays, labels = [], []
    for file in files:
        try:
            with Image.open(file) as image:
                pixels = image_to_array(image)
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{file}: not a readable image: {exc}") from exc
        if size is not None and pixels.shape[1:] != size:
            pixels = resize(pixels, *size)
        arrays.append(pixels)
        relative = file.relative_to(path)
        labels.append(relative.parts[0] if len(relative.parts) > 1 else "")
    channels = max(a.shape[0] for a in arrays)
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise DataError(
            f"{path}: images of {len(shapes)} sizes ({', '.join(f'{w}×{h}' for h, w in sorted(shapes)[:4])}...); "
            "train with --resize HxW"
        )
    pixels = np.stack([to_channels(a, channels) for a in arrays])
    has_labels = any(labels)
    names = [file.relative_to(path).as_posix() for file in files]
    return ImageSet(pixels, np.array(labels, dtype=object) if has_labels else None, names)


def read_images(path: Path, labels_path: Path | None = None, size: tuple[int, int] | None = None) -> ImageSet:
    """Read an image data set from a folder, an IDX file (labels beside it or `labels_path`), or an
    .npz with X (N, H, W) / (N, C, H, W) and optional y."""
    path = Path(path)
    if path.is_dir():
        return read_folder(path, size)
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "X" not in data:
                raise DataError(f"{path}: an .npz needs an array named X")
            pixels = np.asarray(data["X"])
            labels = np.asarray(data["y"]) if "y" in data else None
    else:
        pixels = read_idx(path)
        labels_path = labels_path or _labels_path_for(path)
        labels = read_idx(labels_path) if labels_path is not None else None
    if pixels.ndim == 3:
        pixels = pixels[:, None]
    if pixels.ndim != 4 or pixels.shape[1] not in (1, 3):
        raise DataError(f"{path}: images have shape {pixels.shape}; expected (N, H, W) or (N, C, H, W) with C 1 or 3")
    if pixels.dtype != np.uint8:
        pixels = pixels.astype(np.float32)
        if not np.all(np.isfinite(pixels)) or pixels.min() < 0 or pixels.max() > 1:
            raise DataError(f"{path}: float pixels must lie in 0..1 (or store uint8 0..255)")
    if labels is not None and len(labels) != len(pixels):
        raise DataError(f"{path}: {len(labels)} labels for {len(pixels)} images")
    return ImageSet(pixels, labels)
