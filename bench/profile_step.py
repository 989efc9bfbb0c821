"""Where the time of a GRPO step goes: ``torch.profiler`` over generation and one update.

    python bench/profile_step.py            # SmolLM2-135M + LoRA, the demo's batch, fp32
    python bench/profile_step.py --quick    # tiny model (smoke test)

Loads the policy as the trainer does, warms up with one step, then profiles one
``generate_rollouts`` call and one GRPO update pass separately. For each it prints and
records the operators with the most self CPU time, grouped by input shapes (so the
matrix products of the MLP, the attention projections, the LoRA adapters and the
vocabulary head show apart), with their calls and share of the phase. Writes
``bench/results/profile_step.json``. Without the profiler it then times the update
pass's forward + backward against the model's own part of it, which bounds what
work on the logits can save. Run it on an idle machine: the shares are what
is being measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from sfpo_edu.config import SFPOConfig  # noqa: E402
from sfpo_edu.logprobs import _completion_logits, per_token_logps  # noqa: E402
from sfpo_edu.losses import group_advantages  # noqa: E402
from sfpo_edu.params import trainable_params  # noqa: E402
from sfpo_edu.rewards import score_completions  # noqa: E402
from sfpo_edu.rollouts import generate_rollouts  # noqa: E402
from sfpo_edu.sfpo import StopRule, make_optimizer, update  # noqa: E402
from sfpo_edu.tasks import load_task  # noqa: E402
from sfpo_edu.train import load_policy_for, make_loss_fn  # noqa: E402


def top_ops(prof: Any, rows: int) -> list[dict[str, Any]]:
    """The ``rows`` operators (by input shapes) with the most self CPU time."""
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    events = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]
    return [
        {
            "op": e.key,
            "shapes": str(e.input_shapes),
            "calls": e.count,
            "self_s": e.self_cpu_time_total / 1e6,
            "share": e.self_cpu_time_total / 1e6 / total,
        }
        for e in events
    ]


def split_pass(
    model: torch.nn.Module, batch: Any, temperature: float, repeats: int = 5
) -> dict[str, float]:
    """Median seconds of one pass's forward + backward (``per_token_logps`` with the
    entropy, as the loss reads it) and of the model's part alone: its forward to the
    completion logits and its backward from a given logits gradient. Alternating, no
    profiler."""

    def full() -> None:
        logps, entropy = per_token_logps(
            model, batch, temperature=temperature, with_entropy=True
        )
        (logps.sum() + entropy.sum()).backward()

    def model_only() -> None:
        logits = _completion_logits(model, batch)  # (B, T, V)
        logits.backward(torch.zeros_like(logits))

    times: dict[Any, list[float]] = {full: [], model_only: []}
    for _ in range(repeats + 1):  # alternating, the first round warms up
        for fn, seconds in times.items():
            model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - t)
    model.zero_grad(set_to_none=True)
    pass_all, model_all = (seconds[1:] for seconds in times.values())
    pass_s, model_s = statistics.median(pass_all), statistics.median(model_all)
    return {
        "pass_s": pass_s,
        "model_s": model_s,
        "model_share": model_s / pass_s,
        "pass_s_each": pass_all,
        "model_s_each": model_all,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model smoke test")
    parser.add_argument("--rows", type=int, default=12, help="operators per phase")
    parser.add_argument("--out-dir", default=None, help="default: bench/results")
    args = parser.parse_args()
    base = dict(
        num_prompts=2,
        group_size=8,
        max_new_tokens=32,
        stop_rule="never",
        diagnostics=False,
        num_threads=torch.get_num_threads(),
    )
    if args.quick:
        base |= dict(model="tiny", group_size=4, max_new_tokens=8)
    cfg = SFPOConfig(algo="grpo", **base)
    policy = load_policy_for(cfg)
    params = trainable_params(policy.model)
    optimizer, loss_fn = make_optimizer(params, cfg), make_loss_fn(policy.model, cfg)
    problems = load_task(cfg.task, 2 * cfg.num_prompts, seed=cfg.seed)
    phases: dict[str, Any] = {}
    for step in range(2):  # step 0 warms up; step 1 is profiled
        chunk = problems[step * cfg.num_prompts : (step + 1) * cfg.num_prompts]
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            t = time.perf_counter()
            batch = generate_rollouts(
                policy,
                [p.prompt for p in chunk],
                group_size=cfg.group_size,
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                seed=step,
            )
            wall = time.perf_counter() - t
        phases["generate"] = {"wall_s": wall, "ops": top_ops(prof, args.rows)}
        answers = [p.answer for p in chunk for _ in range(cfg.group_size)]
        rewards, _ = score_completions(batch.completions, answers, cfg.reward_scheme)
        batch.advantages, _ = group_advantages(torch.tensor(rewards), cfg.group_size)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            t = time.perf_counter()
            update(
                params, optimizer, batch, loss_fn, cfg, StopRule.from_config(cfg), step
            )
            wall = time.perf_counter() - t
        phases["update_pass"] = {"wall_s": wall, "ops": top_ops(prof, args.rows)}
    phases["update_pass"]["split"] = split_pass(policy.model, batch, cfg.temperature)
    for name, phase in phases.items():
        print(
            f"\n{name}: {phase['wall_s']:.2f} s under the profiler "
            f"({torch.get_num_threads()} threads)"
        )
        print(f"{'share':>6} {'self s':>7} {'calls':>6}  operator  input shapes")
        for op in phase["ops"]:
            print(
                f"{op['share']:>6.1%} {op['self_s']:>7.3f} {op['calls']:>6}  "
                f"{op['op']}  {op['shapes'][:70]}"
            )
    split = phases["update_pass"]["split"]
    print(
        f"\nupdate pass without the profiler: {split['pass_s']:.2f} s "
        f"({min(split['pass_s_each']):.2f}-{max(split['pass_s_each']):.2f}); the "
        f"model's own forward + backward: {split['model_s']:.2f} s "
        f"({min(split['model_s_each']):.2f}-{max(split['model_s_each']):.2f}), "
        f"{split['model_share']:.0%} of it; "
        "the rest is the vocabulary-sized work on the logits (temperature, "
        "log-softmax, entropy) and the loss"
    )
    name = "profile_step" + ("_quick" if args.quick else "")
    write_result(
        name,
        {"config": base, "tokens": int(batch.completion_mask.sum()), "phases": phases},
        args.out_dir,
    )


if __name__ == "__main__":
    main()
