"""Exercises on GRPO's loss: advantages, the clipped surrogate and its gradient on the
toy, loss aggregation, the k3 KL, the toy's expected reward (notebooks 01, 04, 07)."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from sfpo_edu import losses
from sfpo_edu.exercises.grader import Exercise, gen
from sfpo_edu.toy import ToyBandit, ToyBatch, toy_config


def _advantages(r: Tensor, g: int, unbiased: bool = True, eps: float = 1e-6) -> Tensor:
    """(R − mean) / (std + eps) within groups of ``g``: the library's, or a mistake."""
    x = r.view(-1, g)  # (N, G)
    std = x.std(1, unbiased, keepdim=True)  # (N, 1)
    return ((x - x.mean(1, keepdim=True)) / (std + eps)).view(-1)


def _bandit(theta: Tensor, f: Tensor, r: Tensor | None = None) -> ToyBandit:
    """A ToyBandit at θ (2,) with arm features ``f`` (A, 2) and rewards ``r`` (A,)."""
    bandit = ToyBandit(theta.tolist())
    bandit.features = f.clone()
    bandit.arm_rewards = bandit.arm_rewards if r is None else r.clone()
    return bandit


def _toy_gradient(theta: Tensor, f: Tensor, actions: Tensor, adv: Tensor) -> Tensor:
    """∇L(θ₀) by autograd through the toy's own GRPO loss (token mean, ε = 0.2)."""
    bandit, B = _bandit(theta, f), len(actions)
    old = bandit.log_probs().detach()[actions].unsqueeze(1)  # (B, 1): at θ₀, ρ = 1
    batch = ToyBatch(actions, torch.zeros(B), adv, old, torch.ones(B, 1), B)
    loss, _ = bandit.make_loss_fn(toy_config())(batch)
    return torch.autograd.grad(loss, bandit.theta)[0]  # (2,)


check_group_advantages = Exercise(
    "group advantages: fn(rewards, group_size) -> (B,): (R − group mean) / (unbiased "
    "group std + 1e-6). Reference: losses.group_advantages(rewards, G)[0].",
    lambda r, g: losses.group_advantages(r, g)[0],
    lambda: [
        ("hand-made: two groups of 4", torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0]), 4),
        ("random: 3 groups of 8", torch.rand(24, generator=gen(0)), 8),
        ("degenerate: a group whose rewards are all equal", torch.ones(4), 4),
    ],
    [
        (
            partial(_advantages, unbiased=False),
            "GRPO uses the unbiased std, tensor.std(): it divides by G − 1, not by G.",
        ),
        (
            lambda r, g: losses.group_advantages(r, g, scale=False)[0],
            "you subtracted the mean but did not divide by the std (+ 1e-6).",
        ),
        (
            lambda r, g: losses.group_advantages(r, len(r))[0],
            "normalise each prompt's G rewards in its own group: rewards.view(-1, G).",
        ),
        (
            partial(_advantages, eps=0.0),
            "a group with equal rewards has std 0: add 1e-6 to the std, so its "
            "advantages are 0, not NaN.",
        ),
    ],
    atol=1e-4,
)


