"""`vae-anomaly train --family NAME` with each family's own flags: the manifest records the family
and its config, `score` works on the result, and options of other families are refused with an
"error:" line naming the flag and the family it belongs to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vae_anomaly.model.detector import Detector
from vae_anomaly.training.cli import main
from vae_anomaly.training.trainer import OptionsError, TrainConfig

TRAIN = ["--epochs", "2", "--quiet", "--device", "cpu", "--label-column", "label"]


@pytest.mark.parametrize(
    ("family", "flags", "expected"),
    [
        ("dae", ["--noise", "0.3", "--noise-type", "gaussian"], {"noise": 0.3, "noise_type": "gaussian"}),
        ("sparse-ae", ["--sparsity", "0.05"], {"sparsity": 0.05}),
        ("iwae", ["--iwae-samples", "3"], {"iwae_samples": 3}),
        ("hvae", ["--top-latent-dim", "1"], {"top_latent_dim": 1}),
        ("hvae", ["--hidden-dim", "8"], {"hidden_dim": 8}),
        ("aae", ["--adversarial-weight", "0.5"], {"adversarial_weight": 0.5}),
        ("aae", ["--discriminator-dims", "8,4"], {"discriminator_dims": [8, 4]}),
        ("ae", [], {}),
    ],
)
def test_train_records_the_family_and_its_options(labelled_csv: Path, tmp_path: Path, capsys, family, flags, expected):
    out = tmp_path / "model"
    assert main(["train", str(labelled_csv), "--out", str(out), "--family", family, *flags, *TRAIN]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["family"] == family
    assert expected.items() <= manifest["family_config"].items()
    assert Detector.load(out, "cpu").manifest.family == family
    capsys.readouterr()
    assert main(["score", str(out), str(labelled_csv), "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and all("score" in row for row in rows)


@pytest.mark.parametrize(
    ("family", "flags", "message"),
    [
        ("ae", ["--noise", "0.3"], "--noise is not an option of family 'ae' (it is of dae)"),
        ("dae", ["--sparsity", "0.1"], "--sparsity is not an option of family 'dae' (it is of sparse-ae)"),
        ("vae", ["--iwae-samples", "4"], "--iwae-samples is not an option of family 'vae' (it is of iwae)"),
        ("ae", ["--beta", "2"], "--beta is not an option of family 'ae' (it is of beta-vae)"),
        ("sparse-ae", ["--kl-warmup-epochs", "3"], "--kl-warmup-epochs is not an option of family 'sparse-ae'"),
        ("vae", ["--top-latent-dim", "2"], "(it is of hvae)"),
        ("hvae", ["--adversarial-weight", "2"], "(it is of aae)"),
        ("vae", ["--hidden-dim", "8"], "--hidden-dim is not an option of family 'vae' (it is of hvae)"),
        (
            "hvae",
            ["--discriminator-dims", "8"],
            "--discriminator-dims is not an option of family 'hvae' (it is of aae)",
        ),
        ("hvae", ["--hidden-dim", "0"], "family 'hvae': hidden_dim"),
        ("dae", ["--noise", "1.5"], "noise 1.5 must be below 1 for masking"),
    ],
)
def test_options_of_other_families_are_refused(labelled_csv: Path, tmp_path: Path, capsys, family, flags, message):
    code = main(["train", str(labelled_csv), "--out", str(tmp_path / "m"), "--family", family, *flags, *TRAIN])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err
    assert "Traceback" not in err and not (tmp_path / "m").exists()


def test_the_width_flags_build_networks_of_those_widths(labelled_csv: Path, tmp_path: Path):
    for family, flags in (("hvae", ["--hidden-dim", "8"]), ("aae", ["--discriminator-dims", "8,4"])):
        out = tmp_path / family
        assert main(["train", str(labelled_csv), "--out", str(out), "--family", family, *flags, *TRAIN]) == 0
        network = Detector.load(out, "cpu").network
        if family == "hvae":
            assert network.prior_z1[0].out_features == 8 and network.bottom_up_z2[0].out_features == 8
        else:
            assert [m.out_features for m in network.discriminator if hasattr(m, "out_features")] == [8, 4, 1]


def test_discriminator_widths_must_be_positive_integers(labelled_csv: Path, tmp_path: Path, capsys):
    argv = ["train", str(labelled_csv), "--out", str(tmp_path / "m"), "--family", "aae", *TRAIN]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--discriminator-dims", "8,0"])
    assert exit_info.value.code == 2 and "positive layer widths" in capsys.readouterr().err


def test_every_family_option_has_a_train_flag():
    """A family's config fields are its flags (`--name-with-dashes`): a new option cannot be
    forgotten in the CLI."""
    from vae_anomaly.training.cli import build_parser
    from vae_anomaly.training.trainer import family_option_names

    train = next(
        action for action in build_parser()._actions if getattr(action, "choices", None) and "train" in action.choices
    ).choices["train"]
    dests = {action.dest for action in train._actions}
    options = set().union(*family_option_names().values())
    assert options and options <= dests, sorted(options - dests)


def test_train_config_refuses_options_of_other_families():
    with pytest.raises(ValueError, match="'sparsity' is not an option of family 'ae' \\(it is of sparse-ae\\)"):
        TrainConfig(family="ae", sparsity=0.1)
    with pytest.raises(OptionsError, match="family 'dae': noise"):
        TrainConfig(family="dae", noise=-1.0).family_config(2)


def test_score_method_is_chosen_at_train_time_and_checked_against_the_family(
    labelled_csv: Path, tmp_path: Path, capsys
):
    out = tmp_path / "model"
    argv = ["train", str(labelled_csv), "--out", str(out), *TRAIN]
    assert main([*argv, "--family", "vae", "--score-method", "reconstruction"]) == 0
    assert json.loads((out / "manifest.json").read_text())["scoring"]["method"] == "reconstruction"
    capsys.readouterr()
    assert main([*argv, "--family", "ae", "--score-method", "elbo"]) == 2
    assert "score method 'elbo' is not offered by family 'ae' (reconstruction)" in capsys.readouterr().err
