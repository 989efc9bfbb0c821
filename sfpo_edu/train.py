"""The training loop: rollouts → rewards → advantages → old log-probs → update → metrics.

    cfg = SFPOConfig(algo="sfpo", num_steps=30)
    trainer = Trainer(cfg, "runs/sfpo")       # loads SmolLM2-135M + LoRA by default
    trainer.train()                           # progress bar; Ctrl-C saves and stops
    Trainer(cfg, "runs/sfpo", resume=True).train()   # continues where it stopped

Outer step s samples G completions at θ_s for each of the next ``num_prompts`` problems
(the same for every algorithm with the same seed), scores them, computes advantages and
old log-probs once, calls ``sfpo.update`` and appends a row to ``metrics.jsonl`` (and a
few samples to ``samples.jsonl``). Row s describes θ_s → θ_{s+1}; its ``eval/…`` keys
(every ``eval_every`` steps) were measured at θ_s, and row ``num_steps`` holds the final
evaluation. Checkpoints survive a kill at any moment, and the rollout seed of step s
depends only on (seed, s): a resumed run repeats the steps after its checkpoint exactly.

Where this departs from the paper's setup (all for a CPU-sized demo):
1. LoRA adapters are the trainable parameters; the base model is frozen.
2. No separate old-log-prob forward with one mini-batch: the first pass runs at θ₀, so
   its detached log-probs *are* the old log-probs, reused by every later pass (the clip
   band stays centred on θ₀). With several mini-batches they are computed up front.
3. The KL reference (β > 0) is the base model with the adapter switched off.
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from sfpo_edu.config import SFPOConfig
from sfpo_edu.logprobs import per_token_logps
from sfpo_edu.losses import group_advantages, grpo_loss
from sfpo_edu.metrics import (
    RunLogger,
    atomic_write_text,
    lock_run_dir,
    read_config,
    save_trajectory,
    unlock_run_dir,
)
from sfpo_edu.models import Policy, load_policy, set_cpu_threads
from sfpo_edu.params import restore_, trainable_params
from sfpo_edu.records import StepPath
from sfpo_edu.rewards import score_completions
from sfpo_edu.rollouts import (
    RolloutBatch,
    encode_prompts,
    generate_rollouts,
    greedy_completions,
)
from sfpo_edu.sfpo import LossFn, StopRule, make_optimizer, update
from sfpo_edu.tasks import Problem, load_task

RESUMABLE = ("num_steps", "eval_every", "save_every", "extra")
"""Config fields that may change on resume (a larger ``num_steps`` extends the run)."""


def load_policy_for(cfg: SFPOConfig) -> Policy:
    """``load_policy`` with the model fields of a config."""
    return load_policy(
        cfg.model,
        lora=cfg.lora_r > 0,
        lora_r=max(cfg.lora_r, 1),
        lora_alpha=cfg.lora_alpha,
        quantization=None if cfg.quantization == "none" else cfg.quantization,
        device=cfg.device,
        dtype=cfg.dtype,
        gradient_checkpointing=cfg.gradient_checkpointing,
        seed=cfg.seed,
    )


def make_loss_fn(model: torch.nn.Module, cfg: SFPOConfig) -> LossFn:
    """The GRPO loss on a RolloutBatch, read by every pass of every algorithm."""

    def loss_fn(batch: RolloutBatch) -> tuple[Tensor, dict[str, float]]:
        logps, entropy = per_token_logps(
            model, batch, temperature=cfg.temperature, with_entropy=True
        )  # (B, T), (B, T)
        if batch.old_per_token_logps is None:  # the first pass: we are at θ₀
            batch.old_per_token_logps = logps.detach()  # (B, T), kept for every pass
        return grpo_loss(
            logps,
            batch.old_per_token_logps,
            batch.advantages,
            batch.completion_mask,
            clip_eps=cfg.clip_eps,
            loss_agg=cfg.loss_agg,
            kl_coef=cfg.kl_coef,
            ref_per_token_logps=batch.ref_per_token_logps,
            entropy_coef=cfg.entropy_coef,
            entropy=entropy,
            max_tokens=cfg.max_new_tokens,
        )

    return loss_fn


@torch.no_grad()
def fill_reference_logps(
    model: torch.nn.Module, batch: RolloutBatch, cfg: SFPOConfig
) -> None:
    """The no-grad forwards at θ₀ before an update: ``old_per_token_logps`` with several
    mini-batches (with one, the first pass gives them: see ``make_loss_fn``), and
    ``ref_per_token_logps`` from the base model (adapter off) when ``kl_coef`` > 0."""
    if cfg.num_minibatches > 1:
        batch.old_per_token_logps, _ = per_token_logps(
            model, batch, temperature=cfg.temperature
        )  # (B, T) at θ₀, once: every pass reuses them
    if cfg.kl_coef > 0:
        with model.disable_adapter():  # π_ref = the base model
            batch.ref_per_token_logps, _ = per_token_logps(
                model, batch, temperature=cfg.temperature
            )  # (B, T)


def evaluate_accuracy(
    policy: Policy, problems: list[Problem], cfg: SFPOConfig
) -> dict[str, float]:
    """Greedy held-out accuracy (and answer format rate) on ``problems``."""
    completions = greedy_completions(
        policy,
        [p.prompt for p in problems],
        max_new_tokens=cfg.max_new_tokens,
        system_prompt=cfg.system_prompt,
    )
    _, stats = score_completions(completions, [p.answer for p in problems], "binary")
    return {
        "eval/accuracy": stats["reward/accuracy"],
        "eval/format": stats["reward/format"],
    }


def check_prompt_lengths(
    policy: Policy, problems: list[Problem], cfg: SFPOConfig
) -> None:
    """Raise if a prompt (chat template included) plus ``max_new_tokens`` overflows the
    model's context. Only the 1,000 longest prompts (in characters) are tokenized."""
    context = getattr(policy.model.config, "max_position_embeddings", None)
    if context is None or not problems:
        return
    prompts = sorted({p.prompt for p in problems}, key=len)[-1000:]
    _, mask = encode_prompts(policy, prompts, cfg.system_prompt)  # (N, P)
    lengths = mask.sum(1)  # (N,)
    worst = int(lengths.argmax())
    if lengths[worst] + cfg.max_new_tokens > context:
        raise ValueError(
            f"a prompt of task {cfg.task!r} ({prompts[worst][:40]!r}…) is "
            f"{int(lengths[worst])} tokens with the chat template; with max_new_tokens="
            f"{cfg.max_new_tokens} it does not fit the {context}-token context of "
            f"{cfg.model!r}. Fix: shorten or drop that prompt, or lower max_new_tokens."
        )


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocator peak on a GPU, process peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@contextlib.contextmanager
def graceful_interrupt() -> Iterator[dict[str, bool]]:
    """First Ctrl-C: finish the current step, save, stop. Second: stop at once."""
    flag = {"stop": False}

    def handler(signum: int, frame: Any) -> None:
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True
        print(
            "\nInterrupted: finishing this step, then saving a checkpoint. "
            "Press Ctrl-C again to stop at once.",
            file=sys.stderr,
        )

    previous = None  # Ctrl-C stays alone on Windows, outside Python or the main thread
    if sys.platform != "win32" and signal.getsignal(signal.SIGINT) is not None:
        with contextlib.suppress(ValueError):
            previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


