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


def _sfpo_points(steps: int = 0, wrong_end: bool = False, start: str = "theta_tilde",
                 grad_at: str | None = None) -> Callable[..., tuple[Tensor, ...]]:  # fmt: skip
    """``sfpo_points`` as the library computes it, or with one common mistake: ``steps``
    fast steps too many, θ̃ from the wrong end, the slow step from ``start`` or with
    the gradient at ``grad_at``."""

    def sfpo_points(theta_0: Tensor, grad_fn: Grad, lr: float, num_fast_steps: int,
                    alpha: float) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        at = {"theta_0": theta_0, "theta_k": theta_0}
        for _ in range(num_fast_steps + steps):
            # Eq. (2): θ^{k+1} = θ^k − η∇L(θ^k)
            at["theta_k"] = at["theta_k"] - lr * grad_fn(at["theta_k"])
        # Eq. (3): θ̃ = θ₀ + α(θ_K − θ₀)
        ends = (at["theta_k"], theta_0) if wrong_end else (theta_0, at["theta_k"])
        at["theta_tilde"] = _reposition(*ends, alpha)
        # Eq. (4): θ_{s+1} = θ̃ − η∇L(θ̃)
        theta_next = at[start] - lr * grad_fn(at[grad_at or start])
        return at["theta_k"], at["theta_tilde"], theta_next

    return sfpo_points


def sfpo_sgd_step(theta_0: Tensor, grad: Grad, num_fast_steps: int, alpha: float, lr: float) -> Tensor:  # fmt: skip
    """θ_{s+1} from the library's ``sfpo_update`` with ``torch.optim.SGD``."""
    theta = nn.Parameter(theta_0.clone())
    sfpo_update([theta], torch.optim.SGD([theta], lr=lr), grad, _linear_loss(theta),
                num_fast_steps=num_fast_steps, alpha=alpha, diagnostics=False)  # fmt: skip
    return theta.detach()


def _lookahead_sgd_step(theta_0: Tensor, grads: list[Grad], alpha: float, lr: float) -> Tensor:  # fmt: skip
    """θ after the library's ``toy.lookahead_update`` with ``torch.optim.SGD``."""
    theta, batches = nn.Parameter(theta_0.clone()), iter(grads)
    lookahead_update([theta], torch.optim.SGD([theta], lr=lr), lambda: next(batches),
                     _linear_loss(theta), num_inner_steps=len(grads), alpha=alpha)  # fmt: skip
    return theta.detach()


def _lookahead_wrong(theta_0: Tensor, grads: list[Grad], alpha: float, lr: float, frozen: bool = False, slow: bool = False) -> Tensor:  # fmt: skip
    """Lookahead with each gradient at θ₀ (``frozen``) or an extra ``slow`` step."""
    theta = theta_0
    for grad in grads:
        theta = theta - lr * grad(theta_0 if frozen else theta)
    theta = _reposition(theta_0, theta, alpha)
    return theta - lr * grads[-1](theta) if slow else theta


def _toy_cases(rows: list[tuple], lr_first: bool = False) -> list[Case]:
    """Rows (label, start, gradient, …) with 'toy0', 'toy5', 'quad' for the toy's
    gradient on two batches and a 2-D quadratic, at their starts."""
    quad_0, quad = quadratic(3, dim=2 if lr_first else 4)
    toy_0 = ToyBandit().theta.detach()
    known = {f"toy{s}": (toy_0, toy_grad(ToyBandit().sample_batch(1, 8, gen(s)))) for s in (0, 5)}  # fmt: skip
    known["quad"] = quad_0, quad
    return table([(label, *known[name], *rest) for label, name, *rest in rows])


