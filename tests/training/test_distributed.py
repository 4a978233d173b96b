"""Data-parallel training (training.distributed): two gloo processes on a file store (no ports)
train one tiny tabular model; their weights must be equal after training (DDP synced every step),
every rank stops at the same epoch, each scores its own part of the calibration split and gets,
gathered, the scores one process computes from the same rows, and the manifest records the world size.

The workers end with an explicit barrier and `os._exit(0)`: gloo can abort at interpreter exit.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from vae_anomaly.training.distributed import World

WORLD = 2


def _frame_columns(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(10.0, 2.0, n)
    return {"a": a, "b": 3.0 * a + rng.normal(0.0, 0.5, n), "c": rng.normal(0.0, 1.0, n)}


CHUNK = 16
"""Calibration scoring chunk of the in-memory run: its 80 calibration rows make 5 chunks, 2 for
rank 0 and 3 for rank 1."""


def _worker(rank: int, store: str, out: str, broken: bool, stream: bool = False) -> None:
    """One rank: join the group, train, write this rank's weights and summary, then leave hard."""
    import functools

    import torch.distributed as dist

    from vae_anomaly.training import tabular, trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    scored: list[int] = []  # inputs of each calibration scoring call of the trainer on this rank
    score_in_chunks = trainer.score_in_chunks

    def counted(network, batch, *args, **kwargs):
        scored.append(len(batch))
        return score_in_chunks(network, batch, *args, **kwargs)

    trainer.score_in_chunks = counted  # type: ignore[assignment]
    tabular.fit = functools.partial(trainer.fit, chunk_size=CHUNK)  # type: ignore[assignment]
    if broken:
        # The mistake the test must catch: a loss built without DDP's forward (here: no wrapper at
        # all) trains every rank apart, without any error.
        trainer._wrap = lambda network, world: network  # type: ignore[assignment]
    from vae_anomaly.training.tabular import fit_detector
    from vae_anomaly.training.trainer import TrainConfig

    config = TrainConfig(
        epochs=6,
        hidden_dims=[8],
        latent_dim=2,
        kl_warmup_epochs=2,
        device="cpu",
        batch_size=64,
        thresholds={"warn": 0.05},
        seed=0,
    )
    if stream:  # the streamed fit: chunks shared out by rank, same number of steps on every rank
        import pandas as pd

        from vae_anomaly.training.streaming import ReadOptions, fit_stream

        path = Path(out) / "rows.parquet"
        if rank == 0:
            pd.DataFrame(_frame_columns(400, 0)).to_parquet(path, row_group_size=50)
        dist.barrier()
        result = fit_stream(path, config, ReadOptions(chunk_rows=50), progress=False)
        single, calibration_scored = None, list(scored)
    else:
        result = fit_detector(_frame_columns(400, 0), config, progress=False)
        single = _single_process_calibration(result.detector)
        calibration_scored = list(scored)  # this fit's calls only, not those of the pairs below
        if not broken:  # the other kinds and the aae in the same group (no second spawn)
            from tests.training.test_distributed_kinds import FAST_PAIRS, train_pairs

            (Path(out) / f"pairs{rank}.json").write_text(json.dumps(train_pairs(FAST_PAIRS)))
    state = {k: v.contiguous() for k, v in result.detector.network.state_dict().items()}
    save_file(state, str(Path(out) / f"rank{rank}.safetensors"))
    summary = {
        **{k: result.summary[k] for k in ("epochs", "best_epoch", "world_size", "rows", "validation_elbo")},
        "writer": result.world.is_writer,
        "calibration": result.detector.manifest.calibration_scores,
        "single_process_calibration": single,
        "calibration_scored": calibration_scored,
        "out": out,
    }
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(summary))
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)


