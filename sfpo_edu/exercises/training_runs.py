"""Exercises on training runs: a trailing moving average, optimizer steps and rollouts
per outer step, the effective α, the stop rule's z-score and step (notebooks 05-07)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sfpo_edu.exercises.grader import Case, Exercise, gen, table
from sfpo_edu.plotting import smooth_curve
from sfpo_edu.sfpo import StopRule, update
from sfpo_edu.toy import ToyBandit, run_toy, toy_config


def _average_cases() -> list[Case]:
    rng = np.random.default_rng(0)
    return table([
        ("hand-made: window 2", np.array([0.0, 1.0, 0.0, 1.0]), 2),
        ("hand-made: window 3", np.array([3.0, 6.0, 9.0, 0.0, 0.0]), 3),
        ("random: 30 rewards, window 5", rng.random(30), 5),
        ("degenerate: window 1 changes nothing", rng.random(6), 1),
        ("degenerate: window longer than the data", np.array([1.0, 2.0, 3.0]), 10),
    ])  # fmt: skip


_AVERAGE_MISTAKES = [
    (lambda y, w: np.convolve(y, np.ones(w) / w, mode="same"),
     "np.convolve(mode='same') is centred and pads with zeros; the curve must be "
     "TRAILING (only past points) and average fewer points at the start."),
    (lambda y, w: np.convolve(y, np.ones(w) / w)[: len(y)],
     "the first window − 1 points average only the points so far."),
    (lambda y, w: np.convolve(y, np.ones(w) / w, mode="valid"),
     "mode='valid' drops the first points; keep one output per input."),
]  # fmt: skip
check_moving_average = Exercise(
    "moving average",
    task="""``fn(y, window) -> smoothed``: trailing moving average of a 1-D array, the
    same length as ``y``; point i averages y[max(0, i − window + 1) : i + 1] (shorter
    at the start). Reference: ``plotting.smooth_curve``.""",
    reference=smooth_curve,
    cases=_average_cases,
    mistakes=_AVERAGE_MISTAKES,
    atol=1e-9,
)


def _toy_update(algo: str, stopped: bool, **fields: Any) -> tuple[dict, int]:
    """One ``sfpo.update`` of the toy (the stop rule fired before it if ``stopped``):
    its metrics and the number of optimizer steps it took."""
    stop = {"stop_rule": "step", "stop_step": 0} if stopped else {}
    cfg = toy_config(algo=algo, **fields, **stop)
    bandit, steps = ToyBandit(), []
    optimizer = torch.optim.SGD([bandit.theta], lr=cfg.lr)
    optimizer.register_step_post_hook(lambda *_: steps.append(1))
    batch = bandit.sample_batch(cfg.num_prompts, cfg.group_size, gen(0))
    loss_fn, stop_rule = bandit.make_loss_fn(cfg), StopRule.from_config(cfg)
    metrics = update([bandit.theta], optimizer, batch, loss_fn, cfg, stop_rule, step=0)
    return metrics, len(steps)


def _optimizer_steps(algo: str, K: int, M: int, stopped: bool) -> int:
    """Optimizer steps of one ``sfpo.update`` on a toy batch of M groups of 2."""
    fields = dict(num_fast_steps=K, num_minibatches=M, num_prompts=M, group_size=2)
    return _toy_update(algo, stopped, **fields)[1]


_STEPS_MISTAKES = [
    (lambda algo, K, M, stopped: {"grpo": 1, "grpo_multi": K + 1, "sfpo": 1 if stopped else K + 1}[algo],
     "each pass takes one optimizer step PER MINI-BATCH."),
    (lambda algo, K, M, stopped: {"grpo": 1, "grpo_multi": K + 1, "sfpo": K + 1}[algo] * M,
     "once stopped, SFPO runs with α = 0 and skips the K fast passes."),
    (lambda algo, K, M, stopped: {"grpo": 1, "grpo_multi": K + 1, "sfpo": 1 if stopped else K}[algo] * M,
     "K fast passes, then ONE slow pass: K + 1 passes in all."),
]  # fmt: skip
check_optimizer_steps = Exercise(
    "optimizer steps per batch",
    task="""``fn(algo, num_fast_steps, num_minibatches, stopped) -> int``: optimizer
    steps one outer step takes on its rollout batch, for ``algo`` in grpo, grpo_multi,
    sfpo; ``stopped`` means the stop rule has switched SFPO off. Reference: counting
    ``optimizer.step()`` calls inside ``sfpo.update`` on the toy.""",
    reference=_optimizer_steps,
    cases=lambda: table(
        [
            ("hand-made: GRPO", "grpo", 3, 1, False),
            ("hand-made: GRPO×(K+1), K = 3", "grpo_multi", 3, 1, False),
            ("hand-made: SFPO, K = 3", "sfpo", 3, 1, False),
            (
                "hand-made: SFPO, K = 3, 4 mini-batches (the reference code)",
                "sfpo",
                3,
                4,
                False,
            ),
            ("random: SFPO, K = 5, 2 mini-batches", "sfpo", 5, 2, False),
            ("degenerate: SFPO after the stop rule fired", "sfpo", 3, 2, True),
            ("degenerate: GRPO, 'stopped' changes nothing", "grpo", 3, 2, True),
        ]
    ),
    mistakes=_STEPS_MISTAKES,
)


def _z(latest: float, window: Sequence[float], ddof: int = 0) -> float:
    """(latest − mean) / (std + 1e-9) over ``window``."""
    return (latest - np.mean(window)) / (np.std(window, ddof=ddof) + 1e-9)


def _zscore_cases() -> list[Case]:
    rng = np.random.default_rng(1)
    return table([
        ("hand-made: [1, 2, 3], ω = 3", [1.0, 2.0, 3.0], 3),
        ("hand-made: a spike after a flat stretch", [1.0] * 5 + [1.5], 6),
        ("hand-made: a steady fall, ω = 30 (|z| ≈ 1.68)",
         [2.0 - 0.01 * i for i in range(40)], 30),
        ("random: noise, ω = 10", list(rng.normal(1.0, 0.1, 25)), 10),
        ("degenerate: fewer than ω values", [1.0, 0.9], 3),
        ("degenerate: a constant entropy (std 0)", [0.7] * 5, 5),
    ])  # fmt: skip


_ZSCORE_MISTAKES = [
    (lambda h, w: _z(h[-1], h[-w:], ddof=1) if len(h) >= w else None,
     "use the POPULATION std (statistics.pstdev, np.std with ddof=0)."),
    (lambda h, w: _z(h[-1], h[-w - 1 : -1]) if len(h) > w else None,
     "the window INCLUDES the latest value: H[-ω:]."),
    (lambda h, w: abs(_z(h[-1], h[-w:])) if len(h) >= w else None,
     "return the signed z; the 'abs' rule takes |z| itself."),
    (lambda h, w: _z(h[-1], h[-w:]),
     "the rule cannot judge before ω entropies exist: return None."),
]  # fmt: skip
check_entropy_zscore = Exercise(
    "entropy z-score",
    task="""``fn(entropies, window) -> z or None``: z = (H[-1] − mean(H[-ω:])) /
    (std(H[-ω:]) + 1e-9), POPULATION std, the window including the latest value; None
    when fewer than ω entropies exist. Reference: ``sfpo.StopRule.zscore``.""",
    reference=lambda h, w: StopRule(window=w, entropies=list(h)).zscore(),
    cases=_zscore_cases,
    mistakes=_ZSCORE_MISTAKES,
    atol=1e-6,
)


def _first_fire(entropies: list[float], rule: str, window: int, threshold: float) -> int | None:  # fmt: skip
    """The step at which ``StopRule`` fires, driven as ``sfpo.update`` drives it."""
    stop = StopRule(rule=rule, window=window, threshold=threshold)
    for s in range(len(entropies) + 1):
        if stop.check(s):
            return s
        if s < len(entropies):
            stop.record(entropies[s])
    return None


def _stop_cases() -> list[Case]:
    rng = np.random.default_rng(2)
    falling = [2.0 - 0.01 * i for i in range(40)]
    spike = [1.0 + 0.01 * (i % 2) for i in range(12)] + [1.5, 1.0, 1.0]
    return table([
        ("hand-made: a steady fall, rise", falling, "rise", 30, 1.0),
        ("hand-made: a steady fall, abs (fires as soon as ω values exist)", falling,
         "abs", 30, 1.0),
        ("hand-made: a spike at index 12, rise, ω = 5", spike, "rise", 5, 1.0),
        ("random: noise, abs, ω = 5, τ = 1.5", list(rng.normal(1.0, 0.05, 20)), "abs",
         5, 1.5),
        ("degenerate: never before ω values exist", [1.0, 5.0, 1.0], "abs", 5, 0.1),
    ])  # fmt: skip


def _fires(z: float, rule: str, threshold: float) -> bool:
    return z >= threshold or (rule == "abs" and abs(z) >= threshold)


_STOP_MISTAKES = [
    (lambda h, rule, w, t: next((s for s in range(w - 1, len(h))
                                 if _fires(_z(h[s], h[s - w + 1 : s + 1]), rule, t)), None),
     "the check at step s happens BEFORE step s's update, so it sees only H_0 … "
     "H_{s−1}: one step later than the entropy's index."),
    (lambda h, rule, w, t: next((s for s in range(1, len(h) + 1)
                                 if _fires(_z(h[s - 1], h[max(0, s - w) : s]), rule, t)), None),
     "the rule cannot fire before ω entropies are recorded."),
]  # fmt: skip
check_stop_step = Exercise(
    "stop step",
    task="""``fn(entropies, rule, window, threshold) -> step or None``: the first outer
    step s at which the stop rule fires, where the check at step s sees the entropies
    H_0 … H_{s−1} of the earlier steps (s = 0 … len(entropies)); ``rule`` is ``rise``
    (z ≥ τ) or ``abs`` (|z| ≥ τ). None if it never fires. Reference: ``StopRule``'s
    ``check`` / ``record`` as ``sfpo.update`` calls them.""",
    reference=_first_fire,
    cases=_stop_cases,
    mistakes=_STOP_MISTAKES,
)


check_rollouts_per_step = Exercise(
    "rollouts per step",
    task="""``fn(algo, num_prompts, group_size, num_fast_steps) -> int``: completions
    one outer step samples, for ``algo`` in grpo, grpo_multi, sfpo, lookahead (whose K
    inner steps each need a FRESH batch). Reference: ``toy.run_toy``'s rollout count.""",
    reference=lambda algo, n, G, K: int(
        run_toy(
            toy_config(num_prompts=n, group_size=G, num_fast_steps=K),
            algo=algo,
            num_steps=1,
        ).rollouts[1]
    ),
    cases=lambda: table(
        [
            ("hand-made: GRPO, 1 prompt × G = 8", "grpo", 1, 8, 3),
            ("hand-made: SFPO, K = 3", "sfpo", 1, 8, 3),
            ("hand-made: GRPO×(K+1)", "grpo_multi", 1, 8, 3),
            ("hand-made: Lookahead, K = 3", "lookahead", 1, 8, 3),
            ("random: Lookahead, 2 prompts × G = 4, K = 5", "lookahead", 2, 4, 5),
            ("degenerate: SFPO with K = 1, G = 2", "sfpo", 3, 2, 1),
        ]
    ),
    mistakes=[
        (
            lambda algo, n, G, K: (K + 1) * n * G,
            "extra passes REUSE the batch: no new completions are sampled.",
        ),
        (
            lambda algo, n, G, K: n * G,
            "each Lookahead inner step samples a fresh batch: K batches.",
        ),
    ],  # fmt: skip
)


