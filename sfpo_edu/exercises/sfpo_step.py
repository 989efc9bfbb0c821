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


def quadratic(seed: int, dim: int) -> tuple[Tensor, Grad]:
    """A start θ₀ and the gradient Aθ + b of a convex L(θ) = ½θᵀAθ + bᵀθ."""
    g = gen(seed)
    m = torch.randn(dim, dim, generator=g)
    A, b = m @ m.T / dim + torch.eye(dim), torch.randn(dim, generator=g)

    def grad(theta: Tensor) -> Tensor:
        """grad(theta) -> ∇L(theta) = Aθ + b of a quadratic, both shape (D,)."""
        return A @ theta + b

    return torch.randn(dim, generator=g), grad


def _linear_loss(theta: Tensor) -> LossFn:
    """loss_fn(grad) = ⟨θ, grad(θ)⟩ with grad(θ) held constant: its gradient at the
    current θ is grad(θ), so the library's updates step along a given gradient."""
    return lambda grad: (theta @ grad(theta.detach()), {"kl": 0.0})


def _reposition(theta_0: Tensor, theta_k: Tensor, alpha: float) -> Tensor:
    """θ̃ = θ₀ + α(θ_K − θ₀) by the library's ``params.interpolate_``."""
    theta = [theta_k.clone()]
    params.interpolate_(theta, [theta_0], alpha)
    return theta[0]


def _sfpo_points(
    extra_steps: int = 0, back: bool = False, start: str = "tilde", at: str = ""
) -> Callable[..., tuple[Tensor, Tensor, Tensor]]:
    """``sfpo_points`` as the library computes it, or with one common mistake:
    ``extra_steps`` fast steps too many, θ̃ pulled ``back`` from θ_K, the slow step
    from ``start`` or with the gradient at ``at``."""

    def sfpo_points(theta_0: Tensor, grad_fn: Grad, lr: float, num_fast_steps: int, alpha: float) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        theta = {"0": theta_0, "k": theta_0}
        for _ in range(num_fast_steps + extra_steps):
            # Eq. (2): θ^{k+1} = θ^k − η∇L(θ^k)
            theta["k"] = theta["k"] - lr * grad_fn(theta["k"])
        # Eq. (3): θ̃ = θ₀ + α(θ_K − θ₀)
        ends = (theta["k"], theta_0) if back else (theta_0, theta["k"])
        theta["tilde"] = _reposition(*ends, alpha)
        # Eq. (4): θ_{s+1} = θ̃ − η∇L(θ̃)
        theta_next = theta[start] - lr * grad_fn(theta[at or start])
        return theta["k"], theta["tilde"], theta_next

    return sfpo_points


def sfpo_sgd_step(theta_0: Tensor, grad: Grad, num_fast_steps: int, alpha: float, lr: float) -> Tensor:  # fmt: skip
    """θ_{s+1} from the library's ``sfpo_update`` with ``torch.optim.SGD``."""
    theta = nn.Parameter(theta_0.clone())
    optimizer, loss_fn = torch.optim.SGD([theta], lr=lr), _linear_loss(theta)
    sfpo_update([theta], optimizer, grad, loss_fn, num_fast_steps=num_fast_steps, alpha=alpha, diagnostics=False)  # fmt: skip
    return theta.detach()


def _lookahead(theta_0: Tensor, grads: list[Grad], alpha: float, lr: float) -> Tensor:
    """θ after the library's ``toy.lookahead_update`` with ``torch.optim.SGD``."""
    theta, batches = nn.Parameter(theta_0.clone()), iter(grads)
    optimizer, loss_fn = torch.optim.SGD([theta], lr=lr), _linear_loss(theta)
    k = len(grads)
    lookahead_update([theta], optimizer, lambda: next(batches), loss_fn, num_inner_steps=k, alpha=alpha)  # fmt: skip
    return theta.detach()


