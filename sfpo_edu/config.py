"""SFPOConfig: every knob of a GRPO / SFPO run, in one typed, self-checking dataclass.

Build it directly, e.g. ``SFPOConfig(algo="sfpo", num_fast_steps=3, alpha=0.8)``, or
through the CLI (``sfpo-edu train --help`` shows the field docs below). Bad values and
combinations raise a ``ValueError`` naming the field, the value, the rule and a fix.

Symbols (K, α, G, ε, β, η, ω, τ) follow the paper, arXiv 2510.04072.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_TRAIN_PROBLEMS = 1_000_000  # num_steps × num_prompts: built before step 0

# What ``SFPOConfig.__post_init__`` accepts, field by field, with the fix it suggests.
CHOICES = {
    "algo": ("grpo", "grpo_multi", "sfpo"),
    "stop_rule": ("rise", "abs", "step", "never"),
    "loss_agg": ("token_mean", "seq_mean", "dr_grpo"),
    "optimizer": ("adamw", "sgd"),
    "quantization": ("none", "4bit", "8bit"),
    "reward_scheme": ("binary", "reference"),
    "device": ("auto", "cpu", "cuda"),
    "dtype": ("auto", "float32", "bfloat16", "float16"),
}
# Integer fields: lowest value, highest value (None: no limit), fix.
INTEGERS: dict[str, tuple[int, int | None, str]] = {
    "num_fast_steps": (1, 64, "K = 1-8 is the useful range"),
    "group_size": (2, None, "G = 8 is the usual group size"),
    "num_minibatches": (1, None, "use 1 (the paper's equations) or e.g. 4"),
    "num_prompts": (1, None, "use e.g. 4"),
    "max_new_tokens": (1, None, "use e.g. 32"),
    "num_steps": (1, 100_000, "use e.g. 30-1000"),
    "num_eval_prompts": (1, 100_000, "use 32-512"),
    "eval_every": (0, None, "use 0 to switch evaluation off"),
    "save_every": (0, None, "use 0 to save only at the end"),
    "snapshot_every": (0, None, "use 0 to switch snapshots off"),
    "num_samples_logged": (0, None, "use 0 to log no samples"),
    "lora_r": (0, None, "use 0 for full fine-tuning, else e.g. 16"),
    "lora_alpha": (1, None, "the default is 32"),
    "stop_window": (2, None, "the default is ω = 30"),
    "stop_step": (0, None, "use an outer step, e.g. 10"),
    "num_threads": (0, None, "use 0 to adapt to the machine"),
    # seeds become torch/NumPy seeds (seed × 1,000,003 + step)
    "seed": (0, 2**32 - 1, "use e.g. 0-9999"),
}
# Real-valued fields: the rule in words, the same rule as a test, fix.
REALS: dict[str, tuple[str, Callable[[float], bool], str]] = {
    "alpha": ("in [0, 1]", lambda x: 0 <= x <= 1, "α = 0.8 is the paper default"),
    "lr": ("in (0, 10]", lambda x: 0 < x <= 10, "try 3e-4 for LoRA, 1e-6 for full FT"),
    "clip_eps": ("in (0, 1)", lambda x: 0 < x < 1, "the usual value is 0.2"),
    "kl_coef": (">= 0", lambda x: x >= 0, "use 0 to switch the KL penalty off"),
    "entropy_coef": (">= 0", lambda x: x >= 0, "use 0 to switch the bonus off"),
    "weight_decay": ("in [0, 1)", lambda x: 0 <= x < 1, "use 0 or e.g. 0.01"),
    "stop_threshold": ("> 0", lambda x: x > 0, "the paper uses τ = 1.0"),
    "max_grad_norm": ("> 0", lambda x: x > 0, "pass None to disable clipping"),
    "temperature": ("in (0, 2]", lambda x: 0 < x <= 2, "the default is 0.7"),
    "top_p": ("in (0, 1]", lambda x: 0 < x <= 1, "use 1.0 to switch it off"),
}
OPTIONAL = ("stop_step", "max_grad_norm")  # None is allowed


@dataclass
class SFPOConfig:
    """All settings of a run. GRPO and SFPO share every loss setting, so a comparison
    between them isolates the update rule."""

    # --- which update rule -------------------------------------------------------
    algo: str = "sfpo"
    """``grpo`` (one pass per rollout batch), ``grpo_multi`` (K+1 passes = SFPO with
    α = 1; TRL's μ = ``num_iterations``) or ``sfpo`` (K fast, reposition, slow)."""
    num_fast_steps: int = 3
    """K: fast passes over one rollout batch before repositioning (Eq. 2). 1-64."""
    alpha: float = 0.8
    """α: reposition θ̃ = θ₀ + α(θ_K − θ₀) (Eq. 3), in [0, 1]; 0: GRPO, 1: GRPO×(K+1)."""

    # --- stop rule: SFPO turns into GRPO for good once it fires --------------------
    stop_rule: str = "rise"
    """When SFPO switches off for good: ``rise`` (reference code: entropy z-score ≥ τ),
    ``abs`` (paper: |z| ≥ τ), ``step`` (at ``stop_step``) or ``never``."""
    stop_window: int = 30
    """ω: recent per-step entropies in the z-score window (≥ 2); no stop before ω."""
    stop_threshold: float = 1.0
    """τ: z-score threshold of the stop rule (> 0); a larger τ ignores noisier entropy."""
    stop_step: int | None = None
    """Outer step (≥ 0) at which the ``step`` rule switches SFPO off (required for it)."""

    # --- GRPO loss -----------------------------------------------------------------
    lr: float = 3e-4
    """η: learning rate, in (0, 10]. 3e-4 suits LoRA; full fine-tuning (paper): 1e-6."""
    optimizer: str = "adamw"
    """``adamw`` (one AdamW for all stages, never reset) or ``sgd`` (no momentum)."""
    weight_decay: float = 0.0
    """AdamW weight decay, in [0, 1); acts in the fast steps too."""
    max_grad_norm: float | None = 1.0
    """Clip each optimizer step's gradient norm to this (> 0); ``None`` disables."""
    group_size: int = 8
    """G: completions per prompt; advantages are normalised within a group. ≥ 2."""
    clip_eps: float = 0.2
    """ε: PPO clip range, ratio π_θ/π_θ₀ clipped to [1 − ε, 1 + ε]. In (0, 1)."""
    kl_coef: float = 0.0
    """β: weight of the k3 KL penalty to the base model (LoRA adapter off). ≥ 0;
    needs lora_r > 0."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (reference code: 0.001). ≥ 0."""
    loss_agg: str = "token_mean"
    """``token_mean`` (over the batch's tokens; DAPO), ``seq_mean`` (per completion,
    then over them; GRPO) or ``dr_grpo`` (token sum / (B × max_new_tokens); Dr. GRPO)."""
    scale_rewards: bool = True
    """Divide advantages by the group's reward std (GRPO); ``False``: Dr. GRPO."""
    num_minibatches: int = 1
    """Optimizer steps per pass (paper: 1, reference: 4); must divide num_prompts × G."""

    # --- rollouts and task -----------------------------------------------------------
    num_prompts: int = 4
    """Prompts per rollout batch of num_prompts × G completions. ≥ 1."""
    max_new_tokens: int = 32
    """Token limit per completion (longer ones are truncated). ≥ 1."""
    temperature: float = 0.7
    """Sampling temperature of rollouts and their log-probs, in (0, 2]."""
    top_p: float = 1.0
    """Nucleus sampling mass of rollouts, in (0, 1]; 1 is off."""
    task: str = "arithmetic"
    """``arithmetic`` (a + b, a, b in 1..20), ``arithmetic-hard``, ``arithmetic-mix``,
    ``gsm8k``, ``reasoning_gym:<name>`` or a JSONL file of ``prompt``/``answer``."""
    reward_scheme: str = "binary"
    """``binary`` (1 correct, else 0) or ``reference`` (1 correct, 0.1 if an answer is
    extractable but wrong, else 0)."""
    system_prompt: str | None = None
    """System turn of the chat template; ``None`` keeps the model's default."""

    # --- model ---------------------------------------------------------------------
    model: str = "smollm2-135m"
    """``smollm2-135m`` (offline), ``tiny`` (random, 79 K parameters), a local folder
    or a hub name."""
    lora_r: int = 16
    """LoRA rank, ≥ 0; 0 trains all weights (full fine-tuning)."""
    lora_alpha: int = 32
    """LoRA scaling numerator (not the SFPO α), ≥ 1."""
    quantization: str = "none"
    """Base-model quantization: ``none``, ``4bit`` (NF4, QLoRA) or ``8bit``. Needs LoRA."""
    device: str = "auto"
    """``auto`` (CUDA if present, else CPU), ``cpu`` or ``cuda``."""
    dtype: str = "auto"
    """``auto`` (bf16 where the device computes it natively, fp16 on older GPUs, else
    fp32), ``float32``, ``bfloat16`` or ``float16``. LoRA weights stay float32."""
    num_threads: int = 0
    """CPU threads for torch; 0 adapts each outer step to the idle cores (or keeps
    ``OMP_NUM_THREADS``). A changed count can change results in the last bits."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory (slower)."""

    # --- training loop ---------------------------------------------------------------
    num_steps: int = 30
    """Outer steps s (one rollout batch each), 1-100,000; num_steps × num_prompts ≤ 10⁶."""
    eval_every: int = 10
    """Held-out greedy accuracy every this many steps, at start and end; 0: off."""
    num_eval_prompts: int = 32
    """Held-out prompts per evaluation, 1-100,000."""
    save_every: int = 5
    """Checkpoint every this many steps (and at the end); 0 saves only at the end."""
    snapshot_every: int = 0
    """Save θ₀, fast steps, θ̃, θ_{s+1} every this many steps (LoRA plots); 0: off.
    Sensible only under LoRA (without it each snapshot is a full-size vector)."""
    num_samples_logged: int = 8
    """Completions per step written to samples.jsonl (all G of the first prompts)."""
    diagnostics: bool = True
    """Log ``kl/theta_k``: KL and clip fraction at θ_K (one more forward pass)."""
    seed: int = 0
    """Seed of model init, prompt order, sampling and optimizer; 0 to 2³² − 1."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes stored with the run (never read by the algorithm)."""

    def __post_init__(self) -> None:
        self._check_fields()
        self._check_combinations()

    def _invalid(self, name: str, rule: str, fix: str) -> ValueError:
        value = getattr(self, name)
        return ValueError(f"{name}={value!r} is invalid: {rule}. Fix: {fix}.")

    def _check_fields(self) -> None:
        """Each field on its own: one of its choices, or a number in its range."""
        for name, options in CHOICES.items():
            if getattr(self, name) not in options:
                fix = f"use e.g. {options[0]!r}"
                raise self._invalid(name, f"must be one of {options}", fix)
        for name, (low, high, fix) in INTEGERS.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL:
                continue
            is_int = isinstance(value, int) and not isinstance(value, bool)
            if not is_int or value < low or (high is not None and value > high):
                rule = f"in {low}..{high:,}" if high else f">= {low}"
                raise self._invalid(name, f"must be an integer {rule}", fix)
        for name, (rule, within, fix) in REALS.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL:
                continue
            is_real = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (is_real and math.isfinite(value) and within(value)):
                raise self._invalid(name, f"must be a number {rule}", fix)

    def _check_combinations(self) -> None:
        """Rules that tie several fields together."""
        if self.stop_rule == "step" and self.stop_step is None:
            raise self._invalid(
                "stop_step", "stop_rule='step' needs it", "set stop_step=N"
            )
        lora_fix = "set lora_r > 0 (e.g. 16) or "
        if self.quantization != "none" and self.lora_r == 0:
            rule = "a quantized base needs LoRA"
            raise self._invalid("quantization", rule, lora_fix + "quantization='none'")
        if self.kl_coef > 0 and self.lora_r == 0:
            rule = "the KL reference is the base model with the LoRA adapter off"
            rule += ", and lora_r=0 has no adapter"
            raise self._invalid("kl_coef", rule, lora_fix + "kl_coef=0")
        if self.num_steps * self.num_prompts > MAX_TRAIN_PROBLEMS:
            raise ValueError(
                f"num_steps × num_prompts = {self.num_steps} × {self.num_prompts} "
                f"training problems is over {MAX_TRAIN_PROBLEMS:,}. "
                "Fix: lower num_steps or num_prompts."
            )
        batch = self.batch_size
        if batch % self.num_minibatches:
            sizes = f"{self.num_prompts} × {self.group_size} = {batch}"
            rule = f"it does not divide num_prompts × group_size = {sizes}"
            divisors = [d for d in range(1, batch + 1) if batch % d == 0]
            raise self._invalid("num_minibatches", rule, f"use one of {divisors}")

    # --- derived ---------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Completions per rollout batch, num_prompts × G."""
        return self.num_prompts * self.group_size

    @property
    def num_passes(self) -> int:
        """Optimizer passes over each rollout batch (before any stop rule fires)."""
        return 1 if self.algo == "grpo" else self.num_fast_steps + 1

    @property
    def effective_alpha(self) -> float:
        """The α the update uses: 0 for ``grpo``, 1 for ``grpo_multi``, else ``alpha``."""
        return {"grpo": 0.0, "grpo_multi": 1.0}.get(self.algo, self.alpha)

    # --- (de)serialisation -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SFPOConfig:
        """Rebuild from ``to_dict()`` output; unknown keys are an error (typos)."""
        names = sorted(f.name for f in dataclasses.fields(cls))
        unknown = sorted(set(data) - set(names))
        if unknown:
            fix = f"Fix: remove or rename them; valid fields are {names}."
            raise ValueError(f"unknown config field(s) {unknown}. {fix}")
        return cls(**data)

    def replace(self, **changes: Any) -> SFPOConfig:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def field_docs() -> dict[str, str]:
    """Field name → its docstring: the help of the CLI flags and of ``SFPOGRPOConfig``."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(SFPOConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    return {
        node.target.id: " ".join(doc.value.value.split())
        for node, doc in zip(body, body[1:], strict=False)
        if isinstance(node, ast.AnnAssign) and isinstance(doc, ast.Expr)
    }
