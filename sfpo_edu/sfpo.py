"""THE algorithm: one GRPO update and one SFPO update on a rollout batch, and the stop rule.

The updates only see the trainable parameters, the optimizer, a rollout batch and a
``loss_fn(batch) -> (loss, metrics)`` that reads its ``advantages`` and its
``old_per_token_logps`` (computed once at θ₀), so they train the toy bandit
(``toy.py``) and a 4-bit LoRA language model alike:

    metrics = sfpo_update(params, optimizer, batch, loss_fn, num_fast_steps=3, alpha=0.8)

One SFPO update (paper Algorithm 1, arXiv 2510.04072):
    1. fast:       K passes of the GRPO loss on the same batch   θ^{k+1} = θ^k − η∇L(θ^k)
    2. reposition: pull back toward the start                    θ̃ = θ₀ + α(θ_K − θ₀)
    3. slow:       one more pass, from and applied at θ̃          θ_{s+1} = θ̃ − η∇L(θ̃)

Where this departs from (or pins down what is open in) the paper:
1. Only trainable parameters are snapshotted and repositioned (LoRA adapters only).
2. One optimizer for all stages; its state (Adam moments, step count) is never reset,
   snapshotted or interpolated, as in the reference code. Weight decay acts in the fast
   steps too.
3. A "pass" is ``num_minibatches`` optimizer steps over fixed, unshuffled slices of the
   batch; 1 (the default) is the paper's one full-batch gradient step.
4. With α = 0 the fast passes are skipped (they would still move Adam's moments), so
   α = 0 is exactly one GRPO pass and α = 1 exactly GRPO with K+1 passes.
5. The old log-probs are never recomputed: the clip band stays centred on θ₀, so the
   slow pass starts with a ratio π_θ̃ / π_θ₀ that is already ≠ 1.
6. A non-finite loss or gradient norm raises ``NonFiniteError`` before the optimizer
   steps; ``update()`` then restores θ₀ and reports the step as skipped (the Adam
   moments of its earlier, finite passes are kept).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from sfpo_edu.config import CHOICES, SFPOConfig
from sfpo_edu.params import (
    Snapshot,
    distance,
    drift_metrics,
    flatten,
    interpolate_,
    restore_,
    snapshot,
)
from sfpo_edu.records import StepPath

LossFn = Callable[[Any], tuple[Tensor, dict[str, float]]]


class NonFiniteError(RuntimeError):
    """The loss or the gradient norm of a pass was NaN or infinite."""


def split_batch(batch: Any, num_minibatches: int) -> list[Any]:
    """Split a dataclass batch into equal, consecutive mini-batches along dim 0: tensors
    and lists of length B are sliced, other fields (``group_size``, ``None``) shared."""
    if num_minibatches == 1:
        return [batch]
    values = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    size = next(len(v) for v in values.values() if isinstance(v, Tensor | list))
    if size % num_minibatches:
        raise ValueError(
            f"a batch of {size} cannot be split into {num_minibatches} equal "
            f"mini-batches. Fix: choose num_minibatches that divides {size}."
        )
    step = size // num_minibatches

    def part(value: Any, i: int) -> Any:
        sliceable = isinstance(value, Tensor | list) and len(value) == size
        return value[i * step : (i + 1) * step] if sliceable else value

    return [
        dataclasses.replace(batch, **{k: part(v, i) for k, v in values.items()})
        for i in range(num_minibatches)
    ]


def mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Average a list of metric dicts key by key."""
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def train_pass(
    params: Sequence[Tensor],
    optimizer: torch.optim.Optimizer,
    minibatches: Sequence[Any],
    loss_fn: LossFn,
    max_grad_norm: float | None = None,
) -> list[dict[str, float]]:
    """One pass: an optimizer step per mini-batch, in order. Returns each mini-batch's
    metrics (plus ``grad_norm``), measured *before* its step. See :doc:`implementation`."""
    rows = []
    for minibatch in minibatches:
        optimizer.zero_grad(set_to_none=True)
        loss, metrics = loss_fn(minibatch)
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        if max_grad_norm is None:
            grad_norm = torch.nn.utils.get_total_norm(grads)
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(f"loss={loss.item()}, grad_norm={grad_norm.item()}")
        optimizer.step()
        rows.append({**metrics, "grad_norm": grad_norm.item()})
    optimizer.zero_grad(set_to_none=True)
    return rows