def _alpha_of(algo: str, alpha: float) -> float:
    return {"grpo": 0.0, "grpo_multi": 1.0}.get(algo, alpha)


check_effective_alpha = Exercise(
    "effective α",
    task="""``fn(algo, alpha, stopped) -> float``: the reposition coefficient an outer
    step really uses for ``algo`` in grpo, grpo_multi, sfpo, given the configured
    ``alpha`` and whether the stop rule has fired. Reference: the ``sfpo/alpha``
    metric that ``sfpo.update`` logs.""",
    reference=lambda algo, alpha, stopped: _toy_update(algo, stopped, alpha=alpha)[0][
        "sfpo/alpha"
    ],
    cases=lambda: table(
        [
            ("hand-made: SFPO, α = 0.8", "sfpo", 0.8, False),
            ("hand-made: GRPO ignores α", "grpo", 0.8, False),
            ("hand-made: GRPO×(K+1) is α = 1", "grpo_multi", 0.3, False),
            ("random: SFPO, α = 0.35", "sfpo", 0.35, False),
            ("degenerate: SFPO after the stop rule fired", "sfpo", 0.8, True),
            ("degenerate: GRPO×(K+1) has no stop rule", "grpo_multi", 0.8, True),
        ]
    ),
    mistakes=[
        (
            lambda algo, alpha, stopped: _alpha_of(algo, alpha),
            "once the stop rule fires, SFPO runs as GRPO: α = 0.",
        ),
        (
            lambda algo, alpha, stopped: alpha,
            "GRPO is the α = 0 case and GRPO×(K+1) the α = 1 case of SFPO.",
        ),
        (
            lambda algo, alpha, stopped: 0.0 if stopped else _alpha_of(algo, alpha),
            "the stop rule switches off SFPO only; GRPO×(K+1) keeps its passes.",
        ),
    ],  # fmt: skip
    atol=1e-9,
)