class Trainer:
    """Trains one policy with one algorithm and writes a run folder.

    ``run_dir`` gets ``config.json``, ``metrics.jsonl``, ``samples.jsonl`` and the
    checkpoints; ``policy`` is an already loaded one (default: load ``cfg.model``);
    ``resume`` continues from the latest checkpoint (only ``RESUMABLE`` fields may
    differ). What can be checked without the model (existing run, config, a writable
    unlocked folder, the problems) is checked before it loads. The folder stays locked
    (``metrics.lock_run_dir``) until ``train()`` ends.
    """

    def __init__(
        self,
        cfg: SFPOConfig,
        run_dir: str | Path,
        *,
        policy: Policy | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.interrupted = False  # set by train(): stopped early by Ctrl-C
        if not resume and (self.run_dir / "metrics.jsonl").exists():
            raise FileExistsError(
                f"{self.run_dir} already holds a run. Fix: pass resume=True "
                "(--resume) to continue it, or choose another run name / folder."
            )
        lock_run_dir(self.run_dir)
        try:
            checkpoint = find_checkpoint(self.run_dir) if resume else None
            if resume:
                self._check_same_config(checkpoint)
            n_train, n_eval = cfg.num_steps * cfg.num_prompts, cfg.num_eval_prompts
            self.train_problems = load_task(cfg.task, n_train, seed=cfg.seed)
            self.eval_problems = []
            if cfg.eval_every:
                self.eval_problems = load_task(
                    cfg.task, n_eval, seed=cfg.seed, split="heldout"
                )
            self.policy = load_policy_for(cfg) if policy is None else policy
            problems = self.train_problems + self.eval_problems
            check_prompt_lengths(self.policy, problems, cfg)
            self.params = trainable_params(self.policy.model)
            self.optimizer = make_optimizer(self.params, cfg)
            self.stop_rule = StopRule.from_config(cfg)
            self.loss_fn = make_loss_fn(self.policy.model, cfg)
            self.step, self.rollouts_total = 0, 0
            if checkpoint is not None:  # load before anything in the folder changes
                state = load_checkpoint_folder(checkpoint, self.policy, self.optimizer)
                self.step = state["next_step"]
                self.rollouts_total = state["rollouts_total"]
                self.stop_rule.load_state_dict(state["stop_rule"])
            self.logger = RunLogger(self.run_dir, config=cfg.to_dict())
            if resume:  # drop rows after the checkpoint: they are redone
                self.logger.truncate_after(self.step - 1)
        except BaseException:
            unlock_run_dir(self.run_dir)
            raise

    # --- one outer step ------------------------------------------------------------
    def rollout(self, step: int) -> tuple[RolloutBatch, list[str], dict[str, float]]:
        """Sample and score the batch of ``step``; fill advantages and old log-probs."""
        cfg, n = self.cfg, self.cfg.num_prompts
        problems = self.train_problems[step * n : (step + 1) * n]
        batch = generate_rollouts(
            self.policy,
            [p.prompt for p in problems],
            group_size=cfg.group_size,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            system_prompt=cfg.system_prompt,
            seed=cfg.seed * 1_000_003 + step,
        )
        answers = [p.answer for p in problems for _ in range(cfg.group_size)]
        rewards, reward_stats = score_completions(
            batch.completions, answers, cfg.reward_scheme
        )
        batch.rewards = torch.tensor(rewards)
        batch.advantages, adv_stats = group_advantages(
            batch.rewards, cfg.group_size, cfg.scale_rewards
        )
        batch.advantages = batch.advantages.to(self.policy.device)
        fill_reference_logps(self.policy.model, batch, cfg)
        lengths = batch.completion_mask.sum(1).float()  # (B,)
        stats = reward_stats | adv_stats
        stats["completions/mean_length"] = lengths.mean().item()
        stats["completions/clipped_ratio"] = batch.truncated.float().mean().item()
        stats["tokens/generated"] = lengths.sum().item()
        return batch, answers, stats

    def train_step(self, step: int) -> dict[str, float]:
        """One outer step: rollouts, update, metrics (not written)."""
        cfg = self.cfg
        if self.policy.device.type == "cpu":
            set_cpu_threads(cfg.num_threads)
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        batch, answers, stats = self.rollout(step)
        t1 = time.perf_counter()
        snapshot = cfg.snapshot_every and step % cfg.snapshot_every == 0
        path = StepPath() if snapshot else None
        metrics = update(
            self.params,
            self.optimizer,
            batch,
            self.loss_fn,
            cfg,
            self.stop_rule,
            step,
            path,
        )
        t2 = time.perf_counter()
        if path is not None and not metrics["update/skipped"]:
            save_trajectory(self.run_dir, step, path.points())
        self.rollouts_total += len(batch)
        self._log_samples(step, batch, answers)
        return {
            "step": step,
            **stats,
            **metrics,
            "rollouts/total": self.rollouts_total,
            "time/rollout_s": t1 - t0,
            "time/update_s": t2 - t1,
            "time/step_s": time.perf_counter() - t0,
            "time/threads": torch.get_num_threads(),
            "memory/peak_mb": peak_memory_mb(self.policy.device),
        }

    def evaluate(self) -> dict[str, float]:
        return evaluate_accuracy(self.policy, self.eval_problems, self.cfg)

    def _log_samples(self, step: int, batch: RolloutBatch, answers: list[str]) -> None:
        rows = [
            {
                "step": step,
                "group": i // self.cfg.group_size,
                "prompt": batch.prompts[i],
                "completion": batch.completions[i],
                "answer": answers[i],
                "reward": batch.rewards[i].item(),
                "advantage": batch.advantages[i].item(),
                "truncated": bool(batch.truncated[i]),
                "length": int(batch.completion_mask[i].sum()),
            }
            for i in range(min(self.cfg.num_samples_logged, len(batch)))
        ]
        self.logger.log_samples(rows)

    # --- the loop ------------------------------------------------------------------
    def train(self) -> list[dict[str, float]]:
        """Run from ``self.step`` to ``num_steps``; returns the rows written."""
        lock_run_dir(self.run_dir)  # still held since __init__, unless train() ran
        try:
            from tqdm.auto import tqdm

            cfg = self.cfg
            bar = tqdm(
                total=cfg.num_steps,
                initial=self.step,
                desc=cfg.algo,
                unit="step",
                disable=not self.progress,
                dynamic_ncols=True,
            )
            with graceful_interrupt() as interrupt:
                rows = self._run_steps(bar, interrupt)
                if self.step == cfg.num_steps and not interrupt["stop"]:
                    final = {"step": self.step, "rollouts/total": self.rollouts_total}
                    if cfg.eval_every:
                        final |= self.evaluate()
                        bar.set_postfix(_postfix(final))
                    self.logger.log(final)
                    rows.append(final)
                self.save_checkpoint()
                self.interrupted = interrupt["stop"]
            bar.close()
            return rows
        finally:
            unlock_run_dir(self.run_dir)

    def _run_steps(self, bar: Any, interrupt: dict[str, bool]) -> list[dict[str, Any]]:
        """Outer steps until ``num_steps`` or Ctrl-C: log each row, checkpoint every
        ``save_every`` steps; returns the rows."""
        cfg, rows = self.cfg, []
        while self.step < cfg.num_steps and not interrupt["stop"]:
            s = self.step
            row = {}
            if cfg.eval_every and s % cfg.eval_every == 0:
                row |= self.evaluate()
            row = self.train_step(s) | row
            if row.get("update/skipped"):
                warnings.warn(
                    f"step {s}: non-finite loss, update skipped", stacklevel=1
                )
            self.logger.log(row)
            rows.append(row)
            self.step = s + 1
            if cfg.save_every and self.step % cfg.save_every == 0:
                self.save_checkpoint()
            bar.update(1)
            bar.set_postfix(_postfix(row))
        return rows

    # --- checkpoints ---------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>/`` (as a hidden folder renamed into place), name it
        in ``latest`` atomically, then delete older ones but the previous. A step that
        ``latest`` names is not rewritten, so it always names a whole checkpoint."""
        folder = self.run_dir / f"checkpoint-{self.step}"
        if _read_latest(self.run_dir) == folder.name:
            return folder
        tmp = self.run_dir / f".checkpoint-{self.step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        named = self.policy.model.named_parameters()
        weights = {
            n: p.detach().contiguous().cpu() for n, p in named if p.requires_grad
        }
        save_file(weights, str(tmp / "trainable.safetensors"))
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        state = {
            "next_step": self.step,
            "rollouts_total": self.rollouts_total,
            "stop_rule": self.stop_rule.state_dict(),
            "config": self.cfg.to_dict(),
        }
        (tmp / "state.json").write_text(json.dumps(state))
        shutil.rmtree(folder, ignore_errors=True)  # not named in `latest`
        tmp.rename(folder)
        atomic_write_text(self.run_dir / "latest", folder.name)
        previous = [c for c in _checkpoints(self.run_dir) if _step_of(c) < self.step]
        for old in _checkpoints(self.run_dir):
            if old != folder and old not in previous[-1:]:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def _check_same_config(self, checkpoint: Path | None) -> None:
        """Only ``RESUMABLE`` fields may differ from the checkpoint's (or run's) cfg."""
        state = _read_state(checkpoint) if checkpoint is not None else {}
        if "config" in state:
            saved, source = state["config"], checkpoint / "state.json"
        else:
            saved, source = read_config(self.run_dir), self.run_dir / "config.json"
        done, run = state.get("next_step", 0), self.run_dir
        if done > self.cfg.num_steps:  # its later rows would be dropped, not redone
            raise ValueError(
                f"cannot resume {run} with num_steps={self.cfg.num_steps}: its "
                f"checkpoint is at step {done}. Fix: pass num_steps >= {done} "
                f"(--num-steps) to go on, or evaluate it as is (sfpo-edu eval {run})."
            )
        if checkpoint is None and (run / "metrics.jsonl").exists():
            warnings.warn(
                f"{run} has no checkpoint (save_every=0, or stopped before the first "
                "save): training starts again at step 0, redoing the steps it logged.",
                stacklevel=3,
            )
        diff = [
            f"{k}={saved.get(k)!r} (now {v!r})"
            for k, v in self.cfg.to_dict().items()
            if k not in RESUMABLE and saved.get(k) != v
        ]
        if diff:
            raise ValueError(
                f"cannot resume {run}: it was trained with {', '.join(diff)} "
                f"({source}). Only {', '.join(RESUMABLE)} may change on resume. Fix: "
                "resume with the saved settings, or start a new run."
            )


def _step_of(folder: Path) -> int:
    return int(folder.name.removeprefix("checkpoint-"))


def _checkpoints(run_dir: Path) -> list[Path]:
    """The run's ``checkpoint-<n>`` folders, oldest first (each is whole: it gets that
    name only once written)."""
    found = [p for p in run_dir.glob("checkpoint-*") if p.is_dir()]
    return sorted(
        (p for p in found if re.fullmatch(r"checkpoint-\d+", p.name)), key=_step_of
    )


def _read_latest(run_dir: Path) -> str | None:
    """The checkpoint ``latest`` names, if that folder exists."""
    try:
        name = (run_dir / "latest").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if name in {c.name for c in _checkpoints(run_dir)} else None


def find_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint folder to resume from: the one ``latest`` names, else (with a
    warning) the newest one present; None when the run has none."""
    run_dir = Path(run_dir)
    name = _read_latest(run_dir)
    if name is not None:
        return run_dir / name
    found = _checkpoints(run_dir)
    if not found:
        return None
    why = "`latest` names a checkpoint that is not there"
    if not (run_dir / "latest").exists():
        why = "the file `latest` is missing"
    warnings.warn(
        f"{run_dir}: {why}; using {found[-1].name}, the newest checkpoint.",
        stacklevel=2,
    )
    return found[-1]


