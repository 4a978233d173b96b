"""Intra-op threads chosen by the work per step (`model.threads`), `--threads`, and the manifest."""

from __future__ import annotations

import json

import pytest
import torch

from vae_anomaly.model.threads import FLOPS_PER_THREAD, forward_flops, threads_for, torch_threads
from vae_anomaly.training.cli import build_parser, main
from vae_anomaly.training.tabular import fit_detector
from vae_anomaly.training.trainer import TrainConfig


def test_threads_for_grows_with_the_work_and_stops_at_the_cores():
    assert threads_for(0, cores=8) == 1
    assert threads_for(int(FLOPS_PER_THREAD) - 1, cores=8) == 1
    assert threads_for(int(3 * FLOPS_PER_THREAD), cores=8) == 3
    assert threads_for(int(100 * FLOPS_PER_THREAD), cores=2) == 2


def test_forward_flops_counts_a_matrix_product():
    layer = torch.nn.Linear(10, 20, bias=False)
    assert forward_flops(lambda: layer(torch.zeros(4, 10))) == 2 * 4 * 10 * 20


def test_torch_threads_restores_the_setting():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_training_picks_one_thread_for_a_tiny_mlp_and_restores_torch(normal_columns):
    """Before: training ran on torch's default threads (all cores), 10-15x slower per step for a
    tiny MLP on a loaded 2-core machine; nothing recorded which."""
    before = torch.get_num_threads()
    result = fit_detector(normal_columns, TrainConfig(epochs=2, hidden_dims=[16, 8], latent_dim=2), progress=False)
    assert result.summary["threads"] == 1
    assert result.detector.manifest.training["threads"] == 1
    assert torch.get_num_threads() == before


def test_configured_threads_are_used(normal_columns, monkeypatch):
    seen: list[int] = []
    original = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), original(n))[1])
    result = fit_detector(
        normal_columns, TrainConfig(epochs=1, hidden_dims=[8], latent_dim=2, threads=3), progress=False
    )
    assert result.summary["threads"] == 3 and seen[0] == 3


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_threads_flag_refuses_what_is_not_a_positive_count(value, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "data.csv", "--out", "m", "--threads", value])
    assert "--threads" in capsys.readouterr().err


def test_score_threads_default_to_the_recorded_ones(tmp_path, labelled_csv, monkeypatch):
    model = tmp_path / "model"
    args = ["train", str(labelled_csv), "--label-column", "label", "--out", str(model)]
    assert main([*args, "--epochs", "2", "--quiet", "--threads", "1"]) == 0
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["training"]["threads"] == 1 and manifest["training"]["config"]["threads"] == 1
    seen: list[int] = []
    original = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), original(n))[1])
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(model), str(labelled_csv), "--out", str(out)]) == 0
    assert seen[0] == 1
    seen.clear()
    assert main(["score", str(model), str(labelled_csv), "--out", str(tmp_path / "again.jsonl"), "--threads", "2"]) == 0
    assert seen[0] == 2
