"""Exercises on GRPO's loss: advantages, the clipped surrogate and its gradient on the
toy, loss aggregation, the k3 KL, the toy's expected reward (notebooks 01, 04, 07)."""

from __future__ import annotations

from functools import partial
from typing import Any

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


check_group_advantages = Exercise(
    "group advantages: fn(rewards, group_size) -> advantages (B,): (R − group mean) / "
    "(unbiased group std + 1e-6). Reference: losses.group_advantages(rewards, G)[0].",
    lambda r, g: losses.group_advantages(r, g)[0],
    lambda: [
        ("hand-made: two groups of 4", torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0]), 4),
        ("hand-made: reference rewards 1 / 0.1 / 0", torch.tensor([1, 0.1, 0]), 3),
        ("random: 3 groups of 8", torch.rand(24, generator=gen(0)), 8),
        ("degenerate: a group whose rewards are all equal", torch.ones(4), 4),
        ("degenerate: G = 2", torch.tensor([0.0, 1, 1, 1, 0.3, 0.3]), 2),
    ],
    {
        "you used the population std (unbiased=False); GRPO uses the unbiased one: "
        "tensor.std(), which divides by G − 1.": partial(_advantages, unbiased=False),
        "you subtracted the mean but did not divide by the std (+ 1e-6).": lambda r, g: (
            losses.group_advantages(r, g, scale=False)[0]
        ),
        "you normalised over the whole batch; each prompt's G rewards are normalised "
        "within their own group: rewards.view(-1, G).": lambda r, g: _advantages(
            r, len(r)
        ),
        "a group with equal rewards has std 0: add 1e-6 to the std, so its advantages "
        "are 0 instead of NaN.": partial(_advantages, eps=0.0),
    },
    atol=1e-4,
)


