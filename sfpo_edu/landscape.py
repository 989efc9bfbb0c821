"""Loss landscapes around one SFPO step: along the reposition line, and in a plane.

A ``loss_fn(batch) -> (loss, stats)`` (as ``sfpo_update`` takes) is evaluated, without
training, at points: flat fp32 vectors (D,) of the trainable parameters
(``params.flatten``), on the toy and on an LLM's LoRA alike.

    line = reposition_line(params, theta_0, theta_k, loss_fn, batch)   # t ↦ stats
    plane = plane_basis(theta_0, theta_k, theta_next, alpha)           # 2-D coordinates
    grid = plane_grid(params, plane, loss_fn, batch)                   # loss on a grid

``params`` are what ``loss_fn`` reads, ``batch`` was sampled at θ₀. ``reposition_line``
and ``plane_grid`` move ``params`` in place to each point and put them back bit for
bit, even on an exception.
"""

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
Point = Tensor | Sequence[Tensor]  # a flat vector (D,) or a snapshot (list of tensors)


def as_flat(point: Point) -> Tensor:
    """A flat fp32 vector (D,) from a flat tensor or a list of tensors (a snapshot)."""
    if isinstance(point, Tensor):
        if point.dim() != 1:
            raise ValueError(
                f"a flat point must be 1-D, not {tuple(point.shape)}. Fix: pass "
                "params.flatten(...) or a snapshot (a list of tensors)."
            )
        return point.detach().float()
    return flatten(point)


@torch.no_grad()
def unflatten_(params: Sequence[Tensor], flat: Tensor) -> None:
    """Copy a flat (D,) vector into the parameters in place (cast to their dtype)."""
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
    """Put the parameters back exactly on exit (an fp32 snapshot holds bf16/fp16)."""
    saved = snapshot(params)
    try:
        yield
    finally:
        restore_(params, saved)


def _stats_at(loss_fn: LossFn, batch: Any) -> dict[str, float]:
    _, stats = loss_fn(batch)
    if missing := [k for k in STAT_KEYS if k not in stats]:
        raise KeyError(
            f"loss_fn stats lack {missing}. Fix: build loss_fn on losses.grpo_loss, "
            f"whose stats include {list(STAT_KEYS)}."
        )
    return stats


def reposition_line(
    params: Sequence[Tensor],
    theta_0: Point,
    theta_k: Point,
    loss_fn: LossFn,
    batch: Any,
    ts: Tensor | Sequence[float] | None = None,
) -> dict[str, Tensor]:
    """Loss statistics along θ(t) = θ₀ + t(θ_K − θ₀): θ₀ at t = 0, θ̃ at α, θ_K at 1.

    Returns {"t", "loss", "kl", "clip_frac", "ratio_dev"}, each (len(ts),): the clipped
    surrogate, the k3 KL to θ₀, the clip fraction and the mean |ρ − 1| on the batch.
    Default ts: 25 points on [0, 1.2]. Defined in :doc:`sfpo`.
    """
    # fp64 values of t, so that t = α hits the very θ̃ that sfpo_update computes
    ts = torch.linspace(0, 1.2, 25, dtype=torch.float64) if ts is None else ts
    ts = torch.as_tensor(ts, dtype=torch.float64)  # (T,)
    t0, tk = as_flat(theta_0), as_flat(theta_k)  # (D,)
    rows = []
    with restored(params), torch.no_grad():
        for t in ts.tolist():
            # via reposition: exactly θ₀ at t = 0, θ_K at 1 and sfpo_update's θ̃ at α
            unflatten_(params, reposition(tk, t0, t))
            rows.append(_stats_at(loss_fn, batch))
    return {"t": ts} | {k: torch.tensor([r[k] for r in rows]) for k in STAT_KEYS}


@dataclass
class Plane:
    """The plane θ(x, y) = θ₀ + x·u + y·v through θ₀, θ_K and θ_{s+1} (y > 0 there)."""

    origin: Tensor  # (D,) θ₀
    u: Tensor  # (D,) unit vector along θ_K − θ₀
    v: Tensor  # (D,) unit vector ⟂ u
    coords: dict[str, Tensor]  # "theta_0", "theta_k", "theta_tilde", "theta_next": (2,)
    alpha: float

    def point(self, x: float, y: float) -> Tensor:
        """The flat vector at plane coordinates (x, y), (D,)."""
        return self.origin + x * self.u + y * self.v

    def project(self, points: Tensor) -> Tensor:
        """Plane coordinates of flat points, (..., D) → (..., 2), by projection."""
        offset = points.double() - self.origin  # (..., D)
        return torch.stack([offset @ self.u, offset @ self.v], dim=-1).float()


def plane_basis(
    theta_0: Point, theta_k: Point, theta_next: Point, alpha: float
) -> Plane:
    """Orthonormal basis (fp64 Gram–Schmidt) of the plane of θ₀, θ_K, θ_{s+1}, with the
    coordinates of those and θ̃; ``ValueError`` if they span no plane."""
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
            "θ₀, θ_K and θ_{s+1} are (nearly) collinear, so they span no plane. Fix: "
            "plot the 1-D view with reposition_line, or pick another step."
        )
    plane = Plane(origin=t0, u=u, v=w / w.norm(), coords={}, alpha=alpha)
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
    """loss_fn stats at θ₀ + x·u + y·v on a grid (default: ``num`` × ``num`` around
    the marked points): {"x": (X,), "y": (Y,)} plus a (Y, X) grid per ``STAT_KEYS``
    name (``loss``, ``kl``, ``clip_frac``, ``ratio_dev``)."""
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
    """One SFPO and one GRPO update of copies of the toy from one θ₀ and batch: flat
    ``theta_0``, ``theta_k``, ``theta_tilde``, ``theta_next``, ``grpo_next`` (2,),
    ``fast`` (K+1, 2) (just θ₀ when α = 0), ``alpha``, ``num_fast_steps``, ``lr``,
    ``batch``."""
    if cfg.num_minibatches != 1:
        raise ValueError(
            f"num_minibatches={cfg.num_minibatches}: the toy trace draws one "
            "full-batch step per pass. Fix: use num_minibatches=1."
        )
    generator = torch.Generator().manual_seed(seed)
    batch = bandit.sample_batch(
        cfg.num_prompts, cfg.group_size, generator, cfg.scale_rewards
    )

    def updated(update: Any, **kw: Any) -> list[Tensor]:
        copied = copy.deepcopy(bandit)
        params = trainable_params(copied)
        optimizer, loss_fn = make_optimizer(params, cfg), copied.make_loss_fn(cfg)
        update(params, optimizer, batch, loss_fn, max_grad_norm=cfg.max_grad_norm, **kw)
        return params

    path = StepPath()
    updated(sfpo_update, num_fast_steps=cfg.num_fast_steps, alpha=cfg.alpha, path=path)
    extras = dict(
        alpha=cfg.alpha, num_fast_steps=cfg.num_fast_steps, lr=cfg.lr, batch=batch
    )
    return path.points() | {"grpo_next": flatten(updated(grpo_update))} | extras
