"""Parameter-space helpers: which tensors SFPO moves, snapshots, reposition, distances.

SFPO works on the *trainable* parameters only: under LoRA the adapter matrices, never
the frozen (possibly 4-bit) base model.

    params = trainable_params(model)
    theta_0 = snapshot(params)                # fp32 copies, no grad
    ...                                       # K fast steps move params to θ_K
    interpolate_(params, theta_0, alpha)      # now params hold θ̃
    distance(theta_0, params)                 # ‖θ̃ − θ₀‖
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

Snapshot = list[Tensor]


def trainable_params(model_or_params: nn.Module | Iterable[Tensor]) -> list[Tensor]:
    """The parameters with ``requires_grad`` (LoRA adapters only, under LoRA)."""
    if isinstance(model_or_params, nn.Module):
        model_or_params = model_or_params.parameters()
    params = [p for p in model_or_params if p.requires_grad]
    if not params:
        raise ValueError(
            "no trainable parameters (none has requires_grad=True). Fix: enable LoRA "
            "or unfreeze some weights."
        )
    return params


@torch.no_grad()
def snapshot(params: Sequence[Tensor]) -> Snapshot:
    """Detached float32 copies of ``params`` (exact for fp32, bf16 and fp16 ones)."""
    return [p.detach().float().clone() for p in params]


@torch.no_grad()
def restore_(params: Sequence[Tensor], snap: Snapshot) -> None:
    """Copy a snapshot back into the parameters, in place."""
    for p, s in zip(params, snap, strict=True):
        p.copy_(s)


def reposition(theta_k: Tensor, theta_0: Tensor, alpha: float) -> Tensor:
    """θ̃ = θ₀ + α(θ_K − θ₀), the one place in the library that computes it.

    ``lerp(θ_K, θ₀, 1 − α) = θ_K + (1 − α)(θ₀ − θ_K)`` is exact at both ends (α = 1 gives
    θ_K, α = 0 gives θ₀), where the literal formula can be one ulp off at α = 1. Any two
    same-shape tensors; α outside [0, 1] extrapolates. Defined in :doc:`implementation`.
    """
    # Eq. (3): θ̃ = θ₀ + α(θ_K − θ₀)
    return theta_k.lerp(theta_0, 1.0 - alpha)


@torch.no_grad()
def interpolate_(params: Sequence[Tensor], theta_0: Snapshot, alpha: float) -> None:
    """Reposition in place, θ_K → θ̃ (``reposition`` in fp32, cast back)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must lie in [0, 1].")
    for p, t0 in zip(params, theta_0, strict=True):
        p.copy_(reposition(p.float(), t0, alpha))


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one detached fp32 vector of length Σ numel, (D,)."""
    return torch.cat([t.detach().float().reshape(-1) for t in tensors])


def difference(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """a − b as one flat fp32 vector, (D,)."""
    return flatten(a) - flatten(b)


def distance(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    """Euclidean distance ‖a − b‖ between two parameter lists or snapshots."""
    return difference(a, b).norm().item()


def cosine(u: Tensor, v: Tensor) -> float:
    """Cosine of the angle between two flat vectors; 0 if either is zero."""
    denom = u.norm() * v.norm()
    return (u @ v / denom).item() if denom > 0 else 0.0


def drift_metrics(
    theta_0: Snapshot, theta_k: Snapshot, theta_next: Sequence[Tensor], alpha: float
) -> dict[str, float]:
    """The distances of one SFPO step between θ₀, θ_K, θ̃ and θ_{s+1}; the keys are
    defined in :doc:`metrics`."""
    t0, tk, tn = flatten(theta_0), flatten(theta_k), flatten(theta_next)  # (D,)
    # θ̃ as interpolate_ stored it: in fp32, then rounded to each parameter's dtype
    points = zip(theta_k, theta_0, theta_next, strict=True)
    theta_tilde = flatten([reposition(k, z, alpha).to(p.dtype) for k, z, p in points])
    fast, slow = tk - t0, tn - theta_tilde  # (D,)
    return {
        "sfpo/drift_norm": fast.norm().item(),  # ‖θ_K − θ₀‖
        "sfpo/reposition_norm": (theta_tilde - t0).norm().item(),  # ‖θ̃ − θ₀‖
        "sfpo/slow_step_norm": slow.norm().item(),  # ‖θ_{s+1} − θ̃‖
        "sfpo/cos_fast_slow": cosine(fast, slow),
        "update/norm": (tn - t0).norm().item(),  # ‖θ_{s+1} − θ₀‖
    }
