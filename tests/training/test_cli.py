"""training.cli: `train`, `score` and `evaluate` end to end on small files, and errors as exit code 2
with an "error:" line on stderr."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tests.conftest import SCORE_RESULT_FIELDS
from vae_anomaly.model.artifact import MANIFEST, WEIGHTS
from vae_anomaly.model.detector import Detector
from vae_anomaly.training.cli import main
from vae_anomaly.training.data import read_table

THRESHOLDS = ["--threshold", "warn=0.05", "--threshold", "critical=0.02"]
TRAIN = ["--epochs", "15", "--quiet", "--device", "cpu", *THRESHOLDS]


def _run(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) with its stdout and stderr captured (for module-scoped fixtures without capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def csv_model(labelled_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    directory = tmp_path_factory.mktemp("cli") / "model"
    code, out, err = _run(["train", labelled_csv, "--out", directory, "--label-column", "label", *TRAIN])
    assert code == 0, err
    return directory, out


@pytest.fixture(scope="module")
def in_process(csv_model: tuple[Path, str], labelled_csv: Path):
    """Scores of the labelled CSV computed without the CLI, in file order."""
    detector = Detector.load(csv_model[0], "cpu")
    table = read_table(labelled_csv, "label", schema=detector.kind.schema)
    columns = detector.kind.columns_from_table(table.columns)
    return detector, table, detector.score_results(columns)


# -- train ----------------------------------------------------------------------------------------


def test_train_on_csv(csv_model: tuple[Path, str], labelled_csv: Path):
    directory, out = csv_model
    assert sorted(p.name for p in directory.iterdir()) == [MANIFEST, WEIGHTS]
    detector = Detector.load(directory, "cpu")
    manifest = detector.manifest
    assert out.startswith(f"model {manifest.model_id} (version {manifest.version}) written to {directory}\n")
    # Only the 300 normal rows are used; the label column is not a feature.
    assert "rows used: 210 train, 30 validation, 60 calibration" in out
    assert detector.kind.schema.names == ["a", "b", "items", "color", "flag"]
    assert [f.type for f in detector.kind.schema.features] == [
        "numeric",
        "numeric",
        "numeric",
        "categorical",
        "boolean",
    ]
    assert detector.kind.schema.features[2].integer
    assert manifest.training["config"]["epochs"] == 15
    assert f"threshold warn: score > {manifest.thresholds['warn'].value:.4f} at target FPR 0.05 (active)" in out
    assert "threshold critical:" in out and "wall time:" in out


def test_train_on_npz_uses_y_as_labels(labelled_npz: Path, tmp_path: Path):
    code, out, err = _run(["train", labelled_npz, "--out", tmp_path / "m", *TRAIN, "--model-version", "v7"])
    assert code == 0, err
    detector = Detector.load(tmp_path / "m", "cpu")
    assert detector.kind.schema.names == ["x0", "x1", "x2", "x3"]
    assert detector.manifest.version == "v7"
    assert "rows used: 210 train, 30 validation, 60 calibration" in out  # the 300 rows with y == 0


def test_train_with_schema_and_options(labelled_csv: Path, tmp_path: Path):
    schema = tmp_path / "schema.json"
    schema.write_text(
        json.dumps(
            {"features": [{"name": "items", "type": "categorical"}, {"name": "b", "type": "numeric", "required": True}]}
        )
    )
    argv = ["train", labelled_csv, "--out", tmp_path / "m", "--label-column", "label", "--schema", schema]
    argv += ["--epochs", "2", "--quiet", "--device", "cpu", "--latent-dim", "3", "--batch-size", "64", "--seed", "5"]
    argv += ["--threshold", "warn=0.1", "--threshold", "critical=0.05", "--active-threshold", "critical"]
    argv += ["--exclude-columns", "flag"]
    code, _, err = _run(argv)
    assert code == 0, err
    manifest = Detector.load(tmp_path / "m", "cpu").manifest
    features = {f.name: f for f in manifest.kind_config.feature_schema.features}
    assert "flag" not in features
    assert features["items"].type == "categorical" and features["b"].required
    assert manifest.family_config.latent_dim == 3 and manifest.training["batch_size"] == 64
    assert manifest.training["config"]["seed"] == 5
    assert manifest.active_threshold == "critical" and manifest.thresholds["warn"].target_fpr == 0.1


@pytest.mark.parametrize("bad", ["warn", "warn=", "=0.1", "warn=1.5", "warn=0", "warn=x"])
def test_bad_threshold_argument_is_a_usage_error(labelled_csv: Path, tmp_path: Path, capsys, bad: str):
    with pytest.raises(SystemExit) as info:
        main(["train", str(labelled_csv), "--out", str(tmp_path / "m"), "--threshold", bad])
    assert info.value.code == 2
    assert f"expected NAME=FPR with 0 < FPR < 1, got {bad!r}" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


# -- score ----------------------------------------------------------------------------------------


def test_score_to_csv(csv_model: tuple[Path, str], labelled_csv: Path, in_process, tmp_path: Path, capsys):
    out = tmp_path / "scores.csv"
    assert main(["score", str(csv_model[0]), str(labelled_csv), "--out", str(out), "--device", "cpu"]) == 0
    assert capsys.readouterr().err.strip().startswith(f"330 rows scored → {out}")
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame.columns) == list(SCORE_RESULT_FIELDS)
    _, _, results = in_process
    assert len(frame) == len(results) == 330
    np.testing.assert_allclose(frame["score"].to_numpy(), [r["score"] for r in results], rtol=1e-12)
    np.testing.assert_allclose(frame["p_value"].to_numpy(), [r["p_value"] for r in results], rtol=1e-12)
    assert frame["is_anomaly"].tolist() == [r["is_anomaly"] for r in results]
    assert frame["thresholds_exceeded"].tolist() == [";".join(r["thresholds_exceeded"]) for r in results]
    assert frame["missing"].tolist() == [";".join(r["missing"]) for r in results]
    assert [json.loads(text) for text in frame["top_features"]] == [r["top_features"] for r in results]
    # the joined forms really occur: some rows exceed both thresholds, some miss two features
    assert "warn;critical" in set(frame["thresholds_exceeded"])
    assert any(";" in text for text in frame["missing"])


def test_score_rows_follow_the_input(csv_model: tuple[Path, str], labelled_csv: Path, tmp_path: Path):
    """One output row per input row, in order: the missing column matches the input's gaps."""
    out = tmp_path / "scores.csv"
    assert _run(["score", csv_model[0], labelled_csv, "--out", out, "--device", "cpu"])[0] == 0
    source = pd.read_csv(labelled_csv)
    features = ["a", "b", "items", "color", "flag"]
    expected = [";".join(name for name in features if pd.isna(row[name])) for _, row in source.iterrows()]
    assert pd.read_csv(out, keep_default_na=False)["missing"].tolist() == expected


