"""The trainer on the tiny random model: run files, resume (also after SIGKILL),
LoRA / 4-bit base weights untouched, and the CLI entry points."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sfpo_edu.cli import main
from sfpo_edu.config import SFPOConfig
from sfpo_edu.logprobs import per_token_logps
from sfpo_edu.metrics import load_run
from sfpo_edu.models import load_policy
from sfpo_edu.params import trainable_params
from sfpo_edu.sfpo import make_optimizer, sfpo_update, update
from sfpo_edu.toy import ToyBandit, toy_config
from sfpo_edu.train import Trainer, load_checkpoint, make_loss_fn

VOLATILE = ("time/", "memory/")


def tiny_cfg(task, **changes):
    base = dict(
        model="tiny", task=task, reward_scheme="reference", num_steps=4,
        num_prompts=2, group_size=4, max_new_tokens=6, lr=5e-2, eval_every=2,
        num_eval_prompts=4, save_every=1, stop_rule="never", seed=1,
    )  # fmt: skip
    return SFPOConfig(**(base | changes))


def stable(rows):
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, digit_task):
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    Trainer(tiny_cfg(digit_task), run_dir, progress=False).train()
    return run_dir


def test_trainer_writes_a_complete_run(reference_run):
    run = load_run(reference_run, samples=True)
    assert [r["step"] for r in run.metrics] == [0, 1, 2, 3, 4]
    assert run.config["algo"] == "sfpo"
    row = run.metrics[0]
    for key in ["reward/mean", "reward/frac_zero_std", "completions/mean_length",
                "completions/clipped_ratio", "fast/loss", "slow/loss", "kl/theta_k",
                "kl/theta_tilde", "sfpo/drift_norm", "sfpo/entropy", "rollouts/total",
                "time/rollout_s", "time/update_s", "memory/peak_mb", "eval/accuracy"]:  # fmt: skip
        assert key in row, key
    assert "eval/accuracy" in run.metrics[-1]  # the final evaluation
    assert run.metrics[-1]["rollouts/total"] == 4 * 8
    assert any(
        r.get("sfpo/drift_norm", 0) > 0 for r in run.metrics
    )  # it learned something
    sample = run.samples[0]
    assert {"prompt", "completion", "answer", "reward", "advantage"} <= set(sample)
    assert (reference_run / "latest").read_text() == "checkpoint-4"


def test_resume_gives_the_same_metrics_as_an_uninterrupted_run(
    tmp_path, reference_run, digit_task
):
    run_dir = tmp_path / "run"
    Trainer(tiny_cfg(digit_task, num_steps=2), run_dir, progress=False).train()
    Trainer(tiny_cfg(digit_task), run_dir, resume=True, progress=False).train()
    assert stable(load_run(run_dir).metrics) == stable(load_run(reference_run).metrics)


def test_sigkill_mid_step_resumes_with_no_lost_or_duplicated_step(
    tmp_path, reference_run, digit_task
):
    run_dir = tmp_path / "run"
    cfg = tiny_cfg(digit_task)
    script = (
        "import json, sys, time\n"
        "from sfpo_edu.config import SFPOConfig\n"
        "from sfpo_edu import train\n"
        "cfg = SFPOConfig.from_dict(json.loads(sys.argv[1]))\n"
        "t = train.Trainer(cfg, sys.argv[2], progress=False)\n"
        "slow = t.train_step\n"
        "t.train_step = lambda s: (time.sleep(0.5), slow(s))[1]  # widen the window\n"
        "t.train()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(cfg.to_dict()), str(run_dir)]
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if metrics.exists() and metrics.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert metrics.read_text().count("\n") < 5, "the run finished before it was killed"
    Trainer(cfg, run_dir, resume=True, progress=False).train()
    steps = [r["step"] for r in load_run(run_dir).metrics]
    assert steps == [0, 1, 2, 3, 4]
    assert stable(load_run(run_dir).metrics) == stable(load_run(reference_run).metrics)


def base_logits(policy, input_ids):
    """The frozen base model's logits (adapter off): what "the base is unchanged" means."""
    with torch.no_grad(), policy.model.disable_adapter():
        return policy.model(input_ids=input_ids).logits  # (B, L, V)


def corrupt_one_base_weight(model):
    """Really change a frozen base weight (a 4-bit one: flip its first bytes)."""
    name, layer = next((n, m) for n, m in model.named_modules() if n.endswith("q_proj"))
    weight = layer.base_layer.weight.data
    with torch.no_grad():
        if weight.is_floating_point():
            weight.view(-1)[:8] += 1.0
        else:  # packed 4-bit codes, whatever the CPU layout
            weight.view(-1)[:8].bitwise_not_()
    return name


