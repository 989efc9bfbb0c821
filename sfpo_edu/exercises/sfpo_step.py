"""Exercises on SFPO's step: reposition (flat and in place), one SFPO and one Lookahead
step with SGD, the three points of a step, the drift metrics (notebooks 02, 04, 06).

The SGD references run the library's own updates on a given gradient function,
through a loss whose gradient at the current θ is that function's value."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from sfpo_edu import params
from sfpo_edu.exercises.grader import Case, Exercise, gen
from sfpo_edu.sfpo import sfpo_update
from sfpo_edu.toy import ToyBandit, ToyBatch, lookahead_update, toy_config

Grad = Callable[[Tensor], Tensor]  # grad(theta) -> ∇L(theta), both (D,)


def toy_grads(seed: int, k: int = 1) -> list[Grad]:
    """∇L of the toy's GRPO loss as a function of θ (2,), on each of ``k`` batches
    sampled at the toy's start."""
    bandit, g = ToyBandit(), gen(seed)
    loss_fn = bandit.make_loss_fn(toy_config())

    def on(batch: ToyBatch) -> Grad:
        def grad(theta: Tensor) -> Tensor:
            """grad(theta) -> ∇L(theta) on one fixed batch of the toy, both shape (2,)."""
            with torch.no_grad():
                bandit.theta.copy_(theta)
            return torch.autograd.grad(loss_fn(batch)[0], bandit.theta)[0]

        return grad

    return [on(bandit.sample_batch(1, 8, g)) for _ in range(k)]


def quadratic(seed: int) -> Grad:
    """The gradient Aθ + b of a convex L(θ) = ½θᵀAθ + bᵀθ in 2-D."""
    m, b = torch.randn(2, 2, generator=gen(seed)), torch.randn(2, generator=gen(seed))
    A = m @ m.T + torch.eye(2)

    def grad(theta: Tensor) -> Tensor:
        """grad(theta) -> ∇L(theta) = Aθ + b of a quadratic, both shape (2,)."""
        return A @ theta + b

    return grad


def _sgd(update: Callable, theta_0: Tensor, lr: float, batch: Any, **kw: Any) -> Tensor:
    """θ after the library's ``update`` with ``torch.optim.SGD`` from θ₀. The loss
    ⟨θ, grad(θ)⟩, grad(θ) held constant, has the gradient grad(θ) at the current θ."""
    theta = nn.Parameter(theta_0.clone())

    def loss_fn(grad: Grad) -> tuple[Tensor, dict[str, float]]:
        return theta @ grad(theta.detach()), {"kl": 0.0}

    update([theta], torch.optim.SGD([theta], lr=lr), batch, loss_fn, **kw)
    return theta.detach()


def _points(
    theta_0: Tensor, grad: Grad, lr: float, K: int, alpha: float, **mistake: Any
) -> tuple[Tensor, Tensor, Tensor]:
    """θ_K, θ̃ and θ_{s+1} of one SFPO step with SGD, or with a ``mistake``: ``steps``
    fast steps too many, θ̃ pulled ``back`` from θ_K, the slow step from ``start``
    ("0", "K" or "~" for θ̃) or with the gradient ``at`` another point."""
    theta = {"0": theta_0, "K": theta_0}
    for _ in range(K + mistake.get("steps", 0)):  # Eq. (2): θ^{k+1} = θ^k − η∇L(θ^k)
        theta["K"] = theta["K"] - lr * grad(theta["K"])
    ends = (theta_0, theta["K"]) if mistake.get("back") else (theta["K"], theta_0)
    theta["~"] = params.reposition(*ends, alpha)  # Eq. (3): θ̃ = θ₀ + α(θ_K − θ₀)
    start = mistake.get("start", "~")  # Eq. (4): θ_{s+1} = θ̃ − η∇L(θ̃)
    return (
        theta["K"],
        theta["~"],
        theta[start] - lr * grad(theta[mistake.get("at", start)]),
    )


def _step(i: int = 2, **mistake: Any) -> Callable[..., Tensor]:
    """A wrong ``sfpo_sgd_step``: point ``i`` of ``_points`` with ``mistake``."""
    return lambda t0, grad, K, alpha, lr: _points(t0, grad, lr, K, alpha, **mistake)[i]


