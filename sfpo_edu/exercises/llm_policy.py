"""Exercises on the LLM policy: per-token log-probs, the completion mask and the last
number of a completion (notebook 03)."""

from __future__ import annotations

import re
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


def _pick(x: Tensor, ids: Tensor) -> Tensor:
    """x[b, t, ids[b, t]]: (B, T, V) → (B, T)."""
    return x.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def _random_logits(B: int = 3, T: int = 4, V: int = 11) -> tuple[Tensor, Tensor]:
    """Logits (B, T, V) of std 3 and the ids (B, T) they predict."""
    ids = torch.randint(0, V, (B, T), generator=gen(5))
    return 3 * torch.randn(B, T, V, generator=gen(4)), ids


_HAND = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # (1, 2, 3)
_HUGE = torch.tensor([[[1000.0, 0, -1000]]])  # (1, 1, 3)
check_per_token_logps = Exercise(
    "per-token log-probs: fn(logits, completion_ids, temperature) -> per_token_logps "
    "(B, T), logits (B, T, V) where logits[:, t] predicts completion_ids[:, t]: "
    "log_softmax(logits / temperature)[o_t]. Reference: logprobs.per_token_logps on a "
    "model with these logits.",
    _per_token_logps,
    lambda: [
        ("hand-made: B = 1, T = 2, V = 3, T° = 1", _HAND, torch.tensor([[0, 2]]), 1.0),
        ("hand-made: the same at temperature 0.5", _HAND, torch.tensor([[0, 2]]), 0.5),
        ("random: B = 3, T = 4, V = 11, T° = 0.7", *_random_logits(), 0.7),
        ("degenerate: huge logits (be stable)", _HUGE, torch.tensor([[1]]), 1.0),
    ],
    {
        "divide the logits by the temperature BEFORE the log-softmax.": lambda lg, i, t: (
            _pick(torch.log_softmax(lg, -1), i)
        ),
        "divide the logits by the temperature, not the log-probabilities.": (
            lambda lg, i, t: _pick(torch.log_softmax(lg, -1), i) / t
        ),
        "these are probabilities; take the log (torch.log_softmax).": lambda lg, i, t: (
            _pick(torch.softmax(lg / t, -1), i)
        ),
        "exp of a large logit overflows: use torch.log_softmax (or subtract "
        "logsumexp), which is stable.": lambda lg, i, t: _pick(
            (lg / t).exp() / (lg / t).exp().sum(-1, True), i
        ).log(),
    },
    atol=1e-4,
)


def _eos(ids: Tensor, eos_ids: list[int]) -> Tensor:
    """1 where a token is an EOS, (B, T)."""
    return torch.isin(ids, torch.tensor(eos_ids)).long()


_IDS = torch.tensor(
    [[5, 9, 3, 3], [5, 6, 7, 9], [1, 2, 3, 4], [4, 8, 9, 9], [9, 9, 1, 2]]
)
check_completion_mask = Exercise(
    "completion mask: fn(completion_ids, eos_ids) -> (completion_mask, truncated): ids "
    "(B, T); the mask (B, T) is 1 up to AND including the first EOS of each row, 0 "
    "after; truncated (B,) bool is True for rows with no EOS. Reference: "
    "rollouts.mask_after_eos.",
    lambda ids, eos_ids: mask_after_eos(ids, eos_ids, pad_id=0)[1:],
    lambda: [
        ("hand-made: EOS 9 in the middle, at the end, nowhere", _IDS[:3], [9]),
        ("hand-made: two EOS ids, the first one counts", _IDS[3:], [8, 9]),
        ("random: B = 6, T = 7", torch.randint(0, 6, (6, 7), generator=gen(6)), [5]),
        ("degenerate: every row truncated", torch.ones(2, 3, dtype=torch.long), [0]),
    ],
    {
        "the EOS token itself is part of the completion: keep it in.": lambda ids, e: (
            (_eos(ids, e).cumsum(1) == 0).long(),
            _eos(ids, e).sum(1) == 0,
        ),
        "truncated is True for rows WITHOUT an EOS.": lambda ids, e: (
            mask_after_eos(ids, e, pad_id=0)[1],
            _eos(ids, e).sum(1) > 0,
        ),
        "everything after the FIRST EOS is padding: mask it out.": lambda ids, e: (
            torch.ones_like(ids),
            _eos(ids, e).sum(1) == 0,
        ),
    },
    names=("completion_mask", "truncated"),
)


def _number(pattern: str, index: int = -1) -> Any:
    """A wrong last_number: the ``index``-th match of ``pattern``, or None."""
    return lambda text: (re.findall(pattern, text) or [None])[index]


check_last_number = Exercise(
    "last number: fn(text) -> str | None: the last number in a completion, thousands "
    'commas removed ("1,234" → "1234"), a leading minus kept, None if there is none. '
    "Reference: rewards.extract_answer on texts without \\boxed{} or ####.",
    extract_answer,
    lambda: [
        ("hand-made: the model writes the sum", "2 + 9 = 11"),
        ("hand-made: words around it", "The answer is 25."),
        ("hand-made: a negative answer", "3 - 10 = -7"),
        ("hand-made: a decimal", "Half of 7 is 3.5"),
        ("hand-made: thousands separator", "So the total is 1,234 apples."),
        ("degenerate: no number at all", "I'm here to help!"),
        ("degenerate: an empty completion", ""),
    ],
    {  # the order matters: the first mistake that gives the same answer is shown
        "take the LAST number: small models write '2 + 9 = 11'.": _number(
            r"-?\d+(?:\.\d+)?", index=0
        ),
        "remove thousands separators: 1,234 is the number 1234, not 234.": _number(
            r"-?\d+(?:\.\d+)?"
        ),
        "remove thousands separators: 1,234 is the number 1234, not '1,234'.": _number(
            r"-?\d[\d,]*(?:\.\d+)?"
        ),
        "keep a leading minus sign: -?\\d+.": _number(r"\d+(?:\.\d+)?"),
        "allow a decimal part: \\d+(?:\\.\\d+)?.": _number(r"-?\d+"),
        "return None, not an empty string, when there is no number.": lambda text: (
            extract_answer(text) or ""
        ),
    },
)