@torch.no_grad()
def loss_stats(loss_fn: LossFn, minibatches: Sequence[Any]) -> dict[str, float]:
    """loss_fn metrics at the current parameters, without a step (mean over slices)."""
    return mean_metrics([loss_fn(mb)[1] for mb in minibatches])


def grpo_update(
    params: Sequence[Tensor],
    optimizer: torch.optim.Optimizer,
    batch: Any,
    loss_fn: LossFn,
    *,
    num_passes: int = 1,
    num_minibatches: int = 1,
    max_grad_norm: float | None = None,
    path: StepPath | None = None,
) -> dict[str, float]:
    """GRPO: ``num_passes`` passes of the loss over one rollout batch (TRL's μ). One
    pass logs as ``pass/…``; μ > 1 passes are SFPO at α = 1 (θ̃ = θ_K): the last pass
    logs as ``slow/…``, the one before as ``fast/…``. ``sfpo/entropy`` is the last
    pass's entropy; ``path`` gets the start of every pass. Defined in :doc:`grpo`."""
    _check_counts(num_passes=num_passes)
    minibatches = split_batch(batch, num_minibatches)
    passes = []
    for i in range(num_passes):
        if path is not None:
            start = flatten(params)  # (D,) where this pass starts
            path.add_fast(start)
            path.theta_0 = start if i == 0 else path.theta_0
        passes.append(
            train_pass(params, optimizer, minibatches, loss_fn, max_grad_norm)
        )
    last = "pass/" if num_passes == 1 else "slow/"
    metrics = prefixed(last, mean_metrics(passes[-1]))
    if num_passes > 1:
        metrics |= prefixed("fast/", mean_metrics(passes[-2]))
    if f"{last}entropy" in metrics:
        metrics["sfpo/entropy"] = metrics[f"{last}entropy"]
    if path is not None:  # the last pass starts at θ_K = θ̃ (α = 1)
        path.theta_k = path.theta_tilde = start
        path.theta_next = flatten(params)
    return metrics


def sfpo_update(
    params: Sequence[Tensor],
    optimizer: torch.optim.Optimizer,
    batch: Any,
    loss_fn: LossFn,
    *,
    num_fast_steps: int = 3,
    alpha: float = 0.8,
    num_minibatches: int = 1,
    max_grad_norm: float | None = None,
    diagnostics: bool = True,
    theta_0: Snapshot | None = None,
    path: StepPath | None = None,
) -> dict[str, float]:
    """SFPO: K fast passes, reposition to θ̃ = θ₀ + α(θ_K − θ₀), one slow pass from θ̃.

    ``params`` hold θ₀ (the policy that sampled ``batch``; ``theta_0`` may pass in its
    snapshot) on entry, θ_{s+1} on return. ``diagnostics`` adds a no-grad evaluation at
    θ_K; ``path`` gets the points (``StepPath``). Defined in :doc:`sfpo`.
    """
    _check_counts(num_fast_steps=num_fast_steps, alpha=alpha)  # before anything moves
    minibatches = split_batch(batch, num_minibatches)
    theta_0 = snapshot(params) if theta_0 is None else theta_0
    metrics = {"sfpo/alpha": alpha, "sfpo/active": float(alpha > 0)}
    if path is not None:
        path.theta_0 = flatten(theta_0)
        path.add_fast(path.theta_0)

    # 1. fast: K passes of the unchanged GRPO loss on the same batch.
    # Eq. (2): θ^{k+1} = θ^k − η∇L(θ^k),  k = 0 … K−1
    if alpha > 0:  # α = 0 skips them: θ̃ = θ₀ whatever they did, but Adam would move
        for _ in range(num_fast_steps):
            fast = train_pass(params, optimizer, minibatches, loss_fn, max_grad_norm)
            if path is not None:
                path.add_fast(flatten(params))
        metrics |= prefixed("fast/", mean_metrics(fast))
        if diagnostics:
            at_theta_k = loss_stats(loss_fn, minibatches)
            metrics["kl/theta_k"] = at_theta_k["kl"]
            metrics["clip/theta_k"] = at_theta_k["clip_frac"]
    theta_k = snapshot(params)

    # 2. reposition: pull the fast weights back toward the start, in place.
    # Eq. (3): θ̃ = θ₀ + α(θ_K − θ₀)
    interpolate_(params, theta_0, alpha)
    if path is not None:
        path.theta_k, path.theta_tilde = flatten(theta_k), flatten(params)

    # 3. slow: one more pass from θ̃, applied at θ̃ (old log-probs are still θ₀'s).
    # Eq. (4): θ_{s+1} = θ̃ − η∇L(θ̃)
    slow = train_pass(params, optimizer, minibatches, loss_fn, max_grad_norm)
    metrics |= prefixed("slow/", mean_metrics(slow))
    metrics["kl/theta_tilde"] = slow[0]["kl"]  # measured at θ̃, before the slow step
    if "entropy" in slow[-1]:
        metrics["sfpo/entropy"] = mean_metrics(slow)["entropy"]
    metrics |= drift_metrics(theta_0, theta_k, params, alpha)
    if path is not None:
        path.theta_next = flatten(params)
    return metrics


