"""The exact toy bandit: closed form, and every algorithm improves it."""

import pytest
import torch

from sfpo_edu.sfpo import sfpo_update
from sfpo_edu.toy import (
    TOY_ALGOS,
    ToyBandit,
    compare_toy,
    comparison_table,
    lookahead_update,
    make_optimizer,
    run_toy,
    toy_config,
)


def test_expected_reward_matches_monte_carlo():
    bandit = ToyBandit()
    g = torch.Generator().manual_seed(0)
    batch = bandit.sample_batch(2000, 8, g)
    assert batch.rewards.mean().item() == pytest.approx(
        bandit.expected_reward().item(), abs=0.01
    )


def test_reward_grid_agrees_with_pointwise_values():
    bandit = ToyBandit()
    xs, ys = torch.linspace(-2, 2, 5), torch.linspace(-1, 1, 3)
    grid = bandit.reward_grid(xs, ys)
    assert grid.shape == (3, 5)
    assert grid[2, 1].item() == pytest.approx(
        bandit.expected_reward(torch.tensor([xs[1], ys[2]])).item(), rel=1e-6
    )


def test_sample_batch_has_groups_and_fixed_old_logps():
    bandit = ToyBandit()
    batch = bandit.sample_batch(3, 4, torch.Generator().manual_seed(1))
    assert batch.actions.shape == (12,) and batch.old_per_token_logps.shape == (12, 1)
    assert batch.advantages.view(3, 4).sum(1).abs().max() < 1e-5  # zero-mean groups


@pytest.mark.parametrize("algo", TOY_ALGOS)
def test_every_algorithm_improves_expected_reward(algo):
    cfg = toy_config()
    finals = [run_toy(cfg, algo=algo, seed=s, num_steps=50) for s in range(3)]
    start = finals[0].expected_reward[0].item()
    end = torch.stack([r.expected_reward[-1] for r in finals]).mean().item()
    assert end > start + 0.4, (algo, start, end)


def test_sfpo_run_records_the_fast_path_and_theta_tilde_on_the_chord():
    cfg = toy_config(num_fast_steps=3, alpha=0.6)
    run = run_toy(cfg, algo="sfpo", num_steps=3)
    path, tilde = run.fast_paths[0], run.theta_tildes[0]
    assert path.shape == (4, 2)
    assert torch.equal(path[0], run.thetas[0])
    torch.testing.assert_close(tilde, path[0] + 0.6 * (path[-1] - path[0]))
    assert run.rollouts.tolist() == [0, 8, 16, 24]


def test_lookahead_uses_fresh_batches_and_takes_no_extra_step():
    bandit = ToyBandit()
    cfg = toy_config()
    params = list(bandit.parameters())
    sampled = []

    def sample():
        sampled.append(bandit.theta.detach().clone())
        return bandit.sample_batch(1, 8, torch.Generator().manual_seed(len(sampled)))

    theta_0 = bandit.theta.detach().clone()
    lookahead_update(
        params,
        make_optimizer(params, cfg),
        sample,
        bandit.make_loss_fn(cfg),
        num_inner_steps=3,
        alpha=1.0,
    )
    assert len(sampled) == 3 and not torch.equal(sampled[0], sampled[1])  # on-policy
    assert torch.equal(sampled[0], theta_0)


def test_the_same_sfpo_update_drives_the_toy():
    bandit = ToyBandit()
    cfg = toy_config()
    params = list(bandit.parameters())
    batch = bandit.sample_batch(1, 8, torch.Generator().manual_seed(0))
    m = sfpo_update(
        params, make_optimizer(params, cfg), batch, bandit.make_loss_fn(cfg)
    )
    assert m["sfpo/drift_norm"] > 0 and "sfpo/entropy" in m


def test_comparison_table_lists_every_algorithm():
    table = comparison_table(compare_toy(seeds=[0], num_steps=4), every=2)
    for algo in TOY_ALGOS:
        assert algo in table
    assert "rollouts" in table and len(table.splitlines()) == 2 + 3 + 1
