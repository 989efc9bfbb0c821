"""Hand-computed checks of the GRPO math in sfpo_edu.losses."""

import math

import pytest
import torch

from sfpo_edu.losses import (
    aggregate,
    clipped_surrogate,
    entropy_from_logits,
    group_advantages,
    grpo_loss,
    kl_k3,
    masked_mean,
)


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv, stats = group_advantages(rewards, group_size=4)
    # group 1: mean 0.25, unbiased std sqrt((0.75² + 3·0.25²)/3) = 0.5
    s = 0.5 + 1e-6
    expected = torch.tensor([0.75 / s, -0.25 / s, -0.25 / s, -0.25 / s, 0, 0, 0, 0])
    torch.testing.assert_close(adv, expected)
    assert stats["reward/mean"] == pytest.approx(0.625)
    assert stats["reward/frac_zero_std"] == 0.5  # the all-ones group carries no signal


def test_group_advantages_without_std_scaling():
    adv, _ = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, scale=False)
    torch.testing.assert_close(adv, torch.tensor([0.75, -0.25, -0.25, -0.25]))


@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("reward", [0.1, 0.3, 0.7])
def test_a_group_of_equal_rewards_gets_exactly_zero_advantage(reward, scale):
    # the float mean of eight 0.1s is not 0.1; over a std of ~1e-8 + 1e-6 that
    # rounding error used to become an advantage of about -0.007
    rewards = torch.tensor([reward] * 8 + [1.0, 0.0] * 4)
    adv, stats = group_advantages(rewards, 8, scale=scale)
    assert torch.equal(adv[:8], torch.zeros(8))
    assert adv[8:].abs().min() > 0.4
    assert stats["reward/frac_zero_std"] == 0.5


@pytest.mark.parametrize("shape,g", [((6,), 4), ((2, 4), 4), ((4,), 1), ((4,), 0)])
def test_group_advantages_rejects_bad_shapes(shape, g):
    with pytest.raises(ValueError, match="group"):
        group_advantages(torch.zeros(shape), g)


# Two completions, three token slots; the first has only two real tokens.
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
RATIOS = torch.tensor([[1.0, 1.5, 7.0], [0.5, 1.0, 1.1]])
ADV = torch.tensor([1.0, -1.0])
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -2.2]])
# per-token loss −min(ρÂ, clip(ρ, 0.8, 1.2)Â): [-1, -1.2, ·] and [0.8, 1.0, 1.1]


def _loss(loss_agg):
    logps = (OLD + RATIOS.log()).requires_grad_()
    loss, stats = grpo_loss(logps, OLD, ADV, MASK, clip_eps=0.2, loss_agg=loss_agg)
    return logps, loss, stats


@pytest.mark.parametrize(
    "loss_agg,expected",
    [
        ("token_mean", (-1 - 1.2 + 0.8 + 1.0 + 1.1) / 5),
        ("seq_mean", ((-1 - 1.2) / 2 + (0.8 + 1.0 + 1.1) / 3) / 2),
        ("dr_grpo", (-1 - 1.2 + 0.8 + 1.0 + 1.1) / 6),
    ],
)
def test_grpo_loss_each_aggregation_by_hand(loss_agg, expected):
    _, loss, stats = _loss(loss_agg)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["loss"] == pytest.approx(expected, rel=1e-6)
    # tokens (0,1) (ρ=1.5 > 1.2, Â>0) and (1,0) (ρ=0.5 < 0.8, Â<0) are clipped: 2 of 5
    assert stats["clip_frac"] == pytest.approx(0.4)


def test_clipped_tokens_and_padding_get_no_gradient():
    logps, loss, _ = _loss("token_mean")
    loss.backward()
    g = logps.grad
    assert g[0, 1] == 0 and g[1, 0] == 0  # clipped branch active
    assert g[0, 2] == 0  # padding
    # unclipped token: d(−ρÂ/5)/dlogp = −ρÂ/5
    assert g[0, 0].item() == pytest.approx(-1.0 / 5)
    assert g[1, 2].item() == pytest.approx(1.1 / 5, rel=1e-5)


def test_ratio_is_exactly_one_at_theta_0():
    old = torch.randn(4, 5)
    loss_tok, ratio, clipped = clipped_surrogate(old.clone(), old, torch.randn(4), 0.2)
    assert torch.equal(ratio, torch.ones(4, 5))
    assert not clipped.any()
    _, stats = grpo_loss(old.clone(), old, torch.randn(4), torch.ones(4, 5))
    assert stats["kl"] == 0.0 and stats["ratio_dev"] == 0.0 and stats["clip_frac"] == 0


def test_kl_k3_by_hand():
    val = kl_k3(torch.tensor([0.0]), torch.tensor([math.log(2.0)]))
    assert val.item() == pytest.approx(2 - math.log(2) - 1)
    x = torch.randn(3, 4)
    assert torch.equal(kl_k3(x, x), torch.zeros(3, 4))
    assert (kl_k3(torch.randn(50), torch.randn(50)) >= 0).all()


def test_kl_penalty_and_entropy_bonus_enter_the_loss():
    logps = torch.zeros(1, 2)
    ref = torch.full((1, 2), math.log(2.0))
    ent = torch.full((1, 2), 0.5)
    base, _ = grpo_loss(logps, logps, torch.zeros(1), torch.ones(1, 2))
    loss, stats = grpo_loss(
        logps, logps, torch.zeros(1), torch.ones(1, 2),
        kl_coef=0.1, ref_per_token_logps=ref, entropy_coef=0.01, entropy=ent,
    )  # fmt: skip
    expected = base.item() + 0.1 * (2 - math.log(2) - 1) - 0.01 * 0.5
    assert loss.item() == pytest.approx(expected)
    assert stats["ref_kl"] == pytest.approx(2 - math.log(2) - 1)
    assert stats["entropy"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="ref_per_token_logps"):
        grpo_loss(logps, logps, torch.zeros(1), torch.ones(1, 2), kl_coef=0.1)


def test_masked_mean_and_aggregate_edge_cases():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert masked_mean(x, m).item() == 1.5
    torch.testing.assert_close(masked_mean(x, m, dim=1), torch.tensor([1.5, 0.0]))
    with pytest.raises(ValueError, match="loss_agg"):
        aggregate(x, m, "sum")


def test_entropy_from_logits():
    assert entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4))
    assert entropy_from_logits(torch.tensor([0.0, -1e4])).item() == pytest.approx(0)


def test_dr_grpo_divides_by_the_generation_limit_not_the_batch_length():
    x = torch.ones(2, 3)
    mask = torch.ones(2, 3)
    assert aggregate(x, mask, "dr_grpo").item() == pytest.approx(6 / 6)
    assert aggregate(x, mask, "dr_grpo", max_tokens=10).item() == pytest.approx(6 / 20)


@pytest.mark.parametrize("adv_shape,old_t", [((4, 1), 3), ((4, 3), 3), ((4,), 2)])
def test_clipped_surrogate_refuses_shapes_that_would_broadcast(adv_shape, old_t):
    # (B, 1) advantages used to broadcast to (B, B, T) and return a wrong loss
    with pytest.raises(ValueError, match=r"one advantage per completion, \(4,\)"):
        clipped_surrogate(torch.zeros(4, 3), torch.zeros(4, old_t), torch.ones(adv_shape), 0.2)  # fmt: skip
