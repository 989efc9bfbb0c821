"""generate_rollouts and greedy_completions on the tiny random model.

The tiny model's next-token distribution is close to uniform over ~100 characters,
so about 1 token in 100 is EOS: with 48 new tokens some rows stop early and some
hit the limit, which is exactly what the mask and truncation tests need.
"""

import pytest
import torch

from sfpo_edu.models import load_policy
from sfpo_edu.rollouts import (
    RolloutBatch,
    generate_rollouts,
    greedy_completions,
    mask_after_eos,
)

PROMPTS = ["What is 2 + 3?", "Hi"]  # different lengths, so one is left-padded
G = 8


@pytest.fixture(scope="module")
def batch(tiny_policy) -> RolloutBatch:
    return generate_rollouts(
        tiny_policy, PROMPTS, group_size=G, max_new_tokens=48, temperature=1.0, seed=0
    )


def test_every_field_has_batch_size_rows(batch):
    B = len(PROMPTS) * G
    P, T = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    assert len(batch) == B and batch.group_size == G
    assert batch.prompt_ids.shape == batch.prompt_mask.shape == (B, P)
    assert batch.completion_ids.shape == batch.completion_mask.shape == (B, T)
    assert batch.truncated.shape == (B,) and batch.truncated.dtype == torch.bool
    assert len(batch.prompts) == len(batch.completions) == B
    assert batch.rewards is batch.advantages is batch.old_per_token_logps is None
    assert batch.ref_per_token_logps is None


def test_each_prompt_is_repeated_group_size_times_in_a_row(batch):
    for i, prompt in enumerate(PROMPTS):
        rows = slice(i * G, (i + 1) * G)
        assert batch.prompts[rows] == [prompt] * G
        assert (batch.prompt_ids[rows] == batch.prompt_ids[i * G]).all()


def test_prompts_are_chat_templated_and_left_padded(tiny_policy, batch):
    tokenizer = tiny_policy.tokenizer
    short = batch.prompt_mask[G]  # "Hi" is the shorter prompt
    n_pad = int((short == 0).sum())
    assert n_pad == len(PROMPTS[0]) - len(PROMPTS[1])
    assert (short[:n_pad] == 0).all() and (short[n_pad:] == 1).all()
    assert (batch.prompt_ids[G, :n_pad] == tokenizer.pad_token_id).all()
    assert batch.prompt_mask[0].all()
    text = tokenizer.decode(batch.prompt_ids[G, n_pad:])
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_completion_mask_ends_at_the_first_eos(tiny_policy, batch):
    eos, pad = tiny_policy.tokenizer.eos_token_id, tiny_policy.tokenizer.pad_token_id
    T = batch.completion_ids.shape[1]
    assert T == 48  # some rows ran to the limit
    assert batch.truncated.any() and (~batch.truncated).any()
    for ids, mask, truncated in zip(
        batch.completion_ids, batch.completion_mask, batch.truncated, strict=True
    ):
        length = int(mask.sum())
        assert (mask[:length] == 1).all() and (mask[length:] == 0).all()
        assert (ids[length:] == pad).all()
        if truncated:
            assert length == T and eos not in ids.tolist()
        else:
            assert ids[length - 1] == eos and eos not in ids[: length - 1].tolist()


def test_completions_are_the_decoded_masked_tokens(tiny_policy, batch):
    tokenizer = tiny_policy.tokenizer
    for ids, mask, text in zip(
        batch.completion_ids, batch.completion_mask, batch.completions, strict=True
    ):
        assert text == tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
        assert "<|im_end|>" not in text


