"""Every data kind and every family trains under DDP (`training.distributed`): two gloo processes on
a file store (no ports) train each (kind, family) pair on tiny data; the ranks' weights must be
equal afterwards (gradients synced through the wrapper's `forward` every step), and so must what
calibration produced (scores, thresholds, the image kind's pixel baseline), and the manifest must
record the world size. A family whose network left a parameter out of the loss, or a kind whose
batch did not survive the wrapper, fails here (DDP raises, or the weights drift apart).

The whole matrix (26 pairs, ~30 s on the loaded 2-core VM) is marked slow; the default suite trains
three pairs (`FAST_PAIRS`). The workers end with an
explicit barrier and `os._exit(0)`: gloo can abort at interpreter exit.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from vae_anomaly.model.families import FAMILIES

WORLD = 2
SEQUENCE_FAMILIES = [name for name in FAMILIES if name != "cvae"]  # a sensor stream has no condition
PAIRS = (
    [("tabular", name) for name in FAMILIES]
    + [("image", name) for name in FAMILIES]
    + [("sequence", name) for name in SEQUENCE_FAMILIES]
)


def _tabular(family: str):
    from vae_anomaly.training.tabular import fit_detector
    from vae_anomaly.training.trainer import TrainConfig

    rng = np.random.default_rng(0)
    a = rng.normal(10.0, 2.0, 240)
    columns = {"a": a, "b": 3.0 * a + rng.normal(0.0, 0.5, 240), "color": np.where(a > 10, "red", "blue")}
    options: dict[str, Any] = {"hidden_dims": [8], "latent_dim": 2}
    if family == "cvae":
        columns["site"] = rng.choice(["north", "south"], 240)
        options["condition_columns"] = ["site"]
    config = TrainConfig(epochs=2, batch_size=32, device="cpu", family=family, score_samples=2, **options)
    return fit_detector(columns, config, progress=False)


def _image(family: str):
    from vae_anomaly.model.conditions import fit_condition_spec
    from vae_anomaly.model.kinds.image.images import ImageSpec
    from vae_anomaly.training.image_trainer import fit_image_detector
    from vae_anomaly.training.trainer import TrainConfig

    rng = np.random.default_rng(0)
    images = np.zeros((120, 1, 8, 8), dtype=np.float32)
    columns = rng.integers(1, 7, 120)
    images[np.arange(120), 0, :, columns] = 1.0
    condition, labels = None, None
    if family == "cvae":
        names = np.where(columns < 4, "left", "right")
        condition = fit_condition_spec({"label": names}, ["label"])
        labels = np.array([condition.variables[0].index(v) for v in names.tolist()], dtype=np.int64)
    config = TrainConfig(epochs=2, batch_size=32, device="cpu", family=family, latent_dim=2, score_samples=2)
    spec = ImageSpec(height=8, width=8, channels=1)
    return fit_image_detector(images, spec, config, progress=False, condition=condition, labels=labels)


def _sequence(family: str):
    from vae_anomaly.training.sequence import fit_sequence_detector, sequence_train_config

    t = np.arange(300)
    rng = np.random.default_rng(0)
    values = np.stack([np.sin(t / 3), np.cos(t / 3)], 1) + 0.05 * rng.normal(size=(300, 2))
    config = sequence_train_config(
        epochs=2, window=10, batch_size=32, device="cpu", family=family, latent_dim=2, score_samples=2
    )
    return fit_sequence_detector(values, ["pressure", "flow"], config, progress=False)


TRAINERS = {"tabular": _tabular, "image": _image, "sequence": _sequence}
FAST_PAIRS = [("image", "vae"), ("sequence", "vae"), ("tabular", "aae")]
"""The default suite's share, trained by `test_distributed.py`'s workers after their tabular `vae`
(no spawn of its own): the other kinds, and the family with a second network inside its loss."""


def _digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_pairs(pairs: list[tuple[str, str]]) -> dict[str, dict]:
    """Train each (kind, family) pair on this rank; what each produced, by "kind/family"."""
    results = {}
    for kind, family in pairs:
        result = TRAINERS[kind](family)
        manifest = result.detector.manifest
        results[f"{kind}/{family}"] = {
            "weights": _digest(result.detector.network.state_dict()),
            "world_size": result.summary["world_size"],
            "epochs": result.summary["epochs"],
            "calibration": manifest.calibration_scores,
            "thresholds": {name: t.value for name, t in manifest.thresholds.items()},
            "kind_config": manifest.kind_config.model_dump(mode="json"),
            "writer": result.world.is_writer,
        }
    return results


def _worker(rank: int, store: str, out: str, pairs: list[tuple[str, str]]) -> None:
    """One rank: train each pair, write what each produced, then leave hard."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(train_pairs(pairs)))
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)


def _train_on_two_ranks(out: Path, pairs: list[tuple[str, str]]) -> list[dict[str, dict]]:
    context = mp.start_processes(
        _worker, args=(str(out / "store"), str(out), pairs), nprocs=WORLD, start_method="spawn", join=False
    )
    deadline = time.monotonic() + 900
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the DDP workers did not finish within 15 minutes (a collective hung)")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def check_pair(ranks: list[dict[str, dict]], kind: str, family: str) -> None:
    """The two ranks' results of one pair agree (see the module docstring)."""
    first, second = (rank[f"{kind}/{family}"] for rank in ranks)
    assert first["weights"] == second["weights"], "the ranks' weights differ: gradients were not synced"
    assert first["world_size"] == second["world_size"] == WORLD
    assert first["epochs"] == second["epochs"]
    assert first["calibration"] == second["calibration"] and len(first["calibration"]) >= 2
    assert first["thresholds"] == second["thresholds"]
    assert first["kind_config"] == second["kind_config"]
    assert (first["writer"], second["writer"]) == (True, False)


@pytest.fixture(scope="module")
def all_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, dict]]:
    return _train_on_two_ranks(tmp_path_factory.mktemp("ddp-all"), PAIRS)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "family"), PAIRS)
def test_every_kind_and_family_trains_one_model_on_two_ranks(all_ranks, kind: str, family: str):
    check_pair(all_ranks, kind, family)
