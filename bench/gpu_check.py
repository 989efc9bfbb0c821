"""Does SFPO run on this GPU, how much memory does it take, and how fast is it?

    python bench/gpu_check.py                   # a CUDA GPU: the grid below, JSON + table
    python bench/gpu_check.py --budget-s 120    # fewer cells (most important first)
    python bench/gpu_check.py --dry-run         # CPU: the same code, tiny model, seconds
    make gpu-check                              # the first line, with the image's python

The grid, in the order it runs (the issue's targets are about the first cell):

    model shape    Qwen2.5-1.5B, Qwen2.5-0.5B, SmolLM2-135M (configs: bench/model_configs/)
    precision      4-bit NF4 + LoRA, then 16-bit + LoRA
    compute dtype  bfloat16, then float16 (what a T4 has: no bf16)
    arm            GRPO (one pass), SFPO (K = 3, α = 0.8), GRPO×(K+1) (SFPO with α = 1)

at 4 prompts × G = 8 completions × 256 new tokens. ``--budget-s`` (default 420 s, so
the whole run stays under 8 minutes on one H100) stops starting cells that would not
fit; they are listed as skipped. Results go to ``bench/results/gpu_check.json``.

Weights: a model's real weights are used when a local folder (``--weights-dir``, the
sfpo_edu cache for SmolLM2) or the Hugging Face cache has them. Otherwise the model is
built from its committed config.json with random weights and saved with a
character-level tokenizer to a temporary folder. Memory and speed do not depend on the
weights' values, learning does: so this script reports no reward or accuracy, and the
rewards that drive the update are random 0/1 draws.

How one cell (model, precision, dtype) is measured, with the library's own functions:

1. ``train.load_policy_for`` (so ``models.load_policy``: quantization, then LoRA r16
   on q/k/v/o), on a folder as any user would.
2. One rollout batch with ``rollouts.generate_rollouts``. Every completion is forced to
   the full 256 tokens (the model's ``generation_config.min_new_tokens``, which keeps
   EOS from being sampled), so cells and runs are comparable. The three arms start from
   the same θ₀ and would sample the same batch, so it is generated once and shared.
3. Per arm: LoRA weights reset to their initial values, a fresh optimizer
   (``sfpo.make_optimizer``), the peak-memory counter reset; then the old log-probs
   (``logprobs.per_token_logps``, only with several mini-batches, as in the trainer) and one
   ``sfpo.update`` with ``train.make_loss_fn``, each timed after a CUDA synchronise.
   The loss function is wrapped to time each pass (and SFPO's evaluation at θ_K).

Figures: peak allocated memory (``torch.cuda.max_memory_allocated``: what the tensors
need; nvidia-smi also counts the allocator's cache), the time of each stage, generated
tokens per second of generation and of the whole step, SFPO's step time over GRPO's.
A step is generation + old log-probs + update, each arm's peak the larger of the
generation peak and its own. On CPU (``--dry-run``) memory is the process's peak RSS,
which cannot be reset between arms. A first short generation and backward pass warm
the kernels up before anything is timed.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_result  # noqa: E402

from sfpo_edu.config import SFPOConfig  # noqa: E402
from sfpo_edu.losses import group_advantages  # noqa: E402
from sfpo_edu.models import (  # noqa: E402
    Policy,
    cache_root,
    tiny_tokenizer,
    trainable_parameter_count,
)
from sfpo_edu.params import restore_, snapshot, trainable_params  # noqa: E402
from sfpo_edu.rollouts import RolloutBatch, generate_rollouts  # noqa: E402
from sfpo_edu.sfpo import LossFn, StopRule, make_optimizer, split_batch, update  # noqa: E402
from sfpo_edu.tasks import load_task  # noqa: E402
from sfpo_edu.train import (  # noqa: E402
    fill_reference_logps,
    load_policy_for,
    make_loss_fn,
    peak_memory_mb,
)

CONFIGS = Path(__file__).resolve().parent / "model_configs"
# model shape (a folder in bench/model_configs) -> its hub name, for the HF cache
HUB_NAMES = {
    "Qwen2.5-1.5B-Instruct": "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen2.5-0.5B-Instruct": "Qwen/Qwen2.5-0.5B-Instruct",
    "SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
ARMS = ("grpo", "sfpo", "grpo_multi")  # SFPO vs GRPO first: the figure that matters
BNB_FIX = (
    "pip install bitsandbytes==0.50.2 (offline: pip install --no-index "
    "--find-links wheelhouse --no-deps bitsandbytes, see the README)"
)
UNKNOWN_CELL_S = 30.0  # budget guess for a model with no finished cell yet
# The targets, for Qwen2.5-1.5B 4-bit + LoRA at 4 prompts × 8 × 256 tokens
HEADLINE = ("Qwen2.5-1.5B-Instruct/4bit/bfloat16", "Qwen2.5-1.5B-Instruct/4bit/float16")
TARGET_PEAK_MB = 6 * 1024  # fits a free T4's 15 GB with room
TARGET_EXTRA_SHARE = 0.01  # SFPO's extra memory ≤ 1% of GRPO's peak
TARGET_STEP_RATIO = 2.0  # SFPO step ≤ 2× a GRPO step (paper: 1.37× at K = 3)


@dataclass(frozen=True)
class Cell:
    """One point of the grid; its three arms share the model and the rollout batch."""

    model: str  # a folder name in bench/model_configs, or "tiny"
    quantization: str  # "4bit" or "none" (SFPOConfig.quantization)
    dtype: str  # "bfloat16", "float16" or "float32" (SFPOConfig.dtype)

    @property
    def name(self) -> str:
        return f"{self.model}/{self.quantization}/{self.dtype}"


def make_grid(
    models: list[str], quantizations: list[str], dtypes: list[str]
) -> list[Cell]:
    """Cells in the order given: model, then precision, then dtype (first = first run)."""
    return [Cell(m, q, d) for m in models for q in quantizations for d in dtypes]


# --- where the weights come from ----------------------------------------------------


def find_real_weights(model: str, weights_dir: str | None) -> Path | None:
    """A local folder with the real weights of ``model``, or None.

    Looks in ``weights_dir/<model>``, then (SmolLM2) the sfpo_edu cache that
    ``load_policy("smollm2-135m")`` converts into, then the Hugging Face cache.
    Never downloads.
    """
    candidates = [Path(weights_dir).expanduser() / model] if weights_dir else []
    if model == "SmolLM2-135M-Instruct":
        candidates.append(cache_root() / "SmolLM2-135M-Instruct")
    for folder in candidates:
        if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
            return folder
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(HUB_NAMES[model], local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or an unusable cache
        return None
    return folder if any(folder.glob("*.safetensors")) else None


def random_weights_folder(
    config_dir: Path, out_dir: Path, device: torch.device, seed: int = 0
) -> Path:
    """Build the model of ``config_dir/config.json`` with random weights; save it.

    Written with ``save_pretrained`` in bf16 (what the real checkpoints ship in)
    beside the tiny character-level tokenizer, so ``load_policy(out_dir)`` loads it
    like any local model. Initialised on ``device`` (fast on a GPU), then freed.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(config_dir)
    with torch.random.fork_rng([device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with device:
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out_dir)
    tiny_tokenizer().save_pretrained(out_dir)
    del model
    free_memory(device)
    return out_dir


# --- timing and memory ------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock read after it measures that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    """Collect garbage and hand cached CUDA blocks back, between measurements."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak(device: torch.device) -> None:
    """Start a new peak: ``torch.cuda.max_memory_allocated`` counts from here."""
    free_memory(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def timed_calls(
    loss_fn: LossFn, device: torch.device
) -> tuple[LossFn, list[tuple[float, bool]]]:
    """``loss_fn`` that records (clock, grad enabled) at each call, after a sync.

    One call starts each pass (grad on) or SFPO's evaluation at θ_K (grad off), so the
    gaps between calls are the passes' durations.
    """
    calls: list[tuple[float, bool]] = []

    def timed(batch: RolloutBatch) -> Any:
        synchronize(device)
        calls.append((time.perf_counter(), torch.is_grad_enabled()))
        return loss_fn(batch)

    return timed, calls


def stage_times(calls: list[tuple[float, bool]], end: float) -> dict[str, Any]:
    """Durations between the loss calls: the passes, and the no-grad evaluation."""
    ends = [t for t, _ in calls[1:]] + [end]
    passes = [e - t for (t, grad), e in zip(calls, ends, strict=True) if grad]
    evals = [e - t for (t, grad), e in zip(calls, ends, strict=True) if not grad]
    return {"passes_s": passes, "eval_theta_k_s": sum(evals)}


# --- one cell ----------------------------------------------------------------------------


def skip_reason(cell: Cell, device: torch.device) -> str | None:
    """Why this machine cannot run ``cell``, or None."""
    if cell.quantization == "4bit" and importlib.util.find_spec("bitsandbytes") is None:
        return f"bitsandbytes is not installed. Fix: {BNB_FIX}"
    if cell.dtype == "bfloat16" and device.type == "cuda":
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            return f"{torch.cuda.get_device_name(device)} has no bfloat16 (e.g. a T4)"
    return None


def rollout_batch(
    policy: Policy, cfg: SFPOConfig, device: torch.device
) -> tuple[RolloutBatch, dict[str, float]]:
    """One batch at full length, with random 0/1 rewards and their group advantages."""
    prompts = [p.prompt for p in load_task(cfg.task, cfg.num_prompts, seed=cfg.seed)]
    # a warm-up generation: CUDA kernels, cuBLAS handles and bitsandbytes load now
    generate_rollouts(policy, prompts[:1], group_size=2, max_new_tokens=2, seed=0)
    # min_new_tokens keeps every EOS id from being sampled until the limit
    policy.model.generation_config.min_new_tokens = cfg.max_new_tokens
    reset_peak(device)
    synchronize(device)
    t0 = time.perf_counter()
    batch = generate_rollouts(
        policy,
        prompts,
        group_size=cfg.group_size,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        seed=cfg.seed,
    )
    synchronize(device)
    generate_s = time.perf_counter() - t0
    generator = torch.Generator().manual_seed(cfg.seed)
    rewards = torch.randint(0, 2, (len(batch),), generator=generator).float()  # (B,)
    batch.rewards = rewards
    batch.advantages, _ = group_advantages(rewards, cfg.group_size)
    batch.advantages = batch.advantages.to(device)
    tokens = int(batch.completion_mask.sum())
    return batch, {
        "generate_s": generate_s,
        "generate_peak_mb": peak_memory_mb(device),
        "generate_tokens_per_s": tokens / generate_s,
        "batch_size": len(batch),
        "prompt_tokens": batch.prompt_ids.shape[1],
        "completion_tokens": batch.completion_ids.shape[1],
        "generated_tokens": tokens,
        "full_length": tokens == len(batch) * cfg.max_new_tokens,
    }


def warm_up_backward(policy: Policy, cfg: SFPOConfig, batch: RolloutBatch) -> None:
    """One forward and backward on G rows, so the first timed pass is not the first."""
    params = trainable_params(policy.model)
    loss, _ = make_loss_fn(policy.model, cfg)(split_batch(batch, cfg.num_prompts)[0])
    loss.backward()
    for p in params:
        p.grad = None


def measure_arm(
    policy: Policy,
    cfg: SFPOConfig,
    batch: RolloutBatch,
    theta_init: list[torch.Tensor],
    device: torch.device,
) -> dict[str, Any]:
    """One outer step's update of ``cfg.algo`` from the initial LoRA weights."""
    params = trainable_params(policy.model)
    restore_(params, theta_init)
    optimizer = make_optimizer(params, cfg)
    batch.old_per_token_logps = None
    reset_peak(device)
    synchronize(device)
    t0 = time.perf_counter()
    fill_reference_logps(policy.model, batch, cfg)  # as the trainer: usually none
    synchronize(device)
    t1 = time.perf_counter()
    loss_fn, calls = timed_calls(make_loss_fn(policy.model, cfg), device)
    metrics = update(
        params, optimizer, batch, loss_fn, cfg, StopRule.from_config(cfg), step=0
    )
    synchronize(device)
    t2 = time.perf_counter()
    out = {
        "old_logps_s": t1 - t0,
        "update_s": t2 - t1,
        **stage_times(calls, t2),
        "update_peak_mb": peak_memory_mb(device),
        "skipped": bool(metrics["update/skipped"]),
    }
    del optimizer
    batch.old_per_token_logps = None
    return out


def measure_cell(
    cell: Cell, source: str, cfg: SFPOConfig, device: torch.device
) -> dict[str, Any]:
    """Load the policy from ``source``, generate once, measure the three arms."""
    t0 = time.perf_counter()
    cell_cfg = cfg.replace(
        model=source, quantization=cell.quantization, dtype=cell.dtype
    )
    policy = load_policy_for(cell_cfg)
    trainable, total = trainable_parameter_count(policy.model)
    load_s = time.perf_counter() - t0
    out: dict[str, Any] = {"load_s": load_s, "trainable_params": trainable,
                           "total_params": total}  # fmt: skip
    try:
        batch, gen = rollout_batch(policy, cell_cfg, device)
        out |= gen
        warm_up_backward(policy, cell_cfg, batch)
        theta_init = snapshot(trainable_params(policy.model))
        out["arms"] = {}
        for arm in ARMS:
            try:
                r = measure_arm(
                    policy, cell_cfg.replace(algo=arm), batch, theta_init, device
                )
            except torch.cuda.OutOfMemoryError as err:
                r = {"error": f"out of memory: {str(err)[:200]}"}
            if "error" in r:  # freed here, once the traceback's frames are gone
                out["arms"][arm] = r
                free_memory(device)
                continue
            r["step_s"] = gen["generate_s"] + r["old_logps_s"] + r["update_s"]
            r["step_peak_mb"] = max(gen["generate_peak_mb"], r["update_peak_mb"])
            r["step_tokens_per_s"] = gen["generated_tokens"] / r["step_s"]
            out["arms"][arm] = r
        out |= compare_arms(out["arms"], trainable)
    finally:
        del policy
        free_memory(device)
    out["cell_s"] = time.perf_counter() - t0
    return out


def compare_arms(arms: dict[str, dict[str, Any]], trainable: int) -> dict[str, float]:
    """SFPO against GRPO and GRPO×(K+1): step time and memory ratios."""
    if any("error" in arms.get(a, {"error": ""}) for a in ARMS):
        return {}
    g, s, m = arms["grpo"], arms["sfpo"], arms["grpo_multi"]
    return {
        "sfpo_over_grpo_step_time": s["step_s"] / g["step_s"],
        "sfpo_over_grpo_multi_step_time": s["step_s"] / m["step_s"],
        "sfpo_extra_peak_mb": s["step_peak_mb"] - g["step_peak_mb"],
        "sfpo_extra_peak_share": (s["step_peak_mb"] - g["step_peak_mb"])
        / g["step_peak_mb"],
        # θ_K: the one fp32 copy SFPO keeps beyond what update() keeps for every arm
        "sfpo_snapshot_mb": 4 * trainable / 2**20,
    }


# --- the run ---------------------------------------------------------------------------------


def gpu_environment(device: torch.device) -> dict[str, Any]:
    """Device, driver, CUDA and package versions (the rest: common.environment())."""
    info: dict[str, Any] = {"device": str(device), "torch_cuda": torch.version.cuda}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "device_name": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "total_memory_gib": props.total_memory / 2**30,
            "bf16_supported": torch.cuda.is_bf16_supported(including_emulation=False),
            "cudnn": torch.backends.cudnn.version(),
            "driver": nvidia_driver(),
        }
    for package in ["torch", "transformers", "peft", "bitsandbytes"]:
        spec = importlib.util.find_spec(package)
        info[package] = importlib.metadata.version(package) if spec else "not installed"
    return info


def nvidia_driver() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as err:
        return f"unknown (nvidia-smi: {type(err).__name__})"
    return out.stdout.strip().splitlines()[0]


def run_grid(
    cells: list[Cell],
    cfg: SFPOConfig,
    device: torch.device,
    budget_s: float,
    weights_dir: str | None,
    start: float,
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Measure each cell that fits the budget; returns (results, timings)."""
    results: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    longest: dict[str, float] = {}  # model -> its longest cell (incl. building it)
    sources: dict[str, tuple[str, str]] = {}  # model -> (folder, what weights)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        for cell in cells:
            reason = skip_reason(cell, device)
            left = budget_s - (time.perf_counter() - start)
            guess = longest.get(cell.model, UNKNOWN_CELL_S)
            if reason is None and guess > left:
                reason = f"budget: {left:.0f} s left, a cell of this model takes ~{guess:.0f} s"
            if reason is not None:
                results[cell.name] = {"skipped": reason}
                print(f"skip {cell.name}: {reason}", flush=True)
                continue
            print(f"measuring {cell.name} ...", flush=True)
            t0 = time.perf_counter()
            try:
                if cell.model not in sources:
                    sources[cell.model] = model_source(
                        cell.model, Path(tmp), device, weights_dir, timings
                    )
                folder, weights = sources[cell.model]
                results[cell.name] = {"weights": weights} | measure_cell(
                    cell, folder, cfg, device
                )
            except Exception as err:  # report it and go on with the next cell
                traceback.print_exc()
                results[cell.name] = {"error": f"{type(err).__name__}: {err}"[:500]}
            if "error" in results[cell.name]:  # freed once the traceback is gone
                free_memory(device)
            cell_s = time.perf_counter() - t0
            timings[f"cell:{cell.name}"] = cell_s
            longest[cell.model] = max(longest.get(cell.model, 0.0), cell_s)
    return results, timings


def model_source(
    model: str,
    tmp: Path,
    device: torch.device,
    weights_dir: str | None,
    timings: dict[str, float],
) -> tuple[str, str]:
    """(what load_policy gets, which weights): real ones if found, else random."""
    if model == "tiny":
        return "tiny", "random (the tiny test model, built in code)"
    real = find_real_weights(model, weights_dir)
    if real is not None:
        return str(real), f"real ({real})"
    t0 = time.perf_counter()
    folder = random_weights_folder(CONFIGS / model, tmp / model, device)
    timings[f"build:{model}"] = time.perf_counter() - t0
    config = (CONFIGS / model / "config.json").relative_to(CONFIGS.parents[1])
    return str(folder), f"random (built from {config}; no accuracy from these)"


def check_targets(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's three targets on the first headline cell that was measured."""
    for name in HEADLINE:
        r = results.get(name, {})
        if "sfpo_over_grpo_step_time" in r:
            peak = r["arms"]["sfpo"]["step_peak_mb"]
            return {
                "cell": name,
                "sfpo_peak_mb": peak,
                "sfpo_peak_within_6gib": peak <= TARGET_PEAK_MB,
                "sfpo_extra_peak_within_1pct": r["sfpo_extra_peak_share"]
                <= TARGET_EXTRA_SHARE,
                "sfpo_step_within_2x_grpo": r["sfpo_over_grpo_step_time"]
                <= TARGET_STEP_RATIO,
            }
    return {"cell": None, "note": "no headline cell (Qwen2.5-1.5B 4-bit) was measured"}


def print_table(results: dict[str, dict[str, Any]], device: torch.device) -> None:
    mem = "peak MB" if device.type == "cuda" else "RSS MB"
    head = (f"{'cell':<36}{'arm':<11}{'gen s':>7}{'old s':>7}{'upd s':>7}"
            f"{'step s':>8}{'tok/s':>8}{mem:>9}")  # fmt: skip
    print("\n" + head + "\n" + "-" * len(head))
    for name, r in results.items():
        if "arms" not in r:
            print(f"{name:<36}{r.get('skipped') or r.get('error')}")
            continue
        for arm, a in r["arms"].items():
            if "error" in a:
                print(f"{name:<36}{arm:<11}{a['error'][:60]}")
                continue
            print(f"{name:<36}{arm:<11}{r['generate_s']:>7.2f}{a['old_logps_s']:>7.2f}"
                  f"{a['update_s']:>7.2f}{a['step_s']:>8.2f}{a['step_tokens_per_s']:>8.0f}"
                  f"{a['step_peak_mb']:>9.0f}")  # fmt: skip
        if "sfpo_over_grpo_step_time" in r:
            print(f"{'':<36}SFPO step / GRPO step = {r['sfpo_over_grpo_step_time']:.2f}x, "
                  f"/ GRPO×(K+1) = {r['sfpo_over_grpo_multi_step_time']:.2f}x; SFPO's "
                  f"extra peak {r['sfpo_extra_peak_mb']:+.0f} MB "
                  f"({100 * r['sfpo_extra_peak_share']:+.2f}% of GRPO's)")  # fmt: skip
        print(f"{'':<36}weights: {r['weights']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="on CPU: the tiny model, a tiny batch, seconds")  # fmt: skip
    parser.add_argument("--output", default=None,
                        help="JSON path (default bench/results/gpu_check.json)")  # fmt: skip
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="start no cell that would end after this (default 420)")  # fmt: skip
    parser.add_argument("--models", default=",".join(HUB_NAMES),
                        help="comma-separated shapes from bench/model_configs")  # fmt: skip
    parser.add_argument("--quantizations", default="4bit,none")
    parser.add_argument("--dtypes", default="bfloat16,float16")
    parser.add_argument("--num-prompts", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--weights-dir", default=None,
                        help="folder with real weights in <shape>/ subfolders")  # fmt: skip
    args = parser.parse_args(argv)
    if args.output and not args.output.endswith(".json"):
        parser.error(f"--output {args.output!r} must end in .json")
    start = time.perf_counter()

    if args.dry_run:
        device = torch.device("cpu")
        models, dtypes = ["tiny"], ["float32"]  # CPU bf16 depends on the CPU
        shape = dict(num_prompts=2, group_size=4, max_new_tokens=8)
    else:
        if not torch.cuda.is_available():
            print(f"No CUDA GPU: torch {torch.__version__} sees none. This check is "
                  "for a GPU; run it with --dry-run to check the script on CPU.",
                  file=sys.stderr)  # fmt: skip
            return 2
        device = torch.device("cuda")
        models, dtypes = args.models.split(","), args.dtypes.split(",")
        unknown = [m for m in models if m not in HUB_NAMES]
        if unknown:
            parser.error(f"unknown --models {unknown}; use some of {list(HUB_NAMES)}")
        shape = dict(num_prompts=args.num_prompts, group_size=args.group_size,
                     max_new_tokens=args.max_new_tokens)  # fmt: skip
    cfg = SFPOConfig(
        device=device.type, stop_rule="never", save_every=0, eval_every=0, **shape
    )
    cells = make_grid(models, args.quantizations.split(","), dtypes)
    env = gpu_environment(device)
    timings = {"environment": time.perf_counter() - start}
    results, cell_timings = run_grid(
        cells, cfg, device, args.budget_s, args.weights_dir, start
    )
    timings |= cell_timings | {"total": time.perf_counter() - start}
    print_table(results, device)
    targets = check_targets(results)
    if targets["cell"] is not None:
        print(f"\ntargets on {targets['cell']}: SFPO peak {targets['sfpo_peak_mb']:.0f} MB "
              f"<= 6 GiB: {targets['sfpo_peak_within_6gib']}; extra <= 1% of GRPO's: "
              f"{targets['sfpo_extra_peak_within_1pct']}; step <= 2x GRPO's: "
              f"{targets['sfpo_step_within_2x_grpo']}")  # fmt: skip
    print(f"\ntotal {timings['total']:.0f} s")

    output = (
        Path(args.output)
        if args.output
        else RESULTS / ("gpu_check_dry_run.json" if args.dry_run else "gpu_check.json")
    )
    setup = {k: getattr(cfg, k) for k in ("num_prompts", "group_size",
             "max_new_tokens", "num_fast_steps", "alpha", "lora_r", "lr",
             "temperature", "diagnostics")}  # fmt: skip
    write_result(
        output.stem,
        {"dry_run": args.dry_run, "gpu": env, "setup": setup,
         "budget_s": args.budget_s, "timings_s": timings, "targets": targets,
         "cells": results},
        str(output.parent),
    )  # fmt: skip
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
