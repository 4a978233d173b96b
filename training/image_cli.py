"""The image half of the `vae-anomaly` commands: train, score and evaluate on image data sets, and
the image demo. `training.cli` parses argv and hands image work here."""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

from vae_anomaly.model.conditions import fit_condition_spec
from vae_anomaly.model.detector import Detector
from vae_anomaly.model.families import FAMILIES
from vae_anomaly.model.kinds.image.images import ImageSpec, encode_png, images_from_array
from vae_anomaly.model.kinds.image.kind import ImageKind
from vae_anomaly.training.data import DataError, anomaly_labels, holdout_rows, normal_mask
from vae_anomaly.training.evaluate import model_metrics, write_report
from vae_anomaly.training.image_data import ImageSet, read_images
from vae_anomaly.training.image_report import write_image_report
from vae_anomaly.training.image_trainer import fit_image_detector
from vae_anomaly.training.output import progress_bar, write_results
from vae_anomaly.training.trainer import TrainConfig, training_report

DEMO_NORMAL_DIGIT = 0


def _image_kind(detector: Detector) -> ImageKind:
    assert isinstance(detector.kind, ImageKind), "an image model"
    return detector.kind


def _normal_images(images: ImageSet, normal_value: str | None) -> np.ndarray:
    if images.labels is None:
        return images.pixels
    keep = normal_mask(images.labels, normal_value)
    print(f"using {int(keep.sum())} normal images of {len(images)}", file=sys.stderr)
    return images.pixels[keep]


def train_images(args: argparse.Namespace, config: TrainConfig) -> int:
    """Read an image set, keep the normal images, conform them to one geometry and train."""
    images = read_images(args.data, args.labels, args.resize)
    if args.holdout:
        images = images.rows(holdout_rows(len(images), args.holdout, held_out=False))
    condition, positions = None, None
    if FAMILIES[config.family].conditional:  # the label is the condition: every image is normal
        if images.labels is None:
            raise DataError(
                f"{args.data}: family {config.family!r} is conditioned on the image's label, and these images have "
                "none (put them in one sub-folder per label, give y in the .npz, or an IDX labels file)"
            )
        if args.normal_value is not None:
            raise DataError(
                f"--normal-value: with family {config.family!r} the labels are the condition, and every image "
                "is trained on as normal"
            )
        try:
            condition = fit_condition_spec({"label": images.labels}, ["label"])
        except ValueError as exc:
            raise DataError(f"{args.data}: {exc}") from exc
        variable = condition.variables[0]
        positions = np.array([variable.index(v) for v in images.labels.tolist()], dtype=np.int64)
        normal = images.pixels
        print(f"{len(normal)} images, conditioned on {len(variable.values)} labels", file=sys.stderr)
    else:
        normal = _normal_images(images, args.normal_value)
    _, channels, height, width = normal.shape
    if args.resize is not None:
        height, width = args.resize
    spec = ImageSpec(height=height, width=width, channels=channels, resize=args.resize is not None)
    pixels = images_from_array(spec, normal).pixels
    result = fit_image_detector(
        pixels, spec, config, version=args.model_version, progress=not args.quiet, condition=condition, labels=positions
    )
    if not result.world.is_writer:  # torchrun: rank 0 alone writes the artifact
        return 0
    manifest = result.detector.save(args.out)
    summary = result.summary
    print(f"image model {manifest.model_id} (version {manifest.version}) written to {args.out}")
    likelihood = config.kind_options_for("image").model_dump()["likelihood"]
    print(f"images: {width}×{height}, {channels} channel(s); likelihood {likelihood}")
    print("\n".join(training_report(manifest, summary, "image", 2)))
    return 0


IMAGE_SCALARS = ("index", "file", "score", "elbo", "reconstruction_error", "p_value", "is_anomaly")


def flat_image_result(result: dict[str, object]) -> dict[str, object]:
    """One CSV/Parquet row of an image result: the scalar fields; the threshold names joined by
    ';' and `top_regions` as JSON text (JSON lines keep them as lists)."""
    row = {key: result[key] for key in IMAGE_SCALARS if key in result}
    row["thresholds_exceeded"] = ";".join(result["thresholds_exceeded"])  # type: ignore[arg-type]
    row["top_regions"] = orjson.dumps(result["top_regions"]).decode()
    return row


def score_images_file(args: argparse.Namespace, detector: Detector) -> int:
    """Score every image of a data set: each result carries its `index` in the data set (and its
    `file` for a folder of images); JSON lines on stdout or into --out (.csv: the scalar fields)."""
    images = read_images(args.data, getattr(args, "labels", None))
    kind = _image_kind(detector)
    labels = images.labels if kind.condition_spec() is not None else None  # a conditional model's conditions
    with progress_bar(len(images), "image") as update:
        results = detector.results(detector.score(kind.inputs_from_array(images.pixels, labels), update), args.explain)
    names = images.names
    results = [
        {"index": i, **({"file": names[i]} if names is not None else {}), **result} for i, result in enumerate(results)
    ]
    write_results(args.out, results, flat_image_result, "image")
    return 0


def read_anomaly_flags(path: Path, count: int) -> np.ndarray:
    """`evaluate --anomalies FILE`: one 0/1 per image (1 = anomalous), a .npy array or a text file
    with one value per line, in the data set's order (that of `score`'s `index`) → (count,) int64.
    Raises `DataError` naming the file for another count or a value other than 0 and 1."""
    try:
        values = np.load(path, allow_pickle=False) if path.suffix.lower() == ".npy" else np.loadtxt(path, ndmin=1)
    except (OSError, ValueError) as exc:
        raise DataError(f"--anomalies {path}: not a .npy array or a text file of 0/1 values ({exc})") from exc
    values = np.asarray(values).reshape(-1)
    if len(values) != count:
        raise DataError(f"--anomalies {path}: {len(values)} values for {count} images")
    if not np.isin(values, (0, 1)).all():
        raise DataError(f"--anomalies {path}: values must be 0 (normal) or 1 (anomalous)")
    return values.astype(np.int64)