def _sgd_cases(points: bool = False) -> list[tuple]:
    """Steps from the toy's start on two batches, and from (1, −1) on a quadratic;
    the arguments in ``sfpo_sgd_step``'s order (θ₀, grad, K, α, η), or ``points``'."""
    t, q, toy = ToyBandit().theta.detach(), torch.tensor([1.0, -1]), toy_grads(0)
    rows = [
        ("hand-made: the toy, K = 3, α = 0.8, η = 0.5", t, toy[0], 3, 0.8, 0.5),
        ("random: another batch, K = 1, α = 0.5", t, toy_grads(5)[0], 1, 0.5, 0.3),
        ("random: a quadratic, K = 4, α = 0.6", q, quadratic(3), 4, 0.6, 0.2),
        ("degenerate: α = 0 (one GRPO step)", t, toy[0], 3, 0.0, 0.5),
        ("degenerate: α = 1 (K + 1 plain steps)", q, quadratic(4), 2, 1.0, 0.2),
    ]
    if points:  # (θ₀, grad, η, K, α)
        return [(label, t0, g, lr, K, a) for label, t0, g, K, a, lr in rows]
    return rows


check_reposition = Exercise(
    "reposition: fn(theta_0, theta_k, alpha) -> theta_tilde = θ₀ + α(θ_K − θ₀), flat "
    "(D,). Reference: params.reposition (a torch.lerp).",
    lambda t0, tk, a: params.reposition(tk, t0, a),
    lambda: [
        ("hand-made: α = 0.8", torch.zeros(2), torch.tensor([2.0, 1]), 0.8),
        ("hand-made: α = 0.5 is the midpoint", torch.ones(2), -torch.ones(2), 0.5),
        ("random: D = 7", *torch.randn(2, 7, generator=gen(2)), 0.3),
        ("degenerate: α = 0 gives θ₀", *torch.randn(2, 5, generator=gen(3)), 0.0),
        ("degenerate: α = 1 gives θ_K", *torch.randn(2, 5, generator=gen(4)), 1.0),
        Case(
            "α = 1, θ₀ ≫ θ_K",
            (1e3 * torch.randn(5, generator=gen(5)), torch.randn(5) / 1e3, 1.0),
            exact=True,
            note="at α = 1 your θ̃ is θ_K only up to rounding (θ₀ + (θ_K − θ₀) can be "
            "one ulp off). The library's torch.lerp(θ_K, θ₀, 1 − α) is exact at both "
            "ends, so α = 1 is bit for bit GRPO×(K+1).",
        ),
    ],
    {
        "α weighs the step from θ₀ toward θ_K: θ₀ + α(θ_K − θ₀).": lambda t0, tk, a: (
            tk + a * (t0 - tk)
        ),
    },
    rtol=1e-5,
)
check_sfpo_sgd_step = Exercise(
    "SFPO step with SGD: fn(theta_0, grad, num_fast_steps, alpha, lr) -> theta_next: K "
    "SGD steps θ^{k+1} = θ^k − η∇L(θ^k), θ̃ = θ₀ + α(θ_K − θ₀), θ_{s+1} = θ̃ − "
    "η∇L(θ̃). Reference: sfpo.sfpo_update with SGD.",
    lambda t0, grad, K, alpha, lr: _sgd(
        sfpo_update, t0, lr, grad, num_fast_steps=K, alpha=alpha, diagnostics=False
    ),
    _sgd_cases,
    {
        "you stopped at θ̃: stage III takes one more step, θ̃ − η∇L(θ̃).": _step(1),
        "you skipped the reposition: the slow step starts from θ̃, not θ_K.": (
            _step(start="K")
        ),
        "θ̃ = θ₀ + α(θ_K − θ₀): α is the share of the fast path you KEEP.": (
            _step(back=True)
        ),
        "the slow step's gradient is taken AT θ̃, not at θ_K.": _step(at="K"),
    },
)


