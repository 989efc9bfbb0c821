"""Per-token log-probabilities of sampled completions: log π(o_t | q, o_<t).

Every loss here is built from the (B, T) `per_token_logps`, the most memory-hungry
step of an update: (B, L, V) logits (V = 49 152 for SmolLM2) can outweigh the model.
Unlike the textbook `per_token_logps_naive` (read it first), `per_token_logps`

1. asks for logits only at the T positions that predict a completion token, and
   reads each group's shared prompt once;
2. computes log π(o_t) = z[o_t] − logsumexp(z) one chunk of sequences at a time,
   never a full log-softmax, and recomputes the entropy's probabilities in backward.

Tests check that both agree; the book's results page has the savings.

    logps, entropy = per_token_logps(model, batch, temperature=0.7, with_entropy=True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from sfpo_edu.records import RolloutBatch


def per_token_logps(
    model: torch.nn.Module,
    batch: RolloutBatch,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_size: int = 1,
) -> tuple[Tensor, Tensor | None]:
    """Log-probabilities of the completion tokens under `model`, memory-aware.

    Matches `per_token_logps_naive` (to float rounding) in values and gradients; the
    reductions run in fp32 whatever the model's dtype. `temperature`: the one the
    completions were sampled with. `with_entropy`: also the entropy −Σ_v π(v) log π(v)
    of each position. `chunk_size`: sequences per chunk (chunk_size × T × V floats).

    Returns per_token_logps (B, T) and entropy (B, T) or None, with gradients when
    grad is enabled; where completion_mask is 0 they hold finite values.

    Defined in :doc:`implementation`.
    """
    _check(temperature, chunk_size)
    logits = _completion_logits(model, batch)  # (B, T, V) row t predicts o_t
    # Divide in fp32: fp32 logits in place (lm_head and cat keep no output for
    # backward); bf16/fp16 ones after the upcast below, not before (z/T in bf16).
    half = logits.dtype != torch.float32
    if not half:
        logits.div_(temperature)  # (B, T, V)
    logps, entropies = [], []
    # split (not a loop of slices): backward then assembles the gradient in one go
    chunks = logits.split(chunk_size)  # each (C, T, V)
    ids_chunks = batch.completion_ids.split(chunk_size)  # each (C, T)
    for z, ids in zip(chunks, ids_chunks, strict=True):
        # fp32: z[o_t] − logsumexp(z) subtracts numbers of size ~20 (bf16: ~0.05 nats)
        z = z.float().div_(temperature) if half else z  # (C, T, V)
        log_z = z.logsumexp(dim=-1)  # (C, T) log of the softmax normaliser
        # log π(o_t) = z[o_t] − logsumexp(z): no (C, T, V) log-softmax needed
        logps.append(z.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - log_z)  # (C, T)
        if with_entropy:
            # checkpoint: backward recomputes p instead of keeping a (C, T, V) copy
            entropies.append(checkpoint(_entropy, z, log_z, use_reentrant=False))
    entropy = torch.cat(entropies) if with_entropy else None  # (B, T)
    return torch.cat(logps), entropy  # (B, T)


def per_token_logps_naive(
    model: torch.nn.Module,
    batch: RolloutBatch,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Reference `per_token_logps`: logits at every position, a full log_softmax."""
    _check(temperature, chunk_size=1)
    P = batch.prompt_ids.shape[1]
    logits = _forward(model, batch, logits_to_keep=0)  # (B, P + T, V) 0 keeps all
    logits = logits[:, P - 1 : -1].float() / temperature  # (B, T, V) t predicts t+1
    log_probs = F.log_softmax(logits, dim=-1)  # (B, T, V)
    ids = batch.completion_ids.unsqueeze(-1)  # (B, T, 1)
    logps = log_probs.gather(-1, ids).squeeze(-1)  # (B, T)
    entropy = -(log_probs.exp() * log_probs).sum(-1) if with_entropy else None  # (B, T)
    return logps, entropy


