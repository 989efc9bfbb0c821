"""SFPO inside TRL's GRPOTrainer (``sfpo_edu.trl``), on CPU with the tiny model.

Each run trains LoRA adapters on the tiny random Llama for a few generation batches
of 2 prompts × G = 4 completions of 6 tokens (about a second a run; importing TRL
takes a few seconds once). The checks:

1. α = 1 is bit for bit ``GRPOTrainer`` with ``num_iterations = K + 1``, also when a
   pass is two optimizer steps or two accumulated micro-batches;
2. α < 1 is bit for bit ``sfpo_edu.sfpo.sfpo_update`` on the batch TRL generated,
   with ``sfpo_edu.losses``' clipped surrogate and TRL's log-probs; with
   ``sfpo_edu.logprobs`` instead it matches to rounding (the gradients go through a
   different backward);
3. the fast, slow and sfpo metrics reach TRL's log;
4. the stop rule fires and survives a resume; after it (and whenever α = 0)
   training is bit for bit one-pass GRPO;
5. bad configs and TRL versions fail with a fix;
6. two CPU processes (about 15 s each test): the example under DDP keeps both ranks'
   weights equal, and repositioning FSDP2 shards equals repositioning whole tensors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402
from trl.trainer.utils import add_fused_lm_head  # noqa: E402

from sfpo_edu.logprobs import per_token_logps  # noqa: E402
from sfpo_edu.losses import clipped_surrogate, grpo_loss  # noqa: E402
from sfpo_edu.models import load_policy, tiny_policy_files  # noqa: E402
from sfpo_edu.params import reposition, trainable_params  # noqa: E402
from sfpo_edu.rollouts import RolloutBatch  # noqa: E402
from sfpo_edu.sfpo import sfpo_update  # noqa: E402
from sfpo_edu.trl import (  # noqa: E402
    SFPOGRPOConfig,
    SFPOTrainer,
    check_trl_version,
    sharded_distance,
)

REPO = Path(__file__).resolve().parents[1]
# transformers 5 renamed gradient_checkpointing (TRL's default: on) to this
CHECKPOINTING = next(
    name
    for name in ("activation_checkpointing", "gradient_checkpointing")
    if name in {f.name for f in dataclasses.fields(GRPOConfig)}
)
G = 4
LR = 1e-2


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_policy_files(tmp_path_factory.mktemp("tiny"))


def digit_reward(completions: list[str], **kwargs: object) -> list[float]:
    """Share of characters that are digits or vowels: varies within every group."""
    return [
        sum(c in "0123456789aeiou" for c in x) / max(len(x), 1) for x in completions
    ]


def run(
    trainer_cls: type[GRPOTrainer],
    tiny_dir: Path,
    out: Path,
    *,
    batches: int,
    passes: int,
    spg: int = 1,
    ga: int = 1,
    capture: list[dict] | None = None,
    resume: str | None = None,
    **fields: object,
) -> GRPOTrainer:
    """Train ``batches`` generation batches of ``passes`` passes each.

    ``capture`` receives what TRL's ``_prepare_inputs`` hands each micro-step;
    ``resume`` is a checkpoint folder to continue from.
    """
    policy = load_policy(str(tiny_dir), lora=True, device="cpu", seed=0)
    # equal-length prompts: no left padding, so TRL and sfpo_edu see the same inputs
    prompts = [f"{a}+{b}=" for a in range(1, 9) for b in range(1, 3)]
    config_cls = SFPOGRPOConfig if trainer_cls is SFPOTrainer else GRPOConfig
    args = config_cls(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        report_to="none",
        disable_tqdm=True,
        logging_steps=1,
        seed=0,
        per_device_train_batch_size=2 * G // spg,  # 2 prompts per generation batch
        num_generations=G,
        steps_per_generation=spg,
        gradient_accumulation_steps=ga,
        max_completion_length=6,
        max_steps=batches * passes * spg // ga,
        learning_rate=LR,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        **({CHECKPOINTING: False, "save_strategy": "no"} | fields),
    )
    trainer = trainer_cls(
        model=policy.model,
        reward_funcs=digit_reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=policy.tokenizer,
    )
    if capture is not None:
        prepare = trainer._prepare_inputs

        def recorded(generation_batch: dict) -> dict:
            capture.append(prepare(generation_batch))
            return capture[-1]

        trainer._prepare_inputs = recorded
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def weights(trainer: GRPOTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainable_params(trainer.model)]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def log_rows(trainer: GRPOTrainer, key: str) -> list[dict]:
    return [row for row in trainer.state.log_history if key in row]


# 1. α = 1 ----------------------------------------------------------------------------
@pytest.mark.parametrize(("spg", "ga"), [(1, 1), (2, 1), (2, 2)])
def test_alpha_one_is_grpo_with_k_plus_1_passes(
    tiny_dir: Path, tmp_path: Path, spg: int, ga: int
) -> None:
    """(2, 1): a pass is 2 optimizer steps; (2, 2): 1 step of 2 micro-batches."""
    K = 2
    sfpo = run(
        SFPOTrainer, tiny_dir, tmp_path / "sfpo", batches=2, passes=K + 1,
        spg=spg, ga=ga, num_fast_steps=K, alpha=1.0, stop_rule="never",
    )  # fmt: skip
    grpo = run(
        GRPOTrainer, tiny_dir, tmp_path / "grpo", batches=2, passes=K + 1,
        spg=spg, ga=ga, num_iterations=K + 1,
    )  # fmt: skip
    assert_same(weights(sfpo), weights(grpo))
    start = trainable_params(load_policy(str(tiny_dir), device="cpu", seed=0).model)
    assert any(not torch.equal(p, q) for p, q in zip(weights(sfpo), start, strict=True))
    assert [r["sfpo/drift_norm"] for r in log_rows(sfpo, "sfpo/drift_norm")] == [
        r["sfpo/reposition_norm"] for r in log_rows(sfpo, "sfpo/drift_norm")
    ]


# 2. α < 1 against sfpo_update --------------------------------------------------------
def trl_fused_logps(model: torch.nn.Module) -> Callable[[RolloutBatch], torch.Tensor]:
    """Per-token log-probs through TRL 1.16's fused, chunked LM head (as TRL does)."""
    add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "entropy"))

    def logps(mb: RolloutBatch) -> torch.Tensor:
        T = mb.completion_ids.shape[1]
        input_ids = torch.cat([mb.prompt_ids, mb.completion_ids], dim=1)  # (B, P+T)
        attention_mask = torch.cat([mb.prompt_mask, mb.completion_mask], dim=1)
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        labels[:, :-T] = -100  # score completion tokens only
        out = model(input_ids=input_ids, attention_mask=attention_mask,
                    labels=labels, fused_lm_head=True)  # fmt: skip
        return out.log_probs[:, -T:]  # (B, T)

    return logps


