"""Exercises on SFPO's step: reposition (flat and in place), one SFPO and one Lookahead
step with SGD, the three points of a step, the drift metrics (notebooks 02, 04, 06)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from sfpo_edu import params
from sfpo_edu.exercises.grader import Case, Exercise, gen
from sfpo_edu.sfpo import sfpo_update
from sfpo_edu.toy import ToyBandit, lookahead_update, toy_config

Grad = Callable[[Tensor], Tensor]  # grad(theta) -> ∇L(theta), both (D,)


def toy_grad(seed: int) -> Grad:
    """∇L of the toy's GRPO loss on one batch sampled at its start, a function of θ."""
    bandit = ToyBandit()
    batch = bandit.sample_batch(1, 8, gen(seed))

    def grad(theta: Tensor) -> Tensor:
        """grad(theta) -> ∇L(theta) on one fixed batch of the toy, both shape (2,)."""
        with torch.no_grad():
            bandit.theta.copy_(theta)
        loss, _ = bandit.make_loss_fn(toy_config())(batch)
        return torch.autograd.grad(loss, bandit.theta)[0]

    return grad


def quadratic(seed: int) -> Grad:
    """The gradient Aθ + b of a convex L(θ) = ½θᵀAθ + bᵀθ in 2-D."""
    m, b = torch.randn(2, 2, generator=gen(seed)), torch.randn(2, generator=gen(seed))

    def grad(theta: Tensor) -> Tensor:
        """grad(theta) -> ∇L(theta) = Aθ + b of a quadratic, both shape (2,)."""
        return (m @ m.T + torch.eye(2)) @ theta + b

    return grad


def _sgd(update: Callable, theta_0: Tensor, lr: float, batch: Any, **kw: Any) -> Tensor:
    """θ after the library's ``update`` with SGD from θ₀, its batch a gradient function:
    the loss ⟨θ, grad(θ)⟩, grad(θ) held constant, has the gradient grad(θ)."""
    theta = nn.Parameter(theta_0.clone())

    def loss_fn(grad: Grad) -> tuple[Tensor, dict[str, float]]:
        return theta @ grad(theta.detach()), {"kl": 0.0}

    update([theta], torch.optim.SGD([theta], lr=lr), batch, loss_fn, **kw)
    return theta.detach()


class Points(NamedTuple):
    """The three points of an SFPO step, each (D,)."""

    theta_k: Tensor  # after K fast steps
    theta_tilde: Tensor  # repositioned
    theta_next: Tensor  # after the slow step


def _points(
    theta_0: Tensor, grad: Grad, lr: float, K: int, alpha: float, mistake: str = ""
) -> Points:
    """θ_K, θ̃ and θ_{s+1} of one SFPO step with SGD, or with a ``mistake``: "K + 1" or
    "K - 1" fast steps, θ̃ pulled "back" from θ_K, the slow step "from K" (θ_K), its
    gradient "at K" or "at 0" (θ₀)."""
    steps = {"K + 1": K + 1, "K - 1": K - 1}.get(mistake, K)  # fast steps
    theta_k = theta_0
    for _ in range(steps):
        theta_k = theta_k - lr * grad(theta_k)  # Eq. (2): θ^{k+1} = θ^k − η∇L(θ^k)
    ends = (theta_0, theta_k) if mistake == "back" else (theta_k, theta_0)
    tilde = params.reposition(*ends, alpha)  # Eq. (3): θ̃ = θ₀ + α(θ_K − θ₀)
    start = theta_k if mistake == "from K" else tilde
    at = {"at K": theta_k, "at 0": theta_0}.get(mistake, start)
    return Points(theta_k, tilde, start - lr * grad(at))  # Eq. (4): θ̃ − η∇L(θ̃)