@pytest.mark.parametrize("quantization", [None, "4bit"])
def test_an_sfpo_step_leaves_the_frozen_base_unchanged(
    quantization, digit_task, tmp_path
):
    """Compares the base model's outputs, not weight storage: on CPUs with
    AVX512-BF16, bitsandbytes repacks a 4-bit weight into a CPU kernel layout on its
    first no-grad forward, which changes the storage but not the weight."""
    policy = load_policy("tiny", quantization=quantization, seed=0)
    input_ids = torch.randint(
        3, 40, (2, 12), generator=torch.Generator().manual_seed(0)
    )
    base_logits(policy, input_ids)  # warm-up: any repacking happens here
    before = base_logits(policy, input_ids)
    adapters = {n: p.detach().clone() for n, p in policy.model.named_parameters()
                if p.requires_grad}  # fmt: skip
    assert adapters and all("lora" in n for n in adapters)
    trainer = Trainer(tiny_cfg(digit_task, num_steps=1, eval_every=0), tmp_path / "r",
                      policy=policy, progress=False)  # fmt: skip
    row = trainer.train_step(0)
    assert row["sfpo/drift_norm"] > 0
    assert torch.equal(base_logits(policy, input_ids), before)
    changed = [n for n, p in policy.model.named_parameters()
               if n in adapters and not torch.equal(p, adapters[n])]  # fmt: skip
    assert changed
    # the same comparison catches a step that really changes a base weight
    name = corrupt_one_base_weight(policy.model)
    assert not torch.equal(base_logits(policy, input_ids), before), name


def test_the_same_sfpo_update_trains_the_toy_and_a_tiny_llm(digit_task, tmp_path):
    bandit = ToyBandit()
    cfg = toy_config()
    params = trainable_params(bandit)
    batch = bandit.sample_batch(1, 8, torch.Generator().manual_seed(0))
    m_toy = sfpo_update(
        params, make_optimizer(params, cfg), batch, bandit.make_loss_fn(cfg)
    )

    cfg = tiny_cfg(digit_task, num_steps=1, eval_every=0)
    trainer = Trainer(cfg, tmp_path / "r", progress=False)
    batch, _, _ = trainer.rollout(0)
    m_llm = sfpo_update(trainer.params, trainer.optimizer, batch,
                        make_loss_fn(trainer.policy.model, cfg))  # fmt: skip
    assert set(m_toy) == set(m_llm)


def test_existing_run_and_mismatched_resume_are_clear_errors(reference_run, digit_task):
    with pytest.raises(FileExistsError, match="resume"):
        Trainer(tiny_cfg(digit_task), reference_run, progress=False)
    with pytest.raises(ValueError, match=r"trained with alpha=0.8 \(now 0.5\)"):
        Trainer(tiny_cfg(digit_task, alpha=0.5), reference_run, resume=True)


def test_load_checkpoint_restores_trained_adapters(reference_run, digit_task):
    policy = load_policy("tiny", seed=1)
    before = [p.clone() for p in trainable_params(policy.model)]
    state = load_checkpoint(reference_run, policy)
    assert state["next_step"] == 4
    after = trainable_params(policy.model)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_cli_compare_quick_on_the_tiny_model(tmp_path, digit_task, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--quick", "--output-dir", str(out), "--model", "tiny",
                 "--task", digit_task, "--reward-scheme", "reference"])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    for name in ("GRPO", "GRPO×(K+1)", "SFPO"):
        assert name in text
    assert (out / "comparison.png").stat().st_size > 0
    assert "nan" not in text  # wall time is stored with each run
    assert {p.name for p in out.iterdir()} >= {"grpo", "grpo_multi", "sfpo"}
    # it ends by saying how to read the table and what to open next
    closing = text[text.index("Reading the table") :]
    assert str(out / "comparison.png") in closing
    assert "05_train_grpo_vs_sfpo" in closing and "06_reading_the_dashboards" in closing
    assert f"sfpo-edu eval {out / 'sfpo'}" in closing


def test_cli_compare_quick_keeps_the_flags_given(tmp_path, digit_task):
    # --quick used to override --num-steps and --group-size silently
    out = tmp_path / "cmp"
    code = main(["compare", "--quick", "--output-dir", str(out), "--model", "tiny",
                 "--task", digit_task, "--algos", "grpo", "--num-steps", "1",
                 "--group-size", "2", "--eval-every", "0"])  # fmt: skip
    assert code == 0
    config = json.loads((out / "compare.json").read_text())["config"]
    assert (config["num_steps"], config["group_size"]) == (1, 2)
    assert config["max_new_tokens"] == 16  # the rest of the preset stays


