"""The training loop, shared by every data kind and family: Adam on mini-batches, the family's
loss from its network's `forward`, regulariser warm-up, early stopping, then calibration.

`fit` is the one generic entry point; each kind's training module (`training.tabular`,
`training.image_trainer`) prepares its inputs and calls it, and the CLI and the benchmarks call
those, so "what `vae-anomaly train` does" and "what the benchmark measures" cannot drift apart.
Nothing here knows a concrete kind or family: they are reached through `model.kinds.KINDS` and
`model.families.FAMILIES`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vae_anomaly.model.artifact import Manifest, library_versions, utc_now
from vae_anomaly.model.detector import Detector, resolve_device
from vae_anomaly.model.families import FAMILIES
from vae_anomaly.model.families.base import FamilyNetwork, TrainStep
from vae_anomaly.model.kinds import KINDS
from vae_anomaly.model.kinds.base import DataKind
from vae_anomaly.model.scoring import ScoreTerms, ScoringConfig, posterior_noise, score_in_chunks
from vae_anomaly.model.threads import forward_flops, threads_for, torch_threads
from vae_anomaly.model.thresholds import ThresholdSet, fpr_guaranteed, sort_calibration

# TrainConfig and its option checks live in training.config (torch-free, for `train --help`); the
# names stay importable from here, where they were first.
from vae_anomaly.training.config import OptionsError as OptionsError
from vae_anomaly.training.config import TrainConfig as TrainConfig
from vae_anomaly.training.config import family_option_names as family_option_names
from vae_anomaly.training.config import refused_family_options as refused_family_options
from vae_anomaly.training.data import Split
from vae_anomaly.training.distributed import SINGLE, World
from vae_anomaly.training.rows import InMemoryRows, TrainRows, mean_elbo, validation_objective

_mean_elbo = mean_elbo  # the name the tests knew

logger = logging.getLogger(__name__)


VARIANCE_LR_FACTOR = 10.0
"""Decoder log-variance parameters (any parameter whose name ends in "logvar", e.g. the tabular
`numeric_logvar`, the image `pixel_logvar`) learn this much faster than the weights. Adam moves a
parameter by at most ~lr per step, and a log-variance may need to travel 5 units (a residual spread
of 0.08 standard deviations): at lr 1e-3 that alone would take thousands of steps."""


def is_variance_parameter(name: str) -> bool:
    return name.rsplit(".", 1)[-1].endswith("logvar")


def make_optimizer(network: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    variance = [p for name, p in network.named_parameters() if is_variance_parameter(name)]
    others = [p for name, p in network.named_parameters() if not is_variance_parameter(name)]
    groups: list[dict[str, Any]] = [{"params": others}]
    if variance:
        groups.append({"params": variance, "lr": config.learning_rate * VARIANCE_LR_FACTOR, "weight_decay": 0.0})
    # One fused kernel per step for all parameters instead of a dozen small ops per tensor: on a
    # tiny MLP the single-tensor Adam was a third of the step (profiled, demo-sized VAE).
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in network.parameters())
    return torch.optim.Adam(groups, lr=config.learning_rate, weight_decay=config.weight_decay, fused=fused or None)


def auto_batch_size(n_train: int, steps_per_epoch: int = 16) -> int:
    """About `steps_per_epoch` steps per epoch, within [32, 512]: small data sets still get enough
    gradient steps per epoch for the decoder variances to converge, large ones are not slowed by
    tiny batches."""
    return int(min(512, max(32, n_train // steps_per_epoch)))


@dataclass
class TrainResult:
    detector: Detector
    summary: dict[str, Any]
    world: World = SINGLE  # under torchrun every rank returns the same detector; only `world.is_writer` saves it


def _wrap(network: FamilyNetwork, world: World) -> torch.nn.Module:
    """The module the loss goes through: `DistributedDataParallel` around the network when there
    are several ranks (it syncs gradients only for what its `forward` returned), else the network."""
    if not world.distributed:
        return network
    from torch.nn.parallel import DistributedDataParallel

    device = next(network.parameters()).device
    return DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)


def _train_epochs(
    network: FamilyNetwork,
    train: TrainRows,
    validation: Any,
    validation_noise: torch.Tensor,
    batch_size: int,
    warmup_epochs: int,
    config: TrainConfig,
    epochs: tqdm,
    eval_chunk: int = 4096,
    world: World = SINGLE,
) -> tuple[list[dict[str, float]], int, float]:
    """Train until early stopping; leaves `network` holding the weights of the best validation epoch.

    `batch_size` is global: with several ranks each takes ceil(batch_size / world) rows a step, and
    the warm-up counts steps of the global batch. Returns the per-epoch history, the best epoch and
    its validation objective (nats per row).
    """
    device = train.device
    model = _wrap(network, world)
    optimizer = make_optimizer(network, config)
    # Each rank draws its own noise (rank 0 keeps the single-process seed).
    generator = torch.Generator().manual_seed(config.seed + world.rank)
    local_batch = math.ceil(batch_size / world.size)
    warmup_steps = warmup_epochs * train.steps_per_epoch(local_batch, world)
    best_elbo, best_epoch, best_state = -math.inf, 0, None
    history: list[dict[str, float]] = []
    step = 0
    for epoch in epochs:
        network.train()
        recon_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
        kl_sum = torch.zeros((), device=device)
        seen = 0
        for batch in train.epoch(epoch, local_batch, generator, world):
            seen += len(batch)
            warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
            terms = model(batch, TrainStep(generator, warmup))  # through DDP's forward: gradients sync
            loss = terms.loss.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            recon_sum += terms.reconstruction.detach().sum()
            kl_sum += terms.regulariser.detach().sum()
        val_elbo = validation_objective(
            network, validation, validation_noise, eval_chunk, config.validation_trim, world
        )
        recon_total, kl_total, seen_total = world.sum(recon_sum, kl_sum, seen)
        record = {
            "epoch": epoch,
            "train_recon": recon_total / seen_total,
            "train_kl": kl_total / seen_total,
            "validation_elbo": val_elbo,
        }
        history.append(record)
        epochs.set_postfix(
            recon=f"{record['train_recon']:.3f}", kl=f"{record['train_kl']:.3f}", val_elbo=f"{val_elbo:.3f}"
        )
        # Early stopping only counts once the regulariser's weight has reached its final value.
        if val_elbo > best_elbo or epoch <= warmup_epochs:
            best_elbo, best_epoch = val_elbo, epoch
            best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        elif epoch - best_epoch >= config.patience:
            break
    epochs.close()
    assert best_state is not None
    network.load_state_dict(best_state)
    return history, best_epoch, best_elbo


def calibrated_fields(scores: np.ndarray, config: TrainConfig, version: str | None, n: int) -> dict[str, Any]:
    """Thresholds at the configured target rates from calibration scores, plus the manifest's
    version fields; warns where the calibration split is too small to guarantee a rate."""
    calibration = sort_calibration(scores)
    if config.active_threshold not in config.thresholds:
        raise ValueError(f"active threshold {config.active_threshold!r} is not among {sorted(config.thresholds)}")
    thresholds = ThresholdSet.from_targets(calibration, config.thresholds, config.active_threshold)
    for name, fpr in config.thresholds.items():
        if not fpr_guaranteed(calibration.size, fpr):
            logger.warning(
                "threshold %s: %d calibration rows cannot guarantee a %.4g false-positive rate "
                "(needs at least %d); it is set at the largest calibration score",
                name,
                n,
                fpr,
                math.ceil(1 / fpr) - 1,
            )
    created = utc_now()
    return {
        "created_at": created,
        "version": version or created.replace("-", "").replace(":", ""),
        "thresholds": thresholds.thresholds,
        "active_threshold": thresholds.active,
        "calibration_scores": calibration.tolist(),
    }


def calibration_terms(
    network: FamilyNetwork, calibration: Any, noise: torch.Tensor, scoring: ScoringConfig, world: World = SINGLE
) -> ScoreTerms:
    """The calibration split's score terms, as one process computes them.

    With several ranks each scores its contiguous block of the split's scoring chunks
    (`scoring.chunk_size` inputs each, aligned as one process aligns them) and the per-input arrays
    are all-gathered in rank order: every input is scored in the very batch one process would
    score it in, so every rank gets the single process's scores bit for bit, and the capped
    calibration set (hence the p-value lookup) is the same. The decoder outputs (`expected`) are not
    shipped between ranks: the gathered terms carry None there (a kind's `calibrated_config` reads
    the per-input arrays only)."""
    if not world.distributed:
        return score_in_chunks(network, calibration, noise, scoring)
    n, size = len(calibration), scoring.chunk_size
    first, last = world.shard(math.ceil(n / size))
    local = score_in_chunks(network, calibration.slice(first * size, min(last * size, n)), noise, scoring)
    return ScoreTerms(
        score=world.gather_rows(local.score),
        elbo=world.gather_rows(local.elbo),
        reconstruction_error=world.gather_rows(local.reconstruction_error),
        contributions=world.gather_rows(local.contributions),
        latent_mean=world.gather_rows(local.latent_mean),
        expected=None,
    )


@dataclass
class TrainingRun:
    """What `train_network` reports about the loop it ran."""

    history: list[dict[str, float]]
    best_epoch: int
    best_elbo: float  # validation ELBO of the best epoch, nats per row or image
    train_elbo: float  # of the best epoch's weights on the training split
    batch_size: int


def train_network(
    network: FamilyNetwork,
    train: TrainRows,
    validation: Any,
    config: TrainConfig,
    warmup_epochs: int,
    progress: bool,
    eval_chunk: int = 4096,
    world: World = SINGLE,
) -> TrainingRun:
    """The training loop with its set-up (batch size, validation noise, progress bar), shared by
    every kind and family; leaves `network` in eval mode holding the best epoch's weights."""
    validation_noise = posterior_noise(8, network.latent_dim, config.seed + 1).to(train.device)
    batch_size = config.batch_size or auto_batch_size(len(train), config.steps_per_epoch)
    progress_bar = tqdm(
        range(1, config.epochs + 1),
        desc="training",
        unit="epoch",
        disable=None if progress and world.is_writer else True,
        leave=False,
    )
    history, best_epoch, best_elbo = _train_epochs(
        network, train, validation, validation_noise, batch_size, warmup_epochs, config, progress_bar, eval_chunk, world
    )
    network.eval()
    train_elbo = train.mean_objective(network, validation_noise, eval_chunk, world)
    return TrainingRun(history, best_epoch, best_elbo, train_elbo, batch_size)


