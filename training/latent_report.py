"""The latent-space part of `vae-anomaly evaluate --report`, for every kind: the codes of the test
inputs (`Detector.encode`, the path `/encode` takes) drawn in 2-D and coloured by label.

With a 2-D code the plot shows z itself; a wider code is projected on its first two principal
components (PCA of the normal test inputs' codes when the labels say which are normal, the share
of variance each keeps in the axis label); a 1-D code is drawn as one histogram per label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vae_anomaly.model.detector import Detector

MAX_POINTS = 5000
"""Points drawn at most (a seeded subsample beyond it): more only hide each other."""
MAX_GROUPS = 10
"""Colours by raw label up to this many distinct labels; beyond, normal vs anomaly."""


def latent_groups(labels: np.ndarray, anomalies: np.ndarray | None = None) -> np.ndarray:
    """The group each point is coloured by: its raw label as text, or with more than `MAX_GROUPS`
    distinct labels (a continuous target, many classes) "normal" / "anomaly" from `anomalies`."""
    names = np.array([str(v) for v in labels.tolist()], dtype=object)
    if len(set(names.tolist())) <= MAX_GROUPS or anomalies is None:
        return names
    return np.where(np.asarray(anomalies).astype(bool), "anomaly", "normal").astype(object)


def project_2d(latent: np.ndarray, fit: np.ndarray | None = None) -> tuple[np.ndarray, tuple[str, str]]:
    """(N, 2) coordinates to draw and the axis labels: z itself for L = 2, else the codes projected
    on the first two principal components of the codes selected by the mask `fit` (all without).

    The report fits them on the normal inputs: a few far-out anomalies would otherwise claim the
    components and squash the normal cloud into a line; the anomalies are then drawn where they
    fall in the normal data's main directions."""
    if latent.shape[1] == 2:
        return latent, ("z1", "z2")
    basis = latent if fit is None or not np.any(fit) else latent[fit]
    centre = basis.mean(axis=0)
    _, singular, components = np.linalg.svd(basis - centre, full_matrices=False)
    share = singular**2 / max(float(np.sum(singular**2)), 1e-300)
    labels = (f"PC 1 ({100 * share[0]:.0f} % of variance)", f"PC 2 ({100 * share[1]:.0f} % of variance)")
    return (latent - centre) @ components[:2].T, labels


def latent_plot(
    path: Path, latent: np.ndarray, groups: np.ndarray, title: str, normal: np.ndarray | None = None, seed: int = 0
) -> str:
    """Draw the codes `latent` (N, L) coloured by `groups` (N,) into `path`; returns one sentence
    saying what the axes are. `normal` (N,) bool marks the inputs a PCA is fitted on (see
    `project_2d`). Larger groups are drawn first, so rare ones (anomalies) stay visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(latent) > MAX_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(len(latent), MAX_POINTS, replace=False))
        latent, groups = latent[keep], groups[keep]
        normal = None if normal is None else normal[keep]
    names, counts = np.unique(groups.astype(str), return_counts=True)
    order = [names[k] for k in np.argsort(-counts, kind="stable")]
    colour = {name: plt.cm.tab10(k % 10) for k, name in enumerate(sorted(names))}
    figure, axes = plt.subplots(figsize=(6, 5.5))
    text_groups = groups.astype(str)
    if latent.shape[1] == 1:
        bins = np.linspace(float(latent.min()), float(latent.max()) + 1e-9, 50)
        for name in order:
            values = latent[text_groups == name, 0]
            axes.hist(values, bins=bins.tolist(), alpha=0.55, density=True, label=name, color=colour[name])
        axes.set_xlabel("z1")
        axes.set_ylabel("density")
        how = "The code is 1-D: one histogram of z1 per label."
    else:
        coordinates, (x_label, y_label) = project_2d(latent, normal)
        for name in order:
            mask = text_groups == name
            points = coordinates[mask]
            axes.scatter(points[:, 0], points[:, 1], s=5, alpha=0.6, label=name, color=colour[name])
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        fitted = "normal inputs'" if normal is not None and np.any(normal) else "inputs'"
        how = (
            "Posterior means z1, z2."
            if latent.shape[1] == 2
            else f"Posterior means of the {latent.shape[1]}-D code, projected on the first two principal "
            f"components of the {fitted} codes."
        )
    axes.set_title(title)
    axes.legend(markerscale=3, fontsize="small", title="label")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return how


def write_latent_section(
    directory: Path, detector: Detector, inputs: Any, labels: np.ndarray, anomalies: np.ndarray | None = None
) -> list[Path]:
    """latent.png (the codes of `inputs`, coloured by `labels`) and its section appended to
    directory/report.md; returns the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    code = detector.encode(inputs)
    path = directory / "latent.png"
    count = len(code)
    unit = detector.kind.result_unit
    groups = latent_groups(labels, anomalies)
    normal = None if anomalies is None else ~np.asarray(anomalies).astype(bool)
    how = latent_plot(path, code.mean, groups, f"latent space of {count} test {unit}s", normal)
    shown = f" {MAX_POINTS} of the {count} {unit}s are drawn (a seeded subsample)." if count > MAX_POINTS else ""
    section = ["", "## Latent space", "", f"{how}{shown} Colour: the label.", "", "![latent space](latent.png)", ""]
    with (directory / "report.md").open("a") as handle:
        handle.write("\n".join(section))
    return [path]
