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
    {
        "GRPO uses the unbiased std, tensor.std(), which divides by G − 1, not by "
        "G.": partial(_advantages, unbiased=False),
        "normalise each prompt's G rewards within its own group: "
        "rewards.view(-1, G).": lambda r, g: _advantages(r, len(r)),
        "a group with equal rewards has std 0: add 1e-6 to the std, so its advantages "
        "are 0, not NaN.": partial(_advantages, eps=0.0),
    },
    atol=1e-4,
)
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
    {
        "the sign is flipped: the loss is MINUS the clipped objective, −min(ρÂ, "
        "clip(ρ, 1 ± ε)Â).": lambda *a: losses.clipped_surrogate(*a)[0].neg(),
        "advantages (B,) and ratios (B, T): advantages.unsqueeze(1), of shape (B, 1), "
        "gives a row's Â to its tokens.": lambda lp, o, a, e: -(lp - o).exp() * a,
    },
)
_TOY = ToyBandit()  # at θ₀ = (0.5, −0.5), with its 6 arms
_T0, _F, _R = _TOY.theta.detach(), _TOY.features, _TOY.arm_rewards  # (2,), (6, 2), (6,)
_A, _RA = torch.tensor([3, 0, 2, 3]), torch.randint(6, (8,), generator=gen(4))
check_toy_policy_gradient = Exercise(
    "toy policy gradient at θ₀: fn(theta, features, actions, advantages) -> (2,): "
    "−mean Â (φ_a − Σ_b π(b) φ_b). Reference: autograd through ToyBandit.make_loss_fn.",
    _toy_gradient,
    lambda: [
        ("hand-made: one group", _T0, _F, _A, _advantages(_R[_A], 4)),
        ("random: 8 actions at θ = 2θ₀", 2 * _T0, _F, _RA, _advantages(_R[_RA], 4)),
        ("hand-made: raw rewards as Â (not zero-mean)", _T0, _F, _A, _R[_A]),
        ("degenerate: equal rewards, Â = 0", _T0, _F, _A, torch.zeros(4)),
    ],
    {
        "the sign is flipped: this is the gradient of the LOSS, −mean(Â ∇log "
        "π).": lambda *a: -_toy_gradient(*a),
        "∇log π(a) = φ_a − Σ_b π(b) φ_b: without the mean feature you are right only "
        "while Σ Â = 0.": lambda t, f, a, adv: -(adv.unsqueeze(1) * f[a]).mean(0),
    },
)
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
    {
        "masked-out tokens (mask 0) are padding: leave them out of the sum and of the "
        "count.": lambda x, m, agg: x.mean(),
        "that is token_mean for every loss_agg; seq_mean and dr_grpo divide "
        "differently.": lambda x, m, agg: losses.aggregate(x, m),
    },
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
    {
        "r = log π_ref − log π_θ (reference minus current), not the "
        "reverse.": lambda p, ref: losses.kl_k3(ref, p),
        "that is k1, the log-ratio, which can be negative; k3 is exp(r) − r − 1 with r "
        "= log π_ref − log π_θ.": lambda p, ref: p - ref,
    },
)
_THREE = ToyBandit((1.3, -0.4), (10.0, 130.0, 250.0), (0.2, 0.9, 0.4))
check_toy_expected_reward = Exercise(
    "toy expected reward: fn(theta, features, arm_rewards) -> J(θ) = Σ_a "
    "softmax(features @ θ)_a r_a, 0-dim. Reference: ToyBandit.expected_reward.",
    lambda theta, f, r: _bandit(theta, f, r).expected_reward(),
    lambda: [
        ("hand-made: the default bandit at its start", _T0, _F, _R),
        ("random: 3 arms", _THREE.theta.detach(), _THREE.features, _THREE.arm_rewards),
        ("degenerate: θ = 0 (uniform policy)", _T0 * 0, _F, _R),
        ("degenerate: a huge θ (one-hot softmax: be stable)", _T0 * 1600, _F, _R),
    ],
    {
        "turn the logits features @ θ into probabilities first, with "
        "torch.softmax.": lambda t, f, r: (f @ t) @ r,
        "exp of a large logit overflows to inf (inf / inf is NaN): torch.softmax is "
        "stable.": lambda t, f, r: (torch.exp(f @ t) / torch.exp(f @ t).sum()) @ r,
    },
)