def _terms(lp: Tensor, old: Tensor, adv: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """ρÂ and clip(ρ, 1 − ε, 1 + ε)Â, (B, T) each."""
    ratio, a = torch.exp(lp - old), adv.unsqueeze(1)  # (B, T), (B, 1)
    return ratio * a, ratio.clamp(1 - eps, 1 + eps) * a


def _surrogate_cases() -> list[tuple]:
    old = torch.log(torch.tensor([[0.5] * 3, [0.2] * 3]))  # (2, 3)
    new = old + torch.tensor([1.0, 1.5, 0.5]).log()  # ratios 1, 1.5, 0.5
    old_r = -torch.rand(4, 5, generator=gen(1)) * 3
    new_r = old_r + 0.4 * torch.randn(4, 5, generator=gen(2))
    adv, pm = torch.randn(8, generator=gen(3)), torch.tensor([1.0, -1.0])
    return [
        ("hand-made: ratio 1, 1.5, 0.5 with Â = +1 and −1", new, old, pm, 0.2),
        ("hand-made: at θ₀ (ratio 1) the loss is −Â", old, old, 2 * pm, 0.2),
        ("random: B = 4, T = 5, ε = 0.2", new_r, old_r, adv[:4], 0.2),
        ("random: ε = 0.1", new_r, old_r, adv[4:], 0.1),
        ("degenerate: zero advantages", new_r, old_r, torch.zeros(4), 0.2),
    ]


check_clipped_surrogate = Exercise(
    "clipped surrogate: fn(per_token_logps, old_per_token_logps, advantages, clip_eps) "
    "-> loss (B, T): −min(ρÂ, clip(ρ, 1 ± ε)Â), ρ = exp(logp − old). Reference: "
    "losses.clipped_surrogate.",
    lambda lp, old, adv, eps: losses.clipped_surrogate(lp, old, adv, eps)[0],
    _surrogate_cases,
    {
        "the sign is flipped: the loss is MINUS the clipped objective.": lambda *a: (
            torch.min(*_terms(*a))
        ),
        "use torch.min of the two terms (the pessimistic one), not max.": lambda *a: (
            -torch.max(*_terms(*a))
        ),
        "take the minimum of the unclipped ρÂ and the clipped term; the clipped term "
        "alone is wrong when clipping would increase the loss.": lambda *a: (
            -_terms(*a)[1]
        ),
        "the ratio is exp(per_token_logps − old_per_token_logps).": lambda lp, o, a, e: (
            -(lp - o) * a.unsqueeze(1)
        ),
        "advantages (B,) and ratios (B, T): advantages.unsqueeze(1), of shape (B, 1), "
        "gives each row's advantage to all its tokens.": lambda lp, o, a, e: (
            -torch.exp(lp - o) * a
        ),
    },
)


def _bandit(theta: Tensor, features: Tensor, rewards: Tensor | None = None) -> Any:
    """A ToyBandit at θ (2,) with the given arm features (A, 2) and rewards (A,)."""
    bandit = ToyBandit(theta.tolist())
    bandit.features = features.clone()
    bandit.arm_rewards = bandit.arm_rewards if rewards is None else rewards.clone()
    return bandit


def _toy_gradient(theta: Tensor, f: Tensor, actions: Tensor, adv: Tensor) -> Tensor:
    """∇L(θ₀) by autograd through the toy's own GRPO loss (token mean, ε = 0.2)."""
    bandit, B = _bandit(theta, f), len(actions)
    old = bandit.log_probs().detach()[actions].unsqueeze(1)  # (B, 1): at θ₀, ρ = 1
    batch = ToyBatch(actions, torch.zeros(B), adv, old, torch.ones(B, 1), B)
    loss, _ = bandit.make_loss_fn(toy_config())(batch)
    return torch.autograd.grad(loss, bandit.theta)[0]  # (2,)


def _row(label: str, theta: tuple, actions: Any = None, **arms: Any) -> tuple:
    """A case on a ToyBandit at θ: (label, θ, features, arm rewards); or, given
    ``actions`` (a list, with their group advantages or, if the label says "raw", their
    rewards; or (N, G) to sample a batch), (label, θ, features, actions, advantages)."""
    bandit = ToyBandit(theta, **arms)
    row = (label, bandit.theta.detach(), bandit.features)
    if actions is None:
        return (*row, bandit.arm_rewards)
    if isinstance(actions, tuple):
        batch = bandit.sample_batch(*actions, gen(sum(actions)))
        return (*row, batch.actions, batch.advantages)
    adv = bandit.arm_rewards[torch.tensor(actions)]
    adv = adv if "raw" in label else losses.group_advantages(adv, 4)[0]
    return (*row, torch.tensor(actions), adv)


_ARMS = dict(arm_angles_deg=(0.0, 120.0, 240.0), arm_rewards=(0.0, 1.0, 0.3))
check_toy_policy_gradient = Exercise(
    "toy policy gradient at θ₀: fn(theta, features, actions, advantages) -> ∇L(θ₀) "
    "(2,) = −mean Â (φ_a − Σ_b π(b) φ_b). Reference: autograd through "
    "ToyBandit.make_loss_fn (token mean, ε = 0.2).",
    _toy_gradient,
    lambda: [
        _row("hand-made: the default bandit, one group", (0.5, -0.5), [3, 0, 2, 3]),
        _row("random: 2 groups of 8", (1.0, 0.3), (2, 8)),
        _row("random: 3 arms, θ far from 0", (2.0, -1.0), (3, 4), **_ARMS),
        _row("degenerate: equal rewards, Â = 0", (0.5, -0.5), [3] * 4),
        _row("hand-made: raw rewards as Â (not zero-mean)", (0.5, -0.5), [3, 0, 2, 2]),
    ],
    {
        "the sign is flipped: this is the gradient of the LOSS, −mean(Â ∇log π).": (
            lambda *a: -_toy_gradient(*a)
        ),
        "∇log π_θ(a) is φ_a MINUS the mean feature Σ_b π_θ(b) φ_b (the softmax's "
        "normaliser depends on θ too); without it you are right only while Σ Â = 0.": (
            lambda theta, f, actions, adv: -(adv.unsqueeze(1) * f[actions]).mean(0)
        ),
    },
)


def _aggregate_cases() -> list[tuple]:
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    rx = torch.randn(5, 6, generator=gen(8))
    rmask = (torch.arange(6) < torch.tensor([[6], [1], [3], [5], [2]])).long()
    empty = rmask * (torch.arange(5) != 1).unsqueeze(1)  # row 1 has no tokens
    modes = ("token_mean", "seq_mean", "dr_grpo")
    return [
        *[("hand-made: lengths 4 and 2", x, mask, mode) for mode in modes],
        *[(f"random: B = 5, T = 6, {mode}", rx, rmask, mode) for mode in modes],
        ("degenerate: an empty row (mask all 0) in seq_mean", rx, empty, "seq_mean"),
    ]


def _unclamped(x: Tensor, mask: Tensor, mode: str) -> Tensor:
    """seq_mean dividing by each row's raw token count (else the library's)."""
    if mode != "seq_mean":
        return losses.aggregate(x, mask, mode)
    return ((x * mask).sum(1) / mask.sum(1)).mean()


check_aggregate = Exercise(
    "loss aggregation: fn(per_token, completion_mask, loss_agg) -> scalar: token_mean "
    "Σx / Σmask, seq_mean mean of row means, dr_grpo Σx / (B·T). Reference: "
    "losses.aggregate.",
    losses.aggregate,
    _aggregate_cases,
    {
        "masked-out tokens (mask 0) are padding: leave them out.": lambda x, m, mode: (
            x.mean()
        ),
        **{
            f"that is {used} for every mode; the others divide differently (see the "
            "docstring).": lambda x, m, mode, used=used: losses.aggregate(x, m, used)
            for used in ("token_mean", "seq_mean")
        },
        "an empty row has 0 tokens: divide by the count clamped to ≥ 1.": _unclamped,
    },
)

_LOGP = torch.tensor([[0.5, 0.25]]).log()
check_kl_k3 = Exercise(
    "k3 KL estimate: fn(per_token_logps, ref_per_token_logps) -> kl (B, T): exp(r) − r "
    "− 1, r = log π_ref − log π_θ. Reference: losses.kl_k3.",
    losses.kl_k3,
    lambda: [
        ("hand-made: equal log-probs give 0", _LOGP, _LOGP),
        ("hand-made: π_θ = (0.5, 0.25), π_ref the reverse", _LOGP, _LOGP.flip(-1)),
        ("random: B = 3, T = 5", *(-4 * torch.rand(2, 3, 5, generator=gen(9)))),
        ("degenerate: π_ref(o) ≈ 6e-6", *torch.tensor([[[-0.1]], [[-12.0]]])),
    ],
    {
        "r = log π_ref − log π_θ (reference minus current), not the reverse.": (
            lambda p, ref: losses.kl_k3(ref, p)
        ),
        "that is k1 (a log-ratio, can be negative); k3 is exp(r) − r − 1.": (
            lambda p, ref: p - ref
        ),
    },
)

_SAME = dict(arm_rewards=(0.5,) * 6)
_THREE = dict(arm_angles_deg=(10.0, 130.0, 250.0), arm_rewards=(0.2, 0.9, 0.4))
check_toy_expected_reward = Exercise(
    "toy expected reward: fn(theta, features, arm_rewards) -> J(θ) = Σ_a "
    "softmax(features @ θ)_a r_a, 0-dim. Reference: ToyBandit.expected_reward.",
    lambda theta, f, r: _bandit(theta, f, r).expected_reward(),
    lambda: [
        _row("hand-made: the default bandit at its start", (0.5, -0.5)),
        _row("hand-made: θ = 0 (uniform policy)", (0.0, 0.0)),
        _row("random: 3 arms", (1.3, -0.4), **_THREE),
        _row("degenerate: a huge θ (one-hot softmax: be stable)", (800.0, 0.0)),
        _row("degenerate: all arms pay the same", (0.3, 2.0), **_SAME),
    ],
    {
        "turn the logits into probabilities first: torch.softmax.": lambda t, f, r: (
            (f @ t) @ r
        ),
        "exp of a large logit overflows: torch.softmax is stable.": lambda t, f, r: (
            (torch.exp(f @ t) / torch.exp(f @ t).sum()) @ r
        ),
    },
)