def test_cli_a_misspelt_arm_leaves_no_comparison_behind(tmp_path, capsys):
    # compare.json was written first: neither the corrected command nor --resume worked
    out = tmp_path / "cmp"
    args = ["compare", "--quick", "--output-dir", str(out), "--model", "tiny"]
    assert main([*args, "--algos", "gpro", "sfpo"]) == 2
    assert "algo='gpro' is invalid" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_cli_toy_with_no_seeds_is_a_clear_error(capsys):
    assert main(["toy", "--seeds", "0", "--num-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "nothing to compare" in err and "Traceback" not in err


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["train", "--alpha", "2", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "alpha=2.0 is invalid" in err and "Traceback" not in err


def test_cli_train_eval_and_doctor(tmp_path, digit_task, capsys):
    args = ["--model", "tiny", "--task", digit_task, "--num-steps", "1", "--num-prompts",
            "2", "--group-size", "2", "--max-new-tokens", "4", "--eval-every", "0"]  # fmt: skip
    assert main(["train", "--name", "t", "--output-dir", str(tmp_path), *args]) == 0
    assert main(["eval", str(tmp_path / "t"), "--num-prompts", "4"]) == 0
    out = capsys.readouterr().out
    assert "held-out greedy accuracy" in out and "on 4 problems (" in out
    # the task has 25 problems: 30 repeat 5 of them, and the count says so
    assert main(["eval", str(tmp_path / "t"), "--num-prompts", "30"]) == 0
    assert "on 30 problems, 25 distinct (" in capsys.readouterr().out
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "device" in out


def test_ctrl_c_in_compare_stops_the_whole_comparison(
    tmp_path, digit_task, capsys, monkeypatch, ctrl_c_at_once
):
    out = tmp_path / "cmp"
    code = main(["compare", "--quick", "--output-dir", str(out), "--model", "tiny",
                 "--task", digit_task])  # fmt: skip
    assert code == 130
    err = capsys.readouterr().err
    assert f"Finish the comparison (grpo, then grpo_multi, sfpo) with: sfpo-edu compare --resume {out}" in err  # fmt: skip
    assert (out / "grpo" / "latest").exists()  # the stopped arm kept a checkpoint
    assert not (out / "grpo_multi").exists()  # and no other arm started

    # issue 19: the message said `train --resume <arm>`, which finished one arm only,
    # and rerunning compare suggested deleting the folder (and the finished arms)
    monkeypatch.undo()
    assert (
        main(["compare", "--output-dir", str(out), "--quick", "--model", "tiny"]) == 2
    )
    assert f"sfpo-edu compare --resume {out}" in capsys.readouterr().err
    assert main(["compare", "--resume", str(out), "--lr", "0.1"]) == 2
    assert "takes no run settings (got --lr 0.1)" in capsys.readouterr().err
    assert main(["compare", "--resume", str(out)]) == 0
    assert "SFPO" in capsys.readouterr().out and (out / "comparison.png").exists()
    for algo in ("grpo", "grpo_multi", "sfpo"):
        run = load_run(out / algo)
        assert [r["step"] for r in run.metrics] == [0, 1, 2], algo
        assert run.config["extra"]["wall_s"] > 0


@pytest.mark.parametrize(
    ("algo", "num_minibatches"),
    [("sfpo", 1), ("grpo_multi", 1), ("grpo", 1), ("sfpo", 2)],
)
def test_old_logps_from_the_first_pass_give_the_same_update_bit_for_bit(
    algo, num_minibatches, digit_task, tmp_path
):
    """The first pass runs at θ₀, so taking the old log-probs from it (no separate
    no-grad forward) gives the same parameters, in fp32, as computing them first."""
    cfg = tiny_cfg(digit_task, algo=algo, num_minibatches=num_minibatches,
                   num_steps=1, eval_every=0)  # fmt: skip
    results = []
    for separate_forward in (True, False):
        trainer = Trainer(cfg, tmp_path / f"{separate_forward}", progress=False)
        batch, _, _ = trainer.rollout(0)
        if separate_forward:
            with torch.no_grad():
                batch.old_per_token_logps, _ = per_token_logps(
                    trainer.policy.model, batch, temperature=cfg.temperature
                )
        elif num_minibatches == 1:
            assert batch.old_per_token_logps is None  # the first pass fills them
        metrics = update(trainer.params, trainer.optimizer, batch, trainer.loss_fn,
                         cfg, trainer.stop_rule, 0)  # fmt: skip
        assert metrics["update/skipped"] == 0
        results.append(([p.detach().clone() for p in trainer.params], batch))
    (params_a, batch_a), (params_b, batch_b) = results
    assert torch.equal(batch_a.old_per_token_logps, batch_b.old_per_token_logps)
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b, strict=True))


def test_the_first_pass_fills_the_old_logps_once(digit_task, tmp_path):
    """Later passes must read θ₀'s stored log-probs, never their own (the trap of
    setting old = current at every pass, which removes clipping against θ₀)."""
    cfg = tiny_cfg(digit_task, num_steps=1, eval_every=0)
    trainer = Trainer(cfg, tmp_path / "r", progress=False)
    batch, _, _ = trainer.rollout(0)
    seen = []

    def loss_fn(b):
        loss, stats = trainer.loss_fn(b)
        seen.append((b.old_per_token_logps, stats["clip_frac"]))
        return loss, stats

    update(trainer.params, trainer.optimizer, batch, loss_fn, cfg, trainer.stop_rule, 0)
    first = seen[0][0]
    assert all(old is first for old, _ in seen)  # one tensor, stored once
    assert seen[-1][1] > 0 or seen[-2][1] > 0  # passes after θ₀ can clip against it