def test_score_to_jsonl(csv_model: tuple[Path, str], labelled_csv: Path, in_process, tmp_path: Path):
    out = tmp_path / "scores.jsonl"
    code, _, err = _run(["score", csv_model[0], labelled_csv, "--out", out, "--device", "cpu", "--explain", "1"])
    assert code == 0, err
    lines = out.read_text().splitlines()
    assert len(lines) == 330
    rows = [json.loads(line) for line in lines]
    _, _, results = in_process
    assert [r["score"] for r in rows] == pytest.approx([r["score"] for r in results], rel=1e-12)
    assert all(set(r) == set(SCORE_RESULT_FIELDS) for r in rows)
    assert all(len(r["top_features"]) <= 1 for r in rows)
    assert [r["missing"] for r in rows] == [r["missing"] for r in results]


def test_score_to_stdout(csv_model: tuple[Path, str], labelled_csv: Path, labelled_npz: Path, tmp_path: Path, capsys):
    # An .npz scored with a CSV-trained model lacks its columns: an input error, exit code 2.
    assert main(["score", str(csv_model[0]), str(labelled_npz), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the data does not fit the model's schema:\ncolumns a: column is absent from the data")
    small = tmp_path / "small.csv"
    pd.read_csv(labelled_csv).head(3).to_csv(small, index=False)
    assert main(["score", str(csv_model[0]), str(small), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(set(json.loads(line)) == set(SCORE_RESULT_FIELDS) for line in lines)


def test_score_a_file_without_rows(csv_model: tuple[Path, str], labelled_csv: Path, tmp_path: Path, capsys):
    empty = tmp_path / "empty.csv"
    pd.read_csv(labelled_csv).head(0).to_csv(empty, index=False)
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(csv_model[0]), str(empty), "--out", str(out), "--device", "cpu"]) == 0
    assert out.read_text() == ""
    assert capsys.readouterr().err.startswith("0 rows scored")


def test_score_with_unknown_output_type(csv_model: tuple[Path, str], labelled_csv: Path, tmp_path: Path, capsys):
    out = tmp_path / "scores.xlsx"
    assert main(["score", str(csv_model[0]), str(labelled_csv), "--out", str(out), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == f"error: {out}: --out must end in .jsonl, .csv, .parquet\n"
    assert not out.exists()


def test_a_bad_output_type_is_refused_before_any_work(labelled_csv: Path, tmp_path: Path, capsys):
    """Checked before the model is even loaded: here there is none, and the error is still about --out."""
    out = tmp_path / "scores.txt"
    assert main(["score", str(tmp_path / "no-model"), str(labelled_csv), "--out", str(out)]) == 2
    assert "--out must end in .jsonl, .csv, .parquet" in capsys.readouterr().err


def test_score_passes_the_id_column_through(csv_model: tuple[Path, str], labelled_csv: Path, in_process, tmp_path):
    frame = pd.read_csv(labelled_csv)
    frame.insert(0, "record_id", [f"r{i}" for i in range(len(frame))])
    data = tmp_path / "with_ids.csv"
    frame.to_csv(data, index=False)
    argv = ["score", csv_model[0], data, "--id-column", "record_id", "--device", "cpu"]
    code, _, err = _run([*argv, "--out", tmp_path / "scores.csv"])
    assert code == 0, err
    scored = pd.read_csv(tmp_path / "scores.csv")
    assert scored.columns[0] == "id"
    assert scored["id"].tolist() == frame["record_id"].tolist()
    np.testing.assert_allclose(scored["score"], [r["score"] for r in in_process[2]], rtol=1e-6)
    code, _, err = _run([*argv, "--out", tmp_path / "scores.parquet"])
    assert code == 0, err
    assert pd.read_parquet(tmp_path / "scores.parquet")["id"].tolist() == frame["record_id"].tolist()
    code, out, err = _run(argv)
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.splitlines()][:3] == ["r0", "r1", "r2"]
    code, _, err = _run([*argv[:-4], "--id-column", "nope"])
    assert code == 2 and "id column 'nope' not found" in err


def test_train_id_column_is_never_a_feature(labelled_csv: Path, tmp_path: Path):
    frame = pd.read_csv(labelled_csv)
    frame["record_id"] = np.arange(len(frame))
    data = tmp_path / "with_ids.csv"
    frame.to_csv(data, index=False)
    argv = ["train", data, "--out", tmp_path / "m", "--label-column", "label", "--id-column", "record_id"]
    code, _, err = _run([*argv, *TRAIN, "--epochs", "1"])
    assert code == 0, err
    assert "record_id" not in Detector.load(tmp_path / "m", "cpu").kind.schema.names


# -- evaluate -------------------------------------------------------------------------------------


def test_evaluate_with_report(csv_model: tuple[Path, str], labelled_csv: Path, in_process, tmp_path: Path, capsys):
    report = tmp_path / "report"
    argv = ["evaluate", str(csv_model[0]), str(labelled_csv), "--label-column", "label", "--device", "cpu"]
    assert main([*argv, "--report", str(report)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    detector, table, results = in_process
    labels = table.labels.astype(int)
    scores = np.array([r["score"] for r in results])
    assert (metrics["rows"], metrics["anomalies"]) == (330, 30)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert metrics["auprc"] == pytest.approx(average_precision_score(labels, scores))
    assert metrics["auroc"] > 0.6  # better than chance after 15 epochs; the quality floor is tested in tests/model
    assert set(metrics["thresholds"]) == {"warn", "critical"}
    for name, row in metrics["thresholds"].items():
        value = detector.thresholds.thresholds[name].value
        flagged = scores > value
        tp, fp = int(np.sum(flagged & (labels == 1))), int(np.sum(flagged & (labels == 0)))
        assert row["threshold"] == value and row["flagged"] == int(flagged.sum())
        assert row["precision"] == pytest.approx(tp / (tp + fp))
        assert row["recall"] == pytest.approx(tp / 30)
        assert row["f1"] == pytest.approx(2 * tp / (2 * tp + fp + 30 - tp))
        assert row["false_positive_rate"] == pytest.approx(fp / 300)
    assert metrics["model"] == {"id": detector.manifest.model_id, "version": detector.manifest.version}
    assert sorted(Path(p).name for p in metrics["report"]) == ["histogram.png", "latent.png", "report.md", "roc.png"]
    for name in ("histogram.png", "roc.png", "latent.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (report / "report.md").read_text()
    assert f"AUROC: {metrics['auroc']:.4f}, AUPRC: {metrics['auprc']:.4f}." in text
    assert "| warn |" in text and "| critical |" in text
    assert "![ROC curve](roc.png)" in text
    assert "## Latent space" in text and "principal components" in text and "![latent space](latent.png)" in text


def test_evaluate_npz_without_label_column(labelled_npz: Path, tmp_path: Path, capsys):
    assert main(["train", str(labelled_npz), "--out", str(tmp_path / "m"), *TRAIN]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "m"), str(labelled_npz), "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert (metrics["rows"], metrics["anomalies"]) == (330, 30)
    assert "report" not in metrics and 0.0 <= metrics["auroc"] <= 1.0


def test_evaluate_csv_needs_a_label_column(csv_model: tuple[Path, str], labelled_csv: Path, capsys):
    assert main(["evaluate", str(csv_model[0]), str(labelled_csv), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == "error: evaluate needs --label-column (or an .npz with y)\n"


# -- errors ---------------------------------------------------------------------------------------


def test_text_in_a_numeric_column(csv_model: tuple[Path, str], labelled_csv: Path, tmp_path: Path, capsys):
    frame = pd.read_csv(labelled_csv)
    frame["b"] = frame["b"].astype(object)
    frame.loc[3, "b"] = "abc"
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    assert main(["score", str(csv_model[0]), str(bad), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err
        == "error: the data does not fit the model's schema:\nrow 3 b: expected a number, got string 'abc'\n"
    )


def test_many_input_errors_are_capped_in_the_message(csv_model: tuple[Path, str], labelled_csv: Path, tmp_path, capsys):
    frame = pd.read_csv(labelled_csv)
    frame["items"] = "many"
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    assert main(["score", str(csv_model[0]), str(bad), "--device", "cpu"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "error: the data does not fit the model's schema:"
    assert lines[1] == "row 0 items: expected a number, got string 'many'"
    assert len(lines) == 12 and lines[-1] == "... and 90 more"  # 100 issues collected, 10 shown


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "{tmp}/missing.csv", "--out", "{tmp}/m"], "error: {tmp}/missing.csv: file not found"),
        (["score", "{tmp}/no-model", "{csv}"], "error: {tmp}/no-model: model directory not found"),
        (
            ["train", "{csv}", "--out", "{tmp}/m", "--label-column", "nope"],
            "error: {csv}: label column 'nope' not found",
        ),
        (["train", "{csv}", "--out", "{tmp}/m", "--schema", "{tmp}/none.json"], "error: {tmp}/none.json: schema file"),
        (["train", "{tmp}/data.txt", "--out", "{tmp}/m"], "error: {tmp}/data.txt: unsupported file type '.txt'"),
        (["train", "{csv}", "--out", "{tmp}/m", "--label-column", "label", "--normal-value", "7"], "error: no row has"),
    ],
    ids=["no-data", "no-model", "no-label", "no-schema", "bad-suffix", "no-normal-rows"],
)
def test_bad_inputs_exit_with_code_2(labelled_csv: Path, tmp_path: Path, capsys, argv: list[str], message: str):
    (tmp_path / "data.txt").write_text("a\n1\n")

    def fill(text: str) -> str:
        return text.format(tmp=tmp_path, csv=labelled_csv)

    assert main([fill(a) for a in [*argv, "--device", "cpu"]]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(fill(message))
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "m").exists()


def test_train_warns_about_label_and_id_like_columns_and_drop_columns_removes_them(
    labelled_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    frame = pd.read_csv(labelled_csv)
    frame["record_id"] = [f"r{i}" for i in range(len(frame))]  # named like an id
    frame["ticket"] = [f"t-{i * 7919 % 10007}" for i in range(len(frame))]  # unique text in every row
    frame["row_number"] = np.arange(100, 100 + len(frame))  # a row number
    data = tmp_path / "leaky.csv"
    frame.to_csv(data, index=False)
    with caplog.at_level("WARNING", logger="vae_anomaly"):
        code, _, err = _run(["train", data, "--out", tmp_path / "m", *TRAIN, "--epochs", "1"])
    assert code == 0, err
    warned = {record.args[0] for record in caplog.records if record.levelname == "WARNING"}  # type: ignore[index]
    assert warned == {"label", "record_id", "ticket", "row_number"}
    assert "--drop-columns label" in caplog.text
    caplog.clear()
    dropped = ["--drop-columns", "record_id", "ticket", "row_number", "--label-column", "label"]
    with caplog.at_level("WARNING", logger="vae_anomaly"):
        code, _, err = _run(["train", data, "--out", tmp_path / "m2", *TRAIN, "--epochs", "1", *dropped])
    assert code == 0, err
    assert not [record for record in caplog.records if record.levelname == "WARNING"]
    assert Detector.load(tmp_path / "m2", "cpu").kind.schema.names == ["a", "b", "items", "color", "flag"]


def test_score_into_a_closed_pipe_exits_quietly(csv_model: tuple[Path, str], labelled_csv: Path, tmp_path: Path):
    """`vae-anomaly score ... | head -1`: no BrokenPipeError traceback, exit status 141 (SIGPIPE)."""
    import subprocess
    import sys

    big = tmp_path / "big.csv"
    frame = pd.read_csv(labelled_csv)
    pd.concat([frame] * 12, ignore_index=True).to_csv(big, index=False)  # ~4,000 rows, > a pipe's buffer
    argv = [sys.executable, "-m", "vae_anomaly.training.cli", "score", str(csv_model[0]), str(big), "--device", "cpu"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert json.loads(process.stdout.readline())["score"] > 0
    process.stdout.close()  # what `head` does after its line
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_demo_moves_to_the_next_free_port_and_prints_it(tmp_path: Path, monkeypatch, capsys):
    import socket

    import vae_anomaly.training.cli
    import vae_anomaly.training.image_cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert vae_anomaly.training.cli.next_free_port("127.0.0.1", port) > port
        monkeypatch.setattr(vae_anomaly.training.cli, "DEMO_PORT", port)
        served: list[int] = []  # the image demo itself (training, curls, serving) reads args.port
        monkeypatch.setattr(
            vae_anomaly.training.image_cli, "demo_image", lambda args, train, serve: served.append(args.port) or 0
        )
        assert main(["demo", "--kind", "image", "--dir", str(tmp_path), "--no-serve"]) == 0
        assert main(["demo", "--kind", "image", "--dir", str(tmp_path), "--no-serve", "--port", str(port)]) == 0
    out = capsys.readouterr().out
    assert f"port {port} is in use (another demo or server?): this demo serves on port {served[0]}" in out
    assert served[0] > port
    assert served[1] == port  # an explicit --port is used as given


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_score_and_evaluate_show_progress_on_a_terminal_only(
    csv_model: tuple[Path, str], labelled_csv: Path, tmp_path: Path, monkeypatch
):
    model = str(csv_model[0])
    scores = str(tmp_path / "scores.jsonl")
    commands = [
        ["score", model, str(labelled_csv), "--out", scores, "--device", "cpu"],
        ["evaluate", model, str(labelled_csv), "--label-column", "label", "--device", "cpu"],
    ]
    for command in commands:
        terminal = _Terminal()
        monkeypatch.setattr("sys.stderr", terminal)
        assert main(command) == 0
        assert "scoring:" in terminal.getvalue() and "/330 [" in terminal.getvalue(), terminal.getvalue()
    monkeypatch.undo()
    code, _, err = _run(commands[0])  # stderr is not a terminal: no bar
    assert code == 0 and "scoring" not in err


def test_version_and_every_option_has_help_with_its_default(capsys):
    from importlib.metadata import version

    from vae_anomaly.training.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"vae-anomaly {version('vae-anomaly')}"
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, subparser in commands.choices.items():
        for action in subparser._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
    train_help = commands.choices["train"].format_help()
    assert "(default: 0)" in " ".join(train_help.split("--seed SEED")[-1].split()[:16])  # in the options list
    assert "(default: 0.003)" in train_help
    for name, subparser in commands.choices.items():
        formatter = subparser._get_formatter()
        for action in subparser._actions:
            if not action.option_strings or action.default in (None, False, [], argparse.SUPPRESS):
                continue
            shown = formatter._get_help_string(action) % {**vars(action), "default": action.default}
            assert "default" in shown, f"{name} {action.option_strings}: its default {action.default!r} is not shown"


HELP_PROBE = """
import contextlib, io, sys
from vae_anomaly.training.cli import main
for argv in ([], ["--help"], ["--version"], *([c, "--help"] for c in ("score", "evaluate", "encode", "serve", "demo"))):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
heavy = ("torch", "numpy", "pandas", "sklearn", "matplotlib", "vae_anomaly.model.detector")
print(sorted(name for name in heavy if name in sys.modules))
"""


def test_help_and_version_load_no_training_stack(tmp_path: Path):
    """`vae-anomaly --help`, `--version` and `<command> --help` (train aside: its defaults are
    TrainConfig's) import neither torch nor numpy nor pandas (they took ~5 s)."""
    done = subprocess.run([sys.executable, "-c", HELP_PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_parser_for_one_command_builds_only_its_options():
    from vae_anomaly.training.cli import build_parser

    commands = next(a for a in build_parser(only="score")._actions if isinstance(a, argparse._SubParsersAction))
    assert {a.dest for a in commands.choices["score"]._actions} >= {"model_dir", "data", "explain", "id_column"}
    assert [a.dest for a in commands.choices["train"]._actions] == ["help"]
    args = build_parser(only="score").parse_args(["score", "m", "d.csv", "--explain", "5"])
    assert (args.command, args.explain, args.device) == ("score", 5, "auto")


def test_train_and_evaluate_holdout_split_the_file_without_overlap(labelled_csv: Path, tmp_path: Path):
    frame = pd.read_csv(labelled_csv)
    n_train_part = len(frame) - int(np.ceil(0.3 * len(frame)))  # 231 of 330
    normals_in_train_part = int((frame["label"][:n_train_part] == 0).sum())
    argv = ["train", labelled_csv, "--out", tmp_path / "m", "--label-column", "label", "--holdout", "0.3"]
    code, out, err = _run([*argv, *TRAIN, "--epochs", "2"])
    assert code == 0, err
    rows = Detector.load(tmp_path / "m", "cpu").manifest.training["rows"]
    assert sum(rows[part] for part in ("train", "validation", "calibration")) == normals_in_train_part
    code, out, err = _run(["evaluate", tmp_path / "m", labelled_csv, "--label-column", "label", "--holdout", "0.3"])
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["rows"] == len(frame) - n_train_part
    assert metrics["anomalies"] == int(frame["label"][n_train_part:].sum())
    with pytest.raises(SystemExit):  # a usage error
        _run(["evaluate", tmp_path / "m", labelled_csv, "--label-column", "label", "--holdout", "1.5"])


def test_train_warns_about_label_and_id_columns_and_drop_columns_removes_them(
    labelled_csv: Path, tmp_path: Path, caplog
):
    """Issue 14 item 5: trained without --label-column, `label` became a feature silently."""
    frame = pd.read_csv(labelled_csv)
    frame.insert(0, "record_id", np.arange(len(frame)))
    data = tmp_path / "with_ids.csv"
    frame.to_csv(data, index=False)
    with caplog.at_level("WARNING", logger="vae_anomaly"):
        code, _, err = _run(["train", data, "--out", tmp_path / "m1", *TRAIN, "--epochs", "1"])
    assert code == 0, err
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "column 'label' looks like a label or an id (named like a label)" in warned
    assert "column 'record_id' looks like a label or an id (named like an id)" in warned
    caplog.clear()
    with caplog.at_level("WARNING", logger="vae_anomaly"):
        argv = [
            "train",
            data,
            "--out",
            tmp_path / "m2",
            *TRAIN,
            "--epochs",
            "1",
            "--drop-columns",
            "record_id",
            "label",
        ]
        code, _, err = _run(argv)
    assert code == 0, err
    assert not [r for r in caplog.records if "looks like a label" in r.getMessage()]
    assert {f.name for f in Detector.load(tmp_path / "m2", "cpu").kind.schema.features} == set(frame) - {
        "record_id",
        "label",
    }