# The hint of each ``_points`` mistake, shared by the SFPO step and points checks.
_POINT_HINTS = {
    "back": "α is the share of the fast path you KEEP: θ̃ = θ₀ + α(θ_K − θ₀).",
    "from K": "the slow step starts from θ̃, not θ_K: θ_{s+1} = θ̃ − η∇L(θ̃); from θ_K "
    "the reposition is lost.",
    "at 0": "the slow step's gradient is taken AT θ̃, where it starts, not at θ₀.",
    "at K": "the slow step's gradient is taken AT θ̃, where it starts, not at θ_K.",
    "K + 1": "one fast step too many: K fast steps go θ⁰ → θ¹ → … → θ_K, K gradient "
    "evaluations (range(num_fast_steps)).",
    "K - 1": "one fast step too few: θ_K is reached after K fast steps, not K − 1.",
}


def _next(mistake: str) -> Callable[..., Tensor]:
    """A wrong ``sfpo_sgd_step``: θ_{s+1} of ``_points`` with ``mistake``."""
    return lambda t0, grad, K, a, lr: _points(t0, grad, lr, K, a, mistake).theta_next


def _sgd_cases() -> list[tuple]:
    """Rows (label, θ₀, grad, K, α, η) from the toy's start and from (1, −1)."""
    t, q = ToyBandit().theta.detach(), torch.tensor([1.0, -1])
    return [
        ("hand-made: the toy, K = 3, α = 0.8", t, toy_grad(0), 3, 0.8, 0.5),
        ("random: a quadratic, K = 4, α = 0.6", q, quadratic(3), 4, 0.6, 0.2),
        ("degenerate: α = 0 (one GRPO step)", t, toy_grad(5), 3, 0.0, 0.5),
        ("degenerate: α = 1 (K + 1 plain steps)", q, quadratic(4), 2, 1.0, 0.2),
    ]


def _params(alpha: float, *dtypes: torch.dtype) -> tuple:
    """Parameters (4, 3) in ``dtypes``, a θ₀ near them (fp32), and α."""
    g = gen(11)
    ps = [nn.Parameter(torch.randn(4, 3, generator=g).to(d)) for d in dtypes]
    theta_0 = [p.detach().float() + 0.3 * torch.randn(4, 3, generator=g) for p in ps]
    return ps, theta_0, alpha


def _literal_(ps: list[Tensor], theta_0: list[Tensor], alpha: float) -> None:
    """p ← θ₀ + α(p − θ₀) as written: right up to rounding only."""
    with torch.no_grad():
        for p, t in zip(ps, theta_0, strict=True):
            p.copy_(t + alpha * (p.float() - t))


def _drift(
    t0: Tensor,
    tk: Tensor,
    tn: Tensor,
    a: float,
    start: str = "theta_tilde",
    cos: Callable[[Tensor, Tensor], float] = params.cosine,
) -> dict:
    """The drift metrics, the slow step measured from ``start`` (right for θ̃ only),
    the cosine by ``cos``."""
    tilde = params.reposition(tk, t0, a)
    begin = {"theta_tilde": tilde, "theta_k": tk, "theta_0": t0}[start]
    fast, slow = tk - t0, tn - begin
    norms = {"drift": fast, "reposition": tilde - t0, "slow_step": slow}
    metrics = {f"sfpo/{key}_norm": v.norm().item() for key, v in norms.items()}
    return metrics | {"sfpo/cos_fast_slow": cos(fast, slow)}


