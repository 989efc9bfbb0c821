"""Exercises on SFPO's step: reposition (flat and in place), one SFPO and one Lookahead
step with SGD, the three points of a step, the drift metrics (notebooks 02, 04, 06).

The SGD references run the library's own updates on a given gradient function,
through a loss whose gradient at the current θ is that function's value."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from sfpo_edu import params
from sfpo_edu.exercises.grader import Case, Exercise, gen, table
from sfpo_edu.sfpo import LossFn, sfpo_update
from sfpo_edu.toy import ToyBandit, ToyBatch, lookahead_update, toy_config

Grad = Callable[[Tensor], Tensor]  # grad(theta) -> ∇L(theta), both (D,)


def toy_grad(batch: ToyBatch) -> Grad:
    """∇L of the toy's GRPO loss on one fixed batch, as a function of θ (2,)."""
    bandit = ToyBandit()
    loss_fn = bandit.make_loss_fn(toy_config())

    def grad(theta: Tensor) -> Tensor:
        """grad(theta) -> ∇L(theta) on one fixed batch of the toy, both shape (2,)."""
        with torch.no_grad():
            bandit.theta.copy_(theta)
        return torch.autograd.grad(loss_fn(batch)[0], bandit.theta)[0]

    return grad


def quadratic(seed: int) -> Grad:
    """The gradient Aθ + b of a convex L(θ) = ½θᵀAθ + bᵀθ in 2-D."""
    m, b = torch.randn(2, 2, generator=gen(seed)), torch.randn(2, generator=gen(seed))
    A = m @ m.T + torch.eye(2)

    def grad(theta: Tensor) -> Tensor:
        """grad(theta) -> ∇L(theta) = Aθ + b of a quadratic, both shape (2,)."""
        return A @ theta + b

    return grad


def _linear_loss(theta: Tensor) -> LossFn:
    """loss_fn(grad) = ⟨θ, grad(θ)⟩ with grad(θ) held constant: its gradient at the
    current θ is grad(θ), so the library's updates step along a given gradient."""
    return lambda grad: (theta @ grad(theta.detach()), {"kl": 0.0})


def _reposition(theta_0: Tensor, theta_k: Tensor, alpha: float) -> Tensor:
    """θ̃ = θ₀ + α(θ_K − θ₀) by the library's ``params.interpolate_``."""
    theta = [theta_k.clone()]
    params.interpolate_(theta, [theta_0], alpha)
    return theta[0]


Points = tuple[Tensor, Tensor, Tensor]  # θ_K, θ̃, θ_{s+1}


def _sfpo_points(
    steps: int = 0, back: bool = False, start: str = "~", at: str = ""
) -> Callable[..., Points]:
    """``sfpo_points`` as the library computes it, or with one mistake: ``steps`` fast
    steps too many, θ̃ pulled ``back`` from θ_K, the slow step from ``start`` ("0",
    "K" or "~" for θ̃) or with the gradient at ``at``."""

    def sfpo_points(theta_0: Tensor, grad: Grad, lr: float, K: int, a: float) -> Points:
        theta = {"0": theta_0, "K": theta_0}
        for _ in range(K + steps):  # Eq. (2): θ^{k+1} = θ^k − η∇L(θ^k)
            theta["K"] = theta["K"] - lr * grad(theta["K"])
        ends = (theta["K"], theta_0) if back else (theta_0, theta["K"])
        theta["~"] = _reposition(*ends, a)  # Eq. (3): θ̃ = θ₀ + α(θ_K − θ₀)
        # Eq. (4): θ_{s+1} = θ̃ − η∇L(θ̃)
        return theta["K"], theta["~"], theta[start] - lr * grad(theta[at or start])

    return sfpo_points


def sfpo_sgd_step(
    theta_0: Tensor, grad: Grad, K: int, alpha: float, lr: float
) -> Tensor:
    """θ_{s+1} from the library's ``sfpo_update`` with ``torch.optim.SGD``."""
    theta = nn.Parameter(theta_0.clone())
    options = dict(num_fast_steps=K, alpha=alpha, diagnostics=False)
    sfpo_update(
        [theta], torch.optim.SGD([theta], lr=lr), grad, _linear_loss(theta), **options
    )
    return theta.detach()