def _check_counts(alpha: float = 0.0, **counts: int) -> None:
    """ValueError for a pass count below 1 or an α outside [0, 1]."""
    for name, n in counts.items():
        if n < 1:
            raise ValueError(f"{name}={n} must be at least 1 (a pass over the batch).")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must lie in [0, 1]; the paper uses 0.8.")


@dataclass
class StopRule:
    """Switches SFPO off for good when the policy entropy behaves unusually.

    Call ``check(step)`` before each update and ``record(entropy)`` after it. With at
    least ω entropies H recorded, z = (H[-1] − mean(H[-ω:])) / (std(H[-ω:]) + 1e-9),
    population std, the window including the latest value.

    * ``rise`` (reference code): fire when z ≥ τ.
    * ``abs`` (paper): fire when |z| ≥ τ; on a steady fall |z| ≈ 1.68 for ω = 30, so
      τ = 1 fires as soon as the window fills.
    * ``step``: fire at ``stop_step``;  ``never``: never fire.

    Defined in :doc:`stop_rule`.
    """

    rule: str = "rise"
    window: int = 30
    threshold: float = 1.0
    stop_step: int | None = None
    entropies: list[float] = field(default_factory=list)
    fired_at: int | None = None

    def __post_init__(self) -> None:
        rules = CHOICES["stop_rule"]
        if self.rule not in rules or self.window < 1:
            raise ValueError(
                f"StopRule(rule={self.rule!r}, window={self.window}): the rule must be "
                f"one of {', '.join(rules)} and the window ω at least 1 (default 30)."
            )

    @classmethod
    def from_config(cls, cfg: SFPOConfig) -> StopRule:
        return cls(cfg.stop_rule, cfg.stop_window, cfg.stop_threshold, cfg.stop_step)

    def zscore(self) -> float | None:
        """z of the latest entropy within the last ω; None before ω are recorded."""
        if len(self.entropies) < self.window:
            return None
        recent = self.entropies[-self.window :]
        mean, std = statistics.fmean(recent), statistics.pstdev(recent)
        return (recent[-1] - mean) / (std + 1e-9)

    def check(self, step: int) -> bool:
        """True when SFPO must be off at ``step`` (fires at most once, permanently)."""
        if self.fired_at is None:
            z = self.zscore()
            fire = {
                "rise": z is not None and z >= self.threshold,
                "abs": z is not None and abs(z) >= self.threshold,
                "step": self.stop_step is not None and step >= self.stop_step,
                "never": False,
            }[self.rule]
            if fire:
                self.fired_at = step
        return self.fired_at is not None

    def record(self, entropy: float) -> None:
        if math.isfinite(entropy):
            self.entropies.append(float(entropy))

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, list(value) if key == "entropies" else value)


