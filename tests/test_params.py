"""Snapshots, the in-place reposition and distances (sfpo_edu.params)."""

import pytest
import torch
from torch import nn

from sfpo_edu.params import (
    cosine,
    distance,
    drift_metrics,
    flatten,
    interpolate_,
    restore_,
    snapshot,
    trainable_params,
)


def test_reposition_on_a_two_element_vector():
    p = nn.Parameter(torch.tensor([2.0, 3.0]))  # θ_K
    theta_0 = [torch.tensor([0.0, 1.0])]
    interpolate_([p], theta_0, alpha=0.25)  # θ₀ + 0.25(θ_K − θ₀)
    torch.testing.assert_close(p.data, torch.tensor([0.5, 1.5]))


def test_reposition_is_exact_at_both_ends():
    torch.manual_seed(0)
    theta_0 = [torch.randn(1000)]
    theta_k = torch.randn(1000)
    p = nn.Parameter(theta_k.clone())
    interpolate_([p], theta_0, alpha=1.0)
    assert torch.equal(p.data, theta_k)
    interpolate_([p], theta_0, alpha=0.0)
    assert torch.equal(p.data, theta_0[0])


def test_reposition_bf16_params_computed_in_fp32():
    p = nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.bfloat16))
    interpolate_([p], [torch.zeros(2)], alpha=0.5)
    assert p.dtype == torch.bfloat16
    torch.testing.assert_close(p.data.float(), torch.tensor([0.5, 1.0]))


def test_reposition_rejects_alpha_out_of_range():
    with pytest.raises(ValueError, match="alpha"):
        interpolate_([nn.Parameter(torch.zeros(1))], [torch.zeros(1)], alpha=1.5)


def test_snapshot_is_a_detached_copy_and_restore_copies_back():
    p = nn.Parameter(torch.tensor([1.0, 2.0]))
    snap = snapshot([p])
    with torch.no_grad():
        p.add_(1.0)
    assert torch.equal(snap[0], torch.tensor([1.0, 2.0])) and not snap[0].requires_grad
    restore_([p], snap)
    assert torch.equal(p.data, torch.tensor([1.0, 2.0]))


def test_trainable_params_only_and_error_when_none():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    model[0].requires_grad_(False)
    assert trainable_params(model) == list(model[1].parameters())
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        trainable_params(model)


def test_distances_and_drift_metrics_by_hand():
    theta_0 = [torch.tensor([0.0, 0.0])]
    theta_k = [torch.tensor([4.0, 0.0])]
    # θ̃ = (2, 0) at α = 0.5; slow step to (2, 3): orthogonal to the fast direction
    m = drift_metrics(theta_0, theta_k, [torch.tensor([2.0, 3.0])], alpha=0.5)
    assert m["sfpo/drift_norm"] == 4.0
    assert m["sfpo/reposition_norm"] == 2.0
    assert m["sfpo/slow_step_norm"] == 3.0
    assert m["sfpo/cos_fast_slow"] == 0.0
    assert m["update/norm"] == pytest.approx(13**0.5)
    assert distance(theta_0, theta_k) == 4.0
    assert cosine(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0])) == pytest.approx(
        1
    )
    assert cosine(torch.zeros(2), torch.ones(2)) == 0.0
    assert flatten([torch.ones(2, 2), torch.zeros(3)]).shape == (7,)


def test_drift_metrics_measure_the_slow_step_from_the_stored_theta_tilde():
    # a bf16 parameter holds θ̃ rounded to bf16 (interpolate_ casts back); with a
    # slow step of exactly 0 the slow-step norm must be 0, not the rounding error
    param = torch.nn.Parameter(torch.randn(64, generator=torch.Generator().manual_seed(0)).bfloat16())  # fmt: skip
    theta_0 = snapshot([param])
    with torch.no_grad():
        param.add_(0.37)  # the fast steps: θ_K
    theta_k = snapshot([param])
    interpolate_([param], theta_0, 0.8)  # θ̃, rounded to bf16; no slow step
    m = drift_metrics(theta_0, theta_k, [param], 0.8)
    assert m["sfpo/slow_step_norm"] == 0.0 and m["sfpo/cos_fast_slow"] == 0.0
    assert m["sfpo/reposition_norm"] == pytest.approx(0.8 * 0.37 * 8, rel=0.02)
