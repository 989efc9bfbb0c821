"""per_token_logps against its naive reference, the sampler, and padding.

The LoRA B matrices start at zero (the adapter is then a no-op); the fixture fills
them with noise so that gradients and values depend on the adapters.
"""

import pytest
import torch

from sfpo_edu.logprobs import per_token_logps, per_token_logps_naive
from sfpo_edu.models import Policy, load_policy
from sfpo_edu.rollouts import RolloutBatch, generate_rollouts

PROMPTS = ["What is 2 + 3?", "Hi", "Say 7."]


@pytest.fixture(scope="module")
def policy() -> Policy:
    policy = load_policy("tiny", seed=0)
    with torch.no_grad():
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    return policy


@pytest.fixture(scope="module")
def batch(policy) -> RolloutBatch:
    return generate_rollouts(
        policy, PROMPTS, group_size=3, max_new_tokens=40, temperature=1.0, seed=0
    )


def _trainable(policy: Policy) -> list[torch.nn.Parameter]:
    return [p for p in policy.model.parameters() if p.requires_grad]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_matches_naive_values_entropy_and_gradients(
    policy, batch, temperature, chunk_size
):
    params, mask = _trainable(policy), batch.completion_mask
    logps, entropy = per_token_logps(
        policy.model,
        batch,
        temperature=temperature,
        with_entropy=True,
        chunk_size=chunk_size,
    )
    ref_logps, ref_entropy = per_token_logps_naive(
        policy.model, batch, temperature=temperature, with_entropy=True
    )
    assert logps.shape == entropy.shape == batch.completion_ids.shape
    torch.testing.assert_close(logps, ref_logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, ref_entropy, atol=1e-5, rtol=1e-5)

    # a loss like GRPO's: masked log-probs plus an entropy bonus
    grads = torch.autograd.grad(
        (logps * mask).sum() + 0.1 * (entropy * mask).sum(), params
    )
    ref_grads = torch.autograd.grad(
        (ref_logps * mask).sum() + 0.1 * (ref_entropy * mask).sum(), params
    )
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in grads)


def test_a_one_token_completion(policy):
    # T = 1: the only logits that count are the prompt's last; the shared-prompt path
    # then asks the completion forward for no positions at all
    batch = generate_rollouts(policy, PROMPTS, group_size=2, max_new_tokens=1, seed=0)
    logps, entropy = per_token_logps(policy.model, batch, with_entropy=True)
    ref_logps, ref_entropy = per_token_logps_naive(
        policy.model, batch, with_entropy=True
    )
    assert logps.shape == (2 * len(PROMPTS), 1)
    torch.testing.assert_close(logps, ref_logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, ref_entropy, atol=1e-5, rtol=1e-5)