def training_threads(network: FamilyNetwork, validation: Any, batch_size: int, config: TrainConfig) -> int:
    """`config.threads`, or the intra-op threads the work of one training step deserves
    (`model.threads.threads_for` on the FLOPs of a forward pass over one mini-batch, measured on
    validation rows and scaled to the batch size)."""
    if config.threads is not None:
        return config.threads
    rows = min(len(validation), batch_size)
    if rows == 0:
        return 1
    was_training = network.training
    network.eval()  # no running statistics move while counting
    try:
        step = TrainStep(torch.Generator().manual_seed(0), 1.0)
        flops = forward_flops(lambda: network(validation.slice(0, rows), step))
    finally:
        network.train(was_training)
    return threads_for(flops * batch_size // rows)


def training_summary(
    rows: dict[str, int],
    run: TrainingRun,
    device: torch.device,
    config: TrainConfig,
    started: float,
    world_size: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """What the manifest's `training` field records about a run (`threads`: the intra-op CPU
    threads it trained with)."""
    return {
        "rows": rows,
        "epochs": len(run.history),
        "best_epoch": run.best_epoch,
        "train_elbo": run.train_elbo,
        "validation_elbo": run.best_elbo,
        "last_epoch": run.history[-1],
        "wall_seconds": round(time.perf_counter() - started, 3),
        "device": str(device),
        "batch_size": run.batch_size,
        "world_size": world_size,
        "threads": threads,
        "config": config.model_dump(mode="json"),
    }


def unsaved_manifest(fields: dict[str, Any]) -> Manifest:
    """A manifest for a detector that has not been saved yet (no weights file, so no id)."""
    return Manifest.model_validate(
        {**fields, "model_id": "unsaved", "weights_sha256": "", "library_versions": library_versions()}
    )


def fit(
    kind: DataKind,
    split: Split,
    batches: tuple[Any, Any, Any],
    config: TrainConfig,
    version: str | None,
    progress: bool,
    started: float,
    eval_chunk: int = 4096,
    chunk_size: int | None = None,
) -> TrainResult:
    """Train the configured family on a kind's (train, validation, calibration) batches, calibrate
    the thresholds on the calibration split, and return the detector (see `fit_rows`)."""
    world = World.from_environment(config.device)
    device = world.device(resolve_device(config.device))
    train, validation, calibration = (batch.to(device) for batch in batches)
    rows = {"train": len(split.train), "validation": len(split.validation), "calibration": len(split.calibration)}
    return fit_rows(
        kind,
        rows,
        InMemoryRows(train, config.seed),
        validation,
        calibration,
        config,
        version,
        progress,
        started,
        eval_chunk,
        chunk_size,
        world,
    )


def fit_rows(
    kind: DataKind,
    rows: dict[str, int],
    train: TrainRows,
    validation: Any,
    calibration: Any,
    config: TrainConfig,
    version: str | None,
    progress: bool,
    started: float,
    eval_chunk: int = 4096,
    chunk_size: int | None = None,
    world: World = SINGLE,
) -> TrainResult:
    """Train on `train` (in memory or streamed), stop early on `validation`, calibrate the
    thresholds on `calibration` (both batches on the training device), return the detector.

    Deterministic for a given `config.seed` on the CPU. `chunk_size` bounds the inputs scored at once
    (`ScoringConfig.chunk_size`; its default when None). Under `torchrun` (or in an initialised
    process group) this is one rank of a data-parallel run (`training.distributed`): every rank holds
    the same validation and calibration batches, trains its shard, and returns the same detector;
    the result's `world` says which rank may write it. Each rank scores its part of the calibration
    split and the scores are all-gathered (`calibration_terms`): the same bits as one process.
    """
    device = train.device
    family = FAMILIES[config.family]
    family_config = config.family_config(config.latent_dim or kind.default_latent_dim())
    method = config.score_method or family.default_score
    if method not in family.score_methods:
        raise OptionsError(
            f"score method {method!r} is not offered by family {family.name!r} ({', '.join(family.score_methods)})"
        )
    condition = kind.condition_spec()
    if condition is not None and not family.conditional:
        conditional = ", ".join(name for name, f in FAMILIES.items() if f.conditional)
        raise OptionsError(
            f"the data has a condition ({', '.join(condition.names)}) but family {family.name!r} models none: "
            f"use a conditional family ({conditional}), or train without the condition"
        )
    torch.manual_seed(config.seed)
    network = family.build(kind, family_config).to(device)
    threads = training_threads(
        network, validation, config.batch_size or auto_batch_size(len(train), config.steps_per_epoch), config
    )
    scoring = ScoringConfig(method=method, n_samples=config.score_samples, seed=config.seed)
    if chunk_size is not None:
        scoring = scoring.model_copy(update={"chunk_size": chunk_size})
    with torch_threads(threads):
        run = train_network(
            network, train, validation, config, family_config.warmup_epochs(), progress, eval_chunk, world
        )
        noise = posterior_noise(scoring.n_samples, network.latent_dim, scoring.seed).to(device)
        terms = calibration_terms(network, calibration, noise, scoring, world)
    fields = calibrated_fields(terms.score, config, version, rows["calibration"])
    summary = training_summary(rows, run, device, config, started, world.size, threads)
    fields.update(
        {
            "kind": kind.name,
            "family": family.name,
            "kind_config": kind.calibrated_config(terms),
            "family_config": family_config,
            "scoring": scoring,
            "training": summary,
        }
    )
    manifest = unsaved_manifest(fields)
    # The network keeps the adapter it was trained with (likelihoods do not depend on calibration);
    # the detector renders with the calibrated one.
    return TrainResult(
        detector=Detector(manifest, KINDS[kind.name](manifest.kind_config), network, device),
        summary=summary,
        world=world,
    )


def training_report(manifest: Manifest, summary: dict[str, Any], unit: str, digits: int) -> list[str]:
    """What `vae-anomaly train` prints after a run: rows (or images) used, epochs, ELBO per `unit`,
    the thresholds and the wall time."""
    rows = summary["rows"]
    lines = [
        f"{unit}s used: {rows['train']} train, {rows['validation']} validation, {rows['calibration']} calibration",
        f"epochs: {summary['epochs']} (best {summary['best_epoch']}), device {summary['device']}",
        f"ELBO per {unit} (nats): train {summary['train_elbo']:.{digits}f}, "
        f"validation {summary['validation_elbo']:.{digits}f}",
    ]
    for name, threshold in manifest.thresholds.items():
        marker = " (active)" if name == manifest.active_threshold else ""
        lines.append(
            f"threshold {name}: score > {threshold.value:.{digits}f} at target FPR {threshold.target_fpr}{marker}"
        )
    lines.append(f"wall time: {summary['wall_seconds']:.1f} s")
    return lines
