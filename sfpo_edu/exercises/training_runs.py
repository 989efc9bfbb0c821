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
    "moving average: fn(y, window) -> smoothed: trailing moving average of a 1-D "
    "array, as long as y; point i averages y[max(0, i − window + 1) : i + 1]. "
    "Reference: plotting.smooth_curve.",
    smooth_curve,
    lambda: [
        ("hand-made: window 2", np.array([0.0, 1.0, 0.0, 1.0]), 2),
        ("hand-made: window 3", np.array([3.0, 6.0, 9.0, 0.0, 0.0]), 3),
        ("random: 30 rewards, window 5", _RNG(0).random(30), 5),
        ("degenerate: window 1 changes nothing", _RNG(1).random(6), 1),
        ("degenerate: window longer than the data", np.array([1.0, 2.0, 3.0]), 10),
    ],
    {
        "np.convolve(mode='same') is centred and pads with zeros; the curve must be "
        "TRAILING (only past points), averaging fewer points at the start.": lambda y, w: (
            np.convolve(y, np.ones(w) / w, mode="same")
        ),
        "the first window − 1 points average only the points so far.": lambda y, w: (
            np.convolve(y, np.ones(w) / w)[: len(y)]
        ),
        "mode='valid' drops the first points; keep one output per input.": lambda y, w: (
            np.convolve(y, np.ones(w) / w, mode="valid")
        ),
    },
    atol=1e-9,
)


def _optimizer_steps(algo: str, K: int, M: int, stopped: bool) -> int:
    """optimizer.step() calls in one ``sfpo.update`` of the toy with K fast steps and M
    mini-batches (the stop rule fired before it if ``stopped``)."""
    stop = {"stop_rule": "step", "stop_step": 0} if stopped else {}
    cfg = toy_config(
        algo=algo,
        num_fast_steps=K,
        num_minibatches=M,
        num_prompts=M,
        group_size=2,
        **stop,
    )
    bandit, steps = ToyBandit(), []
    optimizer = torch.optim.SGD([bandit.theta], lr=cfg.lr)
    optimizer.register_step_post_hook(lambda *_: steps.append(1))
    batch = bandit.sample_batch(cfg.num_prompts, cfg.group_size, gen(0))
    loss_fn, stop_rule = bandit.make_loss_fn(cfg), StopRule.from_config(cfg)
    update([bandit.theta], optimizer, batch, loss_fn, cfg, stop_rule, step=0)
    return len(steps)


def _passes(algo: str, K: int, stopped: bool, stop_counts: bool = True) -> int:
    """Passes over the batch: K + 1 for GRPO×(K+1) and active SFPO, else 1."""
    return (
        1 if algo == "grpo" or (algo == "sfpo" and stopped and stop_counts) else K + 1
    )


check_optimizer_steps = Exercise(
    "optimizer steps per batch: fn(algo, num_fast_steps, num_minibatches, stopped) -> "
    "int: optimizer steps of one outer step for algo grpo, grpo_multi or sfpo; "
    "stopped: the stop rule switched SFPO off. Reference: optimizer.step() calls in "
    "sfpo.update on the toy.",
    _optimizer_steps,
    lambda: [
        ("hand-made: GRPO", "grpo", 3, 1, False),
        ("hand-made: GRPO×(K+1), K = 3", "grpo_multi", 3, 1, False),
        ("hand-made: SFPO, K = 3", "sfpo", 3, 1, False),
        ("hand-made: SFPO, K = 3, 4 mini-batches", "sfpo", 3, 4, False),
        ("random: SFPO, K = 5, 2 mini-batches", "sfpo", 5, 2, False),
        ("degenerate: SFPO after the stop rule fired", "sfpo", 3, 2, True),
        ("degenerate: GRPO, 'stopped' changes nothing", "grpo", 3, 2, True),
    ],
    {
        "each pass takes one optimizer step PER MINI-BATCH.": lambda a, K, M, s: (
            _passes(a, K, s)
        ),
        "once stopped, SFPO runs with α = 0 and skips the K fast passes.": lambda a, K, M, s: (
            _passes(a, K, s, stop_counts=False) * M
        ),
        "K fast passes, then ONE slow pass: K + 1 passes in all.": lambda a, K, M, s: (
            _passes(a, K, s) * M - (a == "sfpo" and not s) * M
        ),
    },
)


