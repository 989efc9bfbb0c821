"""Landscapes around one step: exact points on the line and in the plane, params restored."""

import pytest
import torch

from sfpo_edu.landscape import (
    plane_basis,
    plane_grid,
    reposition_line,
    toy_step_trace,
    unflatten_,
)
from sfpo_edu.params import flatten, snapshot, trainable_params
from sfpo_edu.toy import ToyBandit, toy_config


@pytest.fixture(scope="module")
def toy():
    """A bandit at θ₀, its loss_fn, and one traced SFPO step from there."""
    bandit, cfg = ToyBandit(), toy_config()
    trace = toy_step_trace(bandit, cfg, seed=0)
    return bandit, cfg, trace


def mixed_params():
    """Two tensors of different dtypes and a loss_fn over them with grpo_loss stats."""
    gen = torch.Generator().manual_seed(0)
    params = [
        torch.randn(3, 4, generator=gen).bfloat16().requires_grad_(),
        torch.randn(5, generator=gen).requires_grad_(),
    ]

    def loss_fn(batch):
        x = sum((p.float() ** 2).sum() for p in params) * batch
        stats = {"loss": x.item(), "kl": 0.0, "clip_frac": 0.0, "ratio_dev": 0.0}
        return x, stats

    return params, loss_fn


def test_unflatten_inverts_flatten_and_checks_size():
    params, _ = mixed_params()
    flat = flatten(params)
    targets = [torch.zeros_like(p) for p in params]
    unflatten_(targets, flat)
    assert all(torch.equal(t, p) for t, p in zip(targets, params, strict=True))
    with pytest.raises(ValueError, match="16 entries but the parameters have 17"):
        unflatten_(targets, flat[:-1])


def test_reposition_line_hits_theta_0_theta_tilde_theta_k_exactly(toy):
    bandit, cfg, trace = toy
    params = trainable_params(bandit)
    loss_fn, seen = bandit.make_loss_fn(cfg), []

    def traced(batch):  # stores the point each evaluation sees
        seen.append(flatten(params))
        return loss_fn(batch)

    line = reposition_line(
        params,
        trace["theta_0"],
        trace["theta_k"],
        traced,
        trace["batch"],
        ts=[0.0, cfg.alpha, 1.0],
    )
    assert torch.equal(seen[0], trace["theta_0"])
    assert torch.equal(seen[1], trace["theta_tilde"])  # the θ̃ sfpo_update used
    assert torch.equal(seen[2], trace["theta_k"])
    # at θ₀ the ratio is exactly 1: no drift, no clipping
    assert line["kl"][0].item() == 0.0 and line["ratio_dev"][0].item() == 0.0
    assert line["clip_frac"][0].item() == 0.0
    assert (line["kl"][1:] > 0).all()


def test_reposition_line_default_ts_and_drift_grows(toy):
    bandit, cfg, trace = toy
    params = trainable_params(bandit)
    line = reposition_line(
        params,
        trace["theta_0"],
        trace["theta_k"],
        bandit.make_loss_fn(cfg),
        trace["batch"],
    )
    assert set(line) == {"t", "loss", "kl", "clip_frac", "ratio_dev"}
    assert line["t"].shape == line["kl"].shape == (25,)
    assert line["t"][-1].item() == pytest.approx(1.2)
    assert (line["kl"].diff() > 0).all()  # KL to θ₀ grows along the chord


def test_reposition_line_restores_params_bit_for_bit_even_on_error():
    params, loss_fn = mixed_params()
    before = [p.detach().clone() for p in params]
    theta_k = [p.detach() + 0.1 for p in params]
    reposition_line(params, snapshot(params), theta_k, loss_fn, 1.0)
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))

    calls = []

    def failing(batch):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return loss_fn(batch)

    with pytest.raises(RuntimeError, match="boom"):
        reposition_line(params, snapshot(params), theta_k, failing, 1.0)
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))


def test_missing_stats_explain_themselves():
    params, _ = mixed_params()
    with pytest.raises(KeyError, match="grpo_loss"):
        reposition_line(params, params, params, lambda b: (0, {"loss": 0.0}), None)


