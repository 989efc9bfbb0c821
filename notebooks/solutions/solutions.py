"""Solutions to the notebook exercises (try them yourself first!).

One function per exercise, named as in the notebooks. Each is written from the
formula with plain torch / numpy, not by calling the library, so it is a second,
independent implementation; ``sfpo_edu.exercises.check_<name>`` compares it with the
library. ``tests/test_exercises.py`` checks that every solution passes its check.

    import sys; sys.path.insert(0, "solutions")
    from solutions import group_advantages
    from sfpo_edu.exercises import check_group_advantages
    check_group_advantages(group_advantages)

``SOLUTIONS`` maps each check's name to its solution.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor


# --- 01_grpo_on_a_toy ---------------------------------------------------------------
def group_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """Â = (R − group mean) / (unbiased group std + 1e-6), (B,) → (B,)."""
    grouped = rewards.float().view(-1, group_size)  # (N, G)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)  # unbiased: divides by G − 1
    return ((grouped - mean) / (std + 1e-6)).view(-1)


def clipped_surrogate(
    per_token_logps: Tensor,
    old_per_token_logps: Tensor,
    advantages: Tensor,
    clip_eps: float,
) -> Tensor:
    """−min(ρÂ, clip(ρ, 1 − ε, 1 + ε)Â) per token, (B, T)."""
    ratio = torch.exp(per_token_logps - old_per_token_logps)  # (B, T)
    adv = advantages.unsqueeze(1)  # (B, 1): one advantage for all tokens of a row
    return -torch.min(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)


def toy_policy_gradient(
    theta: Tensor, features: Tensor, actions: Tensor, advantages: Tensor
) -> Tensor:
    """∇L(θ₀) = −mean_i Â_i (φ_{a_i} − Σ_b π(b) φ_b), (2,)."""
    probs = torch.softmax(features @ theta, dim=-1)  # (A,)
    mean_feature = probs @ features  # (2,)
    grad_logp = features[actions] - mean_feature  # (B, 2)
    return -(advantages.unsqueeze(1) * grad_logp).mean(dim=0)


# --- 02_sfpo_three_stages -------------------------------------------------------------
def reposition(theta_0: Tensor, theta_k: Tensor, alpha: float) -> Tensor:
    """θ̃ = θ₀ + α(θ_K − θ₀), written as a lerp: exact at α = 0 and α = 1."""
    return torch.lerp(theta_k, theta_0, 1.0 - alpha)


def sfpo_sgd_step(
    theta_0: Tensor,
    grad: Callable[[Tensor], Tensor],
    num_fast_steps: int,
    alpha: float,
    lr: float,
) -> Tensor:
    """One SFPO update with plain SGD."""
    theta = theta_0.clone()
    if alpha > 0:  # α = 0 would throw the fast steps away anyway
        for _ in range(num_fast_steps):  # 1. fast
            theta = theta - lr * grad(theta)
    theta_tilde = torch.lerp(theta, theta_0, 1.0 - alpha)  # 2. reposition
    return theta_tilde - lr * grad(theta_tilde)  # 3. slow, from θ̃


def lookahead_sgd_step(
    theta_0: Tensor, grads: list[Callable[[Tensor], Tensor]], alpha: float, lr: float
) -> Tensor:
    """k inner SGD steps, each on its own fresh batch, then pull back; no extra step."""
    theta = theta_0.clone()
    for grad in grads:
        theta = theta - lr * grad(theta)
    return torch.lerp(theta, theta_0, 1.0 - alpha)


def sfpo_points(
    theta_0: Tensor,
    grad_fn: Callable[[Tensor], Tensor],
    lr: float,
    num_fast_steps: int,
    alpha: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """θ_K, θ̃ and θ_{s+1} of one SFPO update with plain SGD, each (2,)."""
    theta_k = theta_0.clone()
    for _ in range(num_fast_steps):  # 1. fast: K steps on the same batch
        theta_k = theta_k - lr * grad_fn(theta_k)
    theta_tilde = torch.lerp(theta_k, theta_0, 1.0 - alpha)  # 2. reposition
    theta_next = theta_tilde - lr * grad_fn(theta_tilde)  # 3. slow, from θ̃, at θ̃
    return theta_k, theta_tilde, theta_next


# --- 03_the_llm_policy -----------------------------------------------------------------
def per_token_logps(
    logits: Tensor, completion_ids: Tensor, temperature: float
) -> Tensor:
    """log_softmax(logits / T) at the sampled tokens, (B, T, V) → (B, T)."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # (B, T, V)
    return logp.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)  # (B, T)


