"""Our Trainer vs TRL's GRPOTrainer: seconds per step and reward, same model and setup.

    python bench/vs_trl.py          # SmolLM2-135M + LoRA, 1 prompt × 8, 64 new tokens
    python bench/vs_trl.py --quick  # tiny random model, 2 steps per arm (smoke test)

Both sides load the same local model folder (``smollm2_path()``, or the tiny model
written by ``tiny_policy_files``) in fp32 on the CPU, put LoRA r16/α32 on q, k, v, o
(dropout 0), and train on the same prompts in the same order (the default arithmetic
task, chat format, the model's default system line) with the same settings: G
completions per prompt, the same completion limit, temperature 0.7, top-k and top-p
off, AdamW at a constant learning rate of 3e-4, gradient clipping at 1.0, clip ε = 0.2,
no KL (β = 0), TRL's ``dapo`` loss (= our ``token_mean``), group-std advantages and
the same binary reward (``sfpo_edu.rewards.reward``, wrapped as a TRL reward function).
Neither side uses gradient checkpointing (TRL's default turns it on;
``--trl-gradient-checkpointing`` restores that). One difference is ours by design: our
rollouts read each prompt once and share its key/value cache with the G completions
of its group, where TRL's transformers generation reads the prompt G times.

Two arms, each a fresh pair of trainers starting from the base model:

* ``grpo``: TRL ``num_iterations=1`` vs our ``algo="grpo"``, seconds per step;
* ``grpo_multi``: TRL ``num_iterations=K+1`` vs our ``algo="grpo_multi"`` (K+1 passes
  over each rollout batch), seconds per update averaged over one generation cycle.

How it is measured: one process, both trainers alive, steps alternating. TRL runs its
own ``trainer.train()``; a callback times each TRL optimizer step (``on_step_begin``
to ``on_step_end``: generation, reward, forward, backward, clip, optimizer step) and
runs one of our outer steps (exactly ``Trainer.train_step(s)``, timed by its own
``time/step_s``) between TRL's generation cycles in ABBA order (TRL, ours, ours, TRL,
TRL, ours, ...), so slow drifts in machine load hit both sides alike. Our step runs
inside ``torch.random.fork_rng`` so it does not disturb TRL's sampling. TRL's
rollout phase (``_generate_and_score_completions``) is timed by a wrapper, to compare
with our ``time/rollout_s``. The first cycle of each side warms caches up and is left
out of the medians. A step's cost grows with its batch's longest completion, and the
two sides sample different completions, so the ratio is also given over only the
batches whose longest completion hit the token limit (same decode steps and padded
length on both sides). Also recorded: the CPU time other processes used during the run
(from ``/proc/stat``), since the cores may be shared. Prints a table and writes
``bench/results/vs_trl.json`` (``vs_trl_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from sfpo_edu.config import SFPOConfig  # noqa: E402
from sfpo_edu.models import (
    SMOLLM2,
    TINY,
    resolve_dtype,
    smollm2_path,
    tiny_policy_files,
)  # noqa: E402
from sfpo_edu.rewards import reward  # noqa: E402
from sfpo_edu.train import Trainer  # noqa: E402

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


# --- the two sides' settings ------------------------------------------------------
def our_config(s: dict[str, Any], algo: str, num_steps: int) -> SFPOConfig:
    return SFPOConfig(
        algo=algo, num_fast_steps=s["K"], model=s["model"], device="cpu",
        dtype=s["dtype"], num_threads=os.cpu_count() or 1,  # pinned: one process
        lora_r=16, lora_alpha=32, num_prompts=s["num_prompts"],
        group_size=s["G"], max_new_tokens=s["max_new_tokens"], temperature=0.7,
        lr=3e-4, clip_eps=0.2, kl_coef=0.0, loss_agg="token_mean", max_grad_norm=1.0,
        num_minibatches=1, num_steps=num_steps, eval_every=0, save_every=0,
        stop_rule="never", seed=s["seed"],
        num_samples_logged=s["num_prompts"] * s["G"],  # all: longest completion
    )  # fmt: skip


def trl_config(s: dict[str, Any], num_iterations: int, max_steps: int, out: str) -> Any:
    from trl import GRPOConfig

    # transformers 5 renamed gradient_checkpointing (TRL's default: on)
    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    checkpointing = next(
        n for n in ("activation_checkpointing", "gradient_checkpointing") if n in names
    )
    return GRPOConfig(
        output_dir=out, use_cpu=True, bf16=s["dtype"] == "bfloat16", report_to="none",
        **{checkpointing: s["trl_gradient_checkpointing"]},
        model_init_kwargs={"dtype": s["dtype"]},
        per_device_train_batch_size=s["num_prompts"] * s["G"],
        num_generations=s["G"], max_completion_length=s["max_new_tokens"],
        temperature=0.7, top_p=1.0, top_k=0, learning_rate=3e-4,
        lr_scheduler_type="constant", max_grad_norm=1.0, epsilon=0.2, beta=0.0,
        loss_type="dapo", scale_rewards="group", num_iterations=num_iterations,
        max_steps=max_steps, shuffle_dataset=False, logging_steps=1,
        save_strategy="no", disable_tqdm=True, seed=s["seed"],
    )  # fmt: skip


def trl_reward(calls: list[list[float]]) -> Any:
    """Our binary reward as a TRL reward function; records every call's rewards."""

    def correct_answer(completions: list, answer: list[str], **_: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        out = [reward(t, gold) for t, gold in zip(texts, answer, strict=True)]
        calls.append(out)
        return out

    return correct_answer


def others_cpu_clock() -> tuple[float, float, float]:
    """(wall s, busy CPU s of the whole machine, CPU s of this process)."""
    busy = float("nan")
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split()[1:9]]
        busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), busy, usage.ru_utime + usage.ru_stime


