"""Shared bits of the bench scripts: environment record and JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from sfpo_edu.metrics import strict_json

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
    """Versions, CPU and threads: stored with every result."""
    from sfpo_edu.models import describe_environment

    info: dict[str, Any] = {
        k: v for k, v in describe_environment().items() if k not in ("hub",)
    }
    info |= {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return info


def write_result(name: str, result: dict[str, Any], out_dir: str | None = None) -> Path:
    """Write ``<out_dir or bench/results>/<name>.json`` and return its path."""
    folder = Path(out_dir) if out_dir else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    text = json.dumps(strict_json({"environment": environment()} | result), indent=2)
    path.write_text(text + "\n")
    print(f"\nwritten: {path}")
    return path
