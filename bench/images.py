"""One-class MNIST benchmark: the project's image VAE beside PyOD's IForest, KNN and VAE.

Implements the image part of ../shared/bench/PROTOCOL.md on the MNIST test set (10,000 images):
for each digit d and seed s, normal class = d; train = a random 60% (seed s) of the images of d,
pixels scaled to [0, 1]; test = the other 40% of d and every image of the other nine digits. AUROC
and AUPRC per digit, means over the ten digits, average rank.

The project's detector runs through `training.image_trainer.fit_image_detector` with
`image_train_config(seed=s)`: what `vae-anomaly train` does on images with no flags. The reference
detectors get the flattened pixels in [0, 1] (no scaling: "raw pixels") and their PyOD defaults.

    python -m bench.images --out /tmp/mnist.json --markdown /tmp/mnist.md
    python -m bench.images --digits 2 8 --seeds 0 --methods vae knn      # a quick look
    python -m bench.images --report-only /tmp/mnist.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench.detection import (
    PROJECT_LABEL,
    PROJECT_METHOD,
    PROJECT_ROOT,
    Outcome,
    Split,
    environment,
    fit_and_score_pyod,
    parse_overrides,
    previous_results,
    report_only,
    run_tasks,
    say,
)

DEFAULT_DATA = Path("../shared/datasets/mnist/t10k-images-idx3-ubyte.gz")  # labels found beside it
DEFAULT_METHODS = [PROJECT_METHOD, "iforest", "knn", "pyod_vae"]
REFERENCE_METHODS = ["iforest", "knn", "pyod_vae", "ecod", "pca", "autoencoder", "ocsvm"]
TRAIN_SHARE = 0.6


def load_mnist(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, 28, 28) float32 in [0, 1] and the digit labels."""
    from vae_anomaly.training.image_data import read_images

    images = read_images(path)
    if images.labels is None:
        raise SystemExit(f"{path}: no labels file found beside it (t10k-labels-idx1-ubyte.gz)")
    return images.pixels.astype(np.float32) / 255.0, images.labels.astype(np.int64)


def one_class_split(x: np.ndarray, labels: np.ndarray, digit: int, seed: int) -> Split:
    """The protocol's split for one digit and seed (images kept as (N, 1, H, W))."""
    normal = np.flatnonzero(labels == digit)
    order = np.random.default_rng(seed).permutation(normal)
    n_train = round(TRAIN_SHARE * len(order))
    train, test_normal = np.sort(order[:n_train]), np.sort(order[n_train:])
    test = np.concatenate([test_normal, np.flatnonzero(labels != digit)])
    return Split(x_train=x[train], x_test=x[test], y_test=(labels[test] != digit).astype(np.int64), n_rows=len(x))


def run_project_images(split: Split, seed: int, overrides: dict[str, Any]) -> Outcome:
    from vae_anomaly.model.kinds.image.images import ImageSpec
    from vae_anomaly.training.image_trainer import fit_image_detector, image_train_config

    _, channels, height, width = split.x_train.shape
    spec = ImageSpec(height=height, width=width, channels=channels)
    config = image_train_config(**{**overrides, "seed": seed})
    started = time.perf_counter()
    result = fit_image_detector(split.x_train, spec, config, progress=False)
    fit_seconds = time.perf_counter() - started
    detector = result.detector
    started = time.perf_counter()
    scores = detector.score(detector.kind.inputs_from_array(split.x_test)).terms.score
    score_seconds = time.perf_counter() - started
    summary = result.summary
    info = {
        "epochs": summary["epochs"],
        "best_epoch": summary["best_epoch"],
        "batch_size": summary["batch_size"],
        "latent_dim": detector.manifest.family_config.latent_dim,
        "likelihood": getattr(config.kind_options_for("image"), "likelihood", None),
        "validation_elbo": summary["validation_elbo"],
    }
    return Outcome(np.asarray(scores, dtype=np.float64), fit_seconds, score_seconds, info)


def run_reference(method: str, split: Split, seed: int) -> Outcome:
    x_train = split.x_train.reshape(len(split.x_train), -1).astype(np.float64)
    x_test = split.x_test.reshape(len(split.x_test), -1).astype(np.float64)
    return fit_and_score_pyod(method, x_train, x_test, seed, {})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.images",
        description="One-class MNIST benchmark (../shared/bench/PROTOCOL.md): the project's image VAE and PyOD.",
    )
    parser.add_argument("--data", type=Path, default=None, help=f"MNIST IDX images (default {DEFAULT_DATA})")
    parser.add_argument("--digits", type=int, nargs="+", default=list(range(10)), choices=range(10))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=[PROJECT_METHOD, *REFERENCE_METHODS])
    parser.add_argument("--vae-config", default="{}", metavar="JSON", help="JSON merged into the TrainConfig kwargs")
    parser.add_argument("--label", help=f"name of the project's variant in the tables (default {PROJECT_LABEL})")
    parser.add_argument("--out", type=Path, help="results JSON (default /tmp/bench-images-<time>.json)")
    parser.add_argument("--resume", action="store_true", help="skip what --out already holds")
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    parser.add_argument("--report-only", type=Path, nargs="+", metavar="JSON", help="only print tables")
    parser.add_argument("--complete-only", action="store_true", help="with --report-only: finished digits only")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report_only:
        return report_only(args.report_only, args.markdown, args.complete_only)
    if not args.verbose:
        logging.getLogger("vae_anomaly.training.trainer").setLevel(logging.ERROR)  # small calibration sets: noise here
    overrides = parse_overrides(args.vae_config)
    data = args.data or (PROJECT_ROOT / DEFAULT_DATA)
    x, labels = load_mnist(data)
    started_at = datetime.now(timezone.utc)
    out = args.out or Path(f"/tmp/bench-images-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json")
    project_label = args.label or PROJECT_LABEL
    records = previous_results(out) if args.resume else []
    methods = list(dict.fromkeys(args.methods))
    env = environment()
    meta = {
        "protocol": "../shared/bench/PROTOCOL.md (images: one-class MNIST)",
        "script": "bench/images.py",
        "dataset_title": "normal digit",
        "command": "python -m bench.images " + " ".join(sys.argv[1:] if argv is None else argv),
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": None,
        "environment": env,
        "data_dir": str(data),
        "datasets": [f"digit {d}" for d in args.digits],
        "seeds": args.seeds,
        "methods": methods,
        "vae_config": overrides,
        "label": project_label,
    }
    say(f"torch {env['torch']} with {env['torch_threads']} threads, PyOD {env['pyod']}; digits {args.digits} × "
        f"seeds {args.seeds} × methods {methods} → {out}")  # fmt: skip
    runners = {
        m: (lambda split, seed: run_project_images(split, seed, overrides))
        if m == PROJECT_METHOD
        else (lambda split, seed, m=m: run_reference(m, split, seed))
        for m in methods
    }

    def tasks() -> Iterator[tuple[str, int, Split, dict[str, Any]]]:
        for digit in args.digits:
            for seed in args.seeds:
                yield f"digit {digit}", seed, one_class_split(x, labels, digit, seed), {"n_features": 784}

    return run_tasks(tasks(), methods, runners, project_label, out, meta, records, args.markdown)


if __name__ == "__main__":
    sys.exit(main())
