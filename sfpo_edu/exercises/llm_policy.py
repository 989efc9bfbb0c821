"""Exercises on the LLM policy: per-token log-probs, the completion mask and the last
number of a completion (notebook 03)."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from sfpo_edu.exercises.grader import Exercise, gen
from sfpo_edu.logprobs import per_token_logps
from sfpo_edu.rewards import extract_answer
from sfpo_edu.rollouts import mask_after_eos


def _per_token_logps(logits: Tensor, ids: Tensor, temperature: float) -> Tensor:
    """``logprobs.per_token_logps`` of a 'model' whose logits[:, t] predict ids[:, t]
    (its logits at the last position predict nothing: zeros)."""
    B, T, V = logits.shape
    padded = torch.cat([logits, torch.zeros(B, 1, V)], dim=1)  # (B, T + 1, V)

    def model(logits_to_keep: Tensor, **_: Any) -> SimpleNamespace:
        return SimpleNamespace(logits=padded[:, logits_to_keep].clone())  # positions

    ones = torch.ones_like(ids)  # (B, T); the prompt is one token, 0
    prompt = dict(prompt_ids=0 * ones[:, :1], prompt_mask=ones[:, :1], group_size=1)
    batch = SimpleNamespace(completion_ids=ids, completion_mask=ones, **prompt)
    return per_token_logps(model, batch, temperature=temperature)[0]


def _naive(logits: Tensor, ids: Tensor, temperature: float) -> Tensor:
    """log(exp(z) / Σ exp(z))[o_t], z = logits / temperature: overflows for large z."""
    p = (logits / temperature).exp() / (logits / temperature).exp().sum(-1, True)
    return p.gather(-1, ids.unsqueeze(-1)).squeeze(-1).log()  # (B, T)


_HAND, _IDS = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]), torch.tensor([[0, 2]])
_LOGITS = 3 * torch.randn(3, 4, 11, generator=gen(4))  # (B, T, V)
_RANDOM_IDS = torch.randint(11, (3, 4), generator=gen(5))  # (B, T)
_HUGE = torch.tensor([[[1e3, 0, -1e3]]])  # (1, 1, 3)
check_per_token_logps = Exercise(
    "per-token log-probs: fn(logits (B, T, V), completion_ids, temperature) -> (B, T): "
    "log_softmax(logits[:, t] / temperature)[o_t]. Reference: logprobs.per_token_logps.",
    _per_token_logps,
    lambda: [
        ("hand-made: B = 1, T = 2, V = 3, temperature 0.5", _HAND, _IDS, 0.5),
        ("random: B = 3, T = 4, V = 11", _LOGITS, _RANDOM_IDS, 0.7),
        ("degenerate: huge logits (be stable)", _HUGE, _IDS[:, 1:], 1.0),
    ],
    [
        (
            lambda logits, ids, t: _per_token_logps(logits, ids, 1.0),
            "divide the logits by the temperature BEFORE the log-softmax.",
        ),
        (
            lambda logits, ids, t: _per_token_logps(logits, ids, 1.0) / t,
            "divide the logits by the temperature, not the log-probabilities.",
        ),
        (
            lambda logits, ids, t: _per_token_logps(logits, ids, t).exp(),
            "these are probabilities: take the log, with torch.log_softmax.",
        ),
        (
            _naive,
            "exp of a large logit overflows (inf / inf is NaN): torch.log_softmax "
            "subtracts the largest logit first, which is stable.",
        ),
    ],
    atol=1e-4,
)


def _is_eos(ids: Tensor, eos_ids: list[int]) -> Tensor:
    """Where ``ids`` (B, T) are an EOS."""
    return torch.isin(ids, torch.tensor(eos_ids))


_EOS = torch.tensor(  # EOS 9 in the middle, at the end, nowhere; EOS 8 or 9 at 1, at 0
    [[5, 9, 3, 3], [5, 6, 7, 9], [1, 2, 3, 4], [4, 8, 9, 9], [9, 9, 1, 2]]
)
check_completion_mask = Exercise(
    "completion mask: fn(ids, eos_ids) -> (mask (B, T), truncated (B,)): 1 up to AND "
    "including the first EOS; truncated: no EOS. Reference: rollouts.mask_after_eos.",
    lambda ids, eos_ids: mask_after_eos(ids, eos_ids, pad_id=0)[1:],
    lambda: [
        ("hand-made: EOS 9 in the middle, at the end, nowhere", _EOS[:3], [9]),
        ("hand-made: two EOS ids; the first EOS counts, even at 0", _EOS[3:], [8, 9]),
        ("random: B = 6, T = 7", torch.randint(0, 6, (6, 7), generator=gen(6)), [5]),
        ("degenerate: every row truncated", torch.ones(2, 3, dtype=torch.long), [0]),
    ],
    [
        (
            lambda ids, e: (
                (_is_eos(ids, e).cumsum(1) == 0).long(),
                ~_is_eos(ids, e).any(1),
            ),
            "the EOS token itself is part of the completion: keep it in the mask, 1 up "
            "to AND including it.",
        ),
        (
            lambda ids, e: (
                mask_after_eos(ids, e, pad_id=0)[1],
                _is_eos(ids, e).any(1),
            ),
            "truncated is True for the rows WITHOUT an EOS.",
        ),
        (
            lambda ids, e: (torch.ones_like(ids), ~_is_eos(ids, e).any(1)),
            "everything after the FIRST EOS is padding: mask it out.",
        ),
    ],
    names=("completion_mask", "truncated"),
)


def _number(pattern: str, index: int = -1) -> Callable[[str], str | None]:
    """A wrong last_number: the ``index``-th match of ``pattern``, or None."""
    return lambda text: (re.findall(pattern, text) or [None])[index]


check_last_number = Exercise(
    "last number: fn(text) -> str | None: the last number, without thousands commas "
    '("1,234" → "1234"), minus kept, else None. Reference: rewards.extract_answer.',
    extract_answer,
    lambda: [
        ("hand-made: the model writes the sum", "2 + 9 = 11"),
        ("hand-made: words around it, a full stop after it", "The answer is 25."),
        ("hand-made: a negative answer", "3 - 10 = -7"),
        ("hand-made: a decimal", "Half of 7 is 3.5"),
        ("hand-made: thousands separator", "So the total is 1,234 apples."),
        ("degenerate: no number at all", "I'm here to help!"),
        ("degenerate: an empty completion", ""),
    ],
    [  # the first mistake that gives the student's answer is shown: the order matters
        (
            _number(r"-?\d+(?:\.\d+)?", index=0),
            "take the LAST number: small models write '2 + 9 = 11', the answer last.",
        ),
        (
            _number(r"-?\d+(?:\.\d+)?"),
            "remove thousands separators: 1,234 is the number 1234, not 234.",
        ),
        (
            _number(r"-?\d[\d,]*(?:\.\d+)?"),
            "remove thousands separators: 1,234 is the number 1234, not '1,234'.",
        ),
        (_number(r"\d+(?:\.\d+)?"), r"keep a leading minus sign: -?\d+."),
        (_number(r"-?\d+"), r"allow a decimal part: \d+(?:\.\d+)?."),
        (
            lambda text: extract_answer(text) or "",
            "return None, not '', when there is no number: None means 'no answer'.",
        ),
    ],
)