check_reposition = Exercise(
    "reposition",
    "fn(theta_0, theta_k, alpha) -> theta_tilde = θ₀ + α(θ_K − θ₀), flat (D,). "
    "Reference: params.interpolate_ (a torch.lerp).",
    _reposition,
    lambda: table([
        ("hand-made: 2-element vectors, α = 0.8", torch.zeros(2), torch.tensor([2.0, 1.0]), 0.8),
        ("hand-made: α = 0.5 is the midpoint", torch.tensor([1.0, -1]), torch.tensor([3.0, 1]), 0.5),
        ("random: D = 7", *torch.randn(2, 7, generator=gen(2)), 0.3),
        ("degenerate: α = 0 gives θ₀", *torch.randn(2, 5, generator=gen(3)), 0.0),
        ("degenerate: α = 1 gives θ_K", *torch.randn(2, 5, generator=gen(4)), 1.0),
    ]) + [Case("α = 1, θ₀ ≫ θ_K", (1e3 * torch.randn(5, generator=gen(5)), 1e-3 * torch.randn(5, generator=gen(6)), 1.0),
               exact=True, note="at α = 1 your θ̃ is θ_K only up to rounding (θ₀ + (θ_K − θ₀) can be off by "
               "one ulp). The library uses torch.lerp(θ_K, θ₀, 1 − α), exact at both ends, so α = 1 is bit "
               "for bit GRPO×(K+1).")],
    [(lambda t0, tk, alpha: tk + alpha * (t0 - tk),
      "α weighs the step from θ₀ toward θ_K: θ₀ + α(θ_K − θ₀).")],
    rtol=1e-5,
)  # fmt: skip


def _next(points: Callable[..., tuple[Tensor, ...]], i: int = 2) -> Callable[..., Tensor]:  # fmt: skip
    """A wrong ``sfpo_sgd_step``: point ``i`` of a wrong ``sfpo_points``."""
    return lambda t0, grad, K, alpha, lr: points(t0, grad, lr, K, alpha)[i]


check_sfpo_sgd_step = Exercise(
    "SFPO step with SGD",
    "fn(theta_0, grad, num_fast_steps, alpha, lr) -> theta_next: K SGD steps θ^{k+1} = θ^k − "
    "η∇L(θ^k), θ̃ = θ₀ + α(θ_K − θ₀), θ_{s+1} = θ̃ − η∇L(θ̃). Reference: sfpo.sfpo_update, SGD.",
    sfpo_sgd_step,
    lambda: _toy_cases([
        ("hand-made: the default toy bandit, K = 3, α = 0.8, η = 0.5", "toy0", 3, 0.8, 0.5),
        ("random: the toy bandit, another batch, K = 1, α = 0.5, η = 0.3", "toy5", 1, 0.5, 0.3),
        ("random: a quadratic in 4 dimensions, K = 3, α = 0.8, η = 0.2", "quad", 3, 0.8, 0.2),
        ("degenerate: α = 0 (one GRPO step), K = 3, η = 0.5", "toy0", 3, 0.0, 0.5),
        ("degenerate: α = 1 (K+1 plain steps), K = 2, η = 0.2", "quad", 2, 1.0, 0.2),
    ]),
    [(_next(_sfpo_points(), i=1),
      "you stopped at θ̃: stage III takes one more step, θ̃ − η∇L(θ̃)."),
     (_next(_sfpo_points(start="theta_k")),
      "you skipped the reposition: the slow step starts from θ̃, not θ_K."),
     (_next(_sfpo_points(wrong_end=True)),
      "θ̃ = θ₀ + α(θ_K − θ₀): α is the share of the fast path you KEEP."),
     (_next(_sfpo_points(grad_at="theta_k")),
      "the slow step's gradient is evaluated AT θ̃, not at θ_K.")],
)  # fmt: skip


def _lookahead_cases() -> list[Case]:
    rows = [("hand-made: the default bandit, 3 fresh batches, η = 0.5", 3, 0.8, 0.5, 0),
            ("random: 2 fresh batches, α = 0.5, η = 0.3", 2, 0.5, 0.3, 7),
            ("degenerate: α = 1 (k plain steps on k batches), η = 0.5", 3, 1.0, 0.5, 3),
            ("degenerate: α = 0 (back to θ₀), η = 0.5", 2, 0.0, 0.5, 4)]  # fmt: skip
    bandit, cases = ToyBandit(), []
    for label, k, alpha, lr, seed in rows:
        g = gen(seed)
        grads = [toy_grad(bandit.sample_batch(1, 8, g)) for _ in range(k)]
        cases += table([(label, bandit.theta.detach(), grads, alpha, lr)])
    return cases


