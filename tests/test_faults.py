"""Faults and bad state (issue 19): every run survives, every error names the file
and the fix. One test (or parameter) per row of the issue's table, on the tiny model.

Kills are injected (a rename or write that raises at the chosen moment), not raced.
Errors that need no model must come before it loads: those tests make loading the
model fail, so an error raised later would show up as that failure instead.
"""

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sfpo_edu import train
from sfpo_edu.cli import main
from sfpo_edu.config import SFPOConfig
from sfpo_edu.metrics import load_run
from sfpo_edu.train import Trainer


def tiny_cfg(task, **changes):
    base = dict(
        model="tiny", task=task, num_steps=2, num_prompts=2, group_size=2,
        max_new_tokens=4, lr=5e-2, eval_every=0, save_every=1, stop_rule="never",
        seed=1,
    )  # fmt: skip
    return SFPOConfig(**(base | changes))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, digit_task):
    """A finished 2-step run: checkpoint-1 and checkpoint-2 (= latest)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    Trainer(tiny_cfg(digit_task), run_dir, progress=False).train()
    return run_dir


@pytest.fixture
def run(tmp_path, finished_run):
    """A copy of the finished run that a test may damage."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def no_model(monkeypatch):
    """Make loading the model fail, to show that an error came before it."""

    def load(cfg):
        raise AssertionError("the model was loaded before the error was found")

    monkeypatch.setattr(train, "load_policy_for", load)


# --- checkpoints -----------------------------------------------------------------


def test_a_kill_while_resaving_a_saved_step_leaves_a_resumable_run(
    run, digit_task, monkeypatch
):
    # Row 1: the end of a run (save_every divides num_steps), after Ctrl-C, or a
    # resume of a finished run saves the step that `latest` already names again.
    trainer = Trainer(tiny_cfg(digit_task), run, resume=True, progress=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(Path, "rename", killed)
        m.setattr(train, "atomic_write_text", killed)
        with contextlib.suppress(KeyboardInterrupt):
            trainer.train()  # saves checkpoint-2 at the end, again
    assert (run / "latest").read_text() == "checkpoint-2"
    assert (run / "checkpoint-2" / "trainable.safetensors").exists()
    assert main(["eval", str(run), "--num-prompts", "2"]) == 0
    assert Trainer(tiny_cfg(digit_task), run, resume=True, progress=False).step == 2


@pytest.mark.parametrize("moment", ["rename", "latest"])
def test_a_kill_while_saving_a_new_step_resumes_from_a_whole_checkpoint(
    run, digit_task, monkeypatch, moment
):
    trainer = Trainer(tiny_cfg(digit_task, num_steps=3), run, resume=True)
    trainer.step = 3  # as if step 2 had just run

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    target = (Path, "rename") if moment == "rename" else (train, "atomic_write_text")
    with monkeypatch.context() as m:
        m.setattr(*target, killed)
        with pytest.raises(KeyboardInterrupt):
            trainer.save_checkpoint()
    resumed = Trainer(tiny_cfg(digit_task, num_steps=3), run, resume=True)
    assert resumed.step == 2


def test_missing_latest_resumes_from_the_newest_checkpoint_and_says_so(run, digit_task):
    # Row 2: exited 0 and silently restarted from step 0, then deleted checkpoints.
    (run / "latest").unlink()
    with pytest.warns(UserWarning, match="`latest` is missing; using checkpoint-2"):
        trainer = Trainer(tiny_cfg(digit_task), run, resume=True, progress=False)
    assert trainer.step == 2 and (run / "checkpoint-2").exists()
    trainer.train()
    assert [r["step"] for r in load_run(run).metrics] == [0, 1, 2]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(path: Path) -> None:
    path.write_bytes(b"\xff\x00garbage" * 50)


def _nan_weights(path: Path) -> None:  # a valid header, NaN values
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(path).items()},
              str(path))  # fmt: skip


def _wrong_shape(path: Path) -> None:
    save_file({k: v[:1] for k, v in load_file(path).items()}, str(path))