def _z(latest: float, window: Sequence[float], ddof: int = 0) -> float:
    """(latest − mean) / (std + 1e-9) over ``window``."""
    return (latest - np.mean(window)) / (np.std(window, ddof=ddof) + 1e-9)


_FALLING = [2.0 - 0.01 * i for i in range(40)]
check_entropy_zscore = Exercise(
    "entropy z-score: fn(entropies, window) -> z or None: z = (H[-1] − mean(H[-ω:])) / "
    "(std(H[-ω:]) + 1e-9), POPULATION std, the window including the latest value; None "
    "when fewer than ω entropies exist. Reference: sfpo.StopRule.zscore.",
    lambda h, w: StopRule(window=w, entropies=list(h)).zscore(),
    lambda: [
        ("hand-made: [1, 2, 3], ω = 3", [1.0, 2.0, 3.0], 3),
        ("hand-made: a spike after a flat stretch", [1.0] * 5 + [1.5], 6),
        ("hand-made: a steady fall, ω = 30 (|z| ≈ 1.68)", _FALLING, 30),
        ("random: noise, ω = 10", list(_RNG(1).normal(1.0, 0.1, 25)), 10),
        ("degenerate: fewer than ω values", [1.0, 0.9], 3),
        ("degenerate: a constant entropy (std 0)", [0.7] * 5, 5),
    ],
    {
        "use the POPULATION std (statistics.pstdev, np.std with ddof=0).": lambda h, w: (
            _z(h[-1], h[-w:], ddof=1) if len(h) >= w else None
        ),
        "the window INCLUDES the latest value: H[-ω:].": lambda h, w: (
            _z(h[-1], h[-w - 1 : -1]) if len(h) > w else None
        ),
        "return the signed z; the 'abs' rule takes |z| itself.": lambda h, w: (
            abs(_z(h[-1], h[-w:])) if len(h) >= w else None
        ),
        "the rule cannot judge before ω entropies exist: return None.": lambda h, w: _z(
            h[-1], h[-w:]
        ),
    },
    atol=1e-6,
)


def _fires_at(
    h: list[float], rule: str, w: int, t: float, late: int = 0, first: int = 0
) -> int | None:
    """The first s whose z of H[s − 1 + late] in its window fires (from ``first``)."""
    for s in range(first, len(h) + 1 - late):
        z = _z(h[s - 1 + late], h[max(0, s - w + late) : s + late])
        if z >= t or (rule == "abs" and abs(z) >= t):
            return s
    return None


