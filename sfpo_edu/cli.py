"""``sfpo-edu``: the command line. Every SFPOConfig field is a flag of the same name.

    sfpo-edu compare                  # GRPO, GRPO×(K+1) and SFPO from one start (the demo)
    sfpo-edu compare --quick --output-dir /tmp/q     # a 2-minute preset
    sfpo-edu train --algo sfpo --alpha 0.5 --name my-run
    sfpo-edu train --resume runs/my-run             # continue an interrupted run
    sfpo-edu eval runs/my-run                       # held-out accuracy of a checkpoint
    sfpo-edu toy                      # the exact toy: GRPO, GRPO×(K+1), Lookahead, SFPO
    sfpo-edu doctor                   # versions, device, 4-bit, offline models

``--help`` on a subcommand lists the fields with their documentation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sfpo_edu.config import SFPOConfig, field_docs

_PARSERS = {"int": int, "float": float, "str": str}


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional(kind: type):
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    return parse


def add_config_args(parser: argparse.ArgumentParser, defaults: SFPOConfig) -> None:
    """One flag per SFPOConfig field (``--num-fast-steps`` for ``num_fast_steps``)."""
    docs = field_docs()
    group = parser.add_argument_group("run configuration (SFPOConfig fields)")
    for f in dataclasses.fields(SFPOConfig):
        kind = str(f.type)
        if kind.startswith("dict"):
            continue
        base = kind.replace(" | None", "")
        if base == "bool":
            parse: Any = _parse_bool
        elif kind.endswith("| None"):
            parse = _optional(_PARSERS[base])
        else:
            parse = _PARSERS[base]
        default = getattr(defaults, f.name)
        group.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=parse,
            default=default,
            metavar=base.upper(),
            help=f"{docs.get(f.name, '')} [default: {default}]".replace("%", "%%"),
        )


def config_from_args(args: argparse.Namespace) -> SFPOConfig:
    names = {f.name for f in dataclasses.fields(SFPOConfig)} - {"extra"}
    return SFPOConfig(**{n: getattr(args, n) for n in names})


def cmd_toy(args: argparse.Namespace) -> int:
    from sfpo_edu.toy import compare_toy, comparison_table

    cfg = config_from_args(args)
    runs = compare_toy(cfg, seeds=range(args.seeds))
    print(comparison_table(runs, every=max(1, cfg.num_steps // 5)))
    print(
        f"\nToy bandit, K={cfg.num_fast_steps}, α={cfg.alpha}, lr={cfg.lr}, "
        f"G={cfg.group_size}, {cfg.optimizer}. Lookahead samples a fresh batch for "
        "each inner step, so it uses K× the rollouts."
    )
    return 0


# Small enough for a 2-core CPU (timings in the README); `--quick` is a smoke-sized preset.
DEMO = SFPOConfig(num_steps=10, num_prompts=2, group_size=8, eval_every=5, save_every=5)
QUICK = dict(num_steps=2, num_prompts=2, group_size=4, max_new_tokens=16,
             eval_every=2, num_eval_prompts=8, save_every=0)  # fmt: skip


def cmd_train(args: argparse.Namespace) -> int:
    from sfpo_edu.train import Trainer

    if args.resume:
        run_dir = Path(args.resume)
        saved = json.loads((run_dir / "config.json").read_text())
        cfg = SFPOConfig.from_dict(saved)
    else:
        cfg = config_from_args(args)
        run_dir = Path(args.output_dir) / (args.name or cfg.algo)
    Trainer(cfg, run_dir, resume=bool(args.resume)).train()
    print(f"Run written to {run_dir}")
    return 0


def compare(
    cfg: SFPOConfig,
    output_dir: str | Path,
    algos: Sequence[str] = ("grpo", "grpo_multi", "sfpo"),
    progress: bool = True,
) -> dict[str, Any]:
    """Train each algorithm from the same initial weights, seed and prompts; write
    each run under ``output_dir/<algo>``, a figure and a table. Returns the runs."""
    import gc

    from sfpo_edu.metrics import atomic_write_text, comparison_table, load_run
    from sfpo_edu.train import Trainer

    output_dir = Path(output_dir)
    runs = {}
    for algo in algos:
        start = time.perf_counter()
        run_dir = output_dir / algo
        if (run_dir / "metrics.jsonl").exists():
            raise FileExistsError(
                f"{run_dir} already holds a run. Fix: pass another --output-dir or "
                "delete that folder."
            )
        trainer = Trainer(cfg.replace(algo=algo), run_dir, progress=progress)
        trainer.train()
        if trainer.interrupted:  # Ctrl-C stops the whole comparison, not one arm
            print(f"{algo} stopped at step {trainer.step} with a checkpoint in "
                  f"{run_dir}; continue that arm with `sfpo-edu train --resume "
                  f"{run_dir}`.", file=sys.stderr)  # fmt: skip
            raise KeyboardInterrupt
        gc.collect()
        config = json.loads((run_dir / "config.json").read_text())
        config["extra"] = config.get("extra", {}) | {
            "wall_s": time.perf_counter() - start
        }
        atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2))
        runs[algo] = load_run(run_dir)
    table = comparison_table(runs)
    (output_dir / "comparison.txt").write_text(table + "\n")
    figure = output_dir / "comparison.png"
    _comparison_figure(runs, figure)
    print(table)
    print(f"\nRuns, table and figure written to {output_dir} ({figure.name}).")
    return runs


def _comparison_figure(runs: dict[str, Any], path: Path) -> None:
    from sfpo_edu.plotting import plot_learning_curves

    fig = plot_learning_curves({a: [r] for a, r in runs.items()}, key="reward/mean")
    fig.savefig(path, dpi=120, bbox_inches="tight")


def cmd_compare(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.quick:
        cfg = cfg.replace(**QUICK)
    output_dir = Path(args.output_dir)
    if args.output_dir == "runs":
        output_dir = output_dir / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    compare(cfg, output_dir, algos=args.algos)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from sfpo_edu.tasks import load_task
    from sfpo_edu.train import evaluate_accuracy, load_checkpoint, load_policy_for

    run_dir = Path(args.run)
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json).")
    cfg = SFPOConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    policy = load_policy_for(cfg)
    state = load_checkpoint(run_dir, policy)
    step = 0 if state is None else state["next_step"]
    problems = load_task(cfg.task, args.num_prompts, seed=cfg.seed, split="heldout")
    stats = evaluate_accuracy(policy, problems, cfg)
    print(f"{run_dir} after {step} steps: held-out greedy accuracy "
          f"{stats['eval/accuracy']:.3f} on {len(problems)} problems "
          f"(answer found in {stats['eval/format']:.0%})")  # fmt: skip
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from sfpo_edu.models import describe_environment

    info = describe_environment()
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from sfpo_edu.toy import toy_config

    parser = argparse.ArgumentParser(
        prog="sfpo-edu", description="Learn, teach and try SFPO and GRPO."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    toy = sub.add_parser(
        "toy",
        help="compare GRPO, GRPO×(K+1), Lookahead and SFPO on the exact toy bandit",
    )
    toy.add_argument("--seeds", type=int, default=5, help="seeds to average over")
    add_config_args(toy, toy_config())
    toy.set_defaults(func=cmd_toy)

    train = sub.add_parser("train", help="train one run (GRPO, GRPO×(K+1) or SFPO)")
    train.add_argument("--name", help="run folder name (default: the algo)")
    train.add_argument("--output-dir", default="runs", help="where run folders go")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run folder")
    add_config_args(train, SFPOConfig())
    train.set_defaults(func=cmd_train)

    comp = sub.add_parser(
        "compare", help="GRPO, GRPO×(K+1) and SFPO from the same start: table, figure"
    )
    comp.add_argument("--output-dir", default="runs", help="folder for the runs")
    comp.add_argument("--quick", action="store_true", help="a ~2-minute preset")
    comp.add_argument("--algos", nargs="+", default=["grpo", "grpo_multi", "sfpo"])
    add_config_args(comp, DEMO)
    comp.set_defaults(func=cmd_compare)

    ev = sub.add_parser("eval", help="held-out greedy accuracy of a run's checkpoint")
    ev.add_argument("run", help="run folder")
    ev.add_argument("--num-prompts", type=int, default=64)
    ev.set_defaults(func=cmd_eval)

    doctor = sub.add_parser("doctor", help="report versions, device, 4-bit, models")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        # invalid configuration or paths: one clear line, no traceback
        print(f"sfpo-edu: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nsfpo-edu: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