def evaluate_images(args: argparse.Namespace, detector: Detector) -> int:
    """Metrics on a labelled image set; with --report also the image panels.

    An unconditional model reads the labels as normal (`--normal-value`) or anomalous. A conditional
    one reads them as each image's condition, as `score` does, and takes which images are anomalous
    from `--anomalies FILE` (an image that does not fit its label, say)."""
    images = read_images(args.data, getattr(args, "labels", None))
    kind = _image_kind(detector)
    conditional = kind.condition_spec() is not None
    anomalies_path = getattr(args, "anomalies", None)
    if conditional and anomalies_path is None:
        raise DataError(
            "this conditional model reads the image labels as its condition; say which images "
            "are anomalous with --anomalies FILE (one 0/1 per image, .npy or one value per line)"
        )
    if conditional and args.normal_value is not None:
        raise DataError(
            "--normal-value: a conditional model's labels are its condition; --anomalies says which are not normal"
        )
    if not conditional and anomalies_path is not None:
        raise DataError("--anomalies is for conditional image models; this one reads the labels (--normal-value)")
    flags = read_anomaly_flags(anomalies_path, len(images)) if anomalies_path is not None else None
    if getattr(args, "holdout", None):
        part = holdout_rows(len(images), args.holdout, held_out=True)
        images = images.rows(part)
        flags = None if flags is None else flags[part]
    if images.labels is None:
        raise DataError(f"{args.data}: no labels (an IDX labels file, y in the .npz, or sub-folders)")
    if flags is not None:
        labels = flags
        inputs = kind.inputs_from_array(images.pixels, images.labels)
    else:
        labels = anomaly_labels(images.labels, args.normal_value)
        inputs = kind.inputs_from_array(images.pixels)
    with progress_bar(len(images), "image") as update:
        scored = detector.score(inputs, update)
    metrics, thresholds = model_metrics(detector, scored.terms.score, labels)
    if args.report:
        title = f"vae-anomaly image model {detector.manifest.model_id} on {Path(args.data).name}"
        paths = write_report(args.report, scored.terms.score, labels, thresholds, metrics, title)
        paths += write_image_report(args.report, detector, inputs, scored, images.labels)
        metrics["report"] = [str(p) for p in paths]
    print(json.dumps(metrics, indent=2))
    return 0


def demo_digits(directory: Path) -> tuple[Path, Path]:
    """scikit-learn's bundled 8×8 digits (1,797 images, grey levels 0..16) as two .npz files: a
    training set (80%) and a held-out test set (20%), both with every digit and its label."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(pixels))
    cut = int(0.8 * len(order))
    directory.mkdir(parents=True, exist_ok=True)
    train, test = directory / "digits_train.npz", directory / "digits_test.npz"
    np.savez_compressed(train, X=pixels[order[:cut]], y=labels[order[:cut]])
    np.savez_compressed(test, X=pixels[order[cut:]], y=labels[order[cut:]])
    return train, test


def demo_image(args: argparse.Namespace, train: Callable[[list[str]], int], serve: Callable[..., int]) -> int:
    """Train on one digit of the 8×8 digits, evaluate on held-out digits, print curls, serve."""
    train_path, test_path = demo_digits(args.dir / "data")
    model_dir = args.dir / "models" / "digits"
    normal = str(DEMO_NORMAL_DIGIT)
    print(f"demo data: {train_path} (training; digit {normal} is normal), {test_path} (held-out test set)")
    started = time.perf_counter()
    train_args = [str(train_path), "--out", str(model_dir), "--normal-value", normal]
    train_args += ["--epochs", str(args.epochs)] if args.epochs else []
    train(train_args)
    print(f"trained in {time.perf_counter() - started:.1f} s")
    detector = Detector.load(model_dir, "auto")
    report = args.dir / "reports" / "digits"
    evaluate_args = argparse.Namespace(data=test_path, normal_value=normal, report=report, labels=None)
    evaluate_images(evaluate_args, detector)
    print(f"report: {report / 'report.md'}")
    test = read_images(test_path)
    assert test.labels is not None
    normal_image = test.pixels[test.labels == DEMO_NORMAL_DIGIT][0][0]
    other_image = test.pixels[test.labels != DEMO_NORMAL_DIGIT][0][0]
    url = f"http://127.0.0.1:{args.port}"
    print("\nTry it (in another terminal):")
    for name, image in (("a normal digit", normal_image), ("another digit", other_image)):
        payload = json.dumps({"arrays": [image.tolist()]})
        print(f"  # {name}, as an array\n  curl -s {url}/score -H 'Content-Type: application/json' -d '{payload}'")
    png = base64.b64encode(encode_png(other_image[None] / 255.0)).decode()
    print(f"  # the same digit as a PNG, reconstructed with a heatmap\n  curl -s {url}/reconstruct "
          f"-H 'Content-Type: application/json' -d '{{\"images\": [\"{png}\"]}}'")  # fmt: skip
    print(f'  curl -s {url}/sample -H \'Content-Type: application/json\' -d \'{{"n": 16, "seed": 1, "grid": true}}\'')
    if args.no_serve:
        return 0
    print(f"\nServing {model_dir} on {url} (Ctrl-C to stop)\n", flush=True)
    return serve(argparse.Namespace(model_dir=model_dir, host="127.0.0.1", port=args.port, workers=1, device=None))