def _single_process_calibration(detector) -> list[float]:
    """The calibration rows of `fit_detector` (its seeded split of the 400 rows) scored by the
    trained detector in this one process, sorted as the manifest stores them."""
    from vae_anomaly.model.kinds.tabular.preprocessing import check_columns
    from vae_anomaly.model.thresholds import sort_calibration
    from vae_anomaly.training.data import split_rows

    checked = check_columns(detector.kind.schema, _frame_columns(400, 0))
    rows = split_rows(400, 0.1, 0.2, 0).calibration
    return sort_calibration(detector.terms({name: values[rows] for name, values in checked.items()}).score).tolist()


def _run(tmp_path: Path, broken: bool = False, stream: bool = False) -> list[tuple[dict[str, torch.Tensor], dict]]:
    store = tmp_path / "store"
    mp.start_processes(_worker, args=(str(store), str(tmp_path), broken, stream), nprocs=WORLD, start_method="spawn")
    return [
        (load_file(str(tmp_path / f"rank{r}.safetensors")), json.loads((tmp_path / f"rank{r}.json").read_text()))
        for r in range(WORLD)
    ]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[dict[str, torch.Tensor], dict]]:
    return _run(tmp_path_factory.mktemp("ddp"))


def test_two_ranks_train_one_model(ranks):
    (weights0, summary0), (weights1, summary1) = ranks
    for name, tensor in weights0.items():
        assert torch.equal(tensor, weights1[name]), f"{name} differs between ranks: gradients were not synced"
    assert summary0["world_size"] == summary1["world_size"] == WORLD
    assert summary0["epochs"] == summary1["epochs"] and summary0["best_epoch"] == summary1["best_epoch"]
    assert summary0["validation_elbo"] == summary1["validation_elbo"]
    assert summary0["calibration"] == summary1["calibration"]
    assert (summary0["writer"], summary1["writer"]) == (True, False)
    assert summary0["rows"] == {"train": 280, "validation": 40, "calibration": 80}


def test_each_rank_scores_its_part_of_calibration_and_gets_one_process_scores(ranks):
    """Rank 0 scores 2 chunks of 16 calibration rows, rank 1 the other 3; the gathered scores are
    bit for bit those one process computes from the same 80 rows with the trained weights."""
    (_, summary0), (_, summary1) = ranks
    assert (summary0["calibration_scored"], summary1["calibration_scored"]) == ([32], [48])
    assert summary0["calibration"] == summary0["single_process_calibration"]
    assert len(summary0["calibration"]) == 80


def test_images_sequences_and_the_aae_train_one_model_on_two_ranks(ranks, tmp_path_factory):
    """`tests/training/test_distributed_kinds.py`'s check on its `FAST_PAIRS`, trained by the same
    workers; the whole matrix of kinds and families is there, marked slow."""
    from tests.training.test_distributed_kinds import FAST_PAIRS, check_pair

    out = Path(ranks[0][1]["out"])
    pairs = [json.loads((out / f"pairs{r}.json").read_text()) for r in range(WORLD)]
    for kind, family in FAST_PAIRS:
        check_pair(pairs, kind, family)


def test_a_loss_outside_ddp_forward_is_caught(tmp_path):
    """Without the wrapper every rank trains on its own shard: the weights drift apart, which is
    exactly what `test_two_ranks_train_one_model` checks."""
    (weights0, _), (weights1, _) = _run(tmp_path, broken=True)
    assert any(not torch.equal(tensor, weights1[name]) for name, tensor in weights0.items())


@pytest.mark.slow  # ~25 s on a loaded 2-core VM: the file is read by both ranks every epoch
def test_two_ranks_stream_one_model(tmp_path):
    (weights0, summary0), (weights1, summary1) = _run(tmp_path, stream=True)
    for name, tensor in weights0.items():
        assert torch.equal(tensor, weights1[name]), name
    assert summary0["world_size"] == 2 and summary0["calibration"] == summary1["calibration"]
    assert sum(summary0["rows"].values()) == 400


def test_single_process_world_without_torchrun(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    world = World.from_environment("cpu")
    assert (world.rank, world.size, world.distributed, world.is_writer) == (0, 1, False, True)
    assert world.sum(1.5, 2) == [1.5, 2.0]
    assert world.shard(10) == (0, 10)
    assert World(rank=1, size=2).shard(5) == (2, 5)