def _lookahead(
    theta_0: Tensor, grads: list[Grad], alpha: float, lr: float, frozen: bool = False
) -> Tensor:
    """A wrong Lookahead: each gradient at θ₀ (``frozen``), else an extra step."""
    theta = theta_0
    for grad in grads:
        theta = theta - lr * grad(theta_0 if frozen else theta)
    theta = params.reposition(theta, theta_0, alpha)
    return theta if frozen else theta - lr * grads[-1](theta)


check_lookahead_sgd_step = Exercise(
    "Lookahead step with SGD: fn(theta_0, grads, alpha, lr) -> theta_next: one SGD "
    "step per FRESH batch, θ^{k+1} = θ^k − η grads[k](θ^k), then θ₀ + α(θ_k − θ₀) and "
    "no extra step. Reference: toy.lookahead_update with SGD.",
    lambda t0, grads, a, lr: _sgd(
        lookahead_update,
        t0,
        lr,
        iter(grads).__next__,
        num_inner_steps=len(grads),
        alpha=a,
    ),
    lambda: [
        (label, ToyBandit().theta.detach(), toy_grads(seed, k), a, lr)
        for label, seed, k, a, lr in [
            ("hand-made: 3 fresh batches, η = 0.5", 0, 3, 0.8, 0.5),
            ("random: 2 fresh batches, α = 0.5", 7, 2, 0.5, 0.3),
            ("degenerate: α = 1 (k plain steps)", 3, 3, 1.0, 0.5),
            ("degenerate: α = 0 (back to θ₀)", 4, 2, 0.0, 0.5),
        ]
    ],
    {
        "Lookahead takes NO extra step after pulling back (SFPO does).": _lookahead,
        "each inner step uses the gradient at the CURRENT inner point.": partial(
            _lookahead, frozen=True
        ),
    },
)
check_sfpo_points = Exercise(
    "the three points of an SFPO step: fn(theta_0, grad_fn, lr, num_fast_steps, alpha) "
    "-> (theta_k, theta_tilde, theta_next), each (2,), of one SFPO step with SGD. "
    "Reference: the steps with params.reposition.",
    _points,
    partial(_sgd_cases, points=True),
    {
        "you pulled θ_K toward θ₀ by α; α is the share of the fast path you KEEP: "
        "θ̃ = θ₀ + α(θ_K − θ₀), so α = 1 gives θ_K.": partial(_points, back=True),
        "the slow step starts from θ̃, not θ_K: θ_{s+1} = θ̃ − η∇L(θ̃). Starting at θ_K "
        "throws the reposition away.": partial(_points, start="K"),
        **{
            f"the slow step's gradient is taken AT θ̃, where the step starts, not at "
            f"{name}: ∇L(θ̃).": partial(_points, at=at)
            for at, name in [("0", "θ₀"), ("K", "θ_K")]
        },
        "one fast step too many: K fast steps go θ⁰ → θ¹ → … → θ_K, K gradient "
        "evaluations (range(num_fast_steps)).": partial(_points, steps=1),
        "one fast step too few: θ_K is reached after K fast steps, not K − 1.": partial(
            _points, steps=-1
        ),
    },
    names=("theta_k", "theta_tilde", "theta_next"),
)


def _interpolate_cases() -> list[tuple | Case]:
    g, f32, bf16 = gen(11), torch.float32, torch.bfloat16

    def make(*dtypes: torch.dtype) -> tuple[list[Tensor], list[Tensor]]:
        """Parameters (4, 3), (5,), (2, 2) in ``dtypes``, and a θ₀ near them."""
        shapes = [(4, 3), (5,), (2, 2)][: len(dtypes)]
        ps = [
            nn.Parameter(torch.randn(s, generator=g).to(d))
            for s, d in zip(shapes, dtypes, strict=True)
        ]
        return ps, [
            p.detach().float() + 0.3 * torch.randn(p.shape, generator=g) for p in ps
        ]

    one = [nn.Parameter(torch.tensor([2.0, 1]))], [torch.zeros(2)]
    return [  # α = 0 and 1 are exact: what makes SFPO equal GRPO (×(K+1)) bit for bit
        ("hand-made: one 2-element parameter, α = 0.8", *one, 0.8),
        ("random: three fp32 matrices, α = 0.6", *make(f32, f32, f32), 0.6),
        ("random: a bf16 parameter among fp32 ones", *make(f32, bf16, f32), 0.5),
        Case("degenerate: α = 1 leaves θ_K bit for bit", (*make(f32, f32), 1.0), True),
        Case("degenerate: α = 0 returns θ₀ bit for bit", (*make(f32, f32), 0.0), True),
    ]


