"""The CUDA path on the tiny model: 4-bit load, a LoRA step, SFPO, dtypes, resume.

Every test here is marked ``gpu``; tests/conftest.py skips them, saying why, when torch
sees no CUDA GPU. 4-bit tests also skip when bitsandbytes is not installed.

Attention runs on PyTorch's math kernel where two runs must agree bit for bit: the
fused (flash, memory-efficient) kernels may sum their backward in a different order
from one run to the next.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from sfpo_edu.config import SFPOConfig
from sfpo_edu.logprobs import per_token_logps
from sfpo_edu.losses import group_advantages
from sfpo_edu.metrics import load_run
from sfpo_edu.models import load_policy
from sfpo_edu.params import trainable_params
from sfpo_edu.rollouts import generate_rollouts
from sfpo_edu.sfpo import (
    StopRule,
    grpo_update,
    make_optimizer,
    sfpo_update,
    update,
)
from sfpo_edu.train import Trainer, load_checkpoint, make_loss_fn

pytestmark = pytest.mark.gpu

BENCH = Path(__file__).resolve().parents[1] / "bench"
PROMPTS = ["What is 2 + 3?", "What is 4 + 1?"]
QUANTIZATIONS = [None, pytest.param("4bit", id="4bit")]


def needs_bitsandbytes(quantization: str | None) -> None:
    if quantization == "4bit":
        pytest.importorskip(
            "bitsandbytes",
            reason="bitsandbytes is not installed (pip install bitsandbytes==0.50.2)",
        )


def cuda_batch(policy, cfg: SFPOConfig, seed: int = 0):
    """A rollout batch on the GPU with fixed rewards, advantages and old log-probs."""
    batch = generate_rollouts(
        policy, PROMPTS, group_size=cfg.group_size, max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature, seed=seed,
    )  # fmt: skip
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0] * len(PROMPTS))  # (B,)
    batch.advantages, _ = group_advantages(rewards, cfg.group_size)
    batch.advantages = batch.advantages.cuda()
    with torch.no_grad():
        batch.old_per_token_logps, _ = per_token_logps(
            policy.model, batch, temperature=cfg.temperature
        )  # (B, T) at θ₀
    return batch


def small_cfg(**changes) -> SFPOConfig:
    base = dict(model="tiny", device="cuda", num_prompts=2, group_size=4,
                max_new_tokens=6, lr=5e-2, stop_rule="never")  # fmt: skip
    return SFPOConfig(**(base | changes))


def test_4bit_tiny_loads_on_cuda_as_nf4():
    bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    policy = load_policy("tiny", quantization="4bit", device="cuda")
    assert policy.device.type == "cuda"
    q_proj = policy.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(q_proj.weight, bnb.nn.Params4bit)
    assert q_proj.weight.quant_type == "nf4" and q_proj.weight.is_cuda
    ids = torch.randint(3, 90, (2, 12), device="cuda")
    assert torch.isfinite(policy.model(input_ids=ids).logits).all()


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_a_lora_step_on_cuda_moves_only_the_adapters(quantization):
    needs_bitsandbytes(quantization)
    cfg = small_cfg(algo="grpo")
    policy = load_policy("tiny", quantization=quantization, device="cuda")
    frozen = {n: p.detach().clone() for n, p in policy.model.named_parameters()
              if not p.requires_grad}  # fmt: skip
    params = trainable_params(policy.model)
    before = [p.detach().clone() for p in params]
    batch = cuda_batch(policy, cfg)
    grpo_update(params, make_optimizer(params, cfg), batch,
                make_loss_fn(policy.model, cfg), max_grad_norm=1.0)  # fmt: skip
    assert all(p.is_cuda for p in params)
    assert any(not torch.equal(b, p) for b, p in zip(before, params, strict=True))
    for name, p in policy.model.named_parameters():
        if name in frozen:
            assert torch.equal(frozen[name], p), name


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_an_sfpo_update_on_cuda_reports_all_three_stages(quantization):
    needs_bitsandbytes(quantization)
    cfg = small_cfg(algo="sfpo")
    policy = load_policy("tiny", quantization=quantization, device="cuda")
    params = trainable_params(policy.model)
    metrics = update(params, make_optimizer(params, cfg), cuda_batch(policy, cfg),
                     make_loss_fn(policy.model, cfg), cfg, StopRule.from_config(cfg),
                     step=0)  # fmt: skip
    assert metrics["update/skipped"] == 0.0 and metrics["sfpo/active"] == 1.0
    for key in ["fast/loss", "slow/loss", "kl/theta_k", "kl/theta_tilde",
                "sfpo/drift_norm"]:  # fmt: skip
        assert torch.isfinite(torch.tensor(metrics[key])), key
    assert metrics["sfpo/drift_norm"] > 0


def test_alpha_one_is_bit_for_bit_grpo_with_k_plus_one_passes_on_cuda():
    K = 3
    cfg = small_cfg(dtype="float32")
    p1 = load_policy("tiny", device="cuda", dtype="float32", seed=0)
    p2 = load_policy("tiny", device="cuda", dtype="float32", seed=0)
    with sdpa_kernel(SDPBackend.MATH):
        batch = cuda_batch(p1, cfg)
        params1, params2 = trainable_params(p1.model), trainable_params(p2.model)
        o1, o2 = make_optimizer(params1, cfg), make_optimizer(params2, cfg)
        for _ in range(2):  # two outer steps: the shared optimizer state must match
            sfpo_update(params1, o1, batch, make_loss_fn(p1.model, cfg),
                        num_fast_steps=K, alpha=1.0, max_grad_norm=1.0)  # fmt: skip
            grpo_update(params2, o2, batch, make_loss_fn(p2.model, cfg),
                        num_passes=K + 1, max_grad_norm=1.0)  # fmt: skip
    for a, b in zip(params1, params2, strict=True):
        assert torch.equal(a, b)
    assert any(o1.state_dict()["state"])  # Adam stepped


def test_dtype_auto_picks_bf16_where_supported_and_float16_can_be_forced():
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    auto = load_policy("tiny", lora=False, device="cuda")
    expected = torch.bfloat16 if bf16 else torch.float16
    assert auto.dtype == expected
    assert next(auto.model.parameters()).dtype == expected

    # float16, what a T4 computes in: the base in fp16, a LoRA step stays finite
    cfg = small_cfg(algo="grpo", dtype="float16")
    policy = load_policy("tiny", device="cuda", dtype="float16")
    assert policy.dtype == torch.float16
    base = policy.model.get_base_model()
    assert base.model.layers[0].mlp.up_proj.weight.dtype == torch.float16
    params = trainable_params(policy.model)
    metrics = grpo_update(params, make_optimizer(params, cfg), cuda_batch(policy, cfg),
                          make_loss_fn(policy.model, cfg), max_grad_norm=1.0)  # fmt: skip
    assert torch.isfinite(torch.tensor(metrics["slow/loss"]))
    assert all(torch.isfinite(p).all() for p in params)


def test_checkpoint_and_resume_on_cuda_repeat_the_uninterrupted_run(tmp_path):
    task = tmp_path / "digits.jsonl"
    rows = [{"prompt": f"What is {i} + {j}?", "answer": str(i + j)}
            for i in range(5) for j in range(5)]  # fmt: skip
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = small_cfg(task=str(task), reward_scheme="reference", num_steps=3,
                    eval_every=0, save_every=1, seed=1)  # fmt: skip

    def stable(run_dir):
        return [{k: v for k, v in r.items() if not k.startswith(("time/", "memory/"))}
                for r in load_run(run_dir).metrics]  # fmt: skip

    with sdpa_kernel(SDPBackend.MATH):
        whole = Trainer(cfg, tmp_path / "whole", progress=False)
        whole.train()
        Trainer(cfg.replace(num_steps=1), tmp_path / "split", progress=False).train()
        resumed = Trainer(cfg, tmp_path / "split", resume=True, progress=False)
        assert resumed.step == 1 and resumed.policy.device.type == "cuda"
        resumed.train()
    split, reference = stable(tmp_path / "split"), stable(tmp_path / "whole")
    assert [r["step"] for r in split] == [r["step"] for r in reference]
    for a, b in zip(split, reference, strict=True):
        assert a == pytest.approx(b)
    # a fresh CUDA policy gets the trained adapters back from the checkpoint
    fresh = load_policy("tiny", device="cuda", seed=cfg.seed)
    assert load_checkpoint(tmp_path / "whole", fresh)["next_step"] == 3
    for a, b in zip(trainable_params(fresh.model), whole.params, strict=True):
        assert torch.equal(a, b)


def test_gpu_check_measures_a_small_grid_on_cuda(tmp_path):
    """The bench script on the GPU path: random weights from a committed config."""
    out = tmp_path / "gpu_check.json"
    cmd = [sys.executable, str(BENCH / "gpu_check.py"), "--models",
           "SmolLM2-135M-Instruct", "--num-prompts", "1", "--group-size", "4",
           "--max-new-tokens", "16", "--output", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cells = json.loads(out.read_text())["cells"]
    measured = [r for r in cells.values() if "arms" in r]
    assert measured, cells
    for r in measured:
        assert r["full_length"] and r["generated_tokens"] == 4 * 16
        assert set(r["arms"]) == {"grpo", "sfpo", "grpo_multi"}
        assert all(a["step_peak_mb"] > 0 for a in r["arms"].values())
        assert len(r["arms"]["sfpo"]["passes_s"]) == 4