@pytest.mark.parametrize("logps_from", ["trl_fused_head", "sfpo_edu"])
@pytest.mark.parametrize("spg", [1, 2])
def test_alpha_below_one_matches_sfpo_update(
    tiny_dir: Path, tmp_path: Path, spg: int, logps_from: str
) -> None:
    """One generation batch; with spg = 2 each pass is two optimizer steps.

    The reference is ``sfpo_update`` with the clipped surrogate of ``sfpo_edu.losses``
    aggregated as TRL's ``dapo`` does, on the batch TRL generated. With TRL's fused
    LM head for the log-probs it matches bit for bit. With ``sfpo_edu.logprobs``
    the log-probs are bit-identical too, but their backward is autograd through
    the full logits instead of TRL's tiled kernel: gradients agree to rounding,
    and AdamW, which divides by √v, turns that into parameter differences of up to
    a few 1e-6 in elements whose gradient is near zero.
    """
    K, alpha = 2, 0.5
    seen: list[dict] = []
    trainer = run(
        SFPOTrainer, tiny_dir, tmp_path, batches=1, passes=K + 1, spg=spg,
        capture=seen, num_fast_steps=K, alpha=alpha, stop_rule="never",
    )  # fmt: skip
    assert len(seen) == (K + 1) * spg
    slices = seen[:spg]  # pass 0; later passes reuse the same buffered slices
    for k in range(1, K + 1):
        for a, b in zip(slices, seen[k * spg : (k + 1) * spg], strict=True):
            # TRL's old log-probs are computed once, at θ₀, and reused by every pass
            assert a["old_per_token_logps"] is b["old_per_token_logps"]

    fields = ["prompt_ids", "prompt_mask", "completion_ids", "completion_mask",
              "advantages", "old_per_token_logps"]  # fmt: skip
    cat = {key: torch.cat([s[key] for s in slices]) for key in fields}
    B = len(cat["advantages"])
    batch = RolloutBatch(
        **cat, truncated=torch.zeros(B, dtype=torch.bool), prompts=[""] * B,
        completions=[""] * B, group_size=G,
    )  # fmt: skip
    model = load_policy(str(tiny_dir), lora=True, device="cpu", seed=0).model  # θ₀
    if logps_from == "sfpo_edu":
        logps_fn = lambda mb: per_token_logps(model, mb)[0]  # noqa: E731
    else:
        logps_fn = trl_fused_logps(model)
    mask = batch.completion_mask.bool()
    with torch.no_grad():  # the old log-probs are the ones at θ₀
        assert torch.equal(logps_fn(batch)[mask], batch.old_per_token_logps[mask])
    # TRL's "dapo" divides each micro-batch's token sum by the generation batch's
    # tokens per micro-batch (num_items_in_batch / spg), not by its own count.
    tokens_per_step = slices[0]["num_items_in_batch"] / spg

    def loss_fn(mb: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        logps = logps_fn(mb)  # (B, T)
        per_token, _, _ = clipped_surrogate(
            logps, mb.old_per_token_logps, mb.advantages, clip_eps=0.2
        )  # (B, T)
        loss = (per_token * mb.completion_mask).sum() / tokens_per_step
        _, stats = grpo_loss(
            logps, mb.old_per_token_logps, mb.advantages, mb.completion_mask
        )  # diagnostics only
        return loss, stats

    params = trainable_params(model)
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)  # TRL's settings
    sfpo_update(
        params, optimizer, batch, loss_fn, num_fast_steps=K, alpha=alpha,
        num_minibatches=spg, max_grad_norm=1.0,
    )  # fmt: skip
    if logps_from == "trl_fused_head":
        assert_same(params, weights(trainer))
    else:
        for ours, theirs in zip(params, weights(trainer), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    start = trainable_params(load_policy(str(tiny_dir), device="cpu").model)
    moved = max((p - q).abs().max() for p, q in zip(params, start, strict=True))
    assert moved > 1e-3  # training moved the adapters far past the tolerance


# 3. metrics --------------------------------------------------------------------------
def test_fast_slow_and_sfpo_metrics_are_logged(tiny_dir: Path, tmp_path: Path) -> None:
    K, alpha = 2, 0.5
    trainer = run(
        SFPOTrainer, tiny_dir, tmp_path, batches=2, passes=K + 1,
        num_fast_steps=K, alpha=alpha, stop_rule="never",
    )  # fmt: skip
    rows = log_rows(trainer, "sfpo/alpha")
    assert [r["step"] for r in rows] == [K + 1, 2 * (K + 1)]  # last step of a batch
    for row in rows:
        for key in [
            "fast/loss", "fast/entropy", "fast/clip_frac", "slow/loss",
            "slow/entropy", "slow/clip_frac", "sfpo/active", "sfpo/stopped",
            "sfpo/drift_norm", "sfpo/reposition_norm", "sfpo/entropy",
        ]:  # fmt: skip
            assert key in row, key
        assert row["sfpo/alpha"] == alpha and row["sfpo/active"] == 1.0
        assert row["sfpo/reposition_norm"] == pytest.approx(
            alpha * row["sfpo/drift_norm"], rel=1e-4
        )
        # the slow pass is one optimizer step here: its loss is TRL's logged loss
        assert row["slow/loss"] == pytest.approx(row["loss"], rel=1e-5, abs=1e-8)
    fast_rows = [r for r in trainer.state.log_history if r.get("step") == K]
    assert rows[0]["fast/loss"] == pytest.approx(fast_rows[0]["loss"], abs=1e-8)
    assert rows[0]["fast/entropy"] == pytest.approx(fast_rows[0]["entropy"])
    assert len(trainer.stop_rule.entropies) == 2


# 4. stop rule ------------------------------------------------------------------------
def test_stop_rule_fires_and_sfpo_becomes_grpo(tiny_dir: Path, tmp_path: Path) -> None:
    K = 2
    trainer = run(
        SFPOTrainer, tiny_dir, tmp_path, batches=3, passes=K + 1,
        num_fast_steps=K, alpha=0.5, stop_rule="step", stop_step=1,
    )  # fmt: skip
    rows = log_rows(trainer, "sfpo/alpha")
    assert [r["sfpo/active"] for r in rows] == [1.0, 0.0, 0.0]
    assert [r["sfpo/stopped"] for r in rows] == [0.0, 1.0, 1.0]
    assert [r["sfpo/alpha"] for r in rows] == [0.5, 0.0, 0.0]
    assert "fast/loss" in rows[0] and "fast/loss" not in rows[1]
    assert trainer.stop_rule.fired_at == 1
    # skipped fast slots: no update, so their logged loss and grad norm are 0
    skipped = [r for r in trainer.state.log_history if r.get("step") in (4, 5)]
    assert [(r["loss"], r["grad_norm"]) for r in skipped] == [(0.0, 0.0)] * 2


def test_stop_rule_state_survives_a_resume(tiny_dir: Path, tmp_path: Path) -> None:
    K = 2
    fields = {
        "num_fast_steps": K, "alpha": 0.5, "stop_rule": "step", "stop_step": 1,
        "save_strategy": "steps", "save_steps": K + 1,
    }  # fmt: skip
    first = run(SFPOTrainer, tiny_dir, tmp_path, batches=2, passes=K + 1, **fields)
    state = json.loads((tmp_path / "checkpoint-3" / "sfpo_state.json").read_text())
    assert state["outer_step"] == 1 and state["stop_rule"]["fired_at"] is None
    assert len(state["stop_rule"]["entropies"]) == 1
    assert first.stop_rule.fired_at == 1
    resumed = run(
        SFPOTrainer, tiny_dir, tmp_path, batches=3, passes=K + 1,
        resume=str(tmp_path / "checkpoint-6"), **fields,
    )  # fmt: skip
    assert resumed.outer_step == 3 and resumed.stop_rule.fired_at == 1
    # the log history comes back from the checkpoint; batch 2 ran after the resume
    assert [r["sfpo/active"] for r in log_rows(resumed, "sfpo/alpha")] == [1, 0, 0]


@pytest.mark.parametrize(
    "fields",
    [
        {"alpha": 0.5, "stop_rule": "step", "stop_step": 0},  # off from the start
        {"alpha": 0.0, "stop_rule": "never"},  # α = 0 skips the fast passes
    ],
)
def test_sfpo_off_is_one_pass_grpo(
    tiny_dir: Path, tmp_path: Path, fields: dict
) -> None:
    """Same rollouts, one update per batch: GRPOTrainer with num_iterations = 1.

    Bit for bit, because TRL's separate no-grad forward for the old log-probs (made
    when μ > 1) gives the same bits as the training forward here, so the ratio is
    exactly 1 as with μ = 1 (where TRL uses the live log-probs).
    """
    K = 2
    sfpo = run(
        SFPOTrainer, tiny_dir, tmp_path / "sfpo", batches=3, passes=K + 1,
        num_fast_steps=K, **fields,
    )  # fmt: skip
    grpo = run(GRPOTrainer, tiny_dir, tmp_path / "grpo", batches=3, passes=1)
    assert_same(weights(sfpo), weights(grpo))
    assert [r["sfpo/active"] for r in log_rows(sfpo, "sfpo/alpha")] == [0.0] * 3


# 5. bad input ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"alpha": 1.5}, "alpha"),
        ({"num_fast_steps": 0}, "num_fast_steps"),
        ({"stop_rule": "step"}, "stop_step"),
        ({"num_iterations": 2}, "num_iterations"),
        ({"steps_per_generation": 3, "gradient_accumulation_steps": 2}, "multiple"),
    ],
)
def test_bad_config_is_rejected(tmp_path: Path, fields: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SFPOGRPOConfig(
            output_dir=str(tmp_path), use_cpu=True, bf16=False,
            **{CHECKPOINTING: False}, **fields,
        )  # fmt: skip


def test_config_sets_num_iterations(tmp_path: Path) -> None:
    args = SFPOGRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, num_fast_steps=4,
        **{CHECKPOINTING: False},
    )  # fmt: skip
    assert args.num_iterations == 5


