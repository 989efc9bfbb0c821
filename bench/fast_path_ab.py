"""Old code against new, on this machine: the same step_cost arms, alternating.

    python bench/fast_path_ab.py --baseline dbd9fe6        # GRPO and SFPO, fp32, 2 rounds
    python bench/fast_path_ab.py --from-log ab_step.log    # summarise an earlier run's log

Figures measured on different CPUs cannot be compared, so a speed-up is measured here
as a ratio in one run: ``bench/step_cost.py --arm <arm>`` from a checkout of the
baseline commit (a git worktree) and from this checkout, one after the other, for each
arm and round. Prints the median per-pass, generation and step seconds and their
new/old ratios, and writes ``bench/results/fast_path_ab.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("generate_s", "update_per_pass_s", "step_s")


def run_arm(checkout: Path, arm: str, steps: int) -> dict:
    out = subprocess.run(
        [sys.executable, "bench/step_cost.py", "--arm", arm, "--steps", str(steps)],
        cwd=checkout, env=os.environ | {"PYTHONPATH": str(checkout)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(baseline: str, arms: list[str], rounds: int, steps: int) -> list[tuple]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), baseline],
                       cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        try:
            for _ in range(rounds):
                for arm in arms:
                    for side, checkout in (("old", old), ("new", ROOT)):
                        print(f"{side} {arm} ...", flush=True)
                        rows.append((side, arm, run_arm(checkout, arm, steps)))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline", default="dbd9fe6", help="the commit to compare with"
    )
    parser.add_argument("--arms", default="grpo/none,sfpo/none")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--from-log", type=Path, help="lines '<old|new> <arm> <json>'")
    parser.add_argument("--out-dir", default=None, help="default: bench/results")
    args = parser.parse_args()
    arms = args.arms.split(",")
    if args.from_log:
        rows = [(s, a, json.loads(j)) for s, a, j in
                (line.split(" ", 2) for line in args.from_log.read_text().splitlines())]  # fmt: skip
    else:
        rows = measure(args.baseline, arms, args.rounds, args.steps)
    summary = {}
    for arm in arms:
        med = {side: {k: statistics.median(r[k] for s, a, r in rows if s == side and a == arm)
                      for k in KEYS} for side in ("old", "new")}  # fmt: skip
        summary[arm] = med | {
            f"new_over_old_{k}": med["new"][k] / med["old"][k] for k in KEYS
        }
        print(f"{arm}: per pass {med['old']['update_per_pass_s']:.2f} -> "
              f"{med['new']['update_per_pass_s']:.2f} s "
              f"({summary[arm]['new_over_old_update_per_pass_s']:.2f}x); generation "
              f"{summary[arm]['new_over_old_generate_s']:.2f}x; step "
              f"{med['old']['step_s']:.1f} -> {med['new']['step_s']:.1f} s "
              f"({summary[arm]['new_over_old_step_s']:.2f}x)")  # fmt: skip
    if {"grpo/none", "sfpo/none"} <= set(summary):
        for side in ("old", "new"):
            ratio = (
                summary["sfpo/none"][side]["step_s"]
                / summary["grpo/none"][side]["step_s"]
            )
            summary[f"sfpo_over_grpo_step_{side}"] = ratio
            print(f"{side}: SFPO step / GRPO step = {ratio:.2f}x")
    write_result("fast_path_ab", {"baseline": args.baseline, "rows": rows, "summary": summary},
                 args.out_dir)  # fmt: skip


if __name__ == "__main__":
    main()