check_reposition = Exercise(
    "reposition: fn(theta_0, theta_k, alpha) -> theta_tilde = θ₀ + α(θ_K − θ₀), flat "
    "(D,). Reference: params.reposition (a torch.lerp).",
    lambda t0, tk, a: params.reposition(tk, t0, a),
    lambda: [
        ("hand-made: α = 0.8", torch.zeros(2), torch.tensor([2.0, 1]), 0.8),
        ("random: D = 7", *torch.randn(2, 7, generator=gen(2)), 0.3),
        ("degenerate: α = 0 gives θ₀", *torch.randn(2, 5, generator=gen(3)), 0.0),
        ("degenerate: α = 1 gives θ_K", *torch.randn(2, 5, generator=gen(4)), 1.0),
        Case(
            "α = 1, θ₀ ≫ θ_K",
            (*torch.tensor([[500.0], [1e-3]]), 1.0),
            exact=True,
            note="at α = 1 your θ̃ is θ_K only up to rounding. The library's "
            "torch.lerp(θ_K, θ₀, 1 − α) is exact at both ends, so α = 1 is bit for bit "
            "GRPO×(K+1).",
        ),
    ],
    [
        (
            lambda t0, tk, a: tk + a * (t0 - tk),
            "α weighs the step from θ₀ to θ_K: θ̃ = θ₀ + α(θ_K − θ₀); α = 0 gives θ₀.",
        ),
    ],
    rtol=1e-5,
)
check_sfpo_sgd_step = Exercise(
    "SFPO step with SGD: fn(theta_0, grad, num_fast_steps, alpha, lr) -> theta_next: "
    "K SGD steps, θ̃ = θ₀ + α(θ_K − θ₀), θ̃ − η∇L(θ̃). Reference: sfpo.sfpo_update.",
    lambda t0, grad, K, alpha, lr: _sgd(
        sfpo_update, t0, lr, grad, num_fast_steps=K, alpha=alpha, diagnostics=False
    ),
    _sgd_cases,
    [
        (
            lambda t0, grad, K, a, lr: _points(t0, grad, lr, K, a).theta_tilde,
            "you stopped at θ̃: stage III takes one more step, θ̃ − η∇L(θ̃).",
        ),
        *[
            (_next(mistake), _POINT_HINTS[mistake])
            for mistake in ("from K", "back", "at K")
        ],
    ],
)


def _lookahead(
    theta_0: Tensor, grads: list[Grad], alpha: float, lr: float, mistake: str = ""
) -> Tensor:
    """One Lookahead step with SGD, or with a ``mistake``: each gradient "at 0" (θ₀),
    or an "extra step" after the pull-back, as SFPO takes."""
    theta = theta_0
    for grad in grads:
        theta = theta - lr * grad(theta_0 if mistake == "at 0" else theta)
    theta = params.reposition(theta, theta_0, alpha)
    return theta - lr * grads[-1](theta) if mistake == "extra step" else theta


def _lookahead_update(
    theta_0: Tensor, grads: list[Grad], alpha: float, lr: float
) -> Tensor:
    """θ after toy.lookahead_update with SGD: its k-th fresh batch is ``grads[k]``."""
    batches = iter(grads)  # lookahead_update samples a fresh batch per inner step
    steps = dict(num_inner_steps=len(grads), alpha=alpha)
    return _sgd(lookahead_update, theta_0, lr, lambda: next(batches), **steps)