def _terms(lp: Tensor, old: Tensor, adv: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """ρÂ and clip(ρ, 1 − ε, 1 + ε)Â, (B, T) each."""
    ratio, a = torch.exp(lp - old), adv.unsqueeze(1)  # (B, T), (B, 1)
    return ratio * a, ratio.clamp(1 - eps, 1 + eps) * a


_OLD = torch.tensor([[0.5] * 3, [0.2] * 3]).log()  # (B, T) = (2, 3)
_NEW = _OLD + torch.tensor([1.0, 1.5, 0.5]).log()  # ratios 1, 1.5, 0.5
_LOGPS = -3 * torch.rand(2, 4, 5, generator=gen(1))  # new and old, (B, T) = (4, 5)
check_clipped_surrogate = Exercise(
    "clipped surrogate: fn(logps, old_logps, advantages, clip_eps) -> (B, T): −min(ρÂ, "
    "clip(ρ, 1 ± ε)Â), ρ = exp(logps − old_logps). Reference: losses.clipped_surrogate.",
    lambda lp, old, adv, eps: losses.clipped_surrogate(lp, old, adv, eps)[0],
    lambda: [
        ("hand-made: ρ = 1, 1.5, 0.5", _NEW, _OLD, torch.tensor([1, -1.0]), 0.2),
        ("random: B = 4, T = 5", *_LOGPS, torch.randn(4, generator=gen(2)), 0.1),
        ("degenerate: zero advantages", *_LOGPS, torch.zeros(4), 0.2),
    ],
    [
        (
            lambda *a: -losses.clipped_surrogate(*a)[0],
            "the sign is flipped: the loss is MINUS the clipped objective.",
        ),
        (
            lambda *a: -torch.max(*_terms(*a)),
            "use torch.min of the two terms (the pessimistic one), not max.",
        ),
        (
            lambda *a: -_terms(*a)[1],
            "take the min of the unclipped ρÂ and the clipped term: the clipped term "
            "alone is wrong where clipping would increase the loss.",
        ),
        (
            lambda lp, old, adv, eps: -(lp - old) * adv.unsqueeze(1),
            "the ratio is exp(logps − old_logps); logps − old_logps is its log.",
        ),
        (
            lambda lp, old, adv, eps: -(lp - old).exp() * adv,
            "advantages (B,) and ratios (B, T): advantages.unsqueeze(1), of shape "
            "(B, 1), gives a row's Â to its tokens.",
        ),
    ],
)
_TOY = ToyBandit()  # at θ₀ = (0.5, −0.5), with its 6 arms
_T0, _F, _R = _TOY.theta.detach(), _TOY.features, _TOY.arm_rewards  # (2,), (6, 2), (6,)
_THREE = ToyBandit((1.3, -0.4), (10.0, 130.0, 250.0), (0.2, 0.9, 0.4))  # 3 arms
_T3, _F3, _R3 = _THREE.theta.detach(), _THREE.features, _THREE.arm_rewards
_A, _RA = torch.tensor([3, 0, 2, 3]), torch.randint(6, (8,), generator=gen(4))
_A3 = torch.randint(3, (8,), generator=gen(5))  # actions of the 3-arm bandit
check_toy_policy_gradient = Exercise(
    "toy policy gradient at θ₀: fn(theta, features, actions, advantages) -> (2,): "
    "−mean Â (φ_a − Σ_b π(b) φ_b). Reference: autograd through ToyBandit.make_loss_fn.",
    _toy_gradient,
    lambda: [
        ("hand-made: one group", _T0, _F, _A, losses.group_advantages(_R[_A], 4)[0]),
        (
            "random: 8 actions at θ = 2θ₀",
            2 * _T0,
            _F,
            _RA,
            losses.group_advantages(_R[_RA], 4)[0],
        ),
        (
            "random: a 3-arm bandit",
            _T3,
            _F3,
            _A3,
            losses.group_advantages(_R3[_A3], 4)[0],
        ),
        ("hand-made: raw rewards as Â (not zero-mean)", _T0, _F, _A, _R[_A]),
        ("degenerate: equal rewards, Â = 0", _T0, _F, _A, torch.zeros(4)),
    ],
    [
        (
            lambda *a: -_toy_gradient(*a),
            "the sign is flipped: this is the gradient of the LOSS, −mean(Â ∇log π).",
        ),
        (
            lambda theta, f, actions, adv: -(adv.unsqueeze(1) * f[actions]).mean(0),
            "∇log π(a) = φ_a − Σ_b π(b) φ_b: without the mean feature you are right "
            "only while Σ Â = 0.",
        ),
    ],
)


def _unclamped(x: Tensor, mask: Tensor, loss_agg: str) -> Tensor:
    """seq_mean dividing by each row's raw token count (else the library's)."""
    if loss_agg != "seq_mean":
        return losses.aggregate(x, mask, loss_agg)
    return ((x * mask).sum(1) / mask.sum(1)).mean()


_X = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 0.0, 0.0]])
_MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
_EMPTY = _MASK * torch.tensor([[1], [0]])  # row 1 has no tokens
_RX = torch.randn(5, 6, generator=gen(8))
_RMASK = (torch.arange(6) < torch.tensor([[6], [1], [3], [5], [2]])).long()
_MODES = ("token_mean", "seq_mean", "dr_grpo")
check_aggregate = Exercise(
    "loss aggregation: fn(per_token, mask, loss_agg) -> Σx / Σmask (token_mean), the "
    "mean of row means (seq_mean) or Σx / (B·T) (dr_grpo). Reference: losses.aggregate.",
    losses.aggregate,
    lambda: [
        *[(f"hand-made: lengths 4 and 2, {m}", _X, _MASK, m) for m in _MODES],
        *[(f"random: B = 5, T = 6, {m}", _RX, _RMASK, m) for m in _MODES],
        ("degenerate: an empty row (mask all 0) in seq_mean", _X, _EMPTY, "seq_mean"),
    ],
    [
        (
            lambda x, mask, loss_agg: x.mean(),
            "masked-out tokens (mask 0) are padding: leave them out of sum and count.",
        ),
        (
            lambda x, mask, loss_agg: losses.aggregate(x, mask, "token_mean"),
            "that is token_mean for every loss_agg; the others divide differently.",
        ),
        (
            lambda x, mask, loss_agg: losses.aggregate(x, mask, "seq_mean"),
            "that is seq_mean for every loss_agg; the others divide differently.",
        ),
        (_unclamped, "an empty row has 0 tokens: divide by the count clamped to >= 1."),
    ],
)
_LOGP = torch.tensor([[0.5, 0.25]]).log()
check_kl_k3 = Exercise(
    "k3 KL estimate: fn(per_token_logps, ref_per_token_logps) -> (B, T): exp(r) − r − "
    "1, r = log π_ref − log π_θ. Reference: losses.kl_k3.",
    losses.kl_k3,
    lambda: [
        ("hand-made: π_θ = (0.5, 0.25), π_ref the reverse", _LOGP, _LOGP.flip(-1)),
        ("random: B = 3, T = 5", *(-4 * torch.rand(2, 3, 5, generator=gen(9)))),
        ("degenerate: equal log-probs give 0", _LOGP, _LOGP),
        ("degenerate: π_ref(o) ≈ 6e-6", *torch.tensor([[[-0.1]], [[-12.0]]])),
    ],
    [
        (
            lambda logps, ref: losses.kl_k3(ref, logps),
            "r = log π_ref − log π_θ (reference minus current), not the reverse.",
        ),
        (
            lambda logps, ref: logps - ref,
            "that is k1, the log-ratio, which can be negative; k3 is exp(r) − r − 1 "
            "with r = log π_ref − log π_θ.",
        ),
    ],
)
check_toy_expected_reward = Exercise(
    "toy expected reward: fn(theta, features, arm_rewards) -> J(θ) = Σ_a "
    "softmax(features @ θ)_a r_a, 0-dim. Reference: ToyBandit.expected_reward.",
    lambda theta, f, r: _bandit(theta, f, r).expected_reward(),
    lambda: [
        ("hand-made: the default bandit at its start", _T0, _F, _R),
        ("random: 3 arms", _T3, _F3, _R3),
        ("degenerate: θ = 0 (uniform policy)", _T0 * 0, _F, _R),
        ("degenerate: a huge θ (one-hot softmax: be stable)", _T0 * 1600, _F, _R),
    ],
    [
        (
            lambda theta, f, r: (f @ theta) @ r,
            "turn the logits features @ θ into probabilities first: torch.softmax.",
        ),
        (
            lambda theta, f, r: (torch.exp(f @ theta) / torch.exp(f @ theta).sum()) @ r,
            "exp of a large logit is inf (inf / inf is NaN): torch.softmax is stable.",
        ),
    ],
)