def _damaged(path: Path, reason: str) -> ValueError:
    """The error for a checkpoint file that cannot be used; offers the one before."""
    folder = path.parent
    earlier = [c for c in _checkpoints(folder.parent) if _step_of(c) < _step_of(folder)]
    fix = (
        f"delete {folder} and resume again: the run continues from {earlier[-1].name},"
        " the previous whole checkpoint"
        if earlier
        else f"there is no earlier checkpoint; delete {folder} to redo the run from "
        "step 0, or start a new run"
    )
    reason = reason.strip().splitlines()[0][:120]  # torch's messages run for lines
    return ValueError(f"{path} is damaged ({reason}). Fix: {fix}.")


def _read_or_damaged(path: Path, read: Callable[[], Any]) -> Any:
    """``read()``; any failure (missing, truncated or garbled file) is ``_damaged``."""
    try:
        return read()
    except Exception as err:
        raise _damaged(path, f"{type(err).__name__}: {err}") from None


def _read_state(folder: Path) -> dict[str, Any]:
    path = folder / "state.json"
    state = _read_or_damaged(path, lambda: json.loads(path.read_text()))
    needed = {"next_step", "rollouts_total", "stop_rule"}
    if not isinstance(state, dict) or not needed <= set(state):
        raise _damaged(path, f"it lacks one of {sorted(needed)}")
    return state


