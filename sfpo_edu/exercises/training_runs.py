"""Exercises on training runs: a trailing moving average, optimizer steps and rollouts
per outer step, the effective α, the stop rule's z-score and step (notebooks 05-07)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sfpo_edu.exercises.grader import Exercise, gen
from sfpo_edu.plotting import smooth_curve
from sfpo_edu.sfpo import StopRule, replay_stop_rule, start_outer_step, update
from sfpo_edu.toy import ToyBandit, run_toy, toy_config

_RNG = np.random.default_rng
check_moving_average = Exercise(
    "moving average: fn(y, window) -> an array as long as y: point i averages "
    "y[max(0, i − window + 1) : i + 1]. Reference: plotting.smooth_curve.",
    smooth_curve,
    lambda: [
        ("hand-made: window 2", np.array([0.0, 1.0, 0.0, 1.0]), 2),
        ("hand-made: window 3", np.array([3.0, 6.0, 9.0, 0.0, 0.0]), 3),
        ("random: 30 rewards, window 5", _RNG(0).random(30), 5),
        ("degenerate: window 1 changes nothing", _RNG(1).random(6), 1),
        ("degenerate: window longer than the data", np.array([1.0, 2.0, 3.0]), 10),
    ],
    [
        (
            lambda y, w: np.convolve(y, np.ones(w) / w, mode="same"),
            "np.convolve(mode='same') is centred, zero-padded; the curve must TRAIL.",
        ),
        (
            lambda y, w: np.convolve(y, np.ones(w) / w)[: len(y)],
            "point i < window − 1 averages only the i + 1 points so far.",
        ),
        (
            lambda y, w: np.convolve(y, np.ones(w) / w, mode="valid"),
            "mode='valid' drops the first points; keep one output per input.",
        ),
    ],
    atol=1e-9,
)


def _optimizer_steps(algo: str, K: int, M: int, stopped: bool) -> int:
    """optimizer.step() calls in one ``sfpo.update`` of the toy with K fast steps and M
    mini-batches (the stop rule fired before it if ``stopped``)."""
    cfg = toy_config(algo=algo, num_fast_steps=K, num_minibatches=M, num_prompts=M)
    bandit, steps = ToyBandit(), []
    optimizer = torch.optim.SGD([bandit.theta], lr=cfg.lr)
    optimizer.register_step_post_hook(lambda *_: steps.append(1))
    batch, loss_fn = bandit.sample_batch(M, 2, gen(0)), bandit.make_loss_fn(cfg)
    stop_rule = StopRule("step", stop_step=0 if stopped else None)
    update([bandit.theta], optimizer, batch, loss_fn, cfg, stop_rule, step=0)
    return len(steps)


def _k_passes(algo: str, K: int, M: int, stopped: bool) -> int:
    """K passes for an active SFPO, forgetting the slow one (else the library's)."""
    active = algo == "sfpo" and not stopped
    return K * M if active else _optimizer_steps(algo, K, M, stopped)


check_optimizer_steps = Exercise(
    "optimizer steps per batch: fn(algo, num_fast_steps, num_minibatches, stopped) -> "
    "int for grpo, grpo_multi, sfpo. Reference: optimizer.step() calls in sfpo.update.",
    _optimizer_steps,
    lambda: [
        ("hand-made: GRPO", "grpo", 3, 1, False),
        ("hand-made: GRPO×(K+1), K = 3", "grpo_multi", 3, 1, False),
        ("hand-made: SFPO, K = 3, 4 mini-batches", "sfpo", 3, 4, False),
        ("random: SFPO, K = 5, 2 mini-batches", "sfpo", 5, 2, False),
        ("degenerate: SFPO after the stop rule fired", "sfpo", 3, 2, True),
        ("degenerate: GRPO×(K+1) has no stop rule", "grpo_multi", 3, 2, True),
    ],
    [
        (
            lambda algo, K, M, stopped: _optimizer_steps(algo, K, 1, stopped),
            "one optimizer step PER MINI-BATCH in each pass: passes × num_minibatches.",
        ),
        (
            lambda algo, K, M, stopped: _optimizer_steps(algo, K, M, False),
            "once stopped, SFPO runs as GRPO, with α = 0, and skips the K fast passes.",
        ),
        (_k_passes, "K fast passes, then ONE slow pass: K + 1 passes in all."),
    ],
)


def _z(latest: float, window: Sequence[float], ddof: int = 0) -> float:
    """(latest − mean) / (std + 1e-9) over ``window``."""
    return (latest - np.mean(window)) / (np.std(window, ddof=ddof) + 1e-9)


_FALLING = [2.0 - 0.01 * i for i in range(40)]
check_entropy_zscore = Exercise(
    "entropy z-score: fn(entropies, window) -> (H[-1] − mean(H[-ω:])) / (std(H[-ω:]) + "
    "1e-9), population std, or None before ω values. Reference: sfpo.StopRule.zscore.",
    lambda h, w: StopRule(window=w, entropies=list(h)).zscore(),
    lambda: [
        ("hand-made: a steady fall, ω = 30 (|z| ≈ 1.68)", _FALLING, 30),
        ("hand-made: a spike after a flat stretch", [1.0] * 5 + [1.5], 6),
        ("random: noise, ω = 10", _RNG(1).normal(1.0, 0.1, 25).tolist(), 10),
        ("degenerate: fewer than ω values", [1.0, 0.9], 3),
        ("degenerate: a constant entropy (std 0)", [0.7] * 5, 5),
    ],
    [
        (
            lambda h, w: _z(h[-1], h[-w:], ddof=1) if len(h) >= w else None,
            "use the POPULATION std: statistics.pstdev or np.std (ddof=0).",
        ),
        (
            lambda h, w: _z(h[-1], h[-w - 1 : -1]) if len(h) > w else None,
            "the window INCLUDES the latest value: z compares H[-1] with mean(H[-ω:]).",
        ),
        (
            lambda h, w: abs(_z(h[-1], h[-w:])) if len(h) >= w else None,
            "return the signed z; the 'abs' rule takes |z| itself.",
        ),
        (
            lambda h, w: _z(h[-1], h[-w:]),
            "return None while len(H) < ω: the rule cannot judge with fewer values.",
        ),
    ],
    atol=1e-6,
)


def _fires_at(
    h: list, rule: str, w: int, t: float, late: int = 0, first: int = 0
) -> int | None:
    """The first s ≥ ``first`` whose z of H[s − 1 + late] in its window fires."""
    for s in range(first, len(h) + 1 - late):
        z = _z(h[s - 1 + late], h[max(0, s - w + late) : s + late])
        if z >= t or (rule == "abs" and abs(z) >= t):
            return s
    return None


_SPIKE = [1.0, 1.01] * 6 + [1.5, 1.0, 1.0]
_NOISE = _RNG(2).normal(1.0, 0.05, 20).tolist()
check_stop_step = Exercise(
    "stop step: fn(entropies, rule, window, threshold) -> the first s whose check, "
    "seeing H_0 … H_{s−1}, fires, or None. Reference: sfpo.replay_stop_rule.",
    lambda h, rule, window, threshold: replay_stop_rule(h, rule, window, threshold)[1],
    lambda: [
        ("hand-made: a steady fall, rise (never fires)", _FALLING, "rise", 30, 1.0),
        ("hand-made: a steady fall, abs (fires at ω)", _FALLING, "abs", 30, 1.0),
        ("hand-made: a spike at index 12, rise, ω = 5", _SPIKE, "rise", 5, 1.0),
        ("random: noise, abs, ω = 5, τ = 1.5", _NOISE, "abs", 5, 1.5),
        ("degenerate: never before ω values exist", [1.0, 5.0, 1.0], "abs", 5, 0.1),
    ],
    [
        (
            lambda h, rule, w, t: _fires_at(h, rule, w, t, late=1, first=w - 1),
            "the check at step s happens BEFORE step s's update, so it sees only H_0 … "
            "H_{s−1}: one step later than the entropy's index.",
        ),
        (
            lambda h, rule, w, t: _fires_at(h, rule, w, t, first=1),
            "the rule cannot fire before ω entropies exist: z needs a full window.",
        ),
    ],
)


def _rollouts(algo: str, num_prompts: int, group_size: int, K: int) -> int:
    """The completions ``toy.run_toy`` samples in one outer step of ``algo``."""
    cfg = toy_config(num_prompts=num_prompts, group_size=group_size, num_fast_steps=K)
    return int(run_toy(cfg, algo=algo, num_steps=1).rollouts[1])


check_rollouts_per_step = Exercise(
    "rollouts per step: fn(algo, num_prompts, group_size, num_fast_steps) -> int: the "
    "completions an outer step samples (lookahead: K batches). Reference: toy.run_toy.",
    _rollouts,
    lambda: [
        ("hand-made: GRPO, 1 prompt × G = 8", "grpo", 1, 8, 3),
        ("hand-made: SFPO, K = 3", "sfpo", 1, 8, 3),
        ("hand-made: GRPO×(K+1), K = 3", "grpo_multi", 1, 8, 3),
        ("hand-made: Lookahead, K = 3", "lookahead", 1, 8, 3),
        ("random: Lookahead, 2 prompts × G = 4, K = 5", "lookahead", 2, 4, 5),
        ("degenerate: SFPO with K = 1, G = 2", "sfpo", 3, 2, 1),
    ],
    [
        (
            lambda algo, n, G, K: (K + 1) * n * G,
            "the extra passes REUSE the batch: they sample no new completions.",
        ),
        (
            lambda algo, n, G, K: n * G,
            "each of Lookahead's K inner steps samples a fresh batch: K batches.",
        ),
    ],
)


def _effective_alpha(algo: str, alpha: float, stopped: bool) -> float:
    """``sfpo/alpha`` of the outer-step controller for ``algo`` and ``alpha``."""
    stop_rule = StopRule("step", stop_step=0 if stopped else None)
    alpha = toy_config(algo=algo, alpha=alpha).effective_alpha  # 0 GRPO, 1 GRPO×(K+1)
    return start_outer_step(stop_rule, 0, alpha, sfpo=algo == "sfpo")["sfpo/alpha"]


check_effective_alpha = Exercise(
    "effective α: fn(algo, alpha, stopped) -> float: the α an outer step uses for "
    "grpo, grpo_multi or sfpo. Reference: the sfpo/alpha key of sfpo.start_outer_step.",
    _effective_alpha,
    lambda: [
        ("hand-made: SFPO, α = 0.8", "sfpo", 0.8, False),
        ("hand-made: GRPO ignores α", "grpo", 0.8, False),
        ("hand-made: GRPO×(K+1) is α = 1", "grpo_multi", 0.3, False),
        ("random: SFPO, α = 0.35", "sfpo", 0.35, False),
        ("degenerate: SFPO after the stop rule fired", "sfpo", 0.8, True),
        ("degenerate: GRPO×(K+1) has no stop rule", "grpo_multi", 0.8, True),
    ],
    [
        (
            lambda algo, alpha, stopped: _effective_alpha(algo, alpha, False),
            "once the stop rule fires, SFPO runs as GRPO, with α = 0.",
        ),
        (
            lambda algo, alpha, stopped: alpha,
            "GRPO is SFPO with α = 0 and GRPO×(K+1) with α = 1, whatever alpha says.",
        ),
        (
            lambda algo, alpha, stopped: (
                0.0 if stopped else _effective_alpha(algo, alpha, False)
            ),
            "the stop rule switches off SFPO only; GRPO×(K+1) has no stop rule.",
        ),
    ],
    atol=1e-9,
)