check_lookahead_sgd_step = Exercise(
    "Lookahead step with SGD",
    "fn(theta_0, grads, alpha, lr) -> theta_next: one SGD step per FRESH batch, "
    "θ^{k+1} = θ^k − η grads[k](θ^k), then θ₀ + α(θ_k − θ₀) and no extra step. "
    "Reference: toy.lookahead_update with SGD.",
    _lookahead_sgd_step,
    _lookahead_cases,
    [(lambda *a: _lookahead_wrong(*a, slow=True),
      "Lookahead takes NO extra step after pulling back (SFPO does)."),
     (lambda *a: _lookahead_wrong(*a, frozen=True),
      "each inner step uses the gradient at the CURRENT inner point.")],
)  # fmt: skip

check_sfpo_points = Exercise(
    "the three points of an SFPO step",
    "fn(theta_0, grad_fn, lr, num_fast_steps, alpha) -> (theta_k, theta_tilde, theta_next), "
    "each (2,), of one SFPO step with SGD. Reference: the steps with params.interpolate_.",
    _sfpo_points(),
    lambda: _toy_cases([
        ("hand-made: the default toy, η = 0.5, K = 3, α = 0.8", "toy0", 0.5, 3, 0.8),
        ("random: the toy, another batch, η = 0.3, K = 2, α = 0.5", "toy5", 0.3, 2, 0.5),
        ("random: a quadratic, η = 0.2, K = 4, α = 0.6", "quad", 0.2, 4, 0.6),
        ("degenerate: K = 1, η = 0.5, α = 0.8", "toy5", 0.5, 1, 0.8),
        ("degenerate: α = 1 (θ̃ = θ_K), η = 0.5, K = 3", "toy0", 0.5, 3, 1.0),
    ], lr_first=True),
    [(_sfpo_points(wrong_end=True),
      "you pulled θ_K toward θ₀ by α (θ_K + α(θ₀ − θ_K)); α is the share of the fast "
      "path you KEEP: θ̃ = θ₀ + α(θ_K − θ₀), so α = 1 gives θ_K."),
     (_sfpo_points(start="theta_k"),
      "the slow step starts from θ̃, not θ_K: θ_{s+1} = θ̃ − η∇L(θ̃). Starting at θ_K "
      "throws the reposition away."),
     (_sfpo_points(grad_at="theta_0"),
      "the slow step's gradient is taken AT θ̃, not at θ₀: ∇L(θ̃), where the step starts."),
     (_sfpo_points(grad_at="theta_k"),
      "the slow step's gradient is taken AT θ̃, not at θ_K: ∇L(θ̃), where the step starts."),
     (_sfpo_points(steps=1),
      "one fast step too many: K fast steps go θ⁰ → θ¹ → … → θ_K, K gradient "
      "evaluations (range(num_fast_steps))."),
     (_sfpo_points(steps=-1),
      "one fast step too few: θ_K is reached after K fast steps, not K − 1.")],
    names=("theta_k", "theta_tilde", "theta_next"),
)  # fmt: skip


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
    return [  # α = 0 and 1 are exact: what makes SFPO equal GRPO (×(K+1)) bit for bit
        Case("hand-made: one 2-element parameter, α = 0.8", ([nn.Parameter(torch.tensor([2.0, 1]))], [torch.zeros(2)], 0.8)),
        Case("random: three fp32 LoRA-like matrices, α = 0.6", (*make(f32, f32, f32), 0.6)),
        Case("random: a bf16 parameter among fp32 ones, α = 0.5", (*make(f32, bf16, f32), 0.5)),
        Case("degenerate: α = 1 must leave θ_K bit for bit", (*make(f32, f32, f32), 1.0), exact=True),
        Case("degenerate: α = 0 must return θ₀ bit for bit", (*make(f32, f32), 0.0), exact=True),
    ]  # fmt: skip