def _nan_optimizer(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    for slots in state["state"].values():
        slots["exp_avg"].fill_(float("nan"))
    torch.save(state, path)


DAMAGE = [
    # Rows 3 and 4: raw SafetensorError / OSError, or NaN loaded silently.
    ("trainable.safetensors", _truncate, "SafetensorError"),
    ("trainable.safetensors", _garble, "SafetensorError"),
    ("trainable.safetensors", _nan_weights, "NaN or infinite"),
    ("trainable.safetensors", _wrong_shape, "has shape"),
    ("optimizer.pt", _truncate, ""),
    ("optimizer.pt", _garble, ""),
    ("optimizer.pt", _nan_optimizer, "exp_avg holds NaN"),
    # Row 5: a garbled state.json gave "Invalid control character" and no file.
    ("state.json", _garble, "UnicodeDecodeError"),
    ("state.json", lambda p: p.write_text('{"next_step": 2,\x01}'), "JSONDecodeError"),
]


@pytest.mark.parametrize("name, damage, reason", DAMAGE)
def test_a_damaged_checkpoint_names_the_file_and_offers_the_previous_one(
    run, digit_task, capsys, name, damage, reason
):
    path = run / "checkpoint-2" / name
    damage(path)
    with pytest.raises(ValueError) as info:
        Trainer(tiny_cfg(digit_task), run, resume=True, progress=False)
    message = str(info.value)
    assert message.startswith(f"{path} is damaged (") and reason in message
    assert f"Fix: delete {run / 'checkpoint-2'} and resume again" in message
    assert "checkpoint-1, the previous whole checkpoint" in message
    # the CLI prints it in one line; eval reads the same checkpoint (not the optimizer)
    assert main(["train", "--resume", str(run)]) == 2
    evaluated = name == "optimizer.pt"
    assert main(["eval", str(run), "--num-prompts", "2"]) == (0 if evaluated else 2)
    err = capsys.readouterr().err
    assert err.count(f"sfpo-edu: error: {path} is damaged") == 2 - evaluated
    assert "Traceback" not in err
    # following the fix continues from the previous checkpoint
    shutil.rmtree(run / "checkpoint-2")
    with pytest.warns(UserWarning, match="names a checkpoint that is not there"):
        trainer = Trainer(tiny_cfg(digit_task), run, resume=True, progress=False)
    assert trainer.step == 1
    trainer.train()
    assert [r["step"] for r in load_run(run).metrics] == [0, 1, 2]


# --- config.json and resume settings -----------------------------------------------


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_garbled_or_missing_config_json_is_named_with_a_fix(run, capsys, command):
    # Row 5: "Invalid control character at: line 1 column 31"; a bare [Errno 2].
    args = ["train", "--resume", str(run)] if command == "train" else ["eval", str(run)]
    (run / "config.json").write_text('{"algo": "sfpo\x01"}')
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{run / 'config.json'} is damaged (not valid JSON" in err
    assert "Fix: restore it" in err and "state.json" in err
    (run / "config.json").unlink()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{run} is not a run folder (no config.json). Fix:" in err


def test_resume_flags_that_may_not_change_are_an_error_listing_them(run, capsys):
    # Row 6: `--resume DIR --lr 0.5 --num-steps 12` exited 0, the flags ignored.
    assert main(["train", "--resume", str(run), "--lr", "0.5", "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "with --lr 0.5, --seed 3: it was trained with --lr 0.05, --seed 1" in err
    assert "Only --num-steps, --eval-every, --save-every may change" in err
    assert main(["train", "--resume", str(run), "--name", "other"]) == 2
    assert "--resume takes the run folder itself" in capsys.readouterr().err
    assert [r["step"] for r in load_run(run).metrics] == [0, 1, 2]  # untouched


def test_resume_with_more_num_steps_extends_the_run(run, capsys):
    assert main(["train", "--resume", str(run), "--num-steps", "3"]) == 0
    run_data = load_run(run)
    assert [r["step"] for r in run_data.metrics] == [0, 1, 2, 3]
    assert run_data.config["num_steps"] == 3
    assert (run / "latest").read_text() == "checkpoint-3"


def test_resume_with_fewer_num_steps_than_done_is_refused_and_keeps_the_run(
    run, capsys, monkeypatch
):
    # it exited 0 after dropping the final evaluation row, its weights still step 2's
    no_model(monkeypatch)
    before = (run / "metrics.jsonl").read_text(), (run / "config.json").read_text()
    assert main(["train", "--resume", str(run), "--num-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "its checkpoint is at step 2. Fix: pass num_steps >= 2" in err
    assert f"sfpo-edu eval {run}" in err and "Traceback" not in err
    after = (run / "metrics.jsonl").read_text(), (run / "config.json").read_text()
    assert after == before


def test_resume_without_a_checkpoint_says_it_starts_again(run, digit_task):
    # save_every=0 and a crash: resume redid the logged steps without a word
    for folder in run.glob("checkpoint-*"):
        shutil.rmtree(folder)
    (run / "latest").unlink()
    with pytest.warns(UserWarning, match="no checkpoint .* starts again at step 0"):
        trainer = Trainer(tiny_cfg(digit_task), run, resume=True, progress=False)
    trainer.train()
    assert [r["step"] for r in load_run(run).metrics] == [0, 1, 2]


@pytest.mark.parametrize("field, value", [("lr", 0.5), ("lora_r", 4)])
def test_an_edited_config_json_is_caught_against_the_checkpoint(
    run, capsys, monkeypatch, field, value
):
    # Row 6: an edited lr was reported but the optimizer's lr used; an edited lora_r
    # gave a shape-mismatch traceback.
    no_model(monkeypatch)
    config = json.loads((run / "config.json").read_text())
    saved = config[field]
    config[field] = value
    (run / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"it was trained with {field}={saved!r} (now {value!r})" in err
    assert "checkpoint-2/state.json" in err and "Traceback" not in err


# --- two writers -------------------------------------------------------------------


def test_a_second_writer_gets_a_clear_error(run, digit_task, monkeypatch, capsys):
    # Row 7: two processes on one folder both exited 0 and logged steps twice.
    no_model(monkeypatch)
    with open(run / ".lock", "w") as other:  # another process holds the lock
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other.write("4242\n")
        other.flush()
        with pytest.raises(BlockingIOError, match=r"another process \(PID 4242\)"):
            Trainer(tiny_cfg(digit_task), run, resume=True)
        assert main(["train", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert "being written by another process (PID 4242). Fix:" in err
        assert "kill 4242" in err


def test_the_lock_of_a_killed_process_is_taken_over(run, digit_task):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".lock").write_text(f"{dead.pid}\n")
    with pytest.warns(UserWarning, match=f"process {dead.pid} stopped without"):
        trainer = Trainer(tiny_cfg(digit_task), run, resume=True, progress=False)
    assert (run / ".lock").read_text() == f"{os.getpid()}\n"
    trainer.train()
    assert (run / ".lock").read_text() == ""  # released when train() ends


def test_a_subprocess_cannot_write_a_folder_this_process_trains(run, digit_task):
    Trainer(tiny_cfg(digit_task, num_steps=3), run, resume=True, progress=False)
    script = (
        "import sys\n"
        "from sfpo_edu.cli import main\n"
        "sys.exit(main(['train', '--resume', sys.argv[1], '--num-steps', '3']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(run)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"another process (PID {os.getpid()})" in proc.stderr


# --- errors before the model loads -------------------------------------------------


def _non_utf8(tmp_path: Path, monkeypatch) -> dict:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "caf\xe9 + 1?", "answer": "2"}\n')
    return {"task": str(path)}


def _huge_prompt(tmp_path: Path, monkeypatch) -> dict:
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({"prompt": "1 + " * 250_000 + "1?", "answer": "1"}))
    return {"task": str(path)}


def _no_reasoning_gym(tmp_path: Path, monkeypatch) -> dict:
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # import fails
    return {"task": "reasoning_gym:chain_sum"}


def _gsm8k_offline(tmp_path: Path, monkeypatch) -> dict:
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    return {"task": "gsm8k"}


def _output_dir_is_a_file(tmp_path: Path, monkeypatch) -> dict:
    (tmp_path / "out").write_text("a file, not a folder")
    return {"output_dir": tmp_path / "out"}


EARLY = [
    # Rows 10-12: raw errors, and (but for the JSONL ones) after the model had loaded.
    (_non_utf8, ValueError, "latin1.jsonl, line 1: not UTF-8"),
    (_huge_prompt, ValueError, "huge.jsonl, line 1: the prompt has 1,000,002 char"),
    (_no_reasoning_gym, ImportError, "pip install reasoning-gym"),
    (_gsm8k_offline, ConnectionError, "could not load openai/gsm8k"),
    (_output_dir_is_a_file, PermissionError, "cannot write the run folder"),
]


@pytest.mark.parametrize("make, error, message", EARLY)
def test_errors_found_without_the_model_come_before_it_loads(
    tmp_path, digit_task, monkeypatch, capsys, make, error, message
):
    no_model(monkeypatch)
    setting = make(tmp_path, monkeypatch)
    out = setting.pop("output_dir", tmp_path / "runs")
    cfg = tiny_cfg(digit_task).replace(**setting)
    with pytest.raises(error, match=message):
        Trainer(cfg, Path(out) / "run")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in setting.items()]
    assert main(["train", "--model", "tiny", "--output-dir", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sfpo-edu: error: ") and err.count("\n") == 1, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write a read-only folder")
def test_a_read_only_output_dir_is_found_before_the_model_loads(
    tmp_path, digit_task, monkeypatch
):
    no_model(monkeypatch)
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="cannot write the run folder"):
            Trainer(tiny_cfg(digit_task), tmp_path / "run")
    finally:
        tmp_path.chmod(0o700)


def test_a_prompt_longer_than_the_context_is_an_error_before_training(
    tmp_path, digit_task
):
    # Row 11: a prompt too long for the model made training hang. The tiny model's
    # context is 1024 tokens of one character each.
    path = tmp_path / "long.jsonl"
    rows = [{"prompt": "What is 1 + 1?", "answer": "2"},
            {"prompt": "Add these: " + "1 + " * 300 + "1?", "answer": "301"}]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"tokens with the chat template.*1024-token"):
        Trainer(tiny_cfg(str(path)), tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# --- Ctrl-C --------------------------------------------------------------------------


def test_ctrl_c_in_train_exits_130_with_the_resume_command(
    tmp_path, digit_task, ctrl_c_at_once, capsys
):
    # Row 13: exited 0 with "Run written to …" and no hint how to resume.
    args = ["--model", "tiny", "--task", digit_task, "--num-prompts", "2",
            "--group-size", "2", "--max-new-tokens", "4", "--eval-every", "0"]  # fmt: skip
    assert main(["train", "--output-dir", str(tmp_path), "--name", "t", *args]) == 130
    err = capsys.readouterr().err
    run_dir = tmp_path / "t"
    assert f"Continue with: sfpo-edu train --resume {run_dir}" in err
    assert (run_dir / "latest").exists()