def test_trainer_needs_sfpo_config(tiny_dir: Path, tmp_path: Path) -> None:
    policy = load_policy(str(tiny_dir), lora=True, device="cpu")
    with pytest.raises(TypeError, match="SFPOGRPOConfig"):
        SFPOTrainer(
            model=policy.model,
            reward_funcs=digit_reward,
            args=GRPOConfig(
                output_dir=str(tmp_path),
                use_cpu=True,
                bf16=False,
                **{CHECKPOINTING: False},
            ),  # fmt: skip
            train_dataset=Dataset.from_dict({"prompt": ["1+1="] * 8}),
            processing_class=policy.tokenizer,
        )


@pytest.mark.parametrize("version", ["1.15.2", "1.17.0", "2.0.0"])
def test_untested_trl_version_is_refused(version: str) -> None:
    with pytest.raises(ImportError, match=r'trl>=1.16,<1.17.*pip install "sfpo_edu'):
        check_trl_version(version)
    check_trl_version("1.16.3")


def test_missing_trl_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trl", None)  # makes `import trl` fail
    monkeypatch.delitem(sys.modules, "sfpo_edu.trl")
    with pytest.raises(ImportError, match=r'not installed.*pip install "sfpo_edu'):
        import sfpo_edu.trl  # noqa: F401


