"""Sample G completions per prompt and pack them into a `RolloutBatch`.

`generate_rollouts` repeats each prompt G = `group_size` times in a row (rows 0..G-1
answer prompt 0, and so on; B = num_prompts * G) and samples with the temperature
(and optional top-p) only: a model's own top-k and repetition penalty are off, so
`per_token_logps(..., temperature=T)` scores the distribution the tokens came from
(with top_p < 1, of the distribution before truncation, as in TRL).
LoRA adapters stay unmerged: `unmerge_adapter()` does not restore the base weights
bit for bit. `greedy_completions` decodes greedily for held-out evaluation.

    batch = generate_rollouts(policy, ["What is 2 + 3?"], group_size=8, max_new_tokens=32)
    batch.completion_ids      # (8, T) sampled tokens, right-padded
    batch.completion_mask     # (8, T) 1 up to and including the first EOS
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from sfpo_edu.records import Policy, RolloutBatch


def generate_rollouts(
    policy: Policy,
    prompts: list[str],
    *,
    group_size: int,
    max_new_tokens: int,
    temperature: float = 0.7,
    top_p: float = 1.0,
    system_prompt: str | None = None,
    seed: int | None = None,
) -> RolloutBatch:
    """Sample `group_size` completions for each of the N `prompts` (user turns).

    Rows that reach `max_new_tokens` without an EOS are `truncated`. `system_prompt`
    replaces the template's default; `seed` makes sampling reproducible (on CPU)
    without touching the global RNG. The trainer fills rewards and log-probs.
    """
    _check_prompts(prompts)
    _check_sampling(group_size, max_new_tokens, temperature, top_p)
    prompt_ids, prompt_mask = encode_prompts(policy, prompts, system_prompt)  # (N, P)
    prompt_ids = prompt_ids.repeat_interleave(group_size, dim=0)  # (B, P)
    prompt_mask = prompt_mask.repeat_interleave(group_size, dim=0)  # (B, P)
    cuda = [policy.device] if policy.device.type == "cuda" else []
    with torch.random.fork_rng(cuda, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        # top_k=0 overrides model defaults: sample from softmax(logits / T)
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        completion_ids = _generate(
            policy,
            prompt_ids,
            prompt_mask,
            max_new_tokens,
            group_size=group_size,
            **sampling,
        )  # (B, T)
    completion_ids, completion_mask, truncated = mask_after_eos(
        completion_ids, eos_token_ids(policy), policy.tokenizer.pad_token_id
    )
    return RolloutBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        truncated=truncated,
        prompts=[p for p in prompts for _ in range(group_size)],
        completions=policy.tokenizer.batch_decode(
            completion_ids, skip_special_tokens=True
        ),
        group_size=group_size,
    )


def greedy_completions(
    policy: Policy,
    prompts: list[str],
    *,
    max_new_tokens: int,
    system_prompt: str | None = None,
    batch_size: int = 32,
) -> list[str]:
    """One greedy (argmax) completion per prompt, decoded; for held-out evaluation."""
    _check_prompts(prompts)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1.")
    completions = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        prompt_ids, prompt_mask = encode_prompts(policy, chunk, system_prompt)
        completion_ids = _generate(
            policy, prompt_ids, prompt_mask, max_new_tokens, do_sample=False
        )  # (n, T)
        completion_ids, _, _ = mask_after_eos(
            completion_ids, eos_token_ids(policy), policy.tokenizer.pad_token_id
        )
        completions += policy.tokenizer.batch_decode(
            completion_ids, skip_special_tokens=True
        )
    return completions


def encode_prompts(
    policy: Policy, prompts: list[str], system_prompt: str | None = None
) -> tuple[Tensor, Tensor]:
    """Chat-template and tokenize prompts: (N, P) ids and mask, left-padded."""
    tokenizer = policy.tokenizer
    if tokenizer.chat_template is None:
        raise ValueError(
            f"The tokenizer of {policy.name!r} has no chat template, so prompts cannot "
            "be formatted as a conversation. Use an instruct/chat model."
        )
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    chats = [system + [{"role": "user", "content": prompt}] for prompt in prompts]
    texts = tokenizer.apply_chat_template(
        chats, tokenize=False, add_generation_prompt=True
    )
    # The template already wrote any BOS token into the text.
    encoded = tokenizer(
        texts, return_tensors="pt", padding=True, add_special_tokens=False
    )
    return encoded.input_ids.to(policy.device), encoded.attention_mask.to(policy.device)


def eos_token_ids(policy: Policy) -> list[int]:
    """Token ids that end a completion: the tokenizer's EOS and the model's."""
    ids = {policy.tokenizer.eos_token_id}
    model_eos = policy.model.generation_config.eos_token_id
    ids.update(model_eos if isinstance(model_eos, list) else [model_eos])
    return sorted(i for i in ids if i is not None)


def mask_after_eos(
    completion_ids: Tensor, eos_ids: list[int], pad_id: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Return a copy of `completion_ids` (B, T) padded after each row's first EOS,
    completion_mask (B, T) (1 up to and including it), truncated (B,) (True: no EOS)."""
    is_eos = torch.isin(
        completion_ids, torch.tensor(eos_ids, device=completion_ids.device)
    )
    truncated = ~is_eos.any(dim=1)  # (B,)
    T = completion_ids.shape[1]
    first_eos = torch.where(truncated, T, is_eos.int().argmax(dim=1))  # (B,)
    positions = torch.arange(T, device=completion_ids.device)  # (T,)
    completion_mask = (positions[None, :] <= first_eos[:, None]).long()  # (B, T)
    completion_ids = completion_ids.masked_fill(completion_mask == 0, pad_id)  # (B, T)
    return completion_ids, completion_mask, truncated