def _check_tensors(path: Path, tensors: dict[str, Tensor], shapes: dict) -> None:
    """Every tensor finite and of the expected shape, or the file is damaged."""
    for name, t in tensors.items():
        if name in shapes and t.shape != shapes[name]:
            expected = tuple(shapes[name])
            raise _damaged(
                path, f"{name} has shape {tuple(t.shape)}, the model's is {expected}"
            )
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise _damaged(path, f"{name} holds NaN or infinite values")


def load_checkpoint_folder(
    folder: Path, policy: Policy, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Load a checkpoint folder into ``policy`` (and ``optimizer``); returns its state.
    A file unreadable, or with NaN or misshapen tensors, is a ValueError naming the file
    and the previous checkpoint."""
    state = _read_state(folder)
    path = folder / "trainable.safetensors"
    weights = _read_or_damaged(path, lambda: load_file(str(path)))
    named = [(n, p) for n, p in policy.model.named_parameters() if p.requires_grad]
    missing = sorted({n for n, _ in named} - set(weights))
    if missing:
        raise ValueError(
            f"checkpoint {folder} does not match the model: missing {missing[:3]}. "
            "Fix: load it with the same model and LoRA settings (its config.json)."
        )
    _check_tensors(path, weights, {n: p.shape for n, p in named})
    if optimizer is not None:
        path = folder / "optimizer.pt"
        saved = _read_or_damaged(path, lambda: torch.load(path, weights_only=True))
        # load_state_dict checks the number of parameters
        _read_or_damaged(path, lambda: optimizer.load_state_dict(saved))
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for i, slots in saved["state"].items():  # e.g. AdamW's exp_avg, exp_avg_sq
            tensors = {k: v for k, v in slots.items() if isinstance(v, Tensor)}
            shapes = {k: params[i].shape for k, v in tensors.items() if v.ndim}
            _check_tensors(path, tensors, shapes)
    restore_([p for _, p in named], [weights[n] for n, _ in named])
    return state


def load_checkpoint(
    run_dir: str | Path, policy: Policy, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any] | None:
    """``load_checkpoint_folder(find_checkpoint(run_dir), ...)``: the state
    (``next_step``, ``rollouts_total``, ``stop_rule``, ``config``), or None if none."""
    folder = find_checkpoint(run_dir)
    return None if folder is None else load_checkpoint_folder(folder, policy, optimizer)


def _postfix(row: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, label in [("reward/mean", "reward"), ("eval/accuracy", "heldout"),
                       ("sfpo/alpha", "α"), ("time/step_s", "s/step")]:  # fmt: skip
        if row.get(key) is not None:
            out[label] = f"{row[key]:.2f}"
    return out
