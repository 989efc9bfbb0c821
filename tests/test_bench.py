"""The bench scripts' --quick smoke runs: they run, print figures and write JSON."""

import fcntl
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run(script: str, tmp_path: Path, *extra: str) -> str:
    cmd = [
        sys.executable,
        str(BENCH / script),
        "--quick",
        "--out-dir",
        str(tmp_path),
        *extra,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_step_cost_quick(tmp_path):
    out = run("step_cost.py", tmp_path)
    assert "SFPO step / GRPO step" in out
    data = json.loads((tmp_path / "step_cost_quick.json").read_text())
    assert {
        f"{a}/{q}" for a in ("grpo", "grpo_multi", "sfpo") for q in ("none", "4bit")
    } | {"sfpo_diagnostics/none"} <= set(data["results"])
    assert data["results"]["grpo/none"]["pass_gflop_per_s"] > 0
    assert data["cpu"]["gemm_peak_gflops"]["float32"] > 0
    sfpo = data["results"]["sfpo/none"]
    assert sfpo["passes"] == 4 and sfpo["update_s"] > 0 and sfpo["snapshot_mb"] > 0
    assert "torch" in data["environment"]


def test_contention_quick(tmp_path):
    out = run("contention.py", tmp_path)
    assert "pair_adaptive" in out
    data = json.loads((tmp_path / "contention_quick.json").read_text())
    assert set(data["results"]) == {"alone", "pair_adaptive", "pair_fixed"}
    fixed = data["results"]["pair_fixed"]
    assert len(fixed["steps"]) == 2 and fixed["threads_settled"] == [data["cores"]]


def test_rollouts_to_target_quick(tmp_path):
    out = run("rollouts_to_target.py", tmp_path, "--runs-dir", str(tmp_path / "runs"))
    assert "Toy: rollouts until" in out and "GRPO's best" in out
    data = json.loads((tmp_path / "rollouts_to_target_quick.json").read_text())
    assert set(data["llm"]["arms"]) == {"grpo", "sfpo_a0.8"}
    assert not list((tmp_path / "runs").glob("*/checkpoint-*"))  # runs kept small
    # a second call reuses the finished runs instead of training again
    files = sorted((tmp_path / "runs").glob("*/metrics.jsonl"))
    before = [f.stat().st_mtime_ns for f in files]
    run("rollouts_to_target.py", tmp_path, "--runs-dir", str(tmp_path / "runs"))
    assert [f.stat().st_mtime_ns for f in files] == before
    # a run that another copy of the script holds is left to it; the report waits
    shutil.rmtree(tmp_path / "runs" / "sfpo_a0.8-s0")
    with open(tmp_path / "runs" / ".sfpo_a0.8-s0.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = run(
            "rollouts_to_target.py", tmp_path, "--runs-dir", str(tmp_path / "runs")
        )
    assert "Another process is still training sfpo_a0.8-s0" in out
    assert not (tmp_path / "runs" / "sfpo_a0.8-s0").exists()


def test_vs_trl_quick(tmp_path):
    pytest.importorskip("trl")
    out = run("vs_trl.py", tmp_path)
    assert "TRL" in out


def test_fast_path_ab_summarises_a_log(tmp_path):
    def row(side, arm, gen, per_pass, step):
        stats = {"generate_s": gen, "update_per_pass_s": per_pass, "step_s": step}
        return f"{side} {arm} {json.dumps(stats)}"

    log = tmp_path / "ab.log"
    log.write_text("\n".join([
        row("old", "grpo/none", 5.0, 6.0, 11.0), row("new", "grpo/none", 5.0, 3.0, 8.0),
        row("old", "sfpo/none", 5.0, 6.0, 29.0), row("new", "sfpo/none", 5.0, 3.0, 17.0),
    ]))  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(BENCH / "fast_path_ab.py"), "--from-log", str(log),
         "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "fast_path_ab.json").read_text())["summary"]
    assert summary["grpo/none"]["new_over_old_update_per_pass_s"] == 0.5
    assert summary["sfpo_over_grpo_step_new"] == 17 / 8
