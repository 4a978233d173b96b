"""Sequence sensor likelihoods: Gaussian and Student-t terms per (step, sensor), missing readings 0."""

from __future__ import annotations

import pytest
import torch

from vae_anomaly.model.kinds.sequence.backbone import SequenceDecoderOutput
from vae_anomaly.model.kinds.sequence.likelihood import element_log_probs


@pytest.mark.parametrize("dof", [None, 1, 4])
def test_terms_match_torch_distributions_and_skip_missing(dof):
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 5, 2, generator=generator)  # (B, T, C)
    logvar = torch.tensor([-1.0, 0.5])  # one per sensor
    x = torch.randn(3, 5, 2, generator=generator) * 3
    mask = torch.ones(3, 5, 2, dtype=torch.bool)
    mask[1, 2, 0] = False
    got = element_log_probs(SequenceDecoderOutput(mean, logvar), x, mask, dof)
    scale = torch.exp(0.5 * logvar)
    if dof is None:
        expected = torch.distributions.Normal(mean, scale).log_prob(x)
    else:
        expected = torch.distributions.StudentT(float(dof), mean, scale).log_prob(x)
    expected = torch.where(mask, expected, 0.0).flatten(-2)
    assert got.shape == (3, 10)
    assert torch.allclose(got, expected, atol=1e-5)
    assert got[1, 2 * 2 + 0] == 0.0


def test_student_t_costs_far_readings_less_than_the_gaussian():
    decoded = SequenceDecoderOutput(torch.zeros(1, 1, 1), torch.zeros(1))
    mask = torch.ones(1, 1, 1, dtype=torch.bool)
    far = torch.full((1, 1, 1), 10.0)
    gaussian = -element_log_probs(decoded, far, mask)
    student = -element_log_probs(decoded, far, mask, 4)
    assert student.item() < gaussian.item() / 4