def test_log_probs_of_what_was_sampled(policy):
    """The log-probs we train on are those of the distribution generate() sampled."""
    prompt = policy.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    enc = policy.tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(0)
    with torch.no_grad():
        out = policy.model.generate(
            **enc,
            do_sample=True,
            temperature=0.7,
            top_k=0,
            max_new_tokens=10,
            output_scores=True,
            return_dict_in_generate=True,
        )
    completion_ids = out.sequences[:, enc.input_ids.shape[1] :]  # (1, T)
    scores = torch.stack(out.scores, dim=1)  # (1, T, V) logits / temperature
    sampled = (
        scores.log_softmax(-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    )
    batch = RolloutBatch(
        prompt_ids=enc.input_ids,
        prompt_mask=enc.attention_mask,
        completion_ids=completion_ids,
        completion_mask=torch.ones_like(completion_ids),
        truncated=torch.tensor([True]),
        prompts=["Hi"],
        completions=[""],
        group_size=1,
    )
    with torch.no_grad():
        logps, _ = per_token_logps(policy.model, batch, temperature=0.7)
    torch.testing.assert_close(logps, sampled, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits_are_divided_by_the_temperature_in_fp32(
    batch, monkeypatch, dtype
):
    # logits of a real LM are ~20; z / 0.7 rounded to bf16 moved log π by ~0.05 nats
    g = torch.Generator().manual_seed(0)
    B, T = batch.completion_ids.shape
    logits = (20 + 3 * torch.randn(B, T, 64, generator=g)).to(dtype)  # (B, T, V)
    ids = torch.randint(0, 64, (B, T), generator=g)
    monkeypatch.setattr(
        "sfpo_edu.logprobs._completion_logits", lambda model, b: logits.clone()
    )
    half = RolloutBatch(**{**vars(batch), "completion_ids": ids})
    logps, entropy = per_token_logps(None, half, temperature=0.7, with_entropy=True)
    z = logits.float() / 0.7  # what generate() samples from
    torch.testing.assert_close(
        logps, z.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    )
    p = z.softmax(-1)
    # H = log_z − Σ p z cancels two numbers of ~30 in fp32: agrees to ~1e-4
    expected = -(p * z.log_softmax(-1)).sum(-1)
    torch.testing.assert_close(entropy, expected, atol=2e-4, rtol=1e-4)


def test_temperature_sharpens_the_distribution(policy, batch):
    with torch.no_grad():
        _, hot = per_token_logps(
            policy.model, batch, temperature=2.0, with_entropy=True
        )
        _, cold = per_token_logps(
            policy.model, batch, temperature=0.5, with_entropy=True
        )
    vocab = len(policy.tokenizer)
    assert (cold < hot).all()
    assert (hot > 0).all() and (hot <= torch.log(torch.tensor(vocab)) + 1e-5).all()


def test_left_padding_does_not_change_the_result(policy, batch):
    """Row by row without padding == the padded batch, at every unmasked position."""
    with torch.no_grad():
        padded, _ = per_token_logps(policy.model, batch)
        for row in range(len(batch)):
            keep = batch.prompt_mask[row].bool()
            single = RolloutBatch(
                prompt_ids=batch.prompt_ids[row, keep][None],
                prompt_mask=batch.prompt_mask[row, keep][None],
                completion_ids=batch.completion_ids[row][None],
                completion_mask=batch.completion_mask[row][None],
                truncated=batch.truncated[row][None],
                prompts=[batch.prompts[row]],
                completions=[batch.completions[row]],
                group_size=1,
            )
            alone, _ = per_token_logps(policy.model, single)
            mask = batch.completion_mask[row].bool()
            torch.testing.assert_close(
                alone[0, mask], padded[row, mask], atol=1e-5, rtol=0
            )


def test_masked_positions_are_finite_and_do_not_leak(policy, batch):
    assert (batch.completion_mask == 0).any()  # some rows stopped at an EOS
    with torch.no_grad():
        logps, entropy = per_token_logps(policy.model, batch, with_entropy=True)
        scrambled = RolloutBatch(**vars(batch))
        scrambled.completion_ids = batch.completion_ids.where(
            batch.completion_mask.bool(),
            torch.randint_like(batch.completion_ids, 3, 90),
        )
        logps2, _ = per_token_logps(policy.model, scrambled)
    assert torch.isfinite(logps).all() and torch.isfinite(entropy).all()
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(logps2[mask], logps[mask])  # tokens after EOS: no effect


def test_no_grad_and_grad_modes(policy, batch):
    with torch.no_grad():
        logps, entropy = per_token_logps(policy.model, batch, with_entropy=True)
    assert not logps.requires_grad and not entropy.requires_grad
    logps, entropy = per_token_logps(policy.model, batch)
    assert logps.requires_grad and entropy is None
    (logps * batch.completion_mask).sum().backward()
    for name, param in policy.model.named_parameters():
        assert (param.grad is not None) == ("lora_" in name), name
    policy.model.zero_grad(set_to_none=True)


def test_4bit_policy_gradients_reach_the_adapters():
    policy = load_policy("tiny", quantization="4bit")
    batch = generate_rollouts(
        policy, PROMPTS[:1], group_size=2, max_new_tokens=8, seed=0
    )
    logps, _ = per_token_logps(policy.model, batch, temperature=0.7)
    (logps * batch.completion_mask).sum().backward()
    grads = [p.grad for p in _trainable(policy)]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"temperature": 0.0}, "temperature"), ({"chunk_size": 0}, "chunk_size")],
)
def test_bad_arguments(policy, batch, kwargs, match):
    with pytest.raises(ValueError, match=match):
        per_token_logps(policy.model, batch, **kwargs)


@pytest.mark.parametrize("quantization", [None, "4bit"])
def test_each_prompt_is_read_once_per_group(quantization, monkeypatch):
    """Rollout batches repeat each prompt G times: the forward reads it once and
    repeats its key/value cache, with the same log-probs and gradients as reading
    every row in full (the naive reference)."""
    import sfpo_edu.logprobs as logprobs

    policy = load_policy("tiny", quantization=quantization, seed=0)
    with torch.no_grad():
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    batch = generate_rollouts(policy, PROMPTS, group_size=4, max_new_tokens=12, seed=0)
    rows = []
    forward = logprobs._forward_shared_prompts
    monkeypatch.setattr(logprobs, "_forward_shared_prompts",
                        lambda m, b: rows.append(len(b)) or forward(m, b))  # fmt: skip
    logps, _ = per_token_logps(policy.model, batch)
    assert rows == [len(PROMPTS) * 4]  # the shared path ran
    ref, _ = per_token_logps_naive(policy.model, batch)
    torch.testing.assert_close(logps, ref, atol=1e-5, rtol=1e-5)
    params, mask = _trainable(policy), batch.completion_mask
    grads = torch.autograd.grad(
        (per_token_logps(policy.model, batch)[0] * mask).sum(), params
    )
    ref_grads = torch.autograd.grad(
        (per_token_logps_naive(policy.model, batch)[0] * mask).sum(), params
    )
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)
    # rows that do not share a prompt take the plain forward
    batch.prompt_ids = batch.prompt_ids.roll(1, dims=0)
    batch.prompt_mask = batch.prompt_mask.roll(1, dims=0)
    rows.clear()
    per_token_logps(policy.model, batch)
    assert rows == []
