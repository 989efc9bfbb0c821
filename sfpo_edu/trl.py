"""SFPO inside TRL's ``GRPOTrainer``: the same update rule, TRL's distributed plumbing.

Use ``SFPOGRPOConfig`` and ``SFPOTrainer`` like ``GRPOConfig`` and ``GRPOTrainer``
(DDP, DeepSpeed ZeRO-1/2 or FSDP via ``accelerate launch``); install with ``pip install
"sfpo_edu[trl]"`` (TRL 1.16.x). Example, metrics and backends: :doc:`scale_out`.

TRL computes ``old_per_token_logps`` once at the sampling policy θ₀, then runs μ =
``num_iterations`` = K + 1 passes over each generation batch; ``training_step`` adds:

    micro-step 0 of pass 0:  stop rule (sfpo.start_outer_step); snapshot θ₀ (fp32)
    passes 0 … K−1:          fast, TRL's unchanged loss      θ^{k+1} = θ^k − η∇L(θ^k)
    micro-step 0 of pass K:  reposition in place             θ̃ = θ₀ + α(θ_K − θ₀)
    pass K:                  slow, from θ̃                   θ_{s+1} = θ̃ − η∇L(θ̃)

α = 1 is exactly ``GRPOTrainer`` with ``num_iterations = K + 1``. Departures from
``sfpo_edu.sfpo`` and the paper:
1. A pass is TRL's (shuffled micro-batches); it must be whole optimizer steps, so that
   θ_K exists.
2. The loss is TRL's ``loss_type``; ``dapo`` is ``token_mean`` if a pass is one step.
3. TRL's LR scheduler steps per optimizer step; ``lr_scheduler_type="constant"``
   matches ``sfpo_edu``.
4. While SFPO is off (stop rule fired, or α = 0) the K fast slots are skipped with no
   gradients, so AdamW moves nothing (TRL logs loss 0) and fp16's scaler cannot step:
   fp16 is refused unless ``stop_rule="never"`` and α > 0.
5. The stop rule reads TRL's ``entropy`` of the slow pass; rank 0 decides for all.
6. ``sfpo/slow_step_norm``, ``sfpo/cos_fast_slow`` and ``kl/theta_k`` are not logged.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from packaging.version import Version
from torch import Tensor
from torch.distributed.tensor import DTensor

from sfpo_edu.config import SFPOConfig, field_docs
from sfpo_edu.params import Snapshot, interpolate_, snapshot, trainable_params
from sfpo_edu.sfpo import StopRule, finish_outer_step, start_outer_step

TRL_TESTED = ">=1.16,<1.17"
TRL_FIX = 'pip install "sfpo_edu[trl]"'


def check_trl_version(version: str) -> None:
    """Raise ImportError unless ``version`` is in the tested range ``TRL_TESTED``."""
    if not Version("1.16") <= Version(version) < Version("1.17"):
        raise ImportError(
            f"sfpo_edu.trl is tested with trl{TRL_TESTED} (it relies on GRPOTrainer "
            f"internals), but trl {version} is installed. Fix: {TRL_FIX}"
        )


try:
    import trl
    from trl import GRPOConfig, GRPOTrainer
except ImportError as err:
    message = f"sfpo_edu.trl needs trl{TRL_TESTED}, which is not installed"
    raise ImportError(f"{message}. Fix: {TRL_FIX}") from err
check_trl_version(trl.__version__)

STATE_FILE = "sfpo_state.json"
# what TRL logs per micro-step → the name a pass's metric gets (fast/…, slow/…)
PASS_KEYS = {"entropy": "entropy", "clip_ratio/region_mean": "clip_frac"}
_FIELD_DOCS = field_docs()


def _sfpo_field(name: str, note: str = "") -> Any:
    """A dataclass field with ``SFPOConfig``'s default and help text for ``name``."""
    help_text = f"{_FIELD_DOCS[name]} {note}".strip()
    return field(default=getattr(SFPOConfig, name), metadata={"help": help_text})


@dataclass
class SFPOGRPOConfig(GRPOConfig):
    """``GRPOConfig`` plus ``SFPOConfig``'s SFPO fields; ``num_iterations`` = K + 1."""

    num_fast_steps: int = _sfpo_field("num_fast_steps", "Sets num_iterations = K + 1.")
    alpha: float = _sfpo_field("alpha")
    stop_rule: str = _sfpo_field("stop_rule")
    stop_window: int = _sfpo_field("stop_window")
    stop_threshold: float = _sfpo_field("stop_threshold")
    stop_step: int | None = _sfpo_field("stop_step", "In generation batches, from 0.")

    def __post_init__(self) -> None:
        # the SFPO fields declared above, checked with sfpo_edu's rules and messages
        SFPOConfig(**{f: getattr(self, f) for f in SFPOGRPOConfig.__annotations__})
        if self.num_iterations not in (1, self.num_fast_steps + 1):
            raise ValueError(
                f"num_iterations={self.num_iterations} is invalid: SFPO runs "
                f"num_fast_steps + 1 = {self.num_fast_steps + 1} passes. Fix: unset it."
            )
        self.num_iterations = self.num_fast_steps + 1  # μ = K + 1
        super().__post_init__()
        if self.steps_per_generation % self.gradient_accumulation_steps:
            raise ValueError(
                f"steps_per_generation={self.steps_per_generation} is not a multiple "
                f"of gradient_accumulation_steps={self.gradient_accumulation_steps}, "
                "so no θ_K exists between passes. Fix: make steps_per_generation a "
                "multiple of gradient_accumulation_steps, or leave it unset."
            )
        if self.fp16 and (self.stop_rule != "never" or self.alpha == 0):
            raise ValueError(
                "fp16=True cannot skip fast passes once SFPO is off (its gradient scaler "
                "needs gradients). Fix: bf16, fp32, or stop_rule='never' and alpha > 0."
            )


class SFPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with reposition-before-update; ``args`` must be a
    ``SFPOGRPOConfig``. ``stop_rule`` is the run's ``sfpo_edu.sfpo.StopRule``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, SFPOGRPOConfig):
            raise TypeError(
                f"SFPOTrainer needs args=SFPOGRPOConfig(...), got "
                f"{type(self.args).__name__}. Fix: use sfpo_edu.trl.SFPOGRPOConfig."
            )
        plugin = self.accelerator.state.deepspeed_plugin
        if self.is_deepspeed_enabled and plugin.zero_stage == 3:
            raise ValueError(
                "SFPOTrainer does not support DeepSpeed ZeRO-3. Fix: use ZeRO-1/2, or "
                "FSDP to shard parameters (examples/accelerate/ has both configs)."
            )
        cfg = self.args
        self.stop_rule = StopRule(
            cfg.stop_rule, cfg.stop_window, cfg.stop_threshold, cfg.stop_step
        )
        self.outer_step = 0  # generation batches started (the paper's s)
        self._alpha = cfg.alpha  # α of the current batch (0 once stopped)
        self._params: list[Tensor] | None = None
        self._theta_0: Snapshot | None = None
        self._masters = False  # DeepSpeed's fp32 master weights are what it steps
        self._rows: dict[int, list[dict[str, Tensor]]] = defaultdict(list)
        self._batch_metrics: dict[str, float] = {}

    def training_step(
        self, model: torch.nn.Module, inputs: Any, num_items_in_batch: Any = None
    ) -> Tensor:
        """One micro-step of TRL's schedule, plus SFPO's actions at pass boundaries:
        each generation batch gets K + 1 passes, k < K fast and k = K slow."""
        K, spg = self.args.num_fast_steps, self.args.steps_per_generation
        # TRL's micro-step counter → pass k in 0 … K, micro-step in 0 … spg − 1
        k, micro = divmod(self._step % (spg * self.num_iterations), spg)
        if k == 0 and micro == 0:  # a new generation batch: stop rule, snapshot θ₀
            self._start_batch()
        # 1. fast (k < K): TRL's pass, unchanged; skipped while SFPO is off (α = 0)
        if k < K and self._alpha == 0:
            return self._skip(model, inputs)
        # 2. reposition, before the first micro-step of the slow pass
        # Eq. (3): θ̃ = θ₀ + α(θ_K − θ₀)
        if k == K and micro == 0 and self._alpha > 0:
            self._reposition()
        # 3. slow (k = K), or a fast micro-step: TRL's forward, loss and backward
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._record(k, loss)
        if k == K and micro == spg - 1:
            self._finish_batch()
        return loss

    def _skip(self, model: torch.nn.Module, inputs: Any) -> Tensor:
        """A fast slot while SFPO is off: no forward, no backward, no gradients."""
        model.train()
        self._prepare_inputs(inputs)  # still generates the batch when it is due
        self._step += 1  # TRL's micro-step counter, as GRPOTrainer.training_step does
        return torch.zeros((), device=self.args.device)

    # --- the three SFPO events ------------------------------------------------------
    def _start_batch(self) -> None:
        """Before generation batch s: the stop rule sets α, then snapshot θ₀."""
        self._batch_metrics = start_outer_step(
            self.stop_rule, self.outer_step, self.args.alpha, agree=self._agree
        )
        self._alpha = self._batch_metrics["sfpo/alpha"]
        self._rows.clear()
        self._theta_0 = self._read_fp32() if self._alpha > 0 else None

    def _agree(self, off: bool) -> bool:
        """Every rank follows rank 0's stop-rule decision."""
        if self.accelerator.num_processes == 1:
            return off
        from accelerate.utils import broadcast

        flag = torch.tensor([float(off)], device=self.accelerator.device)
        return bool(broadcast(flag, from_process=0).item())

    @torch.no_grad()
    def _reposition(self) -> None:
        """θ_K → θ̃ = θ₀ + α(θ_K − θ₀) in place, on what the optimizer steps: DeepSpeed's
        fp32 masters where it has them, else the parameters (shards under FSDP)."""
        theta_0, sharded = self._theta_0, self.is_fsdp_enabled
        theta = self._read_fp32() if self._masters else self._trainable()  # θ_K
        drift = sharded_distance(theta, theta_0, sharded)
        interpolate_(theta, theta_0, self._alpha)  # now θ̃
        moved = sharded_distance(theta, theta_0, sharded)
        if self._masters:
            from deepspeed.utils import safe_set_full_fp32_param

            for p, value in zip(self._trainable(), theta, strict=True):
                safe_set_full_fp32_param(p, value)  # this rank's master partition
                p.data.copy_(value)  # the replicated 16-bit weights
        self._batch_metrics["sfpo/drift_norm"] = drift
        self._batch_metrics["sfpo/reposition_norm"] = moved
        self._theta_0 = None  # free it: nothing reads θ₀ after the reposition

    def _finish_batch(self) -> None:
        """After the slow pass: log this batch's metrics, feed the stop rule."""
        K = self.args.num_fast_steps
        steps = self.args.steps_per_generation // self.args.gradient_accumulation_steps
        passes = [("slow", K)] + ([("fast", K - 1)] if self._rows.get(K - 1) else [])
        metrics = dict(self._batch_metrics)
        for name, k in passes:
            rows = self._rows[k]
            for key in rows[0]:
                values = torch.stack([r[key].float() for r in rows])
                # loss: per optimizer step, like TRL's; the others: mean per micro-step
                total = values.sum() / steps if key == "loss" else values.mean()
                metrics[f"{name}/{key}"] = total
        loss_keys = [k for k in metrics if k.endswith("/loss")]
        if loss_keys and self.accelerator.num_processes > 1:
            losses = torch.stack([metrics[k] for k in loss_keys])
            means = self.accelerator.reduce(losses, reduction="mean")
            metrics |= dict(zip(loss_keys, means, strict=True))
        metrics = {k: float(v) for k, v in metrics.items()}
        if "slow/entropy" in metrics:
            metrics["sfpo/entropy"] = metrics["slow/entropy"]
        finish_outer_step(self.stop_rule, metrics)
        for key, value in metrics.items():
            self._metrics["train"][key].append(value)
        self.outer_step += 1

    def _record(self, k: int, loss: Tensor) -> None:
        """Keep this micro-step's loss, entropy and clip fraction for pass k."""
        if k < self.args.num_fast_steps - 1:
            return  # only the last fast pass and the slow pass are logged
        row = {"loss": loss.detach()}
        for key, name in PASS_KEYS.items():
            values = self._metrics["train"].get(key)
            if values:
                row[name] = torch.tensor(values[-1])  # appended by this micro-step
        self._rows[k].append(row)

    # --- which tensors, read how ----------------------------------------------------
    def _trainable(self) -> list[Tensor]:
        """The trainable parameters as this rank holds them (shards under FSDP)."""
        if self._params is None:
            self._params = trainable_params(self.model)
        return self._params

    @torch.no_grad()
    def _read_fp32(self) -> Snapshot:
        """fp32 copies of what the optimizer steps: DeepSpeed's fp32 masters where it
        keeps them (ZeRO-1/2, bf16 optimizer), else the parameters."""
        params = self._trainable()
        if self.is_deepspeed_enabled:
            from deepspeed.utils import safe_get_full_fp32_param

            masters = [safe_get_full_fp32_param(p) for p in params]
            self._masters = masters[0] is not None
            if self._masters:
                return [m.float() for m in masters]
        return snapshot(params)

    # --- checkpoints: the stop rule and s survive a resume ---------------------------
    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = f"checkpoint-{self.state.global_step}"
            path = os.path.join(self._get_output_dir(trial=trial), folder, STATE_FILE)
            rule = self.stop_rule.state_dict()
            state = {"outer_step": self.outer_step, "stop_rule": rule}
            Path(path).write_text(json.dumps(state))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        path = os.path.join(checkpoint, STATE_FILE) if checkpoint else None
        if path and os.path.exists(path):
            state = json.loads(Path(path).read_text())
            self.outer_step = state["outer_step"]
            self.stop_rule.load_state_dict(state["stop_rule"])


def sharded_distance(
    params: Sequence[Tensor], theta_0: Snapshot, sharded: bool
) -> float:
    """‖θ − θ₀‖ when this rank holds all of θ or, ``sharded``, an FSDP1/FSDP2 shard."""
    squares = sum(
        _local(p.float() - t0).pow(2).sum()
        for p, t0 in zip(params, theta_0, strict=True)
    )  # this rank's part of ‖θ − θ₀‖²
    if sharded and torch.distributed.is_initialized():
        torch.distributed.all_reduce(squares)
    return float(squares) ** 0.5


def _local(t: Tensor) -> Tensor:
    """This rank's part of a (possibly FSDP2 DTensor) tensor."""
    return t.to_local() if isinstance(t, DTensor) else t
