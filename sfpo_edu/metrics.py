"""Run files: ``runs/<name>/config.json``, ``metrics.jsonl`` and ``samples.jsonl``.

A run is a folder of plain files that anything can read (plots, notebooks, ``jq``):
    logger = RunLogger("runs/sfpo-demo", config=cfg.to_dict())
    logger.log({"step": 0, "reward/mean": 0.25, "sfpo/drift_norm": 0.01})
    run = load_run("runs/sfpo-demo")      # Run(config=..., metrics=[{...}, ...])
    run.series("reward/mean")             # (steps, values)

Each metrics line is one flat dict with namespaced keys (``reward/…``, ``fast/…``,
``slow/…``, ``pass/…``, ``sfpo/…``, ``kl/…``, ``time/…``), fsynced on its own: a run
killed at any moment leaves whole lines (a torn last line is ignored on load and cut off
on resume). ``config.json`` is replaced atomically. A writer holds ``<run>/.lock``
(``lock_run_dir``), so a second writer gets a clear error.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FIX = (
    "restore it (it holds the run's SFPOConfig fields; each checkpoint-*/state.json "
    "keeps a copy under 'config'), or start a new run."
)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file so that readers see the old or the new content, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """The JSON in ``path``; a missing or garbled file is an error naming ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing. Fix: {fix}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} is damaged (not valid JSON: {err}). Fix: {fix}"
        ) from None


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's ``config.json``; an error with a fix when the folder is not a run."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path.parent} is not a run folder (no config.json). Fix: pass a folder "
            "written by `sfpo-edu train` (e.g. runs/<name> or data/runs/<name>)."
        )
    return read_json(path, CONFIG_FIX)


_held_locks: dict[Path, Any] = {}  # run folders this process holds → open .lock file


def lock_run_dir(run_dir: str | os.PathLike) -> None:
    """Create ``run_dir`` if needed and lock it (an OS file lock plus our PID) until
    ``unlock_run_dir`` or the process ends; a killed run's lock is taken over, with a
    warning. ``BlockingIOError`` if another process holds it, ``PermissionError`` if
    it is not writable; a no-op if this process holds it, or on Windows (no fcntl)."""
    run_dir = Path(run_dir)
    path = (run_dir / ".lock").resolve()
    if path in _held_locks or sys.platform == "win32":
        return
    import fcntl

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")  # noqa: SIM115 (kept open while the lock is held)
    except OSError as err:
        raise PermissionError(
            f"cannot write the run folder {run_dir} ({err.strerror or err}). "
            "Fix: choose a writable folder (--output-dir or --name)."
        ) from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise BlockingIOError(
            f"{run_dir} is being written by another process (PID {pid}). Fix: wait for "
            f"it to finish or stop it (kill {pid}), then resume; or use another folder."
        ) from None
    f.seek(0)
    stale = f.read().strip()
    if stale and stale != str(os.getpid()):
        warnings.warn(
            f"{run_dir}: process {stale} stopped without releasing its lock (killed?); "
            "taking it over.",
            stacklevel=2,
        )
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held_locks[path] = f


