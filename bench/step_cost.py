"""What one outer step costs: generation, old log-probs and update passes, GRPO vs SFPO.

    python bench/step_cost.py                 # SmolLM2-135M + LoRA, fp32 and 4-bit
    python bench/step_cost.py --quick         # tiny model, one step each (smoke test)

For each (algorithm, quantization), with algorithm GRPO, GRPO×(K+1) (the same K+1
passes as SFPO, without the reposition) and SFPO, it loads a fresh policy, then times
a few outer steps piece by piece with the library's own functions: ``generate_rollouts``, the
old log-prob forward (``fill_reference_logps``: none with one mini-batch) and ``sfpo.update`` (all
passes). It also reports peak memory, trainable parameters and the bytes SFPO adds:
two fp32 snapshots of the trainable vector (θ₀ and θ_K). Prints a table and writes
``bench/results/step_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from sfpo_edu.config import SFPOConfig  # noqa: E402
from sfpo_edu.losses import group_advantages  # noqa: E402
from sfpo_edu.models import cpu_features, trainable_parameter_count  # noqa: E402
from sfpo_edu.params import trainable_params  # noqa: E402
from sfpo_edu.rewards import score_completions  # noqa: E402
from sfpo_edu.rollouts import generate_rollouts  # noqa: E402
from sfpo_edu.sfpo import StopRule, make_optimizer, update  # noqa: E402
from sfpo_edu.tasks import load_task  # noqa: E402
from sfpo_edu.train import fill_reference_logps, load_policy_for, make_loss_fn  # noqa: E402


def measure(cfg: SFPOConfig, steps: int) -> dict[str, float]:
    policy = load_policy_for(cfg)
    params = trainable_params(policy.model)
    optimizer = make_optimizer(params, cfg)
    loss_fn = make_loss_fn(policy.model, cfg)
    stop_rule = StopRule.from_config(cfg)
    problems = load_task(cfg.task, steps * cfg.num_prompts, seed=cfg.seed)
    rows = []
    for step in range(steps):
        chunk = problems[step * cfg.num_prompts : (step + 1) * cfg.num_prompts]
        t0 = time.perf_counter()
        batch = generate_rollouts(
            policy, [p.prompt for p in chunk], group_size=cfg.group_size,
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=step,
        )  # fmt: skip
        t1 = time.perf_counter()
        answers = [p.answer for p in chunk for _ in range(cfg.group_size)]
        rewards, _ = score_completions(batch.completions, answers, cfg.reward_scheme)
        batch.advantages, _ = group_advantages(torch.tensor(rewards), cfg.group_size)
        t2 = time.perf_counter()
        fill_reference_logps(policy.model, batch, cfg)  # as the trainer does
        t3 = time.perf_counter()
        update(params, optimizer, batch, loss_fn, cfg, stop_rule, step)
        t4 = time.perf_counter()
        rows.append({"generate_s": t1 - t0, "reward_s": t2 - t1, "old_logps_s": t3 - t2,
                     "update_s": t4 - t3, "step_s": t4 - t0})  # fmt: skip
    # achieved GFLOP/s of one pass: the FLOPs of its forward and backward (counted by
    # torch), over the measured seconds per pass. Not for 4-bit: torch's counter does
    # not see bitsandbytes' 4-bit matrix products, and would count 40% too few FLOPs.
    gflop = None
    if cfg.quantization == "none":
        with FlopCounterMode(display=False) as counter:
            loss_fn(batch)[0].backward()
        optimizer.zero_grad(set_to_none=True)
        gflop = counter.get_total_flops() / 1e9
    trainable, total = trainable_parameter_count(policy.model)
    keep = rows[1:] if len(rows) > 1 else rows  # the first step warms caches up
    out = {k: statistics.median(r[k] for r in keep) for k in keep[0]}
    out["update_per_pass_s"] = out["update_s"] / cfg.num_passes
    out["passes"] = cfg.num_passes
    if gflop is not None:
        out["pass_gflop"] = gflop
        out["pass_gflop_per_s"] = gflop / out["update_per_pass_s"]
    out["dtype"] = str(policy.dtype).removeprefix("torch.")
    out["threads"] = torch.get_num_threads()
    out["trainable_params"] = trainable
    out["total_params"] = total
    out["snapshot_mb"] = 2 * 4 * trainable / 2**20  # θ₀ and θ_K in fp32
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["tokens_generated"] = float(batch.completion_mask.sum())
    del policy, optimizer
    return out


def gemm_peak_gflops(dtype: torch.dtype, n: int, seconds: float = 1.0) -> float:
    """Best GFLOP/s of an (n × n) @ (n × n) matrix product on this CPU, this dtype."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def arms(native_bf16: bool) -> list[str]:
    """algorithm/variant: fp32 and 4-bit for the three algorithms, SFPO with its θ_K
    diagnostics forward, and bf16 where this CPU computes it natively."""
    out = [f"{a}/{q}" for q in ("none", "4bit") for a in ("grpo", "grpo_multi", "sfpo")]
    out.append("sfpo_diagnostics/none")
    if native_bf16:
        out += ["grpo/bf16", "sfpo/bf16"]
    return out