def _lookahead(theta_0: Tensor, grads: list[Grad], alpha: float, lr: float) -> Tensor:
    """θ after the library's ``toy.lookahead_update`` with ``torch.optim.SGD``."""
    theta, batches = nn.Parameter(theta_0.clone()), iter(grads)
    optimizer, options = torch.optim.SGD([theta], lr=lr), dict(alpha=alpha)
    lookahead_update(
        [theta],
        optimizer,
        lambda: next(batches),
        _linear_loss(theta),
        num_inner_steps=len(grads),
        **options,
    )
    return theta.detach()


def _lookahead_wrong(
    theta_0: Tensor, grads: list[Grad], alpha: float, lr: float, frozen: bool = False
) -> Tensor:
    """Lookahead with each gradient at θ₀ (``frozen``), else with an extra step."""
    theta = theta_0
    for grad in grads:
        theta = theta - lr * grad(theta_0 if frozen else theta)
    theta = _reposition(theta_0, theta, alpha)
    return theta if frozen else theta - lr * grads[-1](theta)


def _sgd_cases(points: bool = False) -> list[Case]:
    """Steps from the toy's start on two batches, and from (1, −1) on a quadratic;
    the arguments in ``sfpo_sgd_step``'s order (θ₀, grad, K, α, η), or ``points``'."""
    toy = {s: toy_grad(ToyBandit().sample_batch(1, 8, gen(s))) for s in (0, 5)}
    theta_toy, theta_quad = ToyBandit().theta.detach(), torch.tensor([1.0, -1.0])
    rows = [
        ("hand-made: the toy, K = 3, α = 0.8, η = 0.5", theta_toy, toy[0], 3, 0.8, 0.5),
        ("random: another batch, K = 1, α = 0.5", theta_toy, toy[5], 1, 0.5, 0.3),
        ("random: a quadratic, K = 4, α = 0.6", theta_quad, quadratic(3), 4, 0.6, 0.2),
        ("degenerate: α = 0 (one GRPO step)", theta_toy, toy[0], 3, 0.0, 0.5),
        (
            "degenerate: α = 1 (K + 1 plain steps)",
            theta_quad,
            quadratic(4),
            2,
            1.0,
            0.2,
        ),
    ]
    if points:  # (θ₀, grad, η, K, α)
        rows = [(label, t0, grad, lr, K, a) for label, t0, grad, K, a, lr in rows]
    return table(*rows)


def _wrong_step(i: int = 2, **mistake: object) -> Callable[..., Tensor]:
    """A wrong ``sfpo_sgd_step``: point ``i`` of ``sfpo_points`` with ``mistake``."""
    points = _sfpo_points(**mistake)
    return lambda t0, grad, K, alpha, lr: points(t0, grad, lr, K, alpha)[i]


def _batches(k: int, seed: int) -> list[ToyBatch]:
    """``k`` fresh batches of the toy at its start."""
    g = gen(seed)
    return [ToyBandit().sample_batch(1, 8, g) for _ in range(k)]


def _v(*rows: tuple[float, ...]) -> list[Tensor]:
    """Hand-made vectors."""
    return [torch.tensor(row, dtype=torch.float32) for row in rows]


def _interpolate_cases() -> list[Case]:
    g = gen(11)

    def make(*dtypes: torch.dtype) -> tuple[list[Tensor], list[Tensor]]:
        shapes = [(4, 3), (5,), (2, 2)]
        ps = [
            nn.Parameter(torch.randn(s, generator=g).to(d))
            for s, d in zip(shapes, dtypes, strict=False)
        ]
        return ps, [
            p.detach().float() + 0.3 * torch.randn(p.shape, generator=g) for p in ps
        ]

    f32, bf16 = torch.float32, torch.bfloat16
    one = [nn.Parameter(torch.tensor([2.0, 1]))], [torch.zeros(2)]
    return [  # α = 0 and 1 are exact: what makes SFPO equal GRPO (×(K+1)) bit for bit
        Case("hand-made: one 2-element parameter, α = 0.8", (*one, 0.8)),
        Case("random: three fp32 matrices, α = 0.6", (*make(f32, f32, f32), 0.6)),
        Case("random: a bf16 parameter among fp32 ones", (*make(f32, bf16, f32), 0.5)),
        Case("degenerate: α = 1 leaves θ_K bit for bit", (*make(f32, f32), 1.0), True),
        Case("degenerate: α = 0 returns θ₀ bit for bit", (*make(f32, f32), 0.0), True),
    ]