def unlock_run_dir(run_dir: str | os.PathLike) -> None:
    """Release this process's lock on ``run_dir`` (if it holds one)."""
    f = _held_locks.pop((Path(run_dir) / ".lock").resolve(), None)
    if f is not None:
        f.truncate(0)  # an empty .lock: released cleanly, not stale
        f.close()


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Whole lines of a JSONL file; a torn (unterminated) last line is skipped."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_text().split("\n")[:-1]  # "" after a final newline, or torn
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not valid JSON ({err}).") from err
    return rows


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float, at any depth, replaced by None:
    strict JSON has neither (``json`` writes ``NaN``/``Infinity``, others reject it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


class RunLogger:
    """Appends metrics and samples to a run folder, one durable line at a time."""

    def __init__(
        self, run_dir: str | os.PathLike, config: dict[str, Any] | None = None
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if config is not None:
            atomic_write_text(
                self.run_dir / "config.json", json.dumps(config, indent=2)
            )

    def _append(self, name: str, row: dict[str, Any]) -> None:
        line = json.dumps(strict_json(row))
        with open(self.run_dir / name, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def log(self, metrics: dict[str, Any]) -> None:
        """Append one step's metrics (a flat dict, including ``step``)."""
        self._append("metrics.jsonl", metrics)

    def log_samples(self, rows: list[dict[str, Any]]) -> None:
        """Append sample rows (prompt, completion, reward, advantage, step)."""
        for row in rows:
            self._append("samples.jsonl", row)

    def truncate_after(self, step: int) -> None:
        """Drop every line whose ``step`` is > ``step`` (and any torn line): used on
        resume so that no step is lost or written twice."""
        for name in ("metrics.jsonl", "samples.jsonl"):
            path = self.run_dir / name
            if path.exists():
                keep = [r for r in _read_jsonl(path) if r.get("step", -1) <= step]
                atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


@dataclass
class Run:
    """A loaded run folder."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    def keys(self) -> list[str]:
        """Every metric key that appears in the run, sorted."""
        return sorted({k for row in self.metrics for k in row})

    def series(self, key: str, x: str = "step") -> tuple[list[float], list[float]]:
        """(x values, key values) over the rows that have both and a finite value.
        Against ``rollouts/total``, an ``eval/`` key (measured before step s) sits at
        the rollouts used before it, s × num_prompts × G."""
        per_step = self.config.get("num_prompts", 0) * self.config.get("group_size", 0)
        before = key.startswith("eval/") and x == "rollouts/total" and per_step > 0
        xs, ys = [], []
        for row in self.metrics:
            if row.get(key) is not None and row.get(x) is not None:
                xs.append(row["step"] * per_step if before else row[x])
                ys.append(row[key])
        return xs, ys


def save_trajectory(
    run_dir: str | os.PathLike, step: int, points: dict[str, Any]
) -> None:
    """Save ``records.StepPath.points()`` of one outer step: flat vectors ``theta_0``,
    ``theta_k``, ``theta_tilde``, ``theta_next`` (D,) and ``fast`` (K+1, D) = θ⁰ … θ_K,
    as float16 in ``trajectory/step_{step:06d}.safetensors``, atomically."""
    from safetensors.torch import save_file

    folder = Path(run_dir) / "trajectory"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:06d}.safetensors"
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().half().contiguous() for k, v in points.items()}, str(tmp))
    os.replace(tmp, path)


def load_trajectory(run_dir: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """[(step, {"theta_0", "fast", "theta_k", "theta_tilde", "theta_next"} as float32),
    ...]; files written before θ_K was saved lack ``theta_k``."""
    from safetensors.torch import load_file

    folder = Path(run_dir) / "trajectory"
    out = []
    for path in sorted(folder.glob("step_*.safetensors")):
        step = int(path.stem.split("_")[1])
        out.append((step, {k: v.float() for k, v in load_file(str(path)).items()}))
    return out


def load_run(run_dir: str | os.PathLike, samples: bool = False) -> Run:
    """Read a run folder written by RunLogger (``samples=True`` also reads samples)."""
    path = Path(run_dir)
    config = read_config(path)
    metrics = _read_jsonl(path / "metrics.jsonl")
    if config.get("algo") == "grpo":
        # GRPO logs its one pass as ``pass/…``; older runs (``data/runs``) as ``slow/…``
        metrics = [
            {(f"pass/{k[5:]}" if k.startswith("slow/") else k): v for k, v in r.items()}
            for r in metrics
        ]
    return Run(
        path=path,
        config=config,
        metrics=metrics,
        samples=_read_jsonl(path / "samples.jsonl") if samples else [],
    )


# Config fields that make two runs different arms of an experiment (what is trained or
# measured). Not the seed (runs differing only in it repeat an arm) nor NOT_ARM_FIELDS.
ARM_FIELDS = (
    "algo", "num_fast_steps", "alpha", "lr", "group_size", "num_prompts",
    "num_steps", "max_new_tokens", "model", "task", "lora_r", "stop_rule",
    "kl_coef", "optimizer", "stop_window", "stop_threshold", "stop_step",
    "weight_decay", "max_grad_norm", "clip_eps", "entropy_coef", "loss_agg",
    "scale_rewards", "num_minibatches", "temperature", "top_p", "reward_scheme",
    "system_prompt", "lora_alpha", "quantization", "dtype", "eval_every",
    "num_eval_prompts",
)  # fmt: skip
NOT_ARM_FIELDS = ("seed", "extra", "device", "num_threads", "gradient_checkpointing",
                  "save_every", "snapshot_every", "num_samples_logged", "diagnostics")  # fmt: skip


def group_runs(runs: list[Run]) -> dict[tuple[str, ...], list[Run]]:
    """Runs grouped into arms, in order of appearance, keyed by (the run folder's
    parent, *ARM_FIELDS values): two sweeps never pool even where configs agree."""
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        key = (str(run.path.parent), *(str(run.config.get(f)) for f in ARM_FIELDS))
        groups.setdefault(key, []).append(run)
    return groups


def comparison_table(runs: dict[str, Run]) -> str:
    """Reward and entropy at the start and end (means of the first and last 3 steps,
    or of all steps in a shorter run), held-out accuracy, rollouts and time per arm."""
    names = {"grpo": "GRPO", "grpo_multi": "GRPO×(K+1)", "sfpo": "SFPO"}
    head = (f"{'arm':<12}{'reward first→last 3 steps':>28}{'entropy':>14}"
            f"{'held-out acc':>16}{'rollouts':>10}{'minutes':>9}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for algo, run in runs.items():
        first_last = []
        for key in ("reward/mean", "sfpo/entropy"):
            _, y = run.series(key)
            first, last = y[:3], y[-3:]  # fewer in a run of under 3 steps
            first_last.append(
                f"{sum(first) / len(first):.2f} → {sum(last) / len(last):.2f}"
                if y
                else "n/a"
            )
        _, acc = run.series("eval/accuracy")
        acc_text = f"{acc[0]:.2f}→{acc[-1]:.2f}" if acc else "n/a"
        used = max(r.get("rollouts/total", 0) for r in run.metrics)
        minutes = run.config.get("extra", {}).get("wall_s", float("nan")) / 60
        lines.append(
            f"{names.get(algo, algo):<12}{first_last[0]:>28}{first_last[1]:>14}"
            f"{acc_text:>16}{used:>10}{minutes:>9.1f}"
        )
    return "\n".join(lines)