def _lookahead_wrong(frozen: bool = False, slow: bool = False) -> Callable[..., Tensor]:
    """Lookahead with each gradient at θ₀ (``frozen``) or an extra ``slow`` step."""

    def lookahead(theta_0: Tensor, grads: list[Grad], alpha: float, lr: float) -> Tensor:  # fmt: skip
        theta = theta_0
        for grad in grads:
            theta = theta - lr * grad(theta_0 if frozen else theta)
        theta = _reposition(theta_0, theta, alpha)
        return theta - lr * grads[-1](theta) if slow else theta

    return lookahead


def _toy_cases(*rows: tuple, dim: int = 4) -> list[Case]:
    """Rows (label, start, …) where the start 'toy0', 'toy5' or 'quad' names θ₀ and the
    gradient of the toy on two batches or of a quadratic in ``dim`` dimensions."""
    toy_0, grads = ToyBandit().theta.detach(), {"quad": quadratic(3, dim)}
    for s in (0, 5):
        grads[f"toy{s}"] = toy_0, toy_grad(ToyBandit().sample_batch(1, 8, gen(s)))
    return table(*[(label, *grads[name], *rest) for label, name, *rest in rows])


def _next(points: Callable[..., tuple], i: int = 2) -> Callable[..., Tensor]:
    """A wrong ``sfpo_sgd_step``: point ``i`` of a wrong ``sfpo_points``."""
    return lambda t0, grad, K, alpha, lr: points(t0, grad, lr, K, alpha)[i]


def _interpolate_cases() -> list[Case]:
    g = gen(11)

    def make(*dtypes: torch.dtype) -> tuple[list[Tensor], list[Tensor]]:
        shapes = [(4, 3), (5,), (2, 2)][: len(dtypes)]
        ps = [nn.Parameter(torch.randn(s, generator=g).to(d)) for s, d in zip(shapes, dtypes, strict=True)]  # fmt: skip
        return ps, [p.detach().float() + 0.3 * torch.randn(p.shape, generator=g) for p in ps]  # fmt: skip

    f32, bf16 = torch.float32, torch.bfloat16
    one = [nn.Parameter(torch.tensor([2.0, 1]))], [torch.zeros(2)]
    return [  # α = 0 and 1 are exact: what makes SFPO equal GRPO (×(K+1)) bit for bit
        Case("hand-made: one 2-element parameter, α = 0.8", (*one, 0.8)),
        Case("random: three fp32 LoRA-like matrices, α = 0.6", (*make(f32, f32, f32), 0.6)),
        Case("random: a bf16 parameter among fp32 ones, α = 0.5", (*make(f32, bf16, f32), 0.5)),
        Case("degenerate: α = 1 must leave θ_K bit for bit", (*make(f32, f32, f32), 1.0), exact=True),
        Case("degenerate: α = 0 must return θ₀ bit for bit", (*make(f32, f32), 0.0), exact=True),
    ]  # fmt: skip


def _interpolate_literally(ps: list[Tensor], theta_0: list[Tensor], alpha: float) -> None:  # fmt: skip
    with torch.no_grad():
        for p, t in zip(ps, theta_0, strict=True):
            p.copy_(t + alpha * (p.float() - t))


def _drift(t0: Tensor, tk: Tensor, tn: Tensor, alpha: float, start: str = "tilde", cosine: Callable = params.cosine) -> dict[str, float]:  # fmt: skip
    """The drift metrics with the slow step from ``start`` (wrong unless θ̃)."""
    tilde = t0 + alpha * (tk - t0)
    fast, slow = tk - t0, tn - {"tilde": tilde, "k": tk, "0": t0}[start]
    return {
        "sfpo/drift_norm": fast.norm().item(),
        "sfpo/reposition_norm": (tilde - t0).norm().item(),
        "sfpo/slow_step_norm": slow.norm().item(),
        "sfpo/cos_fast_slow": cosine(fast, slow),
    }