check_lookahead_sgd_step = Exercise(
    "Lookahead step with SGD: fn(theta_0, grads, alpha, lr) -> theta_next: a step per "
    "FRESH batch, θ₀ + α(θ_k − θ₀), no extra step. Reference: toy.lookahead_update.",
    _lookahead_update,
    lambda: [
        (label, ToyBandit().theta.detach(), [toy_grad(s) for s in seeds], a, lr)
        for label, seeds, a, lr in [
            ("hand-made: 3 fresh batches, η = 0.5", (0, 1, 2), 0.8, 0.5),
            ("random: 2 fresh batches, α = 0.5, η = 0.3", (7, 8), 0.5, 0.3),
            ("degenerate: α = 1 (k plain steps)", (3, 4), 1.0, 0.5),
        ]
    ],
    [
        (
            partial(_lookahead, mistake="extra step"),
            "Lookahead takes NO extra step after pulling back (SFPO does).",
        ),
        (
            partial(_lookahead, mistake="at 0"),
            "each inner step uses the gradient at the CURRENT inner point.",
        ),
    ],
)
check_sfpo_points = Exercise(
    "the three points of an SFPO step: fn(theta_0, grad_fn, lr, num_fast_steps, alpha) "
    "-> (theta_k, theta_tilde, theta_next), each (2,). Reference: params.reposition.",
    _points,
    lambda: [(label, t0, g, lr, K, a) for label, t0, g, K, a, lr in _sgd_cases()],
    [(partial(_points, mistake=m), hint) for m, hint in _POINT_HINTS.items()],
    names=Points._fields,
)
_F32, _BF16 = torch.float32, torch.bfloat16
_ONE = [nn.Parameter(torch.tensor([2.0, 1]))], [torch.zeros(2)]  # θ_K and θ₀
check_interpolate_ = Exercise(
    "reposition in place: fn(params, theta_0, alpha) -> None: p ← θ₀ + α(p − θ₀) IN "
    "PLACE, in fp32 for bf16, exact at α = 0 and 1. Reference: params.interpolate_.",
    params.interpolate_,
    lambda: [  # α = 0 and 1 are exact: what makes SFPO equal GRPO (×(K+1)) bit for bit
        ("hand-made: one 2-element parameter, α = 0.8", *_ONE, 0.8),
        ("random: a bf16 parameter among fp32 ones", *_params(0.6, _F32, _BF16, _F32)),
        Case("degenerate: α = 1 leaves θ_K", _params(1.0, _F32, _F32), exact=True),
        Case("degenerate: α = 0 returns θ₀", _params(0.0, _F32, _F32), exact=True),
    ],
    [
        (
            lambda ps, t0, a: None,
            "the parameters did not change: update them in place (p.lerp_(...) or "
            "p.copy_(...)); returning new tensors is not enough.",
        ),
        (
            _literal_,
            "right up to rounding, but θ₀ + α(θ − θ₀) is not exact in floating point: "
            "p.lerp_(θ₀, 1 − α) is exact at α = 0 and 1.",
        ),
    ],
    names=("parameter 0", "parameter 1", "parameter 2"),
    in_place=True,
    atol=1e-6,
    rtol=1e-6,
)
_THETA_0, _THETA_K, _THETA_NEXT = torch.tensor([[0.0, 0], [2, 0], [1.6, 1]])
check_drift_metrics = Exercise(
    "drift metrics: fn(theta_0, theta_k, theta_next, alpha) -> {sfpo/drift_norm ‖θ_K − "
    "θ₀‖, sfpo/reposition_norm ‖θ̃ − θ₀‖, sfpo/slow_step_norm ‖θ_{s+1} − θ̃‖, "
    "sfpo/cos_fast_slow (0 if a vector is 0)}, floats. Reference: params.drift_metrics.",
    lambda t0, tk, tn, a: {
        k: v
        for k, v in params.drift_metrics([t0], [tk], [tn], a).items()
        if "sfpo/" in k
    },
    lambda: [
        ("hand-made: fast (2, 0), slow (0, 1)", _THETA_0, _THETA_K, _THETA_NEXT, 0.8),
        ("random: D = 50", *torch.randn(3, 50, generator=gen(12)), 0.8),
        ("degenerate: θ_K = θ₀", _THETA_K, _THETA_K, _THETA_NEXT, 0.8),
    ],
    [
        (
            partial(_drift, start="theta_k"),
            "the slow step ‖θ_{s+1} − θ̃‖ starts at θ̃ = θ₀ + α(θ_K − θ₀), not at θ_K.",
        ),
        (
            partial(_drift, start="theta_0"),
            "the slow step ‖θ_{s+1} − θ̃‖ starts at θ̃ = θ₀ + α(θ_K − θ₀), not at θ₀.",
        ),
        (
            partial(_drift, cos=lambda u, v: (u @ v / u.norm() / v.norm()).item()),
            "if a vector is zero the cosine is undefined (0 / 0 is NaN): return 0.0.",
        ),
    ],
)
