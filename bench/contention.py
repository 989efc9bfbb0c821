"""Two runs on the same cores: how much slower is each step than alone?

    python bench/contention.py          # SmolLM2-135M + LoRA, the demo's batch
    python bench/contention.py --quick  # tiny model, two steps (smoke test)

A student often trains in one process while a notebook kernel computes in another.
Each arm starts fresh processes that train GRPO on the demo's batch (2 prompts × G = 8,
32 new tokens) and report their step times (``time/step_s``) and thread counts:

* ``alone``: one run, threads chosen by ``num_threads=0`` (adaptive, the default);
* ``pair_adaptive``: two such runs side by side; each starts with every core and drops
  to its share once the 1-minute load average shows the other run, so the steps
  after the first ``--settle-s`` seconds are the ones that count;
* ``pair_fixed``: two runs side by side that keep every core (``num_threads`` = the
  core count, the behaviour before adaptive threads).

Prints each arm's median step time over its settled steps and the ratio to ``alone``,
and writes ``bench/results/contention.json``. Measure on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def child(args: argparse.Namespace) -> None:
    """One run: print one JSON line per step (seconds since start, step time, threads)."""
    from sfpo_edu.config import SFPOConfig
    from sfpo_edu.train import Trainer

    cfg = SFPOConfig(algo="grpo", num_prompts=2, group_size=8, max_new_tokens=32,
                     eval_every=0, save_every=0, num_steps=args.steps,
                     num_threads=args.threads)  # fmt: skip
    if args.quick:
        cfg = cfg.replace(model="tiny", group_size=4, max_new_tokens=8)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp) / "run", progress=False)
        for step in range(args.steps):
            row = trainer.train_step(step)
            print(json.dumps({"at_s": time.perf_counter() - start,
                              "step_s": row["time/step_s"],
                              "threads": row["time/threads"]}), flush=True)  # fmt: skip


def run_arm(copies: int, threads: int, args: argparse.Namespace) -> list[list[dict]]:
    cmd = [sys.executable, __file__, "--child", "--threads", str(threads),
           "--steps", str(args.steps)] + (["--quick"] if args.quick else [])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(copies)]  # fmt: skip
    out = []
    for proc in procs:
        stdout, _ = proc.communicate()
        if proc.returncode:
            sys.exit(f"a run failed (exit {proc.returncode})")
        out.append(
            [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        )
    return out


def wait_for_idle(args: argparse.Namespace, limit_s: float = 180.0) -> None:
    """Let the 1-minute load average of the previous arm decay (below 0.5), so each
    adaptive arm starts from an idle machine."""
    start = time.perf_counter()
    while not args.quick and os.getloadavg()[0] > 0.5:
        if time.perf_counter() - start > limit_s:
            print(
                f"load average still {os.getloadavg()[0]:.1f}: the machine is not idle"
            )
            return
        time.sleep(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model smoke test")
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--settle-s", type=float, default=75.0,
                        help="steps that start before this many seconds do not count")  # fmt: skip
    parser.add_argument("--out-dir", default=None, help="default: bench/results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.quick:
        args.steps, args.settle_s = 2, 0.0
    cores = os.cpu_count() or 1
    arms = {"alone": (1, 0), "pair_adaptive": (2, 0), "pair_fixed": (2, cores)}
    results = {}
    for name, (copies, threads) in arms.items():
        wait_for_idle(args)
        print(f"measuring {name} ...", flush=True)
        runs = run_arm(copies, threads, args)
        settled = [r for run in runs for r in run[1:]
                   if r["at_s"] - r["step_s"] >= args.settle_s or name == "alone"]  # fmt: skip
        settled = settled or [r for run in runs for r in run[1:]]
        results[name] = {
            "median_step_s": statistics.median(r["step_s"] for r in settled),
            "threads_settled": sorted({r["threads"] for r in settled}),
            "steps": runs,
        }
    alone = results["alone"]["median_step_s"]
    for name, r in results.items():
        r["over_alone"] = r["median_step_s"] / alone
        print(f"{name:<14} {r['median_step_s']:6.2f} s/step  {r['over_alone']:4.2f}x alone"
              f"  threads {r['threads_settled']}")  # fmt: skip
    write_result("contention" + ("_quick" if args.quick else ""),
                 {"cores": cores, "settle_s": args.settle_s, "results": results},
                 args.out_dir)  # fmt: skip


if __name__ == "__main__":
    main()