def replay_stop_rule(
    entropies: Sequence[float],
    rule: str = "rise",
    window: int = 30,
    threshold: float = 1.0,
    stop_step: int | None = None,
) -> tuple[list[float | None], int | None]:
    """When would the rule have fired on a recorded ``sfpo/entropy`` series (any run's)?

    Drives a new ``StopRule`` as ``update`` does: the check at step s = 0 … len(H) sees
    H_0 … H_{s−1}, then H_s is recorded. Returns the z of each check (None before ω
    entropies) and the step it fired at (None: never). Defined in :doc:`stop_rule`.
    """
    stop = StopRule(rule, window, threshold, stop_step)
    zscores = []
    for s in range(len(entropies) + 1):
        zscores.append(stop.zscore())
        stop.check(s)
        if s < len(entropies):
            stop.record(entropies[s])
    return zscores, stop.fired_at


def make_optimizer(params: Sequence[Tensor], cfg: SFPOConfig) -> torch.optim.Optimizer:
    """The one optimizer of a run, shared by every stage and never reset."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def start_outer_step(
    stop_rule: StopRule,
    step: int,
    alpha: float,
    *,
    sfpo: bool = True,
    agree: Callable[[bool], bool] | None = None,
) -> dict[str, float]:
    """Check the stop rule and fix the step's α (0 once the rule fired); returns
    ``sfpo/alpha``, ``sfpo/active``, ``sfpo/stopped`` and ``sfpo/entropy_z`` (once ω
    entropies exist). GRPO (``sfpo=False``) never checks the rule and reports its α as
    inactive. ``agree`` lets several processes take one decision (e.g. rank 0's). The
    one controller of ``update`` and ``trl.SFPOTrainer``. Defined in :doc:`stop_rule`.
    """
    z = stop_rule.zscore()
    off = stop_rule.check(step) if sfpo else False
    if agree is not None:
        off = agree(off)
        if off and stop_rule.fired_at is None:
            stop_rule.fired_at = step
    alpha = 0.0 if off else alpha
    metrics = {
        "sfpo/alpha": alpha,
        "sfpo/active": float(sfpo and alpha > 0),
        "sfpo/stopped": float(off),
    }
    if z is not None:
        metrics["sfpo/entropy_z"] = z
    return metrics


def finish_outer_step(stop_rule: StopRule, metrics: dict[str, float]) -> None:
    """Feed the stop rule this step's ``sfpo/entropy``."""
    if "sfpo/entropy" in metrics:
        stop_rule.record(metrics["sfpo/entropy"])


def update(
    params: Sequence[Tensor],
    optimizer: torch.optim.Optimizer,
    batch: Any,
    loss_fn: LossFn,
    cfg: SFPOConfig,
    stop_rule: StopRule,
    step: int,
    path: StepPath | None = None,
) -> dict[str, float]:
    """One outer step's update for ``cfg.algo``, with the stop rule and the non-finite
    guard: what a trainer calls after the rollouts."""
    sfpo = cfg.algo == "sfpo"
    metrics = start_outer_step(stop_rule, step, cfg.effective_alpha, sfpo=sfpo)
    theta_0 = snapshot(params)
    try:
        if sfpo:
            metrics |= sfpo_update(
                params,
                optimizer,
                batch,
                loss_fn,
                num_fast_steps=cfg.num_fast_steps,
                alpha=metrics["sfpo/alpha"],
                num_minibatches=cfg.num_minibatches,
                max_grad_norm=cfg.max_grad_norm,
                diagnostics=cfg.diagnostics,
                theta_0=theta_0,
                path=path,
            )
        else:
            metrics |= grpo_update(
                params,
                optimizer,
                batch,
                loss_fn,
                num_passes=cfg.num_passes,
                num_minibatches=cfg.num_minibatches,
                max_grad_norm=cfg.max_grad_norm,
                path=path,
            )
            metrics["update/norm"] = distance(theta_0, params)  # ‖θ_{s+1} − θ₀‖
    except NonFiniteError as err:
        restore_(params, theta_0)
        if path is not None:
            path.stay(flatten(theta_0))
        warnings.warn(
            f"step {step} skipped, parameters restored to θ₀: {err}", stacklevel=2
        )
        return {"update/skipped": 1.0, "sfpo/alpha": 0.0, "sfpo/active": 0.0}
    metrics["update/skipped"] = 0.0
    finish_outer_step(stop_rule, metrics)
    return metrics
