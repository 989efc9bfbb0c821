"""bench/gpu_check.py on CPU: --dry-run, the committed model configs, the random-weight
route that a GPU run takes for a model it has no weights for, budget and skips."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from sfpo_edu.config import SFPOConfig

BENCH = Path(__file__).resolve().parents[1] / "bench"
CONFIGS = BENCH / "model_configs"


@pytest.fixture(scope="module")
def gpu_check():
    """The script as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclass looks its module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


def cpu_cfg(**changes) -> SFPOConfig:
    base = dict(device="cpu", num_prompts=2, group_size=4, max_new_tokens=8,
                stop_rule="never", save_every=0, eval_every=0)  # fmt: skip
    return SFPOConfig(**(base | changes))


def test_dry_run_measures_every_arm_and_writes_the_json(tmp_path):
    out = tmp_path / "dry.json"
    cmd = [sys.executable, str(BENCH / "gpu_check.py"), "--dry-run", "--output",
           str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SFPO step / GRPO step" in done.stdout
    data = json.loads(out.read_text())
    assert data["dry_run"] is True
    assert {"torch", "transformers", "peft", "bitsandbytes"} <= set(data["gpu"])
    assert "torch" in data["environment"]
    assert data["timings_s"]["total"] > 0
    assert set(data["cells"]) == {"tiny/4bit/float32", "tiny/none/float32"}
    measured = {k: r for k, r in data["cells"].items() if "arms" in r}
    assert "tiny/none/float32" in measured
    if "tiny/4bit/float32" not in measured:  # only when bitsandbytes is missing
        assert "bitsandbytes" in data["cells"]["tiny/4bit/float32"]["skipped"]
    for name, r in measured.items():
        assert r["full_length"] and r["generated_tokens"] == 2 * 4 * 8, name
        arms = r["arms"]
        assert [len(arms[a]["passes_s"]) for a in ("grpo", "sfpo", "grpo_multi")] == [
            1, 4, 4
        ]  # fmt: skip
        assert arms["sfpo"]["eval_theta_k_s"] > 0  # SFPO's look at θ_K
        for a in arms.values():
            assert a["step_s"] > a["update_s"] > 0 and not a["skipped"]
            assert a["step_s"] == pytest.approx(
                r["generate_s"] + a["old_logps_s"] + a["update_s"]
            )
        assert r["sfpo_over_grpo_step_time"] > 0


def test_committed_configs_have_the_published_parameter_counts():
    published = {  # total parameters, tied embeddings counted once
        "SmolLM2-135M-Instruct": 134_515_008,
        "Qwen2.5-0.5B-Instruct": 494_032_768,
        "Qwen2.5-1.5B-Instruct": 1_543_714_304,
    }
    assert sorted(p.name for p in CONFIGS.iterdir()) == sorted(published)
    for name, count in published.items():
        config = AutoConfig.from_pretrained(CONFIGS / name)
        with torch.device("meta"):  # shapes only, no memory
            model = AutoModelForCausalLM.from_config(config)
        assert sum(p.numel() for p in model.parameters()) == count, name
        assert config.tie_word_embeddings


def test_smollm2_config_matches_the_model_shipped_on_pypi(smollm2_dir):
    shipped = AutoConfig.from_pretrained(smollm2_dir)
    committed = AutoConfig.from_pretrained(CONFIGS / "SmolLM2-135M-Instruct")
    for key in ["hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "vocab_size",
                "tie_word_embeddings", "max_position_embeddings", "eos_token_id"]:  # fmt: skip
        assert getattr(committed, key) == getattr(shipped, key), key
    assert committed.rope_parameters["rope_theta"] == pytest.approx(
        shipped.rope_parameters["rope_theta"]
    )
    assert committed.rms_norm_eps == pytest.approx(shipped.rms_norm_eps, rel=1e-6)


def test_a_committed_shape_runs_with_random_weights(gpu_check, tmp_path, monkeypatch):
    """The GPU route for a model with no local weights, on a shrunk Qwen2.5 config."""
    config = json.loads((CONFIGS / "Qwen2.5-0.5B-Instruct" / "config.json").read_text())
    config |= dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=1, vocab_size=512)  # fmt: skip
    shrunk = tmp_path / "configs" / "Qwen2.5-0.5B-Instruct"
    shrunk.mkdir(parents=True)
    (shrunk / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(gpu_check, "CONFIGS", tmp_path / "configs")
    monkeypatch.setattr(gpu_check, "find_real_weights", lambda model, weights_dir: None)
    cells = [gpu_check.Cell("Qwen2.5-0.5B-Instruct", "none", "float32")]
    cpu = torch.device("cpu")
    results, timings = gpu_check.run_grid(
        cells, cpu_cfg(), cpu, 1e9, None, time.perf_counter()
    )
    r = results["Qwen2.5-0.5B-Instruct/none/float32"]
    assert "error" not in r, r.get("error")
    assert r["weights"].startswith("random (built from")
    assert r["full_length"] and set(r["arms"]) == {"grpo", "sfpo", "grpo_multi"}
    assert r["trainable_params"] > 0 and r["total_params"] > r["trainable_params"]
    assert "build:Qwen2.5-0.5B-Instruct" in timings


def test_random_weights_folder_loads_as_the_configured_architecture(
    gpu_check, tmp_path
):
    config = json.loads((CONFIGS / "SmolLM2-135M-Instruct" / "config.json").read_text())
    config |= dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                   vocab_size=256)  # fmt: skip
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps(config))
    folder = gpu_check.random_weights_folder(
        tmp_path / "cfg", tmp_path / "model", torch.device("cpu")
    )
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.vocab_size == 256 and model.config.num_hidden_layers == 1
    assert (folder / "tokenizer.json").exists()


def test_a_budget_that_is_spent_skips_cells_and_says_so(gpu_check):
    cells = gpu_check.make_grid(["tiny"], ["none"], ["float32"])
    results, _ = gpu_check.run_grid(
        cells, cpu_cfg(), torch.device("cpu"), 0.0, None, time.perf_counter()
    )
    assert results["tiny/none/float32"]["skipped"].startswith("budget:")


def test_without_bitsandbytes_4bit_cells_are_skipped_with_the_install_hint(
    gpu_check, monkeypatch
):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        gpu_check.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real(name, *a),
    )
    reason = gpu_check.skip_reason(
        gpu_check.Cell("tiny", "4bit", "float32"), torch.device("cpu")
    )
    assert "bitsandbytes is not installed" in reason and "--find-links" in reason
    assert gpu_check.skip_reason(gpu_check.Cell("tiny", "none", "float32"),
                                 torch.device("cpu")) is None  # fmt: skip


def test_the_grid_runs_the_headline_cell_first(gpu_check):
    cells = gpu_check.make_grid(
        list(gpu_check.HUB_NAMES), ["4bit", "none"], ["bfloat16", "float16"]
    )
    assert len(cells) == 12
    assert cells[0].name == gpu_check.HEADLINE[0]
    assert gpu_check.ARMS[:2] == ("grpo", "sfpo")


def test_pass_times_are_the_gaps_between_loss_calls(gpu_check):
    calls = [(0.0, True), (1.0, True), (3.0, False), (3.5, True)]
    times = gpu_check.stage_times(calls, end=6.0)
    assert times == {"passes_s": [1.0, 2.0, 2.5], "eval_theta_k_s": 0.5}


def test_without_a_gpu_the_full_run_points_to_dry_run(gpu_check, capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert gpu_check.main(["--output", str(tmp_path / "x.json")]) == 2
    assert "--dry-run" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