check_reposition = Exercise(
    "reposition",
    "fn(theta_0, theta_k, alpha) -> theta_tilde = θ₀ + α(θ_K − θ₀), flat (D,). "
    "Reference: params.interpolate_ (a torch.lerp).",
    _reposition,
    lambda: (
        table(
            (
                "hand-made: 2-element vectors, α = 0.8",
                torch.zeros(2),
                torch.tensor([2.0, 1]),
                0.8,
            ),
            (
                "hand-made: α = 0.5 is the midpoint",
                torch.tensor([1.0, -1]),
                torch.tensor([3.0, 1]),
                0.5,
            ),
            ("random: D = 7", *torch.randn(2, 7, generator=gen(2)), 0.3),
            ("degenerate: α = 0 gives θ₀", *torch.randn(2, 5, generator=gen(3)), 0.0),
            ("degenerate: α = 1 gives θ_K", *torch.randn(2, 5, generator=gen(4)), 1.0),
        )  # fmt: skip
        + [
            Case(
                "α = 1, θ₀ ≫ θ_K",
                (1e3 * torch.randn(5, generator=gen(5)), 1e-3 * torch.randn(5), 1.0),
                exact=True,
                note="at α = 1 your θ̃ is θ_K only up to rounding (θ₀ + (θ_K − θ₀) can be "
                "off by one ulp). The library uses torch.lerp(θ_K, θ₀, 1 − α), exact at both "
                "ends, so α = 1 is bit for bit GRPO×(K+1).",
            )
        ]
    ),
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
    lambda: _toy_cases(
        (
            "hand-made: the default toy bandit, K = 3, α = 0.8, η = 0.5",
            "toy0",
            3,
            0.8,
            0.5,
        ),
        (
            "random: the toy bandit, another batch, K = 1, α = 0.5, η = 0.3",
            "toy5",
            1,
            0.5,
            0.3,
        ),
        (
            "random: a quadratic in 4 dimensions, K = 3, α = 0.8, η = 0.2",
            "quad",
            3,
            0.8,
            0.2,
        ),
        ("degenerate: α = 0 (one GRPO step), K = 3, η = 0.5", "toy0", 3, 0.0, 0.5),
        ("degenerate: α = 1 (K+1 plain steps), K = 2, η = 0.2", "quad", 2, 1.0, 0.2),
    ),  # fmt: skip
    {
        "you stopped at θ̃: stage III takes one more step, θ̃ − η∇L(θ̃).": _next(
            _sfpo_points(), i=1
        ),
        "you skipped the reposition: the slow step starts from θ̃, not θ_K.": _next(
            _sfpo_points(start="k")
        ),
        "θ̃ = θ₀ + α(θ_K − θ₀): α is the share of the fast path you KEEP.": _next(
            _sfpo_points(back=True)
        ),
        "the slow step's gradient is evaluated AT θ̃, not at θ_K.": _next(
            _sfpo_points(at="k")
        ),
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
            (
                label,
                ToyBandit().theta.detach(),
                [toy_grad(ToyBandit().sample_batch(1, 8, g)) for _ in range(k)],
                alpha,
                lr,
            )
            for label, k, alpha, lr, g in [
                (
                    "hand-made: the default bandit, 3 fresh batches, η = 0.5",
                    3,
                    0.8,
                    0.5,
                    gen(0),
                ),
                ("random: 2 fresh batches, α = 0.5, η = 0.3", 2, 0.5, 0.3, gen(7)),
                (
                    "degenerate: α = 1 (k plain steps on k batches), η = 0.5",
                    3,
                    1.0,
                    0.5,
                    gen(3),
                ),
                ("degenerate: α = 0 (back to θ₀), η = 0.5", 2, 0.0, 0.5, gen(4)),
            ]
        ]
    ),  # fmt: skip
    {
        "Lookahead takes NO extra step after pulling back (SFPO does).": (
            _lookahead_wrong(slow=True)
        ),
        "each inner step uses the gradient at the CURRENT inner point.": (
            _lookahead_wrong(frozen=True)
        ),
    },
)