def _interpolate_literally(
    ps: list[Tensor], theta_0: list[Tensor], alpha: float
) -> None:
    with torch.no_grad():
        for p, t in zip(ps, theta_0, strict=True):
            p.copy_(t + alpha * (p.float() - t))


def _drift_metrics(t0: Tensor, tk: Tensor, tn: Tensor, alpha: float) -> dict:
    """The ``sfpo/`` metrics of ``params.drift_metrics`` for flat vectors."""
    metrics = params.drift_metrics([t0], [tk], [tn], alpha)
    return {key: value for key, value in metrics.items() if key.startswith("sfpo/")}


def _drift(
    t0: Tensor,
    tk: Tensor,
    tn: Tensor,
    a: float,
    start: str = "~",
    cos: Callable = params.cosine,
) -> dict:
    """The drift metrics with the slow step from ``start`` (wrong unless θ̃)."""
    tilde = t0 + a * (tk - t0)
    fast, slow = tk - t0, tn - {"~": tilde, "K": tk, "0": t0}[start]
    return {
        "sfpo/drift_norm": fast.norm().item(),
        "sfpo/reposition_norm": (tilde - t0).norm().item(),
        "sfpo/slow_step_norm": slow.norm().item(),
        "sfpo/cos_fast_slow": cos(fast, slow),
    }


