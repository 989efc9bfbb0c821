"""SFPOConfig validation: every bad value names the field, the value and a fix."""

import dataclasses

import pytest

from sfpo_edu.config import SFPOConfig, field_docs

BAD = [
    ("algo", "ppo"),
    ("algo", "lookahead"),
    ("num_fast_steps", 0),
    ("num_fast_steps", 2.5),
    ("num_fast_steps", 100),
    ("alpha", -0.1),
    ("alpha", 1.5),
    ("alpha", float("nan")),
    ("stop_rule", "sometimes"),
    ("stop_window", 1),
    ("stop_threshold", 0.0),
    ("stop_threshold", -1.0),
    ("lr", 0.0),
    ("lr", -1e-3),
    ("lr", 100.0),
    ("lr", "fast"),
    ("optimizer", "adam"),
    ("weight_decay", -0.1),
    ("weight_decay", 1.0),
    ("max_grad_norm", 0.0),
    ("max_grad_norm", -1.0),
    ("group_size", 1),
    ("group_size", True),
    ("clip_eps", 0.0),
    ("clip_eps", 1.0),
    ("kl_coef", -0.1),
    ("entropy_coef", -1.0),
    ("loss_agg", "sum"),
    ("num_minibatches", 0),
    ("num_prompts", 0),
    ("max_new_tokens", 0),
    ("temperature", 0.0),
    ("temperature", 3.0),
    ("top_p", 0.0),
    ("top_p", 1.5),
    ("reward_scheme", "dense"),
    ("lora_r", -1),
    ("quantization", "2bit"),
    ("device", "tpu"),
    ("dtype", "float8"),
    ("num_steps", 0),
    ("eval_every", -1),
    ("save_every", -1),
    ("seed", -1),
    # issue 19: these passed validation, then failed after the model had loaded
    ("seed", 100_000_000_000_000),  # Overflow when unpacking long long
    ("num_steps", 200_000_000),  # MemoryError after minutes (problems built up front)
    ("num_eval_prompts", 10**9),
]


@pytest.mark.parametrize("name,value", BAD)
def test_every_bad_value_is_rejected_with_field_value_and_fix(name, value):
    with pytest.raises(ValueError) as err:
        SFPOConfig(**{name: value})
    message = str(err.value)
    assert name in message and repr(value) in message and "Fix:" in message


def test_minibatches_must_divide_the_batch():
    with pytest.raises(ValueError, match=r"does not divide.*4 × 8 = 32.*Fix"):
        SFPOConfig(num_prompts=4, group_size=8, num_minibatches=3)
    assert SFPOConfig(num_prompts=4, group_size=8, num_minibatches=4).batch_size == 32


def test_training_problems_built_up_front_are_bounded():
    with pytest.raises(ValueError, match=r"100000 × 20 training problems.*Fix"):
        SFPOConfig(num_steps=100_000, num_prompts=20)
    assert SFPOConfig(num_steps=100_000, num_prompts=10).num_steps == 100_000


def test_step_rule_needs_stop_step_and_quantization_needs_lora():
    with pytest.raises(ValueError, match="stop_step"):
        SFPOConfig(stop_rule="step")
    assert SFPOConfig(stop_rule="step", stop_step=10).stop_step == 10
    with pytest.raises(ValueError, match="LoRA"):
        SFPOConfig(quantization="4bit", lora_r=0)
    # the reference is the adapter switched off: full fine-tuning crashed mid-step 0
    with pytest.raises(ValueError, match=r"kl_coef=0\.1 is invalid: the KL reference"):
        SFPOConfig(kl_coef=0.1, lora_r=0)
    assert SFPOConfig(kl_coef=0.1).kl_coef == 0.1


def test_defaults_are_valid_and_derived_values():
    cfg = SFPOConfig()
    assert cfg.num_passes == 4 and cfg.effective_alpha == 0.8
    assert SFPOConfig(algo="grpo").num_passes == 1
    assert SFPOConfig(algo="grpo").effective_alpha == 0.0
    assert SFPOConfig(algo="grpo_multi").effective_alpha == 1.0
    assert SFPOConfig(alpha=0).alpha == 0 and SFPOConfig(alpha=1).alpha == 1


def test_round_trip_and_unknown_keys():
    cfg = SFPOConfig(algo="grpo", lr=1e-4, stop_step=3, extra={"note": "x"})
    assert SFPOConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown config field"):
        SFPOConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="alpha"):
        cfg.replace(alpha=2.0)


def test_every_field_is_documented():
    docs = field_docs()
    for f in dataclasses.fields(SFPOConfig):
        assert len(docs.get(f.name, "")) > 15, f"{f.name} has no docstring"
    assert "α" in docs["alpha"] and "K" in docs["num_fast_steps"]