check_sfpo_points = Exercise(
    "the three points of an SFPO step",
    "fn(theta_0, grad_fn, lr, num_fast_steps, alpha) -> (theta_k, theta_tilde, "
    "theta_next), each (2,), of one SFPO step with SGD. Reference: the steps with "
    "params.interpolate_.",
    _sfpo_points(),
    lambda: _toy_cases(
        ("hand-made: the default toy, η = 0.5, K = 3, α = 0.8", "toy0", 0.5, 3, 0.8),
        (
            "random: the toy, another batch, η = 0.3, K = 2, α = 0.5",
            "toy5",
            0.3,
            2,
            0.5,
        ),
        ("random: a quadratic, η = 0.2, K = 4, α = 0.6", "quad", 0.2, 4, 0.6),
        ("degenerate: K = 1, η = 0.5, α = 0.8", "toy5", 0.5, 1, 0.8),
        ("degenerate: α = 1 (θ̃ = θ_K), η = 0.5, K = 3", "toy0", 0.5, 3, 1.0),
        dim=2,
    ),  # fmt: skip
    {
        "you pulled θ_K toward θ₀ by α (θ_K + α(θ₀ − θ_K)); α is the share of the fast "
        "path you KEEP: θ̃ = θ₀ + α(θ_K − θ₀), so α = 1 gives θ_K.": _sfpo_points(
            back=True
        ),
        "the slow step starts from θ̃, not θ_K: θ_{s+1} = θ̃ − η∇L(θ̃). Starting at θ_K "
        "throws the reposition away.": _sfpo_points(start="k"),
        "the slow step's gradient is taken AT θ̃, not at θ₀: ∇L(θ̃), where the step "
        "starts.": _sfpo_points(at="0"),
        "the slow step's gradient is taken AT θ̃, not at θ_K: ∇L(θ̃), where the step "
        "starts.": _sfpo_points(at="k"),
        "one fast step too many: K fast steps go θ⁰ → θ¹ → … → θ_K, K gradient "
        "evaluations (range(num_fast_steps)).": _sfpo_points(extra_steps=1),
        "one fast step too few: θ_K is reached after K fast steps, not K − 1.": (
            _sfpo_points(extra_steps=-1)
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
        "p.copy_(...)), returning new tensors is not enough.": lambda ps, t0, a: [
            torch.lerp(p.float(), t, 1 - a) for p, t in zip(ps, t0, strict=True)
        ],
        "right up to rounding, but θ₀ + α(θ − θ₀) is not exact in floating point. "
        "p.lerp_(θ₀, 1 − α) is exact at α = 0 and α = 1, which is what lets the tests "
        "check α = 1 ≡ GRPO×(K+1) with torch.equal.": _interpolate_literally,
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
    lambda t0, tk, tn, alpha: {
        key: value
        for key, value in params.drift_metrics([t0], [tk], [tn], alpha).items()
        if key.startswith("sfpo/")
    },
    lambda: table(
        (
            "hand-made: θ₀ = 0, θ_K = (2, 0), slow step (0, 1)",
            torch.zeros(2),
            torch.tensor([2.0, 0]),
            torch.tensor([1.6, 1]),
            0.8,
        ),
        (
            "hand-made: the slow step continues the fast direction",
            torch.zeros(2),
            torch.ones(2),
            torch.ones(2),
            0.5,
        ),
        ("random: D = 50", *torch.randn(3, 50, generator=gen(12)), 0.8),
        (
            "degenerate: the fast steps did not move (θ_K = θ₀)",
            torch.ones(3),
            torch.ones(3),
            torch.tensor([1.0, 2, 1]),
            0.8,
        ),
    ),  # fmt: skip
    {
        "the slow step starts at θ̃ = θ₀ + α(θ_K − θ₀), not at θ_K.": lambda *a: _drift(
            *a, start="k"
        ),
        "‖θ_{s+1} − θ̃‖ is measured from θ̃ = θ₀ + α(θ_K − θ₀), not from θ₀.": (
            lambda *a: _drift(*a, start="0")
        ),
        "if either vector is zero the cosine is undefined: return 0.0.": lambda *a: (
            _drift(*a, cosine=lambda u, v: (u @ v / (u.norm() * v.norm())).item())
        ),
    },
)