def _literal_(ps: list[Tensor], theta_0: list[Tensor], alpha: float) -> None:
    """p ← θ₀ + α(p − θ₀) as written: right up to rounding only."""
    with torch.no_grad():
        for p, t in zip(ps, theta_0, strict=True):
            p.copy_(t + alpha * (p.float() - t))


check_interpolate_ = Exercise(
    "reposition in place: fn(params, theta_0, alpha) -> None: p ← θ₀ + α(p − θ₀) IN "
    "PLACE for a list of parameters, exact at α = 0 and 1, bf16 via fp32. Reference: "
    "params.interpolate_.",
    params.interpolate_,
    _interpolate_cases,
    {
        "the parameters did not change: update them in place (p.lerp_(...) or "
        "p.copy_(...)); returning new tensors is not enough.": lambda ps, t0, a: [
            torch.lerp(p.float(), t, 1 - a) for p, t in zip(ps, t0, strict=True)
        ],
        "right up to rounding, but θ₀ + α(θ − θ₀) is not exact in floating point. "
        "p.lerp_(θ₀, 1 − α) is exact at α = 0 and 1, which lets the tests check "
        "α = 1 ≡ GRPO×(K+1) with torch.equal.": _literal_,
    },
    names=("parameter 0", "parameter 1", "parameter 2"),
    in_place=True,
    atol=1e-6,
    rtol=1e-6,
)


def _drift(t0: Tensor, tk: Tensor, tn: Tensor, a: float, **mistake: Any) -> dict:
    """The drift metrics with the slow step from ``start`` (wrong unless θ̃) and the
    cosine by ``cos``."""
    start, cos = mistake.get("start", "~"), mistake.get("cos", params.cosine)
    tilde = t0 + a * (tk - t0)
    fast, slow = tk - t0, tn - {"~": tilde, "K": tk, "0": t0}[start]
    norms = {"drift": fast, "reposition": tilde - t0, "slow_step": slow}
    metrics = {f"sfpo/{key}_norm": v.norm().item() for key, v in norms.items()}
    return metrics | {"sfpo/cos_fast_slow": cos(fast, slow)}


_V = torch.tensor([[0.0, 0], [2, 0], [1.6, 1], [1, 1]])
_W = torch.tensor([[1.0, 1, 1], [1, 1, 1], [1, 2, 1]])
check_drift_metrics = Exercise(
    "drift metrics: fn(theta_0, theta_k, theta_next, alpha) -> {sfpo/drift_norm ‖θ_K − "
    "θ₀‖, sfpo/reposition_norm ‖θ̃ − θ₀‖, sfpo/slow_step_norm ‖θ_{s+1} − θ̃‖, "
    "sfpo/cos_fast_slow (0 if a vector is 0)}, floats. Reference: "
    "params.drift_metrics.",
    lambda t0, tk, tn, a: {
        k: v
        for k, v in params.drift_metrics([t0], [tk], [tn], a).items()
        if "sfpo/" in k
    },
    lambda: [
        ("hand-made: fast (2, 0), slow (0, 1)", *_V[:3], 0.8),
        ("hand-made: slow continues fast", _V[0], _V[3], _V[3], 0.5),
        ("random: D = 50", *torch.randn(3, 50, generator=gen(12)), 0.8),
        ("degenerate: θ_K = θ₀", *_W, 0.8),
    ],
    {
        "the slow step starts at θ̃ = θ₀ + α(θ_K − θ₀), not at θ_K.": partial(
            _drift, start="K"
        ),
        "‖θ_{s+1} − θ̃‖ is measured from θ̃ = θ₀ + α(θ_K − θ₀), not from θ₀.": partial(
            _drift, start="0"
        ),
        "if either vector is zero the cosine is undefined: return 0.0.": partial(
            _drift, cos=lambda u, v: (u @ v / (u.norm() * v.norm())).item()
        ),
    },
)