def _entropy(z: Tensor, log_z: Tensor) -> Tensor:
    """H = −Σ p log p = log_z − Σ p z with p = exp(z − log_z): (C, T, V) → (C, T)."""
    probs = (z - log_z.unsqueeze(-1)).exp()  # (C, T, V)
    return log_z - (probs * z).sum(dim=-1)  # (C, T)


def _completion_logits(model: torch.nn.Module, batch: RolloutBatch) -> Tensor:
    """Logits at the T positions that predict the completion tokens, (B, T, V): the
    last prompt position and every completion position but the last. Groups of rows
    that share a prompt read it once (`_forward_shared_prompts`)."""
    if _prompts_shared(batch, model):
        return _forward_shared_prompts(model, batch)
    P, T = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    keep = torch.arange(P - 1, P + T - 1, device=batch.prompt_ids.device)  # (T,)
    return _forward(model, batch, logits_to_keep=keep)


def _forward(
    model: torch.nn.Module, batch: RolloutBatch, logits_to_keep: int | Tensor
) -> Tensor:
    """Logits of prompt + completion at `logits_to_keep`: the last n positions for an
    int n (0: all), or the positions a 1-D tensor lists."""
    input_ids = torch.cat([batch.prompt_ids, batch.completion_ids], dim=1)  # (B, P+T)
    attention_mask = torch.cat([batch.prompt_mask, batch.completion_mask], dim=1)
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask,  # (B, P + T)
        logits_to_keep=logits_to_keep,
        use_cache=False,
    ).logits  # (B, kept positions, V)


def _forward_shared_prompts(model: torch.nn.Module, batch: RolloutBatch) -> Tensor:
    """Logits at the T positions that predict the completion tokens, (B, T, V):

    1. read the N distinct prompts once (with grad: LoRA on k and v moves the prompt's
       keys and values too), keeping their key/value cache;
    2. repeat the cache G times (repeat_interleave: backward sums the G gradients);
    3. read the B completions against it, at the positions they had in the sequence.
    """
    G = batch.group_size
    ids, mask = batch.prompt_ids[::G], batch.prompt_mask[::G]  # (N, P)
    # left padding does not count: the first real token is at position 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (N, P)
    prompt = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                   use_cache=True, logits_to_keep=1)  # fmt: skip
    prompt.cache.batch_repeat_interleave(G)  # N → B rows
    T = batch.completion_ids.shape[1]
    start = positions[:, -1:].repeat_interleave(G, dim=0) + 1  # (B, 1)
    completion = model(
        input_ids=batch.completion_ids,  # (B, T)
        attention_mask=torch.cat([batch.prompt_mask, batch.completion_mask], dim=1),
        position_ids=start + torch.arange(T, device=start.device),  # (B, T)
        use_cache=True,
        cache=prompt.cache,
        logits_to_keep=torch.arange(T - 1, device=start.device),  # not the last
    )
    first = prompt.logits.repeat_interleave(G, dim=0)  # (B, 1, V) predicts token 0
    return torch.cat([first, completion.logits], dim=1)  # (B, T, V)


def _prompts_shared(batch: RolloutBatch, model: torch.nn.Module) -> bool:
    """Rows in consecutive groups of G > 1 with one prompt each, and a model that can
    return its cache here (gradient checkpointing in training mode turns it off)."""
    G, (B, P) = batch.group_size, batch.prompt_ids.shape
    if G <= 1 or B % G or P < 1:
        return False
    if model.training and any(
        getattr(m, "gradient_checkpointing", False) for m in model.modules()
    ):
        return False
    grouped = batch.prompt_ids.view(B // G, G, P)  # (N, G, P)
    return bool((grouped == grouped[:, :1]).all())


def _check(temperature: float, chunk_size: int) -> None:
    if temperature <= 0:
        raise ValueError(
            f"temperature={temperature} must be > 0: pass the temperature the "
            "completions were sampled with (1.0 for the model's own distribution)."
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be at least 1.")
