"""Loss landscapes around one SFPO step: along the reposition line, and in a plane.

Everything here evaluates a ``loss_fn(batch) -> (loss, stats)`` (the same protocol
``sfpo_update`` trains with) at chosen points of parameter space, without training.
It works on the 2-parameter toy and on an LLM's flat LoRA vector alike: a point is a
flat fp32 vector of length D = Σ numel of the trainable parameters (``params.flatten``).

    line = reposition_line(params, theta_0, theta_k, loss_fn, batch)   # t ↦ stats
    plane = plane_basis(theta_0, theta_k, theta_next, alpha)           # 2-D coordinates
    grid = plane_grid(params, plane, loss_fn, batch)                   # loss on a grid

``params`` must be the parameters ``loss_fn`` reads, and ``batch`` the batch sampled at
θ₀ (its ``old_per_token_logps`` are θ₀'s). Both functions move ``params`` to each point
and put the original values back bit for bit afterwards, even on an exception.

``toy_step_trace`` runs one SFPO update and one GRPO update of the toy bandit from the
same θ₀ and the same batch and returns the points for the one-step picture.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sfpo_edu.config import SFPOConfig
from sfpo_edu.params import flatten, reposition, restore_, snapshot, trainable_params
from sfpo_edu.records import StepPath
from sfpo_edu.sfpo import LossFn, grpo_update, make_optimizer, sfpo_update
from sfpo_edu.toy import ToyBandit

STAT_KEYS = ("loss", "kl", "clip_frac", "ratio_dev")


def as_flat(point: Tensor | Sequence[Tensor]) -> Tensor:
    """A flat fp32 vector (D,) from a flat tensor or a list of tensors (a snapshot)."""
    if isinstance(point, Tensor):
        if point.dim() != 1:
            raise ValueError(
                f"a flat point must be 1-D, got shape {tuple(point.shape)}. Fix: pass "
                f"params.flatten(...) or a snapshot (a list of tensors)."
            )
        return point.detach().float()
    return flatten(point)


@torch.no_grad()
def unflatten_(params: Sequence[Tensor], flat: Tensor) -> None:
    """Copy a flat vector (D,) into the parameters, in place (cast to their dtype);
    the inverse of ``params.flatten``."""
    sizes = [p.numel() for p in params]
    if flat.numel() != sum(sizes):
        raise ValueError(
            f"flat vector has {flat.numel()} entries but the parameters have "
            f"{sum(sizes)}. Fix: flatten the same trainable parameters you pass here."
        )
    for p, chunk in zip(params, flat.split(sizes), strict=True):
        p.copy_(chunk.view_as(p))


@contextmanager
def restored(params: Sequence[Tensor]) -> Iterator[None]:
    """Put the parameters back exactly as they were when the block exits (a float32
    snapshot holds every fp32, bf16 and fp16 value exactly)."""
    saved = snapshot(params)
    try:
        yield
    finally:
        restore_(params, saved)


def _stats_at(loss_fn: LossFn, batch: Any) -> dict[str, float]:
    _, stats = loss_fn(batch)
    missing = [k for k in STAT_KEYS if k not in stats]
    if missing:
        raise KeyError(
            f"loss_fn stats lack {missing}. Fix: build loss_fn on losses.grpo_loss, "
            f"whose stats include {list(STAT_KEYS)}."
        )
    return stats


def reposition_line(
    params: Sequence[Tensor],
    theta_0: Tensor | Sequence[Tensor],
    theta_k: Tensor | Sequence[Tensor],
    loss_fn: LossFn,
    batch: Any,
    ts: Tensor | Sequence[float] | None = None,
) -> dict[str, Tensor]:
    """Loss statistics along θ(t) = θ₀ + t(θ_K − θ₀): t = 0 is θ₀, t = α is θ̃, t = 1
    is θ_K, t > 1 extrapolates past the fast trajectory.

    Returns {"t", "loss", "kl", "clip_frac", "ratio_dev"}, each (len(ts),): the loss
    (the clipped surrogate, minimised), the k3 KL to the behaviour policy θ₀ on the
    batch, the clip fraction and the mean |ρ − 1|. Default ts: 25 points on [0, 1.2].
    Defined in :doc:`sfpo`.
    """
    # fp64 values of t, so that t = α hits the very θ̃ that sfpo_update computes
    ts = torch.linspace(0, 1.2, 25, dtype=torch.float64) if ts is None else ts
    ts = torch.as_tensor(ts, dtype=torch.float64)  # (T,)
    t0, tk = as_flat(theta_0), as_flat(theta_k)  # (D,)
    rows = []
    with restored(params), torch.no_grad():
        for t in ts.tolist():
            # θ(t) = θ₀ + t(θ_K − θ₀) by the reposition itself: exactly θ₀ at t = 0,
            # θ_K at t = 1 and the θ̃ of sfpo_update at t = α
            unflatten_(params, reposition(tk, t0, t))
            rows.append(_stats_at(loss_fn, batch))
    return {"t": ts} | {k: torch.tensor([r[k] for r in rows]) for k in STAT_KEYS}


@dataclass
class Plane:
    """The plane through θ₀, θ_K and θ_{s+1}: θ(x, y) = θ₀ + x·u + y·v.

    ``u`` points along the chord θ_K − θ₀ and ``v`` is orthogonal to it, toward
    θ_{s+1} (so θ_{s+1} has y > 0). θ̃ lies on the chord at x = α‖θ_K − θ₀‖.
    """

    origin: Tensor  # (D,) θ₀
    u: Tensor  # (D,) unit vector along θ_K − θ₀
    v: Tensor  # (D,) unit vector ⟂ u
    coords: dict[str, Tensor]  # "theta_0", "theta_k", "theta_tilde", "theta_next": (2,)
    alpha: float

    def point(self, x: float, y: float) -> Tensor:
        """The flat vector at plane coordinates (x, y), (D,)."""
        return self.origin + x * self.u + y * self.v

    def project(self, points: Tensor) -> Tensor:
        """Plane coordinates of flat points: (..., D) → (..., 2) (orthogonal projection)."""
        offset = points.double() - self.origin  # (..., D)
        return torch.stack([offset @ self.u, offset @ self.v], dim=-1).float()


def plane_basis(
    theta_0: Tensor | Sequence[Tensor],
    theta_k: Tensor | Sequence[Tensor],
    theta_next: Tensor | Sequence[Tensor],
    alpha: float,
) -> Plane:
    """Orthonormal basis of the plane of θ₀, θ_K, θ_{s+1} by Gram–Schmidt (in fp64),
    with the 2-D coordinates of θ₀, θ_K, θ̃ = θ₀ + α(θ_K − θ₀) and θ_{s+1}.

    Raises ``ValueError`` when the three points do not span a plane (θ_K = θ₀, or
    θ_{s+1} on the line through θ₀ and θ_K).
    """
    t0, tk, tn = (as_flat(x).double() for x in (theta_0, theta_k, theta_next))  # (D,)
    chord, step = tk - t0, tn - t0  # (D,)
    if chord.norm() == 0:
        raise ValueError(
            "θ_K = θ₀: the fast steps did not move (α = 0, or zero gradients), so "
            "there is no plane. Fix: use a step where SFPO was active."
        )
    u = chord / chord.norm()
    w = step - (step @ u) * u  # the part of θ_{s+1} − θ₀ orthogonal to the chord
    if w.norm() <= 1e-6 * max(chord.norm().item(), step.norm().item()):
        raise ValueError(
            "θ₀, θ_K and θ_{s+1} are (nearly) collinear, so they do not span a plane. "
            "Fix: plot the 1-D view with reposition_line, or pick another step."
        )
    v = w / w.norm()
    plane = Plane(origin=t0, u=u, v=v, coords={}, alpha=alpha)
    theta_tilde = reposition(tk, t0, alpha)  # Eq. (3), as interpolate_ computes it
    named = {"theta_0": t0, "theta_k": tk, "theta_tilde": theta_tilde, "theta_next": tn}
    plane.coords = {name: plane.project(x) for name, x in named.items()}
    return plane


def plane_grid(
    params: Sequence[Tensor],
    plane: Plane,
    loss_fn: LossFn,
    batch: Any,
    xs: Tensor | None = None,
    ys: Tensor | None = None,
    num: int = 31,
) -> dict[str, Tensor]:
    """loss_fn statistics at every point θ₀ + x·u + y·v of a grid in the plane.

    Default xs, ys: ``num`` points each, on a square that covers the four marked points
    with a margin.
    Returns {"x": (X,), "y": (Y,), "loss", "kl", "clip_frac", "ratio_dev": (Y, X)},
    ready for ``contourf(x, y, -loss)``.
    """
    if xs is None or ys is None:
        pts = torch.stack(list(plane.coords.values()))  # (4, 2)
        lo, hi = pts.min(0).values, pts.max(0).values
        centre, half = (lo + hi) / 2, 0.7 * (hi - lo).max()
        axes = [torch.linspace(c - half, c + half, num) for c in centre]  # x, y
        xs = axes[0] if xs is None else xs
        ys = axes[1] if ys is None else ys
    out = {k: torch.empty(len(ys), len(xs)) for k in STAT_KEYS}  # (Y, X) each
    with restored(params), torch.no_grad():
        for i, y in enumerate(ys.tolist()):
            for j, x in enumerate(xs.tolist()):
                unflatten_(params, plane.point(x, y))
                stats = _stats_at(loss_fn, batch)
                for k in STAT_KEYS:
                    out[k][i, j] = stats[k]
    return {"x": xs, "y": ys} | out


def toy_step_trace(bandit: ToyBandit, cfg: SFPOConfig, seed: int = 0) -> dict[str, Any]:
    """One SFPO update and one GRPO update of the toy, from the bandit's current θ₀
    and the same sampled batch (on copies: ``bandit`` is not changed).

    Returns flat 2-vectors ``theta_0``, ``theta_k``, ``theta_tilde``, ``theta_next``
    (SFPO's θ_{s+1}), ``grpo_next`` (one GRPO pass), ``fast`` (K+1, 2) = θ⁰ … θ_K,
    plus ``alpha``, ``num_fast_steps``, ``lr`` and the ``batch``. With α = 0 the fast
    steps are skipped (as in sfpo_update), so ``fast`` is just θ₀ and θ_K = θ̃ = θ₀.
    """
    if cfg.num_minibatches != 1:
        raise ValueError(
            f"num_minibatches={cfg.num_minibatches}: the toy trace draws one "
            f"full-batch step per pass. Fix: use num_minibatches=1."
        )
    generator = torch.Generator().manual_seed(seed)
    batch = bandit.sample_batch(
        cfg.num_prompts, cfg.group_size, generator, cfg.scale_rewards
    )

    def updated(update: Any, **kw: Any) -> list[Tensor]:
        """The parameters of a copy of ``bandit`` after ``update`` on the batch."""
        copied = copy.deepcopy(bandit)
        params = trainable_params(copied)
        optimizer, loss_fn = make_optimizer(params, cfg), copied.make_loss_fn(cfg)
        update(params, optimizer, batch, loss_fn, max_grad_norm=cfg.max_grad_norm, **kw)
        return params

    path = StepPath()
    updated(sfpo_update, num_fast_steps=cfg.num_fast_steps, alpha=cfg.alpha, path=path)
    return path.points() | {
        "grpo_next": flatten(updated(grpo_update)),
        "alpha": cfg.alpha,
        "num_fast_steps": cfg.num_fast_steps,
        "lr": cfg.lr,
        "batch": batch,
    }