# the example, data-parallel over 2 CPU processes -------------------------------------
def test_example_runs_data_parallel_on_two_cpu_processes(tmp_path: Path) -> None:
    """DDP over gloo (about 20 s): the reposition, the stop rule's broadcast and the
    skipped fast slots keep both ranks' weights identical."""
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(REPO / "examples" / "trl_sfpo.py"), "--model", "tiny", "--steps", "3",
        "--num-fast-steps", "2", "--alpha", "0.5", "--reward", "digits",
        "--stop-rule", "step", "--stop-step", "2", "--output-dir", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "world_size=2 backend=gloo" in done.stdout
    rows = [json.loads(line) for line in done.stdout.splitlines() if '"sfpo/' in line]
    assert [r["sfpo/active"] for r in rows] == [1.0, 1.0, 0.0]
    assert all(r["sfpo/drift_norm"] > 0 for r in rows[:2])
    assert "ranks agree: True" in done.stdout


def test_deepspeed_fp32_masters_are_what_is_repositioned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stand-in for ``deepspeed.utils`` (DeepSpeed is not installed here): under
    ZeRO-1/2 the optimizer steps fp32 master weights kept beside the bf16 ones, so the
    reposition moves the masters and copies them into the weights."""
    masters: dict[int, torch.Tensor] = {}
    utils = types.SimpleNamespace(
        # a fresh full copy, as DeepSpeed gathers it; None: no master copy
        safe_get_full_fp32_param=lambda p: masters[id(p)].clone() if masters else None,
        safe_set_full_fp32_param=lambda p, value: masters[id(p)].copy_(value),
    )
    monkeypatch.setitem(sys.modules, "deepspeed", types.ModuleType("deepspeed"))
    monkeypatch.setitem(sys.modules, "deepspeed.utils", utils)
    weights = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    weights = [w.to(torch.bfloat16) for w in weights]
    trainer = SFPOTrainer.__new__(SFPOTrainer)  # only the state _reposition reads
    state = dict(_params=weights, _masters=False, _alpha=0.25, _batch_metrics={})
    vars(trainer).update(is_deepspeed_enabled=True, is_fsdp_enabled=False, **state)
    assert [t.dtype for t in trainer._read_fp32()] == [torch.float32] * 2
    assert not trainer._masters  # no master copy: the weights themselves
    for w in weights:
        masters[id(w)] = w.float() + 1e-3  # finer than bf16 can hold
    theta_0 = trainer._theta_0 = trainer._read_fp32()
    assert trainer._masters  # θ₀ is read from the masters
    assert [t.tolist() for t in theta_0] == [masters[id(w)].tolist() for w in weights]
    for w in weights:
        masters[id(w)] += 2.0  # the fast passes: θ_K
    theta_k = [masters[id(w)].clone() for w in weights]
    trainer._reposition()
    for w, t0, tk in zip(weights, theta_0, theta_k, strict=True):
        tilde = reposition(tk, t0, 0.25)
        assert torch.equal(masters[id(w)], tilde)
        assert torch.equal(w, tilde.to(torch.bfloat16))
    assert trainer._batch_metrics["sfpo/drift_norm"] == pytest.approx(2 * 3**0.5)
    assert trainer._batch_metrics["sfpo/reposition_norm"] == pytest.approx(0.5 * 3**0.5)


def test_sharded_distance_of_replicated_tensors() -> None:
    theta = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    zeros = [torch.zeros(2), torch.zeros(1, 1)]
    assert sharded_distance(theta, zeros, sharded=False) == 5.0


# FSDP2 shards on 2 CPU processes (accelerate runs FSDP only on GPUs) -------------------
SHARDED = """
import torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import distribute_tensor
from sfpo_edu.params import interpolate_, snapshot
from sfpo_edu.trl import sharded_distance