def arm_config(arm: str, base: dict) -> SFPOConfig:
    algo, variant = arm.split("/")
    extra = {"diagnostics": True} if algo == "sfpo_diagnostics" else {}
    return SFPOConfig(
        algo=algo.removesuffix("_diagnostics"),
        quantization="4bit" if variant == "4bit" else "none",
        dtype="bfloat16" if variant == "bf16" else "float32",
        **(base | extra),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model smoke test")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out-dir", default=None, help="default: bench/results")
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # internal: one arm, JSON out
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    base = dict(num_prompts=2, group_size=8, max_new_tokens=32, stop_rule="never",
                diagnostics=False, num_threads=cores)  # fmt: skip
    quants = ["none", "4bit"]
    steps = args.steps
    if args.quick:
        base |= dict(model="tiny", num_prompts=2, group_size=4, max_new_tokens=8)
        steps = 1
    if args.arm:  # child process: measure one arm, print its JSON as the last line
        torch.set_num_threads(cores)
        print(json.dumps(measure(arm_config(args.arm, base), steps)))
        return
    torch.set_num_threads(cores)
    native = cpu_features()["native_bf16"]
    gemm = {"float32": gemm_peak_gflops(torch.float32, 2048)}
    # emulated bf16 is so slow here that a large product would take minutes
    gemm["bfloat16"] = gemm_peak_gflops(torch.bfloat16, 2048 if native else 256)
    print(f"GEMM peak on {cores} threads: fp32 {gemm['float32']:.0f} GFLOP/s, bf16 "
          f"{gemm['bfloat16']:.1f} GFLOP/s ({'native' if native else 'emulated'})")  # fmt: skip
    results = {}
    for arm in arms(native):
        # a fresh process per arm, so each peak memory figure is that arm's own
        print(f"measuring {arm} ...", flush=True)
        cmd = [sys.executable, __file__, "--arm", arm, "--steps", str(args.steps)]
        cmd += ["--quick"] if args.quick else []
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[arm] = json.loads(out.stdout.strip().splitlines()[-1])
    head = (f"{'arm':<22}{'generate':>9}{'old lp':>8}{'update':>8}{'/pass':>7}{'step':>7}"
            f"{'GFLOP/s':>9}{'peak MB':>9}")  # fmt: skip
    print("\n" + head + "\n" + "-" * len(head))
    for name, r in results.items():
        print(f"{name:<22}{r['generate_s']:>9.2f}{r['old_logps_s']:>8.2f}{r['update_s']:>8.2f}"
              f"{r['update_per_pass_s']:>7.2f}{r['step_s']:>7.2f}{r.get('pass_gflop_per_s', float('nan')):>9.1f}"
              f"{r['peak_rss_mb']:>9.0f}")  # fmt: skip
    g = results["grpo/none"]["pass_gflop_per_s"]
    fp32_share = g / gemm["float32"]
    print(
        f"an fp32 update pass runs at {g:.0f} "
        f"GFLOP/s = {fp32_share:.0%} of this CPU's fp32 GEMM peak"
    )
    diag = results["sfpo_diagnostics/none"]["step_s"] / results["sfpo/none"]["step_s"]
    print(f"SFPO's θ_K diagnostics forward makes its step {diag:.2f}x as long")
    summary = {}
    for q in quants:
        g, m, s = (results[f"{a}/{q}"] for a in ("grpo", "grpo_multi", "sfpo"))
        summary[q] = {
            "sfpo_over_grpo_step_time": s["step_s"] / g["step_s"],
            "sfpo_over_grpo_multi_step_time": s["step_s"] / m["step_s"],
            "sfpo_snapshot_mb": s["snapshot_mb"],
            # the measure: SFPO's extra bytes against GRPO's peak memory
            "snapshot_share_of_peak": s["snapshot_mb"] / g["peak_rss_mb"],
            "peak_rss_ratio": s["peak_rss_mb"] / g["peak_rss_mb"],
            "peak_rss_ratio_vs_grpo_multi": s["peak_rss_mb"] / m["peak_rss_mb"],
        }
        print(f"{q}: SFPO step / GRPO step = {summary[q]['sfpo_over_grpo_step_time']:.2f}x "
              f"(/ GRPO×(K+1) step = {summary[q]['sfpo_over_grpo_multi_step_time']:.2f}x); "
              f"SFPO snapshots {s['snapshot_mb']:.1f} MB = "
              f"{100 * summary[q]['snapshot_share_of_peak']:.2f}% of GRPO's peak RSS; "
              f"peak RSS GRPO {g['peak_rss_mb']:.0f} MB, GRPO×(K+1) {m['peak_rss_mb']:.0f} MB, "
              f"SFPO {s['peak_rss_mb']:.0f} MB")  # fmt: skip
    cpu = {
        "gemm_peak_gflops": gemm,
        "native_bf16": native,
        "fp32_pass_share_of_gemm_peak": fp32_share,  # of GRPO's fp32 pass
        "sfpo_diagnostics_step_ratio": diag,
    }
    if not native:
        cpu["bf16"] = ("not measured: this CPU has no native bf16 (AMX or AVX512-BF16), "
                       "and its emulated bf16 GEMM peak is far below fp32's")  # fmt: skip
    write_result("step_cost" + ("_quick" if args.quick else ""),
                 {"config": base, "steps": steps, "results": results, "summary": summary,
                  "cpu": cpu}, args.out_dir)  # fmt: skip


if __name__ == "__main__":
    main()
