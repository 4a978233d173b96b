"""The `vae-anomaly` command line: train, score, evaluate, encode, serve, demo. The only argv parsing.

`serve` reaches `service.server.serve` through an import string, so this module never imports
`service` (training must run without the web stack, and the dependency arrows stay one-way).

Importing this module imports no torch, numpy or pandas: the commands import what they use when
they run, and `main` builds only the options of the subcommand it was given, so `vae-anomaly
--help`, `--version` and `<command> --help` answer at once (`train`'s options read their defaults
from `training.config` and the family registry's names, which load no torch either).
tests/training/test_cli.py checks which modules `--help` loads; bench/cli_startup.py times it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import secrets
import shlex
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vae_anomaly.model.detector import Detector
    from vae_anomaly.model.kinds.tabular.kind import TabularKind
    from vae_anomaly.model.kinds.tabular.schema import Schema
    from vae_anomaly.training.trainer import TrainConfig

logger = logging.getLogger("vae_anomaly")


def _threshold_arg(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        fpr = float(value)
    except ValueError:
        fpr = -1.0
    if not sep or not name or not 0 < fpr < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=FPR with 0 < FPR < 1, got {text!r}")
    return name, fpr


def _columns_arg(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct column names separated by commas, got {text!r}")
    return names


def _widths_arg(text: str) -> list[int]:
    """`64,32` → [64, 32]: layer widths, each a positive integer."""
    try:
        widths = [int(part) for part in text.split(",")]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive layer widths separated by commas, got {text!r}")
    return widths


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help when it has a real default the text does not
    already state (argparse's ArgumentDefaultsHelpFormatter also prints None and False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and not (default is None or default is False or default == [] or default is argparse.SUPPRESS)
            and "default" not in text
            and not isinstance(action, argparse._VersionAction | argparse._HelpAction)
        ):
            text += " (default: %(default)s)"
        return text


def package_version() -> str:
    """The installed distribution's version (the source tree's pyproject when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vae-anomaly")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _positive_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def parse_size(text: str) -> tuple[int, int]:
    """'28x28' or '64X48' (height x width) → (height, width)."""
    height, sep, width = text.lower().partition("x")
    try:
        size = (int(height), int(width))
    except ValueError:
        size = (0, 0)
    if not sep or min(size) < 1 or max(size) > 4096:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 28x28, got {text!r}")
    return size