check_reposition = Exercise(
    "reposition",
    "fn(theta_0, theta_k, alpha) -> theta_tilde = θ₀ + α(θ_K − θ₀), flat (D,). "
    "Reference: params.interpolate_ (a torch.lerp).",
    _reposition,
    lambda: [
        *table(
            ("hand-made: α = 0.8", torch.zeros(2), torch.tensor([2.0, 1]), 0.8),
            ("hand-made: α = 0.5 is the midpoint", torch.ones(2), -torch.ones(2), 0.5),
            ("random: D = 7", *torch.randn(2, 7, generator=gen(2)), 0.3),
            ("degenerate: α = 0 gives θ₀", *torch.randn(2, 5, generator=gen(3)), 0.0),
            ("degenerate: α = 1 gives θ_K", *torch.randn(2, 5, generator=gen(4)), 1.0),
        ),
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
    "SFPO step with SGD",
    "fn(theta_0, grad, num_fast_steps, alpha, lr) -> theta_next: K SGD steps θ^{k+1} = "
    "θ^k − η∇L(θ^k), θ̃ = θ₀ + α(θ_K − θ₀), θ_{s+1} = θ̃ − η∇L(θ̃). Reference: "
    "sfpo.sfpo_update with SGD.",
    sfpo_sgd_step,
    _sgd_cases,
    {
        "you stopped at θ̃: stage III takes one more step, θ̃ − η∇L(θ̃).": _wrong_step(1),
        "you skipped the reposition: the slow step starts from θ̃, not θ_K.": (
            _wrong_step(start="K")
        ),
        "θ̃ = θ₀ + α(θ_K − θ₀): α is the share of the fast path you KEEP.": (
            _wrong_step(back=True)
        ),
        "the slow step's gradient is taken AT θ̃, not at θ_K.": _wrong_step(at="K"),
    },
)
check_lookahead_sgd_step = Exercise(
    "Lookahead step with SGD",
    "fn(theta_0, grads, alpha, lr) -> theta_next: one SGD step per FRESH batch, θ^{k+1} "
    "= θ^k − η grads[k](θ^k), then θ₀ + α(θ_k − θ₀) and no extra step. Reference: "
    "toy.lookahead_update with SGD.",
    _lookahead,
    lambda: table(
        *[
            (label, ToyBandit().theta.detach(), [toy_grad(batch) for batch in b], a, lr)
            for label, b, a, lr in [
                ("hand-made: 3 fresh batches, η = 0.5", _batches(3, 0), 0.8, 0.5),
                ("random: 2 fresh batches, α = 0.5", _batches(2, 7), 0.5, 0.3),
                ("degenerate: α = 1 (k plain steps)", _batches(3, 3), 1.0, 0.5),
                ("degenerate: α = 0 (back to θ₀)", _batches(2, 4), 0.0, 0.5),
            ]
        ]
    ),
    {
        "Lookahead takes NO extra step after pulling back (SFPO does).": (
            _lookahead_wrong
        ),
        "each inner step uses the gradient at the CURRENT inner point.": lambda *a: (
            _lookahead_wrong(*a, frozen=True)
        ),
    },
)
check_sfpo_points = Exercise(
    "the three points of an SFPO step",
    "fn(theta_0, grad_fn, lr, num_fast_steps, alpha) -> (theta_k, theta_tilde, "
    "theta_next), each (2,), of one SFPO step with SGD. Reference: the steps with "
    "params.interpolate_.",
    _sfpo_points(),
    lambda: _sgd_cases(points=True),
    {
        "you pulled θ_K toward θ₀ by α; α is the share of the fast path you KEEP: "
        "θ̃ = θ₀ + α(θ_K − θ₀), so α = 1 gives θ_K.": _sfpo_points(back=True),
        "the slow step starts from θ̃, not θ_K: θ_{s+1} = θ̃ − η∇L(θ̃). Starting at θ_K "
        "throws the reposition away.": _sfpo_points(start="K"),
        **{
            f"the slow step's gradient is taken AT θ̃, where the step starts, not at "
            f"{name}: ∇L(θ̃).": _sfpo_points(at=at)
            for at, name in [("0", "θ₀"), ("K", "θ_K")]
        },
        "one fast step too many: K fast steps go θ⁰ → θ¹ → … → θ_K, K gradient "
        "evaluations (range(num_fast_steps)).": _sfpo_points(steps=1),
        "one fast step too few: θ_K is reached after K fast steps, not K − 1.": (
            _sfpo_points(steps=-1)
        ),
    },
    names=("theta_k", "theta_tilde", "theta_next"),
)
check_interpolate_ = Exercise(
    "reposition in place",
    "fn(params, theta_0, alpha) -> None: p ← θ₀ + α(p − θ₀) IN PLACE for a list of "
    "parameters, exact at α = 0 and 1, bf16 via fp32. Reference: params.interpolate_.",
    params.interpolate_,
    _interpolate_cases,
    {
        "the parameters did not change: update them in place (p.lerp_(...) or "
        "p.copy_(...)); returning new tensors is not enough.": lambda ps, t0, a: [
            torch.lerp(p.float(), t, 1 - a) for p, t in zip(ps, t0, strict=True)
        ],
        "right up to rounding, but θ₀ + α(θ − θ₀) is not exact in floating point. "
        "p.lerp_(θ₀, 1 − α) is exact at α = 0 and 1, which lets the tests check "
        "α = 1 ≡ GRPO×(K+1) with torch.equal.": _interpolate_literally,
    },
    names=("parameter 0", "parameter 1", "parameter 2"),
    in_place=True,
    atol=1e-6,
    rtol=1e-6,
)
check_drift_metrics = Exercise(
    "drift metrics",
    "fn(theta_0, theta_k, theta_next, alpha) -> {sfpo/drift_norm ‖θ_K − θ₀‖, "
    "sfpo/reposition_norm ‖θ̃ − θ₀‖, sfpo/slow_step_norm ‖θ_{s+1} − θ̃‖, "
    "sfpo/cos_fast_slow (0 if a vector is 0)}, floats. Reference: params.drift_metrics.",
    _drift_metrics,
    lambda: table(
        ("hand-made: fast (2, 0), slow (0, 1)", *_v((0, 0), (2, 0), (1.6, 1)), 0.8),
        ("hand-made: slow continues fast", *_v((0, 0), (1, 1), (1, 1)), 0.5),
        ("random: D = 50", *torch.randn(3, 50, generator=gen(12)), 0.8),
        ("degenerate: θ_K = θ₀", *_v((1, 1, 1), (1, 1, 1), (1, 2, 1)), 0.8),
    ),
    {
        "the slow step starts at θ̃ = θ₀ + α(θ_K − θ₀), not at θ_K.": lambda *a: _drift(
            *a, start="K"
        ),
        "‖θ_{s+1} − θ̃‖ is measured from θ̃ = θ₀ + α(θ_K − θ₀), not from θ₀.": (
            lambda *a: _drift(*a, start="0")
        ),
        "if either vector is zero the cosine is undefined: return 0.0.": lambda *a: (
            _drift(*a, cos=lambda u, v: (u @ v / (u.norm() * v.norm())).item())
        ),
    },
)