def test_mask_after_eos_by_hand():
    eos, pad = 1, 0
    ids = torch.tensor(
        [
            [5, 6, 1, 7, 1],  # EOS at 2, later tokens masked and padded
            [1, 5, 6, 7, 8],  # EOS first: a one-token completion
            [5, 6, 7, 8, 9],  # no EOS: truncated
            [5, 6, 7, 8, 2],  # a second EOS id at the last position
        ]
    )
    ids_out, mask, truncated = mask_after_eos(ids, [eos, 2], pad)
    assert mask.tolist() == [
        [1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
    ]
    assert ids_out.tolist()[0] == [5, 6, 1, 0, 0]
    assert ids_out.tolist()[1] == [1, 0, 0, 0, 0]
    assert truncated.tolist() == [False, False, True, False]


def test_seeded_sampling_is_reproducible_and_keeps_the_global_rng(tiny_policy, batch):
    rng = torch.get_rng_state()
    again = generate_rollouts(
        tiny_policy, PROMPTS, group_size=G, max_new_tokens=48, temperature=1.0, seed=0
    )
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(again.completion_ids, batch.completion_ids)
    other = generate_rollouts(
        tiny_policy, PROMPTS, group_size=G, max_new_tokens=48, temperature=1.0, seed=1
    )
    assert not torch.equal(other.completion_ids[:, :8], batch.completion_ids[:, :8])


@pytest.mark.parametrize("training", [True, False])
def test_training_mode_is_restored(tiny_policy, training):
    model = tiny_policy.model
    model.train(training)
    generate_rollouts(tiny_policy, ["Hi"], group_size=2, max_new_tokens=4, seed=0)
    greedy_completions(tiny_policy, ["Hi"], max_new_tokens=4)
    assert model.training is training
    model.train()


def test_system_prompt_replaces_the_default(tiny_policy):
    batch = generate_rollouts(
        tiny_policy, ["Hi"], group_size=2, max_new_tokens=2, system_prompt="Be brief."
    )
    text = tiny_policy.tokenizer.decode(batch.prompt_ids[0])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user")
    assert batch.prompts == ["Hi", "Hi"]  # the user turn, not the templated text


def test_generation_uses_the_kv_cache_under_gradient_checkpointing():
    policy = load_policy("tiny", gradient_checkpointing=True)
    policy.model.train()
    shapes = []  # (rows, tokens) of every forward pass
    embed = policy.model.get_input_embeddings()
    hook = embed.register_forward_hook(
        lambda m, inp, out: shapes.append(tuple(inp[0].shape))
    )
    try:
        batch = generate_rollouts(
            policy, ["Hi"], group_size=2, max_new_tokens=6, seed=0
        )
    finally:
        hook.remove()
    prompt_len = batch.prompt_ids.shape[1]
    # the prompt is read once for the group (1 row, all but its last token), then
    # one token per row per step
    assert shapes[0] == (1, prompt_len - 1)
    assert shapes[1:] == [(2, 1)] * batch.completion_ids.shape[1]
    assert policy.model.training


@pytest.mark.parametrize("quantization", [None, "4bit"])
def test_sharing_the_prompt_cache_changes_no_logit(quantization):
    # Reading each prompt once and copying its key/value cache to the G rows of its
    # group must give the same next-token logits at every step as G prompt reads
    # (PROMPTS have different lengths, so left-padded positions are checked too).
    import sfpo_edu.rollouts as rollouts

    policy = load_policy("tiny", quantization=quantization)
    logits = []  # last-position logits of every forward pass, (rows, V)
    head = policy.model.get_output_embeddings()
    hook = head.register_forward_hook(lambda m, i, out: logits.append(out[:, -1]))
    generate = rollouts._generate
    try:
        shared = generate_rollouts(
            policy, PROMPTS, group_size=4, max_new_tokens=8, seed=0
        )
        shared_logits, logits[:] = logits[1:], []  # [0] is the shared prompt read
        rollouts._generate = lambda *a, group_size, **kw: generate(*a, **kw)
        plain = generate_rollouts(
            policy, PROMPTS, group_size=4, max_new_tokens=8, seed=0
        )
    finally:
        rollouts._generate = generate
        hook.remove()
    assert torch.equal(shared.completion_ids, plain.completion_ids)
    assert len(shared_logits) == len(logits) == shared.completion_ids.shape[1]
    for a, b in zip(shared_logits, logits, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_4bit_policy_generates():
    policy = load_policy("tiny", quantization="4bit")
    batch = generate_rollouts(policy, PROMPTS, group_size=2, max_new_tokens=8, seed=0)
    assert batch.completion_ids.shape[0] == 4


def test_greedy_completions_are_deterministic_and_batch_independent(tiny_policy):
    prompts = ["What is 2 + 3?", "Hi", "What is 10 + 11?"]
    one_batch = greedy_completions(tiny_policy, prompts, max_new_tokens=12)
    one_by_one = greedy_completions(
        tiny_policy, prompts, max_new_tokens=12, batch_size=1
    )
    assert len(one_batch) == 3 and all(isinstance(c, str) for c in one_batch)
    assert one_batch == one_by_one


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompts": []}, "non-empty list"),
        ({"prompts": "What is 2 + 3?"}, "Wrap a single prompt in a list"),
        ({"prompts": ["ok", "  "]}, "non-empty string"),
        ({"group_size": 1}, "at least 2"),
        ({"max_new_tokens": 0}, "at least 1"),
        ({"temperature": 0.0}, "greedy_completions"),
        ({"top_p": 0.0}, r"\(0, 1\]"),
    ],
)
def test_bad_inputs_raise_value_errors(tiny_policy, kwargs, match):
    args = {"prompts": ["Hi"], "group_size": 2, "max_new_tokens": 4} | kwargs
    with pytest.raises(ValueError, match=match):
        generate_rollouts(tiny_policy, **args)


def test_greedy_bad_inputs_raise_value_errors(tiny_policy):
    with pytest.raises(ValueError, match="non-empty list"):
        greedy_completions(tiny_policy, [], max_new_tokens=4)
    with pytest.raises(ValueError, match="batch_size"):
        greedy_completions(tiny_policy, ["Hi"], max_new_tokens=4, batch_size=0)