def test_plane_basis_is_orthonormal_and_reproduces_the_points():
    gen = torch.Generator().manual_seed(1)
    t0, tk, tn = (torch.randn(7, generator=gen) for _ in range(3))
    alpha = 0.7
    plane = plane_basis(t0, tk, tn, alpha)
    assert plane.u @ plane.u == pytest.approx(1) and plane.v @ plane.v == pytest.approx(
        1
    )
    assert abs((plane.u @ plane.v).item()) < 1e-12
    c = plane.coords
    for name, point in (("theta_0", t0), ("theta_k", tk), ("theta_next", tn)):
        torch.testing.assert_close(plane.point(*c[name]).float(), point)
    torch.testing.assert_close(c["theta_0"], torch.zeros(2))
    assert c["theta_k"][1].abs() < 1e-6 and c["theta_next"][1] > 0
    torch.testing.assert_close(c["theta_tilde"], alpha * c["theta_k"])
    torch.testing.assert_close(
        plane.project(torch.stack([tk, tn])),
        torch.stack([c["theta_k"], c["theta_next"]]),
    )


def test_plane_basis_rejects_degenerate_points():
    t0, tk = torch.zeros(3), torch.tensor([1.0, 2.0, 0.0])
    with pytest.raises(ValueError, match="collinear"):
        plane_basis(t0, tk, 3 * tk, 0.8)
    with pytest.raises(ValueError, match="θ_K = θ₀"):
        plane_basis(t0, t0, tk, 0.8)


def test_plane_grid_on_the_toy_matches_direct_evaluation(toy):
    bandit, cfg, trace = toy
    params, loss_fn = trainable_params(bandit), bandit.make_loss_fn(cfg)
    before = bandit.theta.detach().clone()
    plane = plane_basis(trace["theta_0"], trace["theta_k"], trace["theta_next"], 0.8)
    xs, ys = torch.tensor([-0.1, 0.0, 0.2]), torch.tensor([0.0, 0.05])
    grid = plane_grid(params, plane, loss_fn, trace["batch"], xs, ys)
    assert grid["loss"].shape == grid["kl"].shape == (2, 3)
    assert grid["kl"][0, 1].item() == 0.0  # (0, 0) is θ₀ exactly
    assert torch.equal(bandit.theta.detach(), before)
    unflatten_(params, plane.point(0.2, 0.05))
    expected = loss_fn(trace["batch"])[1]
    unflatten_(params, before)
    assert grid["loss"][1, 2].item() == pytest.approx(expected["loss"])
    assert grid["kl"][1, 2].item() == pytest.approx(expected["kl"])


def test_plane_grid_default_covers_the_points_and_restores_mixed_dtypes():
    params, loss_fn = mixed_params()
    before = [p.detach().clone() for p in params]
    t0 = flatten(params)
    gen = torch.Generator().manual_seed(2)
    tk, tn = t0 + torch.randn(17, generator=gen), t0 + torch.randn(17, generator=gen)
    plane = plane_basis(t0, tk, tn, 0.5)
    grid = plane_grid(params, plane, loss_fn, 1.0, num=5)
    assert grid["loss"].shape == (5, 5)
    for xy in plane.coords.values():
        assert (
            grid["x"][0] < xy[0] < grid["x"][-1]
            and grid["y"][0] < xy[1] < grid["y"][-1]
        )
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))


def test_toy_step_trace_leaves_the_bandit_alone_and_is_consistent(toy):
    bandit, cfg, trace = toy
    assert torch.equal(bandit.theta.detach(), torch.tensor([0.5, -0.5]))
    K = cfg.num_fast_steps
    assert trace["fast"].shape == (K + 1, 2)
    assert torch.equal(trace["fast"][0], trace["theta_0"])
    torch.testing.assert_close(
        trace["theta_tilde"],
        trace["theta_0"] + cfg.alpha * (trace["theta_k"] - trace["theta_0"]),
    )
    # GRPO's one step from the same θ₀ and batch is SFPO's first fast step
    torch.testing.assert_close(trace["grpo_next"], trace["fast"][1])
    assert not torch.equal(trace["theta_next"], trace["theta_tilde"])


def test_toy_step_trace_with_alpha_zero_skips_the_fast_steps():
    trace = toy_step_trace(ToyBandit(), toy_config(alpha=0.0), seed=3)
    assert trace["fast"].shape == (1, 2)
    assert torch.equal(trace["theta_tilde"], trace["theta_0"])
    torch.testing.assert_close(trace["theta_next"], trace["grpo_next"])