def _fraction_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only`, just that subcommand's options (the others keep their
    name and summary; `only=""`: none), which is what `main` parses with."""
    parser = argparse.ArgumentParser(
        prog="vae-anomaly", description="VAE anomaly detection: train, score, serve.", formatter_class=HelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (summary, add_arguments) in SUBCOMMANDS.items():
        subparser = commands.add_parser(name, help=summary, formatter_class=HelpFormatter)
        if only is None or only == name:
            add_arguments(subparser)
            for action in subparser._actions:
                if action.help is None:
                    action.help = OPTION_HELP.get(action.dest, "")
    return parser


def command_in(argv: list[str]) -> str | None:
    """The subcommand named in `argv` (the first word that is one), None when there is none
    (`--help`, `--version`): argparse then reports what is missing."""
    return next((word for word in argv if word in SUBCOMMANDS), None)


def _train_arguments(train: argparse.ArgumentParser) -> None:
    """`train`'s options. Defaults and choices come from `TrainConfig`'s fields, the image defaults,
    `model.defaults` and the family registry's names, none of which imports torch or numpy."""
    from vae_anomaly.model.defaults import DEFAULT_TARGETS, SCORE_METHODS
    from vae_anomaly.model.families import FAMILIES
    from vae_anomaly.training.config import IMAGE_DEFAULTS, TrainConfig

    defaults = {name: field.default for name, field in TrainConfig.model_fields.items()}  # no validation: no torch
    train.add_argument(
        "data",
        type=Path,
        help="tabular: .csv, .parquet, .npz (X rows × features, optional y); images: an IDX file (.gz), "
        ".npz with X (n, H, W) or (n, C, H, W), or a folder of PNG/JPEG (sub-folders = labels)",
    )
    train.add_argument("--out", type=Path, required=True, help="model directory to write")
    train.add_argument(
        "--kind",
        choices=("auto", "tabular", "image", "sequence"),
        default="auto",
        help="default: from the data (sequence when --time-column is given)",
    )
    train.add_argument("--time-column", help="sequence: the column that orders the rows")
    train.add_argument("--series-column", help="sequence: id of independent series (windows never cross one)")
    train.add_argument("--window", type=int, help="sequence: time steps per window (default 15)")
    train.add_argument("--stride", type=int, help="sequence: steps between training windows (default 1)")
    train.add_argument(
        "--architecture", choices=("conv", "recurrent"), help="sequence: 1-D conv (default) or GRU/LSTM (VRAE)"
    )
    train.add_argument(
        "--level",
        choices=("auto", "absolute", "relative"),
        help="sequence: sensors relative to each window's mean level (auto: the slow, drifting ones; default)",
    )
    train.add_argument(
        "--sensor-likelihood", choices=("student_t", "gaussian"), help="sequence: per reading (default student_t)"
    )
    train.add_argument(
        "--calibration",
        choices=("cross_fit", "held_out"),
        help="sequence: calibration scores from every block of the rows, each scored by a model fitted without it "
        "(cross_fit, default: 5 more fits), or from the last rows of each series (held_out)",
    )
    train.add_argument("--sep", help="CSV delimiter of a sequence file (default: sniffed)")
    train.add_argument("--labels", type=Path, help="IDX labels file of an IDX image file (default: found beside it)")
    train.add_argument(
        "--resize",
        type=parse_size,
        metavar="HxW",
        help="images: resize to this size, here and when serving (default: the images' own size)",
    )
    train.add_argument(
        "--likelihood",
        choices=("gaussian", "bernoulli", "continuous_bernoulli"),
        default=None,
        help="images: pixel likelihood (see README; default gaussian)",
    )
    train.add_argument(
        "--label-column",
        help="rows whose label is --normal-value are used; the rest are ignored (default: no labels, all normal)",
    )
    train.add_argument("--normal-value", help="label of normal rows (default 0)")
    train.add_argument(
        "--exclude-columns",
        "--drop-columns",
        dest="exclude_columns",
        nargs="+",
        default=[],
        metavar="COL",
        help="columns that are not features (ids, labels, timestamps, ...)",
    )
    train.add_argument("--id-column", help="a row id column: never a feature (give it to `score --id-column` too)")
    train.add_argument("--schema", type=Path, help="schema.json overriding inferred feature types")
    train.add_argument(
        "--epochs", type=int, default=None, help=f"default {defaults['epochs']} (images: {IMAGE_DEFAULTS['epochs']})"
    )
    train.add_argument("--batch-size", type=int, default=None, help="default: about 16 steps per epoch, 32..512")
    train.add_argument("--latent-dim", type=int, default=None, help="default: from the number of features")
    train.add_argument(
        "--family", choices=tuple(FAMILIES), default="vae", help="what is learned (see README, Families)"
    )
    train.add_argument("--beta", type=float, default=None, help="beta-vae: weight of the KL term (default 4)")
    train.add_argument("--kl-warmup-epochs", type=int, default=None, help="VAE families: default 10")
    train.add_argument(
        "--score-method",
        choices=SCORE_METHODS,
        default=None,
        help="the score behind thresholds (default: the family's; see README, Families)",
    )
    train.add_argument("--iwae-samples", type=int, default=None, help="iwae: importance samples per row (default 5)")
    train.add_argument(
        "--members",
        type=int,
        default=None,
        help="vae-ensemble: VAEs trained as one network, scores averaged (default 4)",
    )
    train.add_argument(
        "--noise", type=float, default=None, help="dae: masking share or Gaussian noise std (default 0.2)"
    )
    train.add_argument("--noise-type", choices=("masking", "gaussian"), default=None, help="dae: default masking")
    train.add_argument(
        "--sparsity", type=float, default=None, help="sparse-ae: weight of the L1 code penalty (default 1e-2)"
    )
    train.add_argument("--top-latent-dim", type=int, default=None, help="hvae: size of z2 (default latent-dim / 2)")
    train.add_argument(
        "--hidden-dim", type=int, default=None, help="hvae: width of the MLPs between z1 and z2 (default 64)"
    )
    train.add_argument(
        "--adversarial-weight", type=float, default=None, help="aae: weight of the discriminator loss (default 1)"
    )
    train.add_argument(
        "--discriminator-dims",
        type=_widths_arg,
        default=None,
        metavar="W,W",
        help="aae: hidden layer widths of the discriminator (default 64,64)",
    )
    train.add_argument(
        "--condition-columns",
        type=_columns_arg,
        default=None,
        metavar="A,B",
        help="cvae, tabular: context columns each record is modelled given (inputs at score time, never scored); "
        "image cvae models are conditioned on the label",
    )
    train.add_argument(
        "--patience",
        type=int,
        default=None,
        help=f"early-stopping patience in epochs, default {defaults['patience']} "
        f"(images: {IMAGE_DEFAULTS['patience']})",
    )
    train.add_argument("--learning-rate", type=float, default=defaults["learning_rate"])
    train.add_argument(
        "--feature-dropout",
        type=float,
        default=None,
        help="VAE families: share of inputs hidden from the encoder (default 0: none)",
    )
    train.add_argument("--seed", type=int, default=defaults["seed"])
    train.add_argument("--device", default="auto", help="auto, cpu or cuda")
    train.add_argument(
        "--threads",
        type=_positive_int_arg,
        default=None,
        help="intra-op CPU threads for training (default: by the work per step, one for every tabular default)",
    )
    train.add_argument(
        "--threshold",
        type=_threshold_arg,
        action="append",
        default=[],
        metavar="NAME=FPR",
        help=f"threshold at a target false-positive rate (defaults: {DEFAULT_TARGETS}); repeatable",
    )
    train.add_argument("--active-threshold", default="warn", help="the threshold behind is_anomaly")
    train.add_argument("--model-version", help="version string reported by the service (default: UTC timestamp)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--holdout",
        type=_fraction_arg,
        metavar="FRACTION",
        help="tables and images: leave the last FRACTION of the file out of training, for `evaluate --holdout` "
        "(default: train on the whole file)",
    )
    train.add_argument(
        "--stream",
        action="store_true",
        help="tabular .parquet/.csv larger than memory: read in record batches (see README, Scaling out)",
    )
    train.add_argument("--chunk-rows", type=int, default=65_536, help="--stream: rows per record batch")
    train.add_argument("--loader-workers", type=int, default=0, help="--stream: DataLoader worker processes")


def _score_arguments(score: argparse.ArgumentParser) -> None:
    score.add_argument("model_dir", type=Path)
    score.add_argument("data", type=Path)
    score.add_argument(
        "--out",
        type=Path,
        help=".jsonl, .csv or .parquet (checked before scoring); default JSON lines on stdout. Image CSVs hold "
        "the scalar fields (top_regions as JSON text)",
    )
    score.add_argument(
        "--id-column",
        help="tabular: a column copied into each result as `id` (never a feature), to join results back",
    )
    score.add_argument("--explain", type=int, default=3, help="top features per row")
    score.add_argument("--device", default="auto")
    score.add_argument(
        "--threads",
        type=_positive_int_arg,
        default=None,
        help="intra-op CPU threads for scoring (default: those the model was trained with, else torch's)",
    )
    score.add_argument(
        "--engine",
        choices=("local", "dask"),
        default="local",
        help="dask: read_parquet → map_partitions(score_frame) → to_parquet on a Dask cluster (--out: a folder)",
    )
    score.add_argument("--scheduler", help="--engine dask: scheduler address (default: a LocalCluster)")
    score.add_argument("--dask-workers", type=int, default=2, help="--engine dask: LocalCluster worker processes")
    score.add_argument(
        "--batch-rows",
        type=int,
        default=None,
        help="tables: score in record batches of this many rows, bounded memory (default: the whole table at once; "
        "65536 with --out .parquet)",
    )


def _evaluate_arguments(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument("model_dir", type=Path)
    evaluate.add_argument("data", type=Path)
    evaluate.add_argument("--label-column", help="required unless the data is an .npz with y")
    evaluate.add_argument("--normal-value", help="label of normal rows or images (default 0)")
    evaluate.add_argument("--labels", type=Path, help="IDX labels file of an IDX image file (default: found beside it)")
    evaluate.add_argument("--report", type=Path, help="directory for plots and report.md")
    evaluate.add_argument(
        "--anomalies",
        type=Path,
        metavar="FILE",
        help="conditional image models (their labels are the condition): one 0/1 per image, 1 = anomalous "
        "(.npy, or one value per line)",
    )
    evaluate.add_argument(
        "--holdout",
        type=_fraction_arg,
        metavar="FRACTION",
        help="evaluate only the last FRACTION of the file: the rows `train --holdout FRACTION` left out "
        "(default: the whole file)",
    )
    evaluate.add_argument("--device", default="auto")


def _encode_arguments(encode: argparse.ArgumentParser) -> None:
    """`encode`'s options (the command itself: training/encode_cli.py)."""
    encode.add_argument("model_dir", type=Path)
    encode.add_argument("data", type=Path, help="a file the model's `score` reads (table, images, sensor stream)")
    encode.add_argument("--out", type=Path, required=True, help="latent.parquet, latent.npz or latent.csv")
    encode.add_argument("--label-column", help="tabular: a label column to copy into the output (npz: y is copied)")
    encode.add_argument("--labels", type=Path, help="images: IDX labels file (default: found beside it)")
    encode.add_argument("--sep", help="CSV delimiter of a sequence file (default: sniffed)")
    encode.add_argument("--device", default="auto")


def _serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("model_dir", type=Path)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=None, help="worker processes (default: VAE_ANOMALY_WORKERS or 1)")
    serve.add_argument("--device", default=None, help="auto, cpu or cuda (default: VAE_ANOMALY_DEVICE or auto)")
    serve.add_argument(
        "--log-format",
        choices=("auto", "json", "text"),
        default=None,
        help="default: VAE_ANOMALY_LOG_FORMAT or auto (text on a terminal, JSON lines otherwise)",
    )


DEMO_PORT = 8000


def _demo_arguments(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--dir", type=Path, default=Path("."), help="where data/ and models/ go")
    demo.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"default: {DEMO_PORT}, or the next free port when that one is taken (printed)",
    )
    demo.add_argument("--epochs", type=int, default=None, help="default: as for train")
    demo.add_argument("--no-serve", action="store_true", help="stop after training (for tests)")
    demo.add_argument(
        "--kind",
        choices=("tabular", "image", "sequence"),
        default="tabular",
        help="image: 8×8 digits, one digit as normal; sequence: a generated pump's sensor stream",
    )


SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "train": ("train on normal rows or images and calibrate thresholds", _train_arguments),
    "score": ("score a file with a trained model", _score_arguments),
    "evaluate": ("AUROC, AUPRC and F1 at each threshold on labelled data", _evaluate_arguments),
    "encode": ("write the latent code of every row, image or window of a file", _encode_arguments),
    "serve": ("serve a model over HTTP", _serve_arguments),
    "demo": ("generate demo data, train, evaluate and serve", _demo_arguments),
}
"""Name → (summary in `vae-anomaly --help`, the function adding its options)."""


OPTION_HELP = {
    "learning_rate": "Adam learning rate",
    "seed": "random seed: the same flags and seed give the same model on CPU",
    "device": "auto (CUDA when available), cpu or cuda",
    "host": "address to listen on (0.0.0.0: every interface)",
    "port": "TCP port",
    "model_dir": "a model directory written by `vae-anomaly train` (manifest.json + weights.safetensors)",
    "data": "a data file or folder in the form the model was trained on",
}
"""Help for options defined without any, so `--help` explains every option."""


def _train_config(args: argparse.Namespace, kind: str) -> TrainConfig:
    """The flags given; for the rest, the defaults of the kind (`IMAGE_DEFAULTS` for images)."""
    from vae_anomaly.model.thresholds import DEFAULT_TARGETS
    from vae_anomaly.training.image_trainer import image_train_config
    from vae_anomaly.training.sequence import sequence_train_config
    from vae_anomaly.training.trainer import OptionsError, TrainConfig, family_option_names, refused_family_options

    optional = {
        "epochs": args.epochs,
        "patience": args.patience,
        "likelihood": args.likelihood,
        "score_method": args.score_method,
        "condition_columns": args.condition_columns,
    }
    family_flags = set().union(*family_option_names().values())
    optional.update({name: getattr(args, name) for name in family_flags})  # each family option has its flag
    given = {name: value for name, value in optional.items() if value is not None}
    refusal = refused_family_options(args.family, family_flags & set(given), lambda name: "--" + name.replace("_", "-"))
    if refusal:
        raise OptionsError(refusal)
    fields = dict(
        **given,
        family=args.family,
        batch_size=args.batch_size,
        latent_dim=args.latent_dim,
        learning_rate=args.learning_rate,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        thresholds={**DEFAULT_TARGETS, **dict(args.threshold)},
        active_threshold=args.active_threshold,
    )
    if kind == "sequence":
        sequence = {
            "window": args.window,
            "stride": args.stride,
            "architecture": args.architecture,
            "level": args.level,
            "sensor_likelihood": args.sensor_likelihood,
            "calibration": args.calibration,
        }
        return sequence_train_config(**fields, **{k: v for k, v in sequence.items() if v is not None})
    return image_train_config(**fields) if kind == "image" else TrainConfig(**fields)


def train_command(args: argparse.Namespace) -> int:
    import numpy as np

    from vae_anomaly.model.kinds.tabular.schema import read_schema
    from vae_anomaly.training.data import holdout_rows, normal_mask, read_table, suspicious_columns
    from vae_anomaly.training.image_cli import train_images
    from vae_anomaly.training.image_data import is_image_source
    from vae_anomaly.training.sequence_cli import train_sequences
    from vae_anomaly.training.tabular import fit_detector
    from vae_anomaly.training.trainer import OptionsError, training_report

    kind = args.kind
    if kind == "auto":
        kind = "sequence" if args.time_column else ("image" if is_image_source(args.data) else "tabular")
    config = _train_config(args, kind)
    if kind == "image":
        return train_images(args, config)
    if args.holdout and (kind == "sequence" or args.stream):
        raise OptionsError("--holdout is for tables and images read whole (not --stream, not sequences)")
    if kind == "sequence":
        return train_sequences(args, config)
    overrides = read_schema(args.schema) if args.schema else None
    if args.stream:
        return _train_stream(args, config, overrides)
    table = read_table(args.data, args.label_column, args.exclude_columns, overrides, id_column=args.id_column)
    if args.holdout:
        table = table.rows(holdout_rows(len(table), args.holdout, held_out=False))
    for name, reason in suspicious_columns(table.columns).items():
        logger.warning(
            "column %r looks like a label or an id (%s) and will be learned as a feature; if it is not one, "
            "pass --label-column %s, --id-column %s or --drop-columns %s",
            *(name, reason, name, name, name),
        )
    columns = table.columns
    if table.labels is not None:
        keep = normal_mask(table.labels, args.normal_value)
        columns = table.take(np.flatnonzero(keep))
        logger.info("using %d normal rows of %d", int(keep.sum()), len(table))
    result = fit_detector(columns, config, overrides, version=args.model_version, progress=not args.quiet)
    if not result.world.is_writer:  # torchrun: rank 0 alone writes the artifact
        return 0
    manifest = result.detector.save(args.out)
    summary = result.summary
    print(f"model {manifest.model_id} (version {manifest.version}) written to {args.out}")
    print("\n".join(training_report(manifest, summary, "row", 4)))
    return 0


def _train_stream(args: argparse.Namespace, config: TrainConfig, overrides: Schema | None) -> int:
    """`train --stream`: the tabular fit of `training.streaming`, one record batch at a time."""
    from vae_anomaly.training.streaming import ReadOptions, fit_stream
    from vae_anomaly.training.trainer import training_report

    options = ReadOptions(
        chunk_rows=args.chunk_rows,
        label_column=args.label_column,
        normal_value=args.normal_value,
        exclude=list(args.exclude_columns),
    )
    result = fit_stream(
        args.data, config, options, overrides, args.model_version, not args.quiet, workers=args.loader_workers
    )
    if not result.world.is_writer:
        return 0
    manifest = result.detector.save(args.out)
    print(f"model {manifest.model_id} (version {manifest.version}) written to {args.out}")
    print("\n".join(training_report(manifest, result.summary, "row", 4)))
    return 0


def _tabular(detector: Detector) -> TabularKind:
    from vae_anomaly.model.kinds.tabular.kind import TabularKind

    assert isinstance(detector.kind, TabularKind)
    return detector.kind


def _load_scoring_input(detector: Detector, args: argparse.Namespace, label_column: str | None = None):
    from vae_anomaly.training.data import holdout_rows, read_table

    kind = _tabular(detector)
    table = read_table(args.data, label_column, schema=kind.schema, id_column=getattr(args, "id_column", None))
    if getattr(args, "holdout", None):
        table = table.rows(holdout_rows(len(table), args.holdout, held_out=True))
    return detector, table, kind.columns_from_table(table.columns)


def _flat_row(result: dict[str, object]) -> dict[str, object]:
    import orjson

    row = {"id": result["id"]} if "id" in result else {}
    row.update({key: result[key] for key in ("score", "elbo", "reconstruction_error", "p_value", "is_anomaly")})
    row["thresholds_exceeded"] = ";".join(result["thresholds_exceeded"])  # type: ignore[arg-type]
    row["missing"] = ";".join(result["missing"])  # type: ignore[arg-type]
    row["top_features"] = orjson.dumps(result["top_features"]).decode()
    return row


def scoring_threads(args: argparse.Namespace, detector: Detector) -> int | None:
    """`--threads`, else the threads the model trained with (chosen by its size, recorded in the
    manifest's training summary), else None: torch's own default."""
    if args.threads is not None:
        return int(args.threads)
    recorded = (detector.manifest.training or {}).get("threads")
    return int(recorded) if isinstance(recorded, int) and recorded > 0 else None


def score_command(args: argparse.Namespace) -> int:
    from vae_anomaly.model.detector import Detector
    from vae_anomaly.model.threads import torch_threads
    from vae_anomaly.training.output import check_out_path

    if args.engine != "dask":  # dask writes a Parquet folder
        check_out_path(args.out)
    loaded = Detector.load(args.model_dir, args.device)
    threads = scoring_threads(args, loaded)
    if threads is None:
        return _score_command(args, loaded)
    with torch_threads(threads):
        return _score_command(args, loaded)


def _score_command(args: argparse.Namespace, loaded: Detector) -> int:
    from vae_anomaly.training.data import DataError
    from vae_anomaly.training.image_cli import score_images_file
    from vae_anomaly.training.output import progress_bar, write_results
    from vae_anomaly.training.sequence_cli import score_sequences_file

    if args.id_column is not None and loaded.kind.name != "tabular":
        raise DataError(f"--id-column is for tabular models; {loaded.kind.name} results carry their own position")
    if loaded.kind.name == "image":
        return score_images_file(args, loaded)
    if loaded.kind.name == "sequence":
        return score_sequences_file(args, loaded)
    if args.engine == "dask" or args.batch_rows or (args.out is not None and args.out.suffix.lower() == ".parquet"):
        return _score_in_batches(args, loaded)
    detector, table, columns = _load_scoring_input(loaded, args)
    with progress_bar(detector.kind.count(columns), "row") as update:
        results = detector.results(detector.score(columns, update), args.explain)
    if table.ids is not None:
        results = [{"id": id_, **result} for id_, result in zip(table.ids, results, strict=True)]
    write_results(args.out, results, _flat_row, "row")
    return 0


def _score_in_batches(args: argparse.Namespace, detector: Detector) -> int:
    """Tables in bounded memory: record batches in one process, or partitions on Dask."""
    from vae_anomaly.training.batch_scoring import score_file_dask, score_file_streaming
    from vae_anomaly.training.data import DataError

    if args.engine == "dask":
        if args.id_column is not None:
            raise DataError("--id-column is not available with --engine dask yet; use the local engine")
        if args.out is None:
            raise DataError("--engine dask needs --out (a Parquet folder)")
        device = "cpu" if args.device == "auto" else args.device
        rows = score_file_dask(
            args.model_dir, args.data, args.out, args.scheduler, args.explain, device, args.dask_workers
        )
    else:
        batch_rows = args.batch_rows or 65_536
        rows = score_file_streaming(detector, args.data, args.out, args.explain, batch_rows, args.id_column)
    if args.out is not None:
        print(f"{rows} rows scored → {args.out}", file=sys.stderr)
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from vae_anomaly.model.detector import Detector
    from vae_anomaly.model.scoring import ScoreBatch
    from vae_anomaly.training.data import DataError, anomaly_labels
    from vae_anomaly.training.evaluate import model_metrics, write_report
    from vae_anomaly.training.image_cli import evaluate_images
    from vae_anomaly.training.latent_report import write_latent_section
    from vae_anomaly.training.output import progress_bar

    loaded = Detector.load(args.model_dir, args.device)
    if loaded.kind.name == "image":
        return evaluate_images(args, loaded)
    if loaded.kind.name == "sequence":  # its labels belong to rows, its scores to windows: not this table path
        raise DataError(
            f"{args.model_dir}: evaluate takes tabular and image models; for a sensor-stream model run "
            "`vae-anomaly score` (one result per row) and compare with your labels, or bench.sequences"
        )
    label_column = args.label_column
    if label_column is None and args.data.suffix.lower() != ".npz":
        raise DataError("evaluate needs --label-column (or an .npz with y)")
    detector, table, columns = _load_scoring_input(loaded, args, label_column)
    if table.labels is None:
        raise DataError(f"{args.data}: no labels found; pass --label-column")
    labels = anomaly_labels(table.labels, args.normal_value)
    with progress_bar(detector.kind.count(columns), "row") as update:
        scored: ScoreBatch = detector.score(columns, update)
    metrics, thresholds = model_metrics(detector, scored.terms.score, labels)
    if args.report:
        title = f"vae-anomaly model {detector.manifest.model_id} on {args.data.name}"
        paths = write_report(args.report, scored.terms.score, labels, thresholds, metrics, title)
        paths += write_latent_section(args.report, detector, columns, table.labels, labels)
        metrics["report"] = [str(p) for p in paths]
    print(json.dumps(metrics, indent=2))
    return 0


def serve_command(args: argparse.Namespace) -> int:
    """Hand over to service/server.py by import string (see the module docstring)."""
    import importlib

    server = importlib.import_module("vae_anomaly.service.server")
    if getattr(args, "log_format", None):  # the workers read their settings from the environment
        os.environ["VAE_ANOMALY_LOG_FORMAT"] = args.log_format
    return server.serve(args.model_dir, args.host, args.port, args.workers, args.device)


def next_free_port(host: str, start: int, attempts: int = 100) -> int:
    """The first port from `start` on that nothing listens on at `host` (so a second demo does not
    clash with a running `make demo`); raises `DataError` when `attempts` ports in a row are taken."""
    from vae_anomaly.training.data import DataError

    for port in range(start, min(start + attempts, 65536)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise DataError(f"no free port in {start}..{start + attempts - 1} on {host}; pass --port")


def demo_command(args: argparse.Namespace) -> int:
    from vae_anomaly.model.detector import Detector
    from vae_anomaly.training.data import anomaly_labels, read_table
    from vae_anomaly.training.evaluate import detection_metrics, write_report
    from vae_anomaly.training.latent_report import write_latent_section

    def train(argv: list[str]) -> int:
        return train_command(build_parser().parse_args(["train", *argv]))

    if args.port is None:
        args.port = next_free_port("127.0.0.1", DEMO_PORT)
        if args.port != DEMO_PORT:
            print(f"port {DEMO_PORT} is in use (another demo or server?): this demo serves on port {args.port}")

    if args.kind == "image":
        from vae_anomaly.training.image_cli import demo_image

        return demo_image(args, train, serve_command)
    if args.kind == "sequence":
        from vae_anomaly.training.sequence_demo import demo_sequence

        return demo_sequence(args, train, serve_command)
    from vae_anomaly.training.demo_data import LABEL, demo_records, make_demo_frame

    data_path = args.dir / "data" / "demo.csv"
    test_path = args.dir / "data" / "demo_test.csv"
    model_dir = args.dir / "models" / "demo"
    data_path.parent.mkdir(parents=True, exist_ok=True)
    make_demo_frame(seed=0).to_csv(data_path, index=False)
    make_demo_frame(n_normal=3000, seed=1).to_csv(test_path, index=False)
    print(f"demo data: {data_path} (training), {test_path} (held-out test set, another seed)")
    started = time.perf_counter()
    train_args = build_parser().parse_args(
        ["train", str(data_path), "--out", str(model_dir), "--label-column", LABEL]
        + (["--epochs", str(args.epochs)] if args.epochs else [])
    )
    train_command(train_args)
    print(f"trained in {time.perf_counter() - started:.1f} s")
    detector = Detector.load(model_dir, "auto")
    kind = _tabular(detector)
    table = read_table(test_path, LABEL, schema=kind.schema)
    assert table.labels is not None
    labels = anomaly_labels(table.labels, None)
    columns = kind.columns_from_table(table.columns)
    scores = detector.score(columns).terms.score
    thresholds = {name: t.value for name, t in detector.thresholds.thresholds.items()}
    metrics = detection_metrics(scores, labels, thresholds)
    report = args.dir / "reports" / "demo"
    write_report(report, scores, labels, thresholds, metrics, "vae-anomaly demo model on held-out demo data")
    write_latent_section(report, detector, columns, table.labels, labels)
    print(f"held-out test set: AUROC {metrics['auroc']:.3f}, AUPRC {metrics['auprc']:.3f}")
    print(f"report: {report / 'report.md'}")
    token = os.environ.get("VAE_ANOMALY_API_TOKEN") or secrets.token_urlsafe(24)
    normal, anomalous = demo_records()
    url = f"http://127.0.0.1:{args.port}"
    print("\nTry it (in another terminal):")
    for record in (normal, anomalous):
        body = json.dumps({"records": [record]})
        print(f"  curl -s {url}/score -H 'Content-Type: application/json' -d {shlex.quote(body)}")
    print(f"\nAdmin token for PUT /thresholds/... and /active-threshold: {token}")
    print(
        f"  curl -s -X PUT {url}/active-threshold -H 'Authorization: Bearer {token}' "
        "-H 'Content-Type: application/json' -d '{\"name\": \"critical\"}'"
    )
    if args.no_serve:
        return 0
    os.environ["VAE_ANOMALY_API_TOKEN"] = token
    print(f"\nServing {model_dir} on {url} (Ctrl-C to stop)\n", flush=True)
    return serve_command(
        argparse.Namespace(model_dir=model_dir, host="127.0.0.1", port=args.port, workers=1, device=None)
    )


def encode_command(args: argparse.Namespace) -> int:
    from vae_anomaly.training.encode_cli import encode_command

    return encode_command(args)


COMMANDS = {
    "train": train_command,
    "score": score_command,
    "evaluate": evaluate_command,
    "encode": encode_command,
    "serve": serve_command,
    "demo": demo_command,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(only=command_in(argv) or "").parse_args(argv)
    from vae_anomaly.model.errors import InputError, ModelError
    from vae_anomaly.training.data import DataError
    from vae_anomaly.training.trainer import OptionsError

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return COMMANDS[args.command](args)
    except InputError as exc:
        lines = [" ".join(str(p) for p in issue.loc) + f": {issue.msg}" for issue in exc.issues[:10]]
        more = f"\n... and {len(exc.issues) - 10} more" if len(exc.issues) > 10 else ""
        print("error: the data does not fit the model's schema:\n" + "\n".join(lines) + more, file=sys.stderr)
        return 2
    except (ModelError, DataError, OptionsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `vae-anomaly score ... | head`: the reader is gone; stop quietly
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    finally:
        _leave_process_group()


EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process killed by SIGPIPE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise BrokenPipeError
    again (the recipe of Python's `signal` documentation)."""
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _leave_process_group() -> None:
    """Under torchrun, wait for every rank (rank 0 may still be writing the artifact), then leave
    the process group, so no rank exits with collectives in flight."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