_SPIKE = [1.0, 1.01] * 6 + [1.5, 1.0, 1.0]
_NOISE = list(_RNG(2).normal(1.0, 0.05, 20))
check_stop_step = Exercise(
    "stop step: fn(entropies, rule, window, threshold) -> step or None: the first "
    "outer step s (0 … len(entropies)) whose check, seeing H_0 … H_{s−1}, fires: z ≥ τ "
    "(rule rise) or |z| ≥ τ (abs); None if none. Reference: sfpo.replay_stop_rule.",
    lambda h, rule, window, threshold: replay_stop_rule(h, rule, window, threshold)[1],
    lambda: [
        ("hand-made: a steady fall, rise", _FALLING, "rise", 30, 1.0),
        ("hand-made: a steady fall, abs (fires at ω)", _FALLING, "abs", 30, 1.0),
        ("hand-made: a spike at index 12, rise, ω = 5", _SPIKE, "rise", 5, 1.0),
        ("random: noise, abs, ω = 5, τ = 1.5", _NOISE, "abs", 5, 1.5),
        ("degenerate: never before ω values exist", [1.0, 5.0, 1.0], "abs", 5, 0.1),
    ],
    {
        "the check at step s happens BEFORE step s's update, so it sees only H_0 … "
        "H_{s−1}: one step later than the entropy's index.": lambda h, rule, w, t: (
            _fires_at(h, rule, w, t, late=1, first=w - 1)
        ),
        "the rule cannot fire before ω entropies are recorded.": lambda h, rule, w, t: (
            _fires_at(h, rule, w, t, first=1)
        ),
    },
)
check_rollouts_per_step = Exercise(
    "rollouts per step: fn(algo, num_prompts, group_size, num_fast_steps) -> int: "
    "completions one outer step samples, for algo grpo, grpo_multi, sfpo or lookahead "
    "(whose K inner steps each need a FRESH batch). Reference: toy.run_toy's rollout "
    "count.",
    lambda algo, n, G, K: int(
        run_toy(
            toy_config(num_prompts=n, group_size=G, num_fast_steps=K),
            algo=algo,
            num_steps=1,
        ).rollouts[1]
    ),
    lambda: [
        ("hand-made: GRPO, 1 prompt × G = 8", "grpo", 1, 8, 3),
        ("hand-made: SFPO, K = 3", "sfpo", 1, 8, 3),
        ("hand-made: GRPO×(K+1)", "grpo_multi", 1, 8, 3),
        ("hand-made: Lookahead, K = 3", "lookahead", 1, 8, 3),
        ("random: Lookahead, 2 prompts × G = 4, K = 5", "lookahead", 2, 4, 5),
        ("degenerate: SFPO with K = 1, G = 2", "sfpo", 3, 2, 1),
    ],
    {
        "extra passes REUSE the batch: no new completions are sampled.": lambda a, n, G, K: (
            (K + 1) * n * G
        ),
        "each Lookahead inner step samples a fresh batch: K batches.": lambda a, n, G, K: (
            n * G
        ),
    },
)


def _effective_alpha(algo: str, alpha: float, stopped: bool) -> float:
    """``sfpo/alpha`` of the outer-step controller for ``algo``'s α (0 for GRPO, 1 for
    GRPO×(K+1)), its stop rule fired if ``stopped``."""
    stop_rule = StopRule("step", stop_step=0 if stopped else None)
    alpha = toy_config(algo=algo, alpha=alpha).effective_alpha
    return start_outer_step(stop_rule, 0, alpha, sfpo=algo == "sfpo")["sfpo/alpha"]


check_effective_alpha = Exercise(
    "effective α: fn(algo, alpha, stopped) -> float: the reposition coefficient an "
    "outer step uses for algo grpo, grpo_multi or sfpo, given alpha and whether the "
    "stop rule fired. Reference: the sfpo/alpha key of sfpo.start_outer_step.",
    _effective_alpha,
    lambda: [
        ("hand-made: SFPO, α = 0.8", "sfpo", 0.8, False),
        ("hand-made: GRPO ignores α", "grpo", 0.8, False),
        ("hand-made: GRPO×(K+1) is α = 1", "grpo_multi", 0.3, False),
        ("random: SFPO, α = 0.35", "sfpo", 0.35, False),
        ("degenerate: SFPO after the stop rule fired", "sfpo", 0.8, True),
        ("degenerate: GRPO×(K+1) has no stop rule", "grpo_multi", 0.8, True),
    ],
    {
        "once the stop rule fires, SFPO runs as GRPO: α = 0.": lambda a, alpha, s: (
            _effective_alpha(a, alpha, False)
        ),
        "GRPO is the α = 0 case and GRPO×(K+1) the α = 1 case of SFPO.": lambda a, alpha, s: (
            alpha
        ),
        "the stop rule switches off SFPO only; GRPO×(K+1) keeps its passes.": (
            lambda a, alpha, s: 0.0 if s else _effective_alpha(a, alpha, False)
        ),
    },
    atol=1e-9,
)
