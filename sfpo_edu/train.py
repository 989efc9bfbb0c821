"""The training loop: rollouts → rewards → advantages → old log-probs → update → metrics.

    cfg = SFPOConfig(algo="sfpo", num_steps=30)
    trainer = Trainer(cfg, "runs/sfpo")       # loads SmolLM2-135M + LoRA by default
    trainer.train()                           # progress bar; Ctrl-C saves and stops
    Trainer(cfg, "runs/sfpo", resume=True).train()   # continues where it stopped

One outer step s:
1. take the next ``num_prompts`` training problems (the same ones for every
   algorithm with the same seed) and sample G completions each at θ_s;
2. score them, compute group advantages, and the old log-probs at θ_s, once;
3. call ``sfpo.update`` (GRPO, GRPO×(K+1) or SFPO, with the stop rule);
4. append one flat row to ``metrics.jsonl`` and a few samples to ``samples.jsonl``;
   every ``eval_every`` steps also the held-out greedy accuracy (``eval/accuracy``).

Row ``step = s`` describes the update from θ_s to θ_{s+1}; its ``eval/…`` keys were
measured at θ_s, before the update. A last row ``step = num_steps`` holds the final
evaluation. Checkpoints (``checkpoint-<n>/``: trainable weights as safetensors,
optimizer, stop rule, next step) are written to a new folder and then named in
``latest`` atomically, so an interrupted run always resumes from a whole checkpoint;
the rollout seed of step s depends only on (seed, s), so a resumed run repeats the
steps after the checkpoint exactly and writes each step once.

Where this departs from the paper's setup (all for a CPU-sized demo):
1. LoRA adapters are the trainable parameters; the base model is frozen.
2. No separate old-log-prob forward with one mini-batch: the first pass of every
   algorithm runs at θ₀, so its log-probs (detached) *are* the old log-probs; the
   loss keeps them in the batch and every later pass reuses them unchanged (the
   clip band stays centred on θ₀). Same loss and gradients, one forward fewer.
   With several mini-batches the second one is taken after a step, so the old
   log-probs are computed up front, without grad.
3. The KL reference (β > 0) is the base model with the adapter switched off.
"""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from sfpo_edu.config import SFPOConfig
from sfpo_edu.logprobs import per_token_logps
from sfpo_edu.losses import group_advantages, grpo_loss
from sfpo_edu.metrics import RunLogger, atomic_write_text, save_trajectory
from sfpo_edu.models import Policy, load_policy
from sfpo_edu.params import restore_, trainable_params
from sfpo_edu.records import StepPath
from sfpo_edu.rewards import score_completions
from sfpo_edu.rollouts import RolloutBatch, generate_rollouts, greedy_completions
from sfpo_edu.sfpo import LossFn, StopRule, make_optimizer, update
from sfpo_edu.tasks import Problem, load_task


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
    """The no-grad forwards a batch needs before its update, at θ₀.

    ``old_per_token_logps`` only with several mini-batches (with one, the first pass
    provides them: see ``make_loss_fn``); ``ref_per_token_logps`` from the base model
    (adapter off) when ``kl_coef`` > 0.
    """
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


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocator peak on a GPU, process peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@contextlib.contextmanager
def graceful_interrupt() -> Iterator[dict[str, bool]]:
    """First Ctrl-C: finish the current step, save, stop. Second: stop at once."""
    flag = {"stop": False}
    if sys.platform == "win32" or signal.getsignal(signal.SIGINT) is None:
        yield flag
        return
    try:
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: Any) -> None:
            if flag["stop"]:
                raise KeyboardInterrupt
            flag["stop"] = True
            print(
                "\nInterrupted: finishing this step, then saving a checkpoint. "
                "Press Ctrl-C again to stop at once.",
                file=sys.stderr,
            )

        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C alone
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class Trainer:
    """Trains one policy with one algorithm and writes a run folder.

    Args:
        cfg: the run's settings.
        run_dir: where ``config.json``, ``metrics.jsonl``, ``samples.jsonl`` and the
            checkpoints go.
        policy: an already loaded policy (e.g. shared by a notebook); default loads
            ``cfg.model``.
        resume: continue from the folder's latest checkpoint (an error if the folder
            holds a different config).
        progress: show a tqdm progress bar.
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
        if resume:
            self._check_same_config()
        self.policy = load_policy_for(cfg) if policy is None else policy
        self.params = trainable_params(self.policy.model)
        self.optimizer = make_optimizer(self.params, cfg)
        self.stop_rule = StopRule.from_config(cfg)
        self.loss_fn = make_loss_fn(self.policy.model, cfg)
        n_train = cfg.num_steps * cfg.num_prompts
        self.train_problems = load_task(cfg.task, n_train, seed=cfg.seed, split="train")
        self.eval_problems = (
            load_task(cfg.task, cfg.num_eval_prompts, seed=cfg.seed, split="heldout")
            if cfg.eval_every
            else []
        )
        self.logger = RunLogger(self.run_dir, config=cfg.to_dict())
        self.step = 0
        self.rollouts_total = 0
        if resume:
            self._load_checkpoint()

    # --- one outer step ------------------------------------------------------------
    def rollout(self, step: int) -> tuple[RolloutBatch, list[str], dict[str, float]]:
        """Sample and score the batch of ``step``; fill advantages and old log-probs."""
        cfg = self.cfg
        problems = self.train_problems[
            step * cfg.num_prompts : (step + 1) * cfg.num_prompts
        ]
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
        lengths = batch.completion_mask.sum(1).float()
        stats = reward_stats | adv_stats | {
            "completions/mean_length": lengths.mean().item(),
            "completions/clipped_ratio": batch.truncated.float().mean().item(),
            "tokens/generated": lengths.sum().item(),
        }  # fmt: skip
        return batch, answers, stats

    def train_step(self, step: int) -> dict[str, float]:
        """One outer step: rollouts, update, metrics (not written)."""
        t0 = time.perf_counter()
        torch.manual_seed(self.cfg.seed * 1_000_003 + step)
        batch, answers, stats = self.rollout(step)
        t1 = time.perf_counter()
        every = self.cfg.snapshot_every
        path = StepPath() if every and step % every == 0 else None
        metrics = update(
            self.params,
            self.optimizer,
            batch,
            self.loss_fn,
            self.cfg,
            self.stop_rule,
            step,
            path,
        )
        t2 = time.perf_counter()
        if path is not None and not metrics["update/skipped"]:
            save_trajectory(self.run_dir, step, path.points())
        self.rollouts_total += len(batch)
        self._log_samples(step, batch, answers)
        return {"step": step} | stats | metrics | {
            "rollouts/total": self.rollouts_total,
            "time/rollout_s": t1 - t0,
            "time/update_s": t2 - t1,
            "time/step_s": time.perf_counter() - t0,
            "memory/peak_mb": peak_memory_mb(self.policy.device),
        }  # fmt: skip

    def evaluate(self) -> dict[str, float]:
        return evaluate_accuracy(self.policy, self.eval_problems, self.cfg)

    # --- the loop ----------------------------------------------------------------------
    def train(self) -> list[dict[str, float]]:
        """Run from ``self.step`` to ``num_steps``; returns the rows written."""
        from tqdm.auto import tqdm

        cfg, rows = self.cfg, []
        bar = tqdm(
            total=cfg.num_steps,
            initial=self.step,
            desc=f"{cfg.algo}",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        with graceful_interrupt() as interrupt:
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
            if self.step == cfg.num_steps and not interrupt["stop"]:
                final = {"step": cfg.num_steps, "rollouts/total": self.rollouts_total}
                if cfg.eval_every:
                    final |= self.evaluate()
                    bar.set_postfix(_postfix(final))
                self.logger.log(final)
                rows.append(final)
            self.save_checkpoint()
            self.interrupted = interrupt["stop"]
        bar.close()
        return rows

    # --- samples --------------------------------------------------------------------
    def _log_samples(self, step: int, batch: RolloutBatch, answers: list[str]) -> None:
        n = min(self.cfg.num_samples_logged, len(batch))
        self.logger.log_samples(
            [
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
                for i in range(n)
            ]
        )

    # --- checkpoints ---------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>/`` and point ``latest`` at it, atomically."""
        folder = self.run_dir / f"checkpoint-{self.step}"
        tmp = self.run_dir / f".checkpoint-{self.step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        names = [n for n, p in self.policy.model.named_parameters() if p.requires_grad]
        save_file(
            {
                n: p.detach().contiguous().cpu()
                for n, p in zip(names, self.params, strict=True)
            },
            str(tmp / "trainable.safetensors"),
        )
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        state = {
            "next_step": self.step,
            "rollouts_total": self.rollouts_total,
            "stop_rule": self.stop_rule.state_dict(),
        }
        (tmp / "state.json").write_text(json.dumps(state))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        atomic_write_text(self.run_dir / "latest", folder.name)
        for old in self.run_dir.glob("checkpoint-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def _load_checkpoint(self) -> None:
        state = load_checkpoint(self.run_dir, self.policy, self.optimizer)
        if state is None:  # killed before the first checkpoint: start over
            self.logger.truncate_after(-1)
            return
        self.step = state["next_step"]
        self.rollouts_total = state["rollouts_total"]
        self.stop_rule.load_state_dict(state["stop_rule"])
        self.logger.truncate_after(self.step - 1)

    def _check_same_config(self) -> None:
        path = self.run_dir / "config.json"
        if not path.exists():
            raise FileNotFoundError(
                f"nothing to resume in {self.run_dir} (no config.json)."
            )
        saved = json.loads(path.read_text())
        ignore = {
            "num_steps",
            "eval_every",
            "save_every",
            "extra",
        }  # may change on resume
        diff = sorted(
            k
            for k, v in self.cfg.to_dict().items()
            if k not in ignore and saved.get(k) != v
        )
        if diff:
            raise ValueError(
                f"cannot resume {self.run_dir}: config differs in {diff}. Fix: resume "
                "with the saved settings (config.json) or start a new run."
            )


def load_checkpoint(
    run_dir: str | Path, policy: Policy, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any] | None:
    """Load a run's latest checkpoint into ``policy`` (and ``optimizer``); returns its
    state (``next_step``, ``rollouts_total``, ``stop_rule``), or None if there is none."""
    run_dir = Path(run_dir)
    pointer = run_dir / "latest"
    if not pointer.exists():
        return None
    folder = run_dir / pointer.read_text().strip()
    weights = load_file(str(folder / "trainable.safetensors"))
    named = [(n, p) for n, p in policy.model.named_parameters() if p.requires_grad]
    missing = sorted({n for n, _ in named} - set(weights))
    if missing:
        raise ValueError(
            f"checkpoint {folder} does not match the model: missing {missing[:3]}. "
            "Fix: load it with the same model and LoRA settings (its config.json)."
        )
    restore_([p for _, p in named], [weights[n] for n, _ in named])
    if optimizer is not None:
        optimizer.load_state_dict(
            torch.load(folder / "optimizer.pt", weights_only=True)
        )
    return json.loads((folder / "state.json").read_text())


def _postfix(row: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, label in [("reward/mean", "reward"), ("eval/accuracy", "heldout"),
                       ("sfpo/alpha", "α"), ("time/step_s", "s/step")]:  # fmt: skip
        if row.get(key) is not None:
            out[label] = f"{row[key]:.2f}"
    return out
