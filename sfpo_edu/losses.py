"""The GRPO math as pure functions on tensors: advantages, the clipped surrogate, KL.

Nothing here knows about models, tokenizers or optimizers, so the same functions score
the toy bandit and a LoRA language model. Shapes: B completions (num_prompts × G, each
prompt's G completions consecutive), T completion tokens.

Where this departs from a textbook:
1. Advantages use the unbiased group std plus 1e-6 (as the SFPO reference code and TRL
   do); a group whose rewards are all equal gets exactly zero advantage.
2. The KL penalty is the k3 estimator exp(r) − r − 1 with r = log π_ref − log π_θ,
   added per token (not folded into the reward).
3. ``dr_grpo`` divides by B × ``max_tokens`` (the generation limit; T if not given).
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-6


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` where ``mask`` is 1 (all of it, or along ``dim``); 0 if empty."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def group_advantages(
    rewards: Tensor, group_size: int, scale: bool = True
) -> tuple[Tensor, dict[str, float]]:
    """GRPO advantages Â_i = (R_i − mean(R_group)) / (std(R_group) + 1e-6), unbiased
    std; ``scale=False`` (Dr. GRPO) only subtracts the mean.

    ``rewards`` is (B,), each group's G ≥ 2 rewards consecutive. Returns advantages (B,)
    and ``reward/mean``, ``reward/std``, ``reward/frac_zero_std``. Defined in :doc:`grpo`.
    """
    if group_size < 2 or rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards of shape {tuple(rewards.shape)} cannot be split into groups of "
            f"{group_size}. Fix: pass a 1-D tensor of num_prompts × group_size "
            "rewards, group_size >= 2."
        )
    grouped = rewards.float().view(-1, group_size)  # (N, G)
    mean = grouped.mean(dim=1, keepdim=True)  # (N, 1)
    std = grouped.std(dim=1, keepdim=True)  # (N, 1), unbiased
    # Eq. (1) of GRPO: Â = (R − mean) / (std + ε)
    adv = grouped - mean  # (N, G)
    if scale:
        adv = adv / (std + EPS)
    # equal rewards: exactly 0, not float rounding (0.1 × 8 / 8 ≠ 0.1) over a std near 0
    equal = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)  # (N, 1)
    adv = adv.masked_fill(equal, 0.0)
    stats = {
        "reward/mean": rewards.float().mean().item(),
        "reward/std": rewards.float().std().item() if rewards.numel() > 1 else 0.0,
        "reward/frac_zero_std": equal.float().mean().item(),
    }
    return adv.view(-1), stats  # (B,)


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    loss_agg: str = "token_mean",
    max_tokens: int | None = None,
) -> Tensor:
    """Reduce a (B, T) per-token quantity to a scalar.

    ``token_mean``: Σ_i Σ_t x_it / Σ_i |o_i|             (DAPO; the SFPO reference code)
    ``seq_mean``:   1/B Σ_i (1/|o_i|) Σ_t x_it            (the GRPO paper)
    ``dr_grpo``:    Σ_i Σ_t x_it / (B · L)                (Dr. GRPO: a constant divisor)

    L is ``max_tokens`` (the generation limit, so the divisor does not depend on how
    long this batch's completions happen to be), or T when it is not given.
    Defined in :doc:`grpo`.
    """
    mask = mask.to(per_token.dtype)
    if loss_agg == "token_mean":
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    if loss_agg == "seq_mean":
        return masked_mean(per_token, mask, dim=1).mean()
    if loss_agg == "dr_grpo":
        length = per_token.shape[-1] if max_tokens is None else max_tokens
        return (per_token * mask).sum() / (per_token.shape[0] * length)
    raise ValueError(f"loss_agg={loss_agg!r} is not token_mean, seq_mean or dr_grpo.")


def kl_k3(per_token_logps: Tensor, ref_per_token_logps: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(π_θ ‖ π_ref): exp(r) − r − 1, r = log π_ref − log π_θ;
    ≥ 0, and 0 where the log-probs agree. (B, T) → (B, T). Defined in :doc:`grpo`."""
    r = ref_per_token_logps - per_token_logps  # (B, T)
    return torch.exp(r) - r - 1


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy −Σ_v p_v log p_v over the last axis, (..., V) → (...). See :doc:`grpo`."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def clipped_surrogate(
    per_token_logps: Tensor,
    old_per_token_logps: Tensor,
    advantages: Tensor,
    clip_eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token PPO-clip loss −min(ρ Â, clip(ρ, 1−ε, 1+ε) Â) with ρ = π_θ / π_θ₀.

    Log-probs are (B, T): ``per_token_logps`` with grad, ``old_per_token_logps`` at θ₀,
    computed once; ``advantages`` (B,) broadcast over each completion's tokens. Returns
    the per-token loss, ρ and "clipping is active" (no gradient), all (B, T).
    Defined in :doc:`grpo`.
    """
    B = per_token_logps.shape[0]
    if advantages.shape != (B,) or old_per_token_logps.shape != per_token_logps.shape:
        raise ValueError(
            f"shapes do not fit: log-probs {tuple(per_token_logps.shape)}, old log-probs "
            f"{tuple(old_per_token_logps.shape)}, advantages {tuple(advantages.shape)}. "
            f"Fix: both log-probs (B, T) and one advantage per completion, ({B},)."
        )
    # ρ_t = π_θ(o_t) / π_θ₀(o_t); exactly 1 at θ = θ₀
    ratio = torch.exp(per_token_logps - old_per_token_logps)  # (B, T)
    adv = advantages.unsqueeze(1)  # (B, 1)
    unclipped = ratio * adv  # (B, T)
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv  # (B, T)
    per_token_loss = -torch.min(unclipped, clipped)  # (B, T)
    is_clipped = ((ratio < 1 - clip_eps) & (adv < 0)) | (
        (ratio > 1 + clip_eps) & (adv > 0)
    )
    return per_token_loss, ratio, is_clipped


def grpo_loss(
    per_token_logps: Tensor,
    old_per_token_logps: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    clip_eps: float = 0.2,
    loss_agg: str = "token_mean",
    kl_coef: float = 0.0,
    ref_per_token_logps: Tensor | None = None,
    entropy_coef: float = 0.0,
    entropy: Tensor | None = None,
    max_tokens: int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The GRPO objective every pass (fast, slow, plain GRPO) minimises, (B, T) → ():

    L(θ) = agg_t[ −min(ρ_t Â, clip(ρ_t, 1−ε, 1+ε) Â) + β KL_k3(π_θ ‖ π_ref)_t − c H_t ]

    ``entropy`` (per token) is needed for the bonus and logged when given; ``max_tokens``
    is Dr. GRPO's constant (the generation limit). Diagnostics: ``loss``, ``clip_frac``,
    ``kl`` (KL(π_θ₀ ‖ π_θ) by k3: how far this pass has moved from the behaviour
    policy), ``ratio_dev`` (mean |ρ − 1|), and where available ``entropy`` (when
    ``entropy`` is given) and ``ref_kl`` (when ``kl_coef > 0``).
    """
    per_token, ratio, is_clipped = clipped_surrogate(
        per_token_logps, old_per_token_logps, advantages, clip_eps
    )
    if kl_coef > 0:
        if ref_per_token_logps is None:
            raise ValueError("kl_coef > 0 needs ref_per_token_logps (from π_ref).")
        ref_kl = kl_k3(per_token_logps, ref_per_token_logps)  # (B, T)
        per_token = per_token + kl_coef * ref_kl
    if entropy_coef > 0:
        if entropy is None:
            raise ValueError("entropy_coef > 0 needs the per-token entropy.")
        per_token = per_token - entropy_coef * entropy
    loss = aggregate(per_token, completion_mask, loss_agg, max_tokens)
    with torch.no_grad():
        mask = completion_mask
        # KL(π_θ₀ ‖ π_θ) by k3 on samples from π_θ₀: r = log π_θ − log π_θ₀
        behaviour_kl = kl_k3(old_per_token_logps, per_token_logps.detach())
        stats = {
            "loss": loss.item(),
            "clip_frac": masked_mean(is_clipped.float(), mask).item(),
            "kl": masked_mean(behaviour_kl, mask).item(),
            "ratio_dev": masked_mean((ratio - 1).abs(), mask).item(),
        }
        if entropy is not None:
            stats["entropy"] = masked_mean(entropy.detach().float(), mask).item()
        if kl_coef > 0:
            stats["ref_kl"] = masked_mean(ref_kl.detach(), mask).item()
    return loss, stats