def completion_mask(
    completion_ids: Tensor, eos_ids: list[int]
) -> tuple[Tensor, Tensor]:
    """Mask (B, T): 1 up to and including the first EOS; truncated (B,): no EOS."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids))  # (B, T)
    truncated = ~is_eos.any(dim=1)  # (B,)
    # EOS seen strictly before position t ⇔ t is after the first EOS
    eos_before = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0  # (B, T)
    return (~eos_before).long(), truncated


_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")


def last_number(text: str) -> str | None:
    """The last number in the text, commas removed; None if there is none."""
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    number = last.group().replace(",", "")
    if number.startswith("-") and last.start() > 0 and text[last.start() - 1].isalnum():
        number = number[1:]  # "3-2": the minus is an operator, not a sign
    return number


# --- 04_one_sfpo_step_on_an_llm ---------------------------------------------------------
def aggregate(per_token: Tensor, completion_mask: Tensor, loss_agg: str) -> Tensor:
    """token_mean / seq_mean / dr_grpo reduction of a (B, T) loss over the mask."""
    mask = completion_mask.float()
    total = (per_token * mask).sum()
    if loss_agg == "token_mean":
        return total / mask.sum().clamp(min=1)
    if loss_agg == "seq_mean":
        per_row = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # (B,)
        return per_row.mean()
    if loss_agg == "dr_grpo":
        return total / mask.numel()
    raise ValueError(f"unknown loss_agg {loss_agg!r}")


def kl_k3(per_token_logps: Tensor, ref_per_token_logps: Tensor) -> Tensor:
    """exp(r) − r − 1 with r = log π_ref − log π_θ, per token."""
    r = ref_per_token_logps - per_token_logps
    return torch.exp(r) - r - 1


def interpolate_(params: list[Tensor], theta_0: list[Tensor], alpha: float) -> None:
    """In place: p ← θ₀ + α(p − θ₀) for every parameter, in fp32, exact at the ends."""
    with torch.no_grad():
        for p, t0 in zip(params, theta_0, strict=True):
            p.copy_(torch.lerp(p.float(), t0.float(), 1.0 - alpha))


# --- 05_train_grpo_vs_sfpo --------------------------------------------------------------
def moving_average(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` points (fewer at the start)."""
    y = np.asarray(y, dtype=float)
    return np.array([y[max(0, i - window + 1) : i + 1].mean() for i in range(len(y))])


def optimizer_steps(
    algo: str, num_fast_steps: int, num_minibatches: int, stopped: bool
) -> int:
    """Passes over the batch × mini-batches per pass."""
    if algo == "grpo" or (algo == "sfpo" and stopped):
        passes = 1
    else:  # grpo_multi, or sfpo while active: K fast + 1 slow
        passes = num_fast_steps + 1
    return passes * num_minibatches


# --- 06_reading_the_dashboards ----------------------------------------------------------
def entropy_zscore(entropies: list[float], window: int) -> float | None:
    """z of the latest entropy within the last ω (population std); None if < ω."""
    if len(entropies) < window:
        return None
    recent = entropies[-window:]
    mean = statistics.fmean(recent)
    return (recent[-1] - mean) / (statistics.pstdev(recent) + 1e-9)


def stop_step(
    entropies: list[float], rule: str, window: int, threshold: float
) -> int | None:
    """First step s whose check (seeing H_0 … H_{s−1}) fires; None if none does."""
    for s in range(len(entropies) + 1):
        z = entropy_zscore(entropies[:s], window)
        if z is None:
            continue
        if (rule == "rise" and z >= threshold) or (
            rule == "abs" and abs(z) >= threshold
        ):
            return s
    return None


def drift_metrics(
    theta_0: Tensor, theta_k: Tensor, theta_next: Tensor, alpha: float
) -> dict[str, float]:
    """Norms of the fast drift, the reposition and the slow step; their cosine."""
    theta_tilde = theta_0 + alpha * (theta_k - theta_0)
    fast, slow = theta_k - theta_0, theta_next - theta_tilde
    denom = fast.norm() * slow.norm()
    return {
        "sfpo/drift_norm": fast.norm().item(),
        "sfpo/reposition_norm": (theta_tilde - theta_0).norm().item(),
        "sfpo/slow_step_norm": slow.norm().item(),
        "sfpo/cos_fast_slow": (fast @ slow / denom).item() if denom > 0 else 0.0,
    }


# --- 07_hyperparameter_lab --------------------------------------------------------------
def toy_expected_reward(theta: Tensor, features: Tensor, arm_rewards: Tensor) -> Tensor:
    """J(θ) = Σ_a softmax(features @ θ)_a r_a (softmax is stable for large θ)."""
    return torch.softmax(features @ theta, dim=-1) @ arm_rewards


def rollouts_per_step(
    algo: str, num_prompts: int, group_size: int, num_fast_steps: int
) -> int:
    """Completions sampled per outer step: one batch, or K fresh ones (Lookahead)."""
    batches = num_fast_steps if algo == "lookahead" else 1
    return batches * num_prompts * group_size


def effective_alpha(algo: str, alpha: float, stopped: bool) -> float:
    """GRPO is α = 0, GRPO×(K+1) is α = 1, SFPO is α until the stop rule fires."""
    if algo == "grpo":
        return 0.0
    if algo == "grpo_multi":
        return 1.0
    return 0.0 if stopped else alpha


SOLUTIONS: dict[str, Callable] = {
    "check_group_advantages": group_advantages,
    "check_clipped_surrogate": clipped_surrogate,
    "check_toy_policy_gradient": toy_policy_gradient,
    "check_reposition": reposition,
    "check_sfpo_sgd_step": sfpo_sgd_step,
    "check_lookahead_sgd_step": lookahead_sgd_step,
    "check_sfpo_points": sfpo_points,
    "check_per_token_logps": per_token_logps,
    "check_completion_mask": completion_mask,
    "check_last_number": last_number,
    "check_aggregate": aggregate,
    "check_kl_k3": kl_k3,
    "check_interpolate_": interpolate_,
    "check_moving_average": moving_average,
    "check_optimizer_steps": optimizer_steps,
    "check_entropy_zscore": entropy_zscore,
    "check_stop_step": stop_step,
    "check_drift_metrics": drift_metrics,
    "check_toy_expected_reward": toy_expected_reward,
    "check_rollouts_per_step": rollouts_per_step,
    "check_effective_alpha": effective_alpha,
}
