"""The typed records passed between the parts of the library: ``StepPath`` (the points
one update passes through), ``RolloutBatch`` and ``Policy``. They import only torch, so
the algorithm and ``logprobs`` can name them without importing transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class StepPath:
    """θ₀, the fast iterates, θ_K, θ̃ and θ_{s+1} of one update, as flat fp32 (D,).

    Pass ``path=StepPath()`` to an update and it comes back filled (``with_fast=False``
    skips the fast iterates). GRPO with μ passes reads as SFPO at α = 1: ``fast`` holds
    the start of every pass, θ_K = θ̃ the start of the last. With α = 0 and for a skipped
    step, θ_K = θ̃ = θ₀ and ``fast`` is [θ₀]. Defined in :doc:`implementation`.
    """

    with_fast: bool = True
    theta_0: Tensor | None = None  # (D,) the behaviour policy that sampled the batch
    fast: list[Tensor] = field(default_factory=list)  # θ⁰ … θ_K, each (D,)
    theta_k: Tensor | None = None  # (D,) after the fast passes
    theta_tilde: Tensor | None = None  # (D,) where the slow pass starts
    theta_next: Tensor | None = None  # (D,) θ_{s+1}, the result

    def add_fast(self, point: Tensor) -> None:
        if self.with_fast:
            self.fast.append(point)

    def stay(self, theta_0: Tensor) -> None:
        """The step did not move (skipped): every point is θ₀."""
        self.theta_0 = self.theta_k = self.theta_tilde = self.theta_next = theta_0
        self.fast = [theta_0] if self.with_fast else []

    def fast_path(self) -> Tensor:
        """θ⁰ … θ_K stacked, (K+1, D)."""
        return torch.stack(self.fast)

    def points(self) -> dict[str, Tensor]:
        """The named points, for plotting and ``metrics.save_trajectory``."""
        named = {"theta_0": self.theta_0, "theta_k": self.theta_k}
        named |= {"theta_tilde": self.theta_tilde, "theta_next": self.theta_next}
        return ({"fast": self.fast_path()} if self.fast else {}) | named


@dataclass
class RolloutBatch:
    """Prompts, sampled completions and (filled in later) what the update needs. Every
    tensor has first dimension B and every list length B, so slicing splits it."""

    prompt_ids: Tensor  # (B, P) left-padded; each prompt repeated G times in a row
    prompt_mask: Tensor  # (B, P) 1 for prompt tokens, 0 for left padding
    completion_ids: Tensor  # (B, T) right-padded with the pad id
    completion_mask: Tensor  # (B, T) 1 up to and including the first EOS, 0 after
    truncated: Tensor  # (B,) bool: hit max_new_tokens without an EOS
    prompts: list[str]  # (B,) the user turn of each row
    completions: list[str]  # (B,) decoded completion text, special tokens skipped
    group_size: int  # G
    rewards: Tensor | None = None  # (B,) filled by the trainer
    advantages: Tensor | None = None  # (B,)
    old_per_token_logps: Tensor | None = None  # (B, T) log π_old(o_t | q, o_<t)
    ref_per_token_logps: Tensor | None = None  # (B, T) log π_ref(o_t | q, o_<t)

    def __len__(self) -> int:
        return self.completion_ids.shape[0]


@dataclass
class Policy:
    """A transformers causal LM (peft-wrapped under LoRA; ``model(ids).logits`` is
    (B, L, V)), its tokenizer, the device of its weights and the dtype it computes in
    (the 4-bit compute dtype under quantization)."""

    model: torch.nn.Module
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    name: str
    device: torch.device
    dtype: torch.dtype