dist.init_process_group("gloo")
mesh = init_device_mesh("cpu", (2,))
torch.manual_seed(0)  # the same θ₀ and θ_K on both ranks
model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3))
theta_0 = [p.detach().clone() for p in model.parameters()]  # whole tensors
theta_k = [t + torch.randn(t.shape) for t in theta_0]
fully_shard(model, mesh=mesh)
params = list(model.parameters())  # DTensors: this rank holds a shard of each
snap = snapshot(params)  # θ₀, shard by shard
with torch.no_grad():
    for p, t in zip(params, theta_k):
        p.copy_(distribute_tensor(t, mesh, p.placements))  # the fast passes' θ_K
drift = sharded_distance(params, snap, sharded=True)
interpolate_(params, snap, 0.3)  # what SFPOTrainer does under FSDP
interpolate_(theta_k, theta_0, 0.3)  # the same on the whole, unsharded tensors
assert all(p.to_local().numel() < p.numel() for p in params)
assert all(torch.equal(p.full_tensor(), t) for p, t in zip(params, theta_k))
whole = sharded_distance([t + 0 for t in theta_k], theta_0, sharded=False) / 0.3
assert abs(drift - whole) < 1e-5 * whole, (drift, whole)
print("sharded reposition ok")
dist.destroy_process_group()
"""


def test_reposition_on_fsdp2_shards_equals_the_whole_model(tmp_path: Path) -> None:
    """Each rank lerps its own DTensor shards with a snapshot of the same shards."""
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("sharded reposition ok") == 2