def _generate(
    policy: Policy,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    max_new_tokens: int,
    group_size: int = 1,
    **sampling,
) -> Tensor:
    """New tokens only, (B, T) with T ≤ max_new_tokens; model in eval mode, no grad.
    With `group_size` G > 1 each prompt is read once, its key/value cache shared by
    its G rows (same logits, so the same tokens)."""
    with _eval_mode(policy.model):
        cache = {}  # generate()'s cache argument, when the prompts were read here
        if group_size > 1 and prompt_ids.shape[1] > 1:
            # All but the last prompt token: generate() samples from that one itself.
            ids = prompt_ids[::group_size, :-1]  # (N, P - 1)
            mask = prompt_mask[::group_size, :-1]  # (N, P - 1)
            # the positions generate() gives left-padded rows: pads don't count
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (N, P - 1)
            out = policy.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
            )
            out.cache.batch_repeat_interleave(group_size)  # N → B = N·G rows
            cache = {"cache": out.cache}
        output_ids = policy.model.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            **cache,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_token_ids(policy),
            pad_token_id=policy.tokenizer.pad_token_id,
            use_cache=True,  # eval mode also switches gradient checkpointing off
            repetition_penalty=1.0,  # override model defaults
            **sampling,
        )  # (B, P + T)
    return output_ids[:, prompt_ids.shape[1] :]  # (B, T)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) and no autograd inside; the training mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _check_sampling(
    group_size: int, max_new_tokens: int, temperature: float, top_p: float
) -> None:
    if group_size < 2:
        raise ValueError(
            f"group_size={group_size}: GRPO compares completions within a group, so "
            "it needs at least 2 per prompt. Use group_size=8 (a common choice)."
        )
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be at least 1.")
    if temperature <= 0:
        raise ValueError(
            f"temperature={temperature} must be > 0 for sampling. For deterministic "
            "decoding use greedy_completions()."
        )
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p} must be in (0, 1]; 1.0 turns it off.")


def _check_prompts(prompts: list[str]) -> None:
    if isinstance(prompts, str) or not prompts:
        raise ValueError(
            f"prompts must be a non-empty list of strings, got {prompts!r}. "
            'Wrap a single prompt in a list: ["What is 2 + 3?"].'
        )
    bad = [p for p in prompts if not (isinstance(p, str) and p.strip())]
    if bad:
        raise ValueError(f"every prompt must be a non-empty string; got {bad!r}.")
