"""An exact toy: a 2-parameter softmax bandit, trained by the real GRPO / SFPO updates.

Each arm is one answer to a single prompt. The logits are ``features @ θ``, θ ∈ R², with
a unit-vector feature per arm: the direction of θ picks an answer, its length how sure
the policy is. J(θ) = Σ_a π_θ(a) r_a is exact, so the landscape can be drawn, and a step
costs microseconds. The toy's ``loss_fn`` (``grpo_loss`` on one-token completions)
goes to the same ``sfpo.update`` that trains a language model:

    run = run_toy(toy_config(algo="sfpo"), num_steps=50)  # ToyRun: thetas, rewards, ...

Lookahead (Zhang et al. 2019) is here for contrast: its inner steps use *fresh* rollout
batches and it takes no extra step after pulling back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sfpo_edu.config import SFPOConfig
from sfpo_edu.losses import group_advantages, grpo_loss
from sfpo_edu.params import flatten, interpolate_, snapshot, trainable_params
from sfpo_edu.records import StepPath
from sfpo_edu.sfpo import (
    LossFn,
    StopRule,
    make_optimizer,
    mean_metrics,
    prefixed,
    train_pass,
    update,
)

TOY_ALGOS = ("grpo", "grpo_multi", "sfpo", "lookahead")

# Six answers around the circle: 1.0 is the correct one, 0.1 the reference reward for a
# parseable but wrong answer. The start leans away from the correct answer (J(θ₀) ≈
# 0.12), so the path to it has to bend around the circle.
ARM_ANGLES_DEG = (0.0, 60.0, 120.0, 180.0, 240.0, 300.0)
ARM_REWARDS = (0.1, 0.0, 0.1, 1.0, 0.0, 0.0)
THETA_INIT = (0.5, -0.5)


@dataclass
class ToyBatch:
    """A rollout batch of the bandit: B = num_groups × G one-token completions."""

    actions: Tensor  # (B,) chosen arm
    rewards: Tensor  # (B,)
    advantages: Tensor  # (B,)
    old_per_token_logps: Tensor  # (B, 1) log π_θ₀(a), computed once at sampling time
    completion_mask: Tensor  # (B, 1) all ones
    group_size: int


class ToyBandit(nn.Module):
    """Softmax policy over arms with logits ``features @ θ``; θ is the only parameter.
    Defined in :doc:`sfpo`."""

    def __init__(
        self,
        theta_init: Sequence[float] = THETA_INIT,
        arm_angles_deg: Sequence[float] = ARM_ANGLES_DEG,
        arm_rewards: Sequence[float] = ARM_REWARDS,
    ) -> None:
        super().__init__()
        if len(arm_angles_deg) != len(arm_rewards) or len(arm_rewards) < 2:
            raise ValueError(
                f"got {len(arm_angles_deg)} arm_angles_deg and {len(arm_rewards)} "
                "arm_rewards. Fix: give one angle and one reward per arm, >= 2 arms."
            )
        angles = torch.tensor(arm_angles_deg, dtype=torch.float64) * math.pi / 180
        features = torch.stack([angles.cos(), angles.sin()], dim=1).float()  # (A, 2)
        self.register_buffer("features", features)
        self.register_buffer("arm_rewards", torch.tensor(arm_rewards).float())  # (A,)
        self.theta = nn.Parameter(torch.tensor(theta_init, dtype=torch.float32))  # (2,)

    def log_probs(self, theta: Tensor | None = None) -> Tensor:
        """log π_θ(a) for every arm: (..., 2) → (..., A)."""
        theta = self.theta if theta is None else theta
        return torch.log_softmax(theta @ self.features.T, dim=-1)

    @torch.no_grad()
    def expected_reward(self, theta: Tensor | None = None) -> Tensor:
        """Exact J(θ) = Σ_a π_θ(a) r_a; θ of shape (..., 2) gives (...)."""
        return self.log_probs(theta).exp() @ self.arm_rewards

    @torch.no_grad()
    def reward_grid(self, xs: Tensor, ys: Tensor) -> Tensor:
        """J on the grid θ = (x, y): returns (len(ys), len(xs)), ready for contourf."""
        gx, gy = torch.meshgrid(xs.float(), ys.float(), indexing="xy")  # (Y, X)
        return self.expected_reward(torch.stack([gx, gy], dim=-1))  # (Y, X)

    @torch.no_grad()
    def sample_batch(
        self,
        num_groups: int,
        group_size: int,
        generator: torch.Generator | None = None,
        scale_rewards: bool = True,
    ) -> ToyBatch:
        """Sample G arms per group at θ₀, score them, and compute group advantages and
        the old log-probs, once."""
        logp = self.log_probs()  # (A,)
        actions = torch.multinomial(
            logp.exp(), num_groups * group_size, replacement=True, generator=generator
        )  # (B,)
        rewards = self.arm_rewards[actions]  # (B,)
        advantages, _ = group_advantages(rewards, group_size, scale_rewards)
        old_logps = logp[actions].unsqueeze(1)  # (B, 1) log π_θ₀(a)
        mask = torch.ones(len(actions), 1)  # (B, 1)
        return ToyBatch(actions, rewards, advantages, old_logps, mask, group_size)

    def make_loss_fn(self, cfg: SFPOConfig) -> LossFn:
        """The GRPO loss on a ToyBatch, with the exact policy entropy."""

        def loss_fn(batch: ToyBatch) -> tuple[Tensor, dict[str, float]]:
            logp_all = self.log_probs()  # (A,)
            per_token_logps = logp_all[batch.actions].unsqueeze(1)  # (B, 1)
            entropy = -(logp_all.exp() * logp_all).sum()  # ()
            return grpo_loss(
                per_token_logps,
                batch.old_per_token_logps,
                batch.advantages,
                batch.completion_mask,
                clip_eps=cfg.clip_eps,
                loss_agg=cfg.loss_agg,
                entropy_coef=cfg.entropy_coef,
                entropy=entropy.expand_as(per_token_logps),  # (B, 1)
            )

        return loss_fn


def toy_config(**changes: Any) -> SFPOConfig:
    """An SFPOConfig that suits the bandit (plain SGD, a big step, small batches, no
    stop rule, no gradient clipping); pass fields to override."""
    defaults: dict[str, Any] = dict(
        optimizer="sgd",
        lr=0.5,
        num_prompts=1,
        group_size=8,
        num_fast_steps=3,
        alpha=0.8,
        max_grad_norm=None,
        stop_rule="never",
        num_steps=50,
    )
    return SFPOConfig(**(defaults | changes))


def lookahead_update(
    params: Sequence[Tensor],
    optimizer: torch.optim.Optimizer,
    sample_batch: Callable[[], Any],
    loss_fn: LossFn,
    *,
    num_inner_steps: int = 3,
    alpha: float = 0.8,
    max_grad_norm: float | None = None,
) -> dict[str, float]:
    """Lookahead: k inner steps, each on a FRESH batch sampled at the current θ, then
    θ ← θ₀ + α(θ_k − θ₀) and no extra step. Defined in :doc:`sfpo`."""
    theta_0 = snapshot(params)
    for _ in range(num_inner_steps):
        rows = train_pass(params, optimizer, [sample_batch()], loss_fn, max_grad_norm)
    interpolate_(params, theta_0, alpha)
    return prefixed("fast/", mean_metrics(rows)) | {"sfpo/alpha": alpha}


@dataclass
class ToyRun:
    """What ``run_toy`` records: one row per outer step (index 0 = the start)."""

    algo: str
    thetas: Tensor  # (S+1, 2) outer iterates θ_s
    expected_reward: Tensor  # (S+1,) exact J(θ_s)
    rollouts: Tensor  # (S+1,) completions sampled so far
    fast_paths: list[Tensor] = field(default_factory=list)  # per step: (K+1, 2) θ⁰…θ_K
    theta_tildes: list[Tensor] = field(default_factory=list)  # per step: (2,) θ̃
    metrics: list[dict[str, float]] = field(default_factory=list)


def run_toy(
    cfg: SFPOConfig,
    *,
    algo: str | None = None,
    num_steps: int | None = None,
    seed: int | None = None,
    bandit: ToyBandit | None = None,
) -> ToyRun:
    """Train the bandit for ``num_steps`` outer steps with ``algo`` (default
    ``cfg.algo``; also ``lookahead``) and record the exact trajectory."""
    algo = cfg.algo if algo is None else algo
    if algo not in TOY_ALGOS:
        raise ValueError(f"algo={algo!r} is not one of {TOY_ALGOS}.")
    num_steps = cfg.num_steps if num_steps is None else num_steps
    seed = cfg.seed if seed is None else seed
    torch.manual_seed(seed)
    bandit = ToyBandit() if bandit is None else bandit
    generator = torch.Generator().manual_seed(seed)
    params = trainable_params(bandit)
    optimizer = make_optimizer(params, cfg)
    loss_fn = bandit.make_loss_fn(cfg)
    stop_rule = StopRule.from_config(cfg)
    run_cfg = cfg if algo == "lookahead" else cfg.replace(algo=algo, diagnostics=True)

    def sample() -> ToyBatch:
        return bandit.sample_batch(
            cfg.num_prompts, cfg.group_size, generator, cfg.scale_rewards
        )

    thetas, rewards, rollouts = [flatten(params)], [bandit.expected_reward()], [0]
    run = ToyRun(algo, torch.empty(0), torch.empty(0), torch.empty(0))
    for step in range(num_steps):
        if algo == "lookahead":
            metrics = lookahead_update(
                params,
                optimizer,
                sample,
                loss_fn,
                num_inner_steps=cfg.num_fast_steps,
                alpha=cfg.alpha,
                max_grad_norm=cfg.max_grad_norm,
            )
            used = cfg.num_fast_steps * cfg.batch_size
        else:
            path = StepPath()
            metrics = update(
                params, optimizer, sample(), loss_fn, run_cfg, stop_rule, step, path
            )
            used = cfg.batch_size
            run.fast_paths.append(path.fast_path())
            run.theta_tildes.append(path.theta_tilde)
        thetas.append(flatten(params))
        rewards.append(bandit.expected_reward())
        rollouts.append(rollouts[-1] + used)
        run.metrics.append(metrics)
    run.thetas = torch.stack(thetas)
    run.expected_reward = torch.stack(rewards)
    run.rollouts = torch.tensor(rollouts)
    return run


def compare_toy(
    cfg: SFPOConfig | None = None,
    *,
    algos: Sequence[str] = TOY_ALGOS,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    num_steps: int | None = None,
) -> dict[str, list[ToyRun]]:
    """Every algorithm from the same start, over several seeds: {algo: [ToyRun, ...]}."""
    cfg = toy_config() if cfg is None else cfg
    if not seeds or not algos:
        raise ValueError(
            f"nothing to compare: seeds={list(seeds)}, algos={list(algos)}. Fix: pass "
            "at least one of each, e.g. seeds=range(5) (sfpo-edu toy --seeds 5)."
        )
    return {
        algo: [run_toy(cfg, algo=algo, seed=s, num_steps=num_steps) for s in seeds]
        for algo in algos
    }


def comparison_table(runs: dict[str, list[ToyRun]], every: int = 10) -> str:
    """Plain-text table of the mean expected reward over seeds per outer step, with the
    rollouts each algorithm used by the last step."""
    algos = list(runs)
    num_steps = len(runs[algos[0]][0].expected_reward) - 1
    steps = sorted(set(range(0, num_steps + 1, every)) | {num_steps})
    head = f"{'step':>6} " + " ".join(f"{a:>12}" for a in algos)
    lines = [f"Expected reward J(θ_s), mean of {len(runs[algos[0]])} seeds", head]
    for s in steps:
        row = [
            torch.stack([r.expected_reward[s] for r in runs[a]]).mean() for a in algos
        ]
        lines.append(f"{s:>6} " + " ".join(f"{v.item():>12.3f}" for v in row))
    used = [int(runs[a][0].rollouts[-1]) for a in algos]
    lines.append(f"{'rollouts':>6} " + " ".join(f"{u:>12d}" for u in used))
    return "\n".join(lines)