def _interpolate_literally(ps: list[Tensor], theta_0: list[Tensor], alpha: float) -> None:  # fmt: skip
    with torch.no_grad():
        for p, t in zip(ps, theta_0, strict=True):
            p.copy_(t + alpha * (p.float() - t))


check_interpolate_ = Exercise(
    "reposition in place",
    "fn(params, theta_0, alpha) -> None: p ← θ₀ + α(p − θ₀) IN PLACE for a list of "
    "parameters, exact at α = 0 and 1, bf16 via fp32. Reference: params.interpolate_.",
    params.interpolate_,
    _interpolate_cases,
    [(lambda ps, t0, alpha: [torch.lerp(p.float(), t, 1 - alpha) for p, t in zip(ps, t0, strict=True)],
      "the parameters did not change: update them in place (p.lerp_(...) or "
      "p.copy_(...)), returning new tensors is not enough."),
     (_interpolate_literally,
      "right up to rounding, but θ₀ + α(θ − θ₀) is not exact in floating point. "
      "p.lerp_(θ₀, 1 − α) is exact at α = 0 and α = 1, which is what lets the tests "
      "check α = 1 ≡ GRPO×(K+1) with torch.equal.")],
    names=("parameter 0", "parameter 1", "parameter 2"),
    in_place=True,
    atol=1e-6,
    rtol=1e-6,
)  # fmt: skip


def _drift(t0: Tensor, tk: Tensor, tn: Tensor, alpha: float, start: Tensor | None = None, cos: Callable = params.cosine) -> dict[str, float]:  # fmt: skip
    """The drift metrics with the slow step measured from ``start`` (wrong unless θ̃)."""
    tilde = t0 + alpha * (tk - t0)
    fast, slow = tk - t0, tn - (tilde if start is None else start)
    return {"sfpo/drift_norm": fast.norm().item(), "sfpo/reposition_norm": (tilde - t0).norm().item(),
            "sfpo/slow_step_norm": slow.norm().item(), "sfpo/cos_fast_slow": cos(fast, slow)}  # fmt: skip


check_drift_metrics = Exercise(
    "drift metrics",
    "fn(theta_0, theta_k, theta_next, alpha) -> {sfpo/drift_norm ‖θ_K − θ₀‖, "
    "sfpo/reposition_norm ‖θ̃ − θ₀‖, sfpo/slow_step_norm ‖θ_{s+1} − θ̃‖, sfpo/cos_fast_slow "
    "(0 if a vector is 0)}, floats. Reference: params.drift_metrics.",
    lambda *a: {k: v for k, v in params.drift_metrics(*([x] for x in a[:3]), a[3]).items() if k.startswith("sfpo/")},
    lambda: table([
        ("hand-made: θ₀ = 0, θ_K = (2, 0), slow step (0, 1)", torch.zeros(2), torch.tensor([2.0, 0]), torch.tensor([1.6, 1]), 0.8),
        ("hand-made: the slow step continues the fast direction", torch.zeros(2), torch.ones(2), torch.ones(2), 0.5),
        ("random: D = 50", *torch.randn(3, 50, generator=gen(12)), 0.8),
        ("degenerate: the fast steps did not move (θ_K = θ₀)", torch.ones(3), torch.ones(3), torch.tensor([1.0, 2, 1]), 0.8),
    ]),
    [(lambda *a: _drift(*a, start=a[1]),
      "the slow step starts at θ̃ = θ₀ + α(θ_K − θ₀), not at θ_K."),
     (lambda *a: _drift(*a, start=a[0]),
      "‖θ_{s+1} − θ̃‖ is measured from θ̃ = θ₀ + α(θ_K − θ₀), not from θ₀."),
     (lambda *a: _drift(*a, cos=lambda u, v: (u @ v / (u.norm() * v.norm())).item()),
      "if either vector is zero the cosine is undefined: return 0.0.")],
)  # fmt: skip