# --- one arm: TRL's train() drives, our steps run in between ----------------------
def make_callback(ours: Trainer, per_cycle: int, record: dict[str, list]) -> Any:
    from transformers import TrainerCallback

    class Alternate(TrainerCallback):
        """Times TRL's optimizer steps; runs our step s after (even s) or before (odd
        s) TRL's generation cycle s, so the order is TRL, ours, ours, TRL, ..."""

        t0 = 0.0

        def run_ours(self) -> None:
            s = len(record["ours"])
            with torch.random.fork_rng(devices=[]):
                row = ours.train_step(s)
            record["ours"].append(row)
            record["order"].append(f"ours{s}")

        def on_step_begin(self, args, state, control, **kwargs):
            cycle, k = divmod(state.global_step, per_cycle)
            if k == 0 and cycle % 2 == 1:
                self.run_ours()
            if k == 0:
                record["order"].append(f"trl{cycle}")
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            record["trl_step_s"].append(time.perf_counter() - self.t0)
            cycle, k = divmod(state.global_step - 1, per_cycle)
            if k == per_cycle - 1 and cycle % 2 == 0:
                self.run_ours()

    return Alternate()


def run_arm(s: dict[str, Any], algo: str, cycles: int, tmp: Path) -> dict[str, Any]:
    """``cycles`` generation batches on each side, alternating; raw per-step figures."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOTrainer

    per_cycle = s["K"] + 1 if algo == "grpo_multi" else 1
    cfg = our_config(s, algo, cycles)
    ours = Trainer(cfg, tmp / f"ours-{algo}", progress=False)
    problems = ours.train_problems  # the very prompts our steps 0 … cycles−1 use
    dataset = Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p.prompt}] for p in problems],
            "answer": [p.answer for p in problems],
        }
    )
    calls: list[list[float]] = []
    trainer = GRPOTrainer(
        model=str(s["model"]),
        reward_funcs=trl_reward(calls),
        args=trl_config(s, per_cycle, cycles * per_cycle, str(tmp / f"trl-{algo}")),
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(s["model"]),
        peft_config=LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS,
            task_type="CAUSAL_LM",
        ),
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # no log dict printed per step
    rollout_s: list[float] = []
    generate = trainer._generate_and_score_completions

    def timed_generate(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = generate(*args, **kwargs)
        rollout_s.append(time.perf_counter() - t)
        return out

    trainer._generate_and_score_completions = timed_generate  # instance attribute
    record: dict[str, list] = {"ours": [], "trl_step_s": [], "order": []}
    trainer.add_callback(make_callback(ours, per_cycle, record))
    trainer.train()

    history = trainer.state.log_history
    gen_rows = [r for r in history if "completions/mean_length" in r]
    samples = [
        json.loads(line)
        for line in (ours.run_dir / "samples.jsonl").read_text().splitlines()
    ]
    steps = record["trl_step_s"]
    trl_cycle_s = [
        sum(steps[c * per_cycle : (c + 1) * per_cycle]) for c in range(cycles)
    ]
    out = {
        "passes_per_batch": per_cycle,
        "order": record["order"],
        "trl": {
            "cycle_s": trl_cycle_s,
            "optimizer_step_s": steps,
            "rollout_s": rollout_s,
            "own_step_time_s": [r["step_time"] for r in history if "step_time" in r],
            "reward": [sum(c) / len(c) for c in calls],
            "completion_mean_length": [r["completions/mean_length"] for r in gen_rows],
            "completion_max_length": [r["completions/max_length"] for r in gen_rows],
            "clipped_ratio": [r["completions/clipped_ratio"] for r in gen_rows],
        },
        "ours": {
            "cycle_s": [r["time/step_s"] for r in record["ours"]],
            "rollout_s": [r["time/rollout_s"] for r in record["ours"]],
            "update_s": [r["time/update_s"] for r in record["ours"]],
            "reward": [r["reward/mean"] for r in record["ours"]],
            "completion_mean_length": [
                r["completions/mean_length"] for r in record["ours"]
            ],
            "completion_max_length": [
                max(x["length"] for x in samples if x["step"] == step)
                for step in range(cycles)
            ],
            "clipped_ratio": [r["completions/clipped_ratio"] for r in record["ours"]],
        },
    }
    del trainer, ours
    return out


def summarise(arm: dict[str, Any], max_new_tokens: int) -> dict[str, Any]:
    """Medians after the first (warm-up) cycle; seconds per update = cycle / passes.

    A step's cost grows with its batch's longest completion (decode steps, padded
    length), which differs between the two sides' samples; ``*_full_length`` keeps
    only the batches whose longest completion hit ``max_new_tokens`` on each side.
    """
    n = arm["passes_per_batch"]

    def med(xs: list[float]) -> float | None:
        xs = xs[1:] if len(xs) > 1 else xs
        return statistics.median(xs) if xs else None

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    def full(side: dict[str, list]) -> list[float]:
        pairs = list(zip(side["cycle_s"], side["completion_max_length"], strict=True))
        return [t for t, longest in pairs[1:] if longest >= max_new_tokens]

    trl, ours = arm["trl"], arm["ours"]
    trl_update = [c - r for c, r in zip(trl["cycle_s"], trl["rollout_s"], strict=True)]
    out: dict[str, Any] = {
        "trl_s_per_update": med(trl["cycle_s"]) / n,
        "ours_s_per_update": med(ours["cycle_s"]) / n,
        "trl_rollout_s": med(trl["rollout_s"]),
        "ours_rollout_s": med(ours["rollout_s"]),
        "trl_update_s_per_pass": med(trl_update) / n,
        "ours_update_s_per_pass": med(ours["update_s"]) / n,
        "trl_reward_mean": mean(trl["reward"]),
        "ours_reward_mean": mean(ours["reward"]),
        "trl_reward_last": trl["reward"][-1],
        "ours_reward_last": ours["reward"][-1],
        "trl_completion_mean_length": mean(trl["completion_mean_length"]),
        "ours_completion_mean_length": mean(ours["completion_mean_length"]),
        "full_length_batches": {"trl": len(full(trl)), "ours": len(full(ours))},
    }
    out["ours_over_trl"] = out["ours_s_per_update"] / out["trl_s_per_update"]
    t_full, o_full = full(trl), full(ours)
    out["trl_s_per_update_full_length"] = (
        statistics.median(t_full) / n if t_full else None
    )
    out["ours_s_per_update_full_length"] = (
        statistics.median(o_full) / n if o_full else None
    )
    out["ours_over_trl_full_length"] = (
        out["ours_s_per_update_full_length"] / out["trl_s_per_update_full_length"]
        if t_full and o_full
        else None
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model smoke test")
    parser.add_argument("--steps", type=int, default=12, help="steps of the grpo arm")
    parser.add_argument(
        "--cycles", type=int, default=6, help="generation batches of the K+1 arm"
    )
    parser.add_argument("-K", "--num-fast-steps", type=int, default=3)
    parser.add_argument("--group-size", "-G", type=int, default=8)
    parser.add_argument("--num-prompts", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--arms", default="grpo,grpo_multi")
    parser.add_argument(
        "--trl-gradient-checkpointing",
        action="store_true",
        help="TRL's default (on); without it neither side checkpoints",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=None, help="default: bench/results")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.cycles = 2, 2
        args.group_size, args.max_new_tokens = 4, 8
    arms = [a for a in args.arms.split(",") if a]
    with tempfile.TemporaryDirectory(prefix="vs_trl-") as tmp_name:
        tmp = Path(tmp_name)
        model = tiny_policy_files(tmp / "tiny") if args.quick else smollm2_path()
        setting = {
            "model": str(model), "K": args.num_fast_steps, "G": args.group_size,
            "num_prompts": args.num_prompts, "max_new_tokens": args.max_new_tokens,
            "trl_gradient_checkpointing": args.trl_gradient_checkpointing,
            "seed": args.seed,
            # both sides in our default dtype here (TRL's bf16=True where ours is bf16)
            "dtype": str(resolve_dtype("auto", torch.device("cpu"),
                                       TINY if args.quick else SMOLLM2)).removeprefix("torch."),
        }  # fmt: skip
        start, load_start = others_cpu_clock(), os.getloadavg()
        results = {}
        for algo in arms:
            cycles = args.steps if algo == "grpo" else args.cycles
            print(f"measuring {algo}: TRL and ours alternating, {cycles} batches each",
                  flush=True)  # fmt: skip
            results[algo] = run_arm(setting, algo, cycles, tmp)
        end = others_cpu_clock()
    wall, busy, mine = (b - a for a, b in zip(start, end, strict=True))
    machine = {
        "loadavg_before": load_start,
        "loadavg_after": os.getloadavg(),
        "wall_s": wall,
        "cores_used_by_this_process": mine / wall,
        "cores_used_by_other_processes": max(busy - mine, 0.0) / wall,
    }
    summary = {algo: summarise(r, args.max_new_tokens) for algo, r in results.items()}

    threads, others = torch.get_num_threads(), machine["cores_used_by_other_processes"]
    print(f"\nTRL GRPOTrainer vs our Trainer, {args.num_prompts} prompt(s) × "
          f"G={args.group_size}, {args.max_new_tokens} new tokens, torch threads "
          f"{threads}, other processes used {others:.2f} of {os.cpu_count()} "
          "cores")  # fmt: skip
    head = (f"{'arm':<11}{'TRL s/upd':>10}{'ours s/upd':>11}{'ours/TRL':>9}"
            f"{'at limit':>9}{'TRL roll':>9}{'ours roll':>10}{'TRL R':>7}"
            f"{'ours R':>7}")  # fmt: skip
    print(head + "\n" + "-" * len(head))
    for algo, r in summary.items():
        limit = r["ours_over_trl_full_length"]
        print(f"{algo:<11}{r['trl_s_per_update']:>10.2f}{r['ours_s_per_update']:>11.2f}"
              f"{r['ours_over_trl']:>9.2f}{'-' if limit is None else f'{limit:.2f}':>9}"
              f"{r['trl_rollout_s']:>9.2f}{r['ours_rollout_s']:>10.2f}"
              f"{r['trl_reward_mean']:>7.2f}{r['ours_reward_mean']:>7.2f}")  # fmt: skip
    print("(s/upd: median seconds per optimizer update after the warm-up cycle; at "
          "limit: ours/TRL over batches whose longest completion hit the token "
          "limit; roll: rollout phase per batch; R: mean reward over all batches)"
          )  # fmt: skip
    write_result(
        "vs_trl" + ("_quick" if args.quick else ""),
        {"config": setting | {"steps": args.steps, "cycles": args.cycles,
                              "temperature": 0.7, "lr": 3e-4, "clip_eps": 0.2,
                              "beta": 0.0, "loss": "dapo = token_mean",
                              "lora": "r16 alpha32 q,k,v,o"},
         "machine": machine, "summary": summary, "results": results},
        args.out_dir,
    )  # fmt: skip


if __name__ == "__main__":
    main()
