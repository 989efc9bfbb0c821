"""``sfpo-edu``: the command line. Every SFPOConfig field is a flag of the same name.

    sfpo-edu compare                  # GRPO, GRPO×(K+1) and SFPO from one start (the demo)
    sfpo-edu compare --quick --output-dir /tmp/q     # a 2-minute preset
    sfpo-edu train --algo sfpo --alpha 0.5 --name my-run
    sfpo-edu train --resume runs/my-run             # continue an interrupted run
    sfpo-edu train --resume runs/my-run --num-steps 60   # ... or extend it
    sfpo-edu compare --resume runs/compare-…        # finish an interrupted comparison
    sfpo-edu eval runs/my-run                       # held-out accuracy of a checkpoint
    sfpo-edu toy                      # the exact toy: GRPO, GRPO×(K+1), Lookahead, SFPO
    sfpo-edu doctor                   # versions, device, 4-bit, offline models

``--help`` on a subcommand lists the fields with their documentation. User errors (bad
settings, files, folders) print one line and exit with status 2; Ctrl-C saves a
checkpoint, prints the command that continues, and exits with status 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sfpo_edu.config import SFPOConfig, field_docs
from sfpo_edu.metrics import (
    atomic_write_text,
    comparison_table,
    load_run,
    read_config,
    read_json,
)

if TYPE_CHECKING:  # matplotlib and torch are imported only when needed
    from sfpo_edu.train import Trainer


def _parse_bool(text: str) -> bool:
    word = text.lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _none_or(parse: Callable[[str], Any], text: str) -> Any:
    return None if text.lower() == "none" else parse(text)


_PARSERS = {"int": int, "float": float, "str": str, "bool": _parse_bool}


def add_config_args(parser: argparse.ArgumentParser, defaults: SFPOConfig) -> None:
    """One flag per SFPOConfig field (``--num-fast-steps`` for ``num_fast_steps``).
    A flag not given stays out of the namespace; ``config_from_args`` adds defaults."""
    parser.set_defaults(config_defaults=defaults)
    docs = field_docs()
    group = parser.add_argument_group("run configuration (SFPOConfig fields)")
    for f in dataclasses.fields(SFPOConfig):
        if f.name == "extra":  # free-form notes, not a flag
            continue
        base = str(f.type).removesuffix(" | None")
        parse = _PARSERS[base]
        if str(f.type).endswith(" | None"):  # the word "none" gives None
            parse = partial(_none_or, parse)
        text = f"{docs[f.name]} [default: {getattr(defaults, f.name)}]"
        group.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=parse,
            default=argparse.SUPPRESS,
            metavar=base.upper(),
            help=text.replace("%", "%%"),
        )


def given_config(args: argparse.Namespace) -> dict[str, Any]:
    """The SFPOConfig fields whose flags the user gave, with their values."""
    given = vars(args)
    return {
        f.name: given[f.name] for f in dataclasses.fields(SFPOConfig) if f.name in given
    }


def config_from_args(args: argparse.Namespace) -> SFPOConfig:
    """The subcommand's default config with the given flags applied."""
    return args.config_defaults.replace(**given_config(args))


def _flags(fields: dict[str, Any]) -> str:
    return ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in fields.items())


def cmd_toy(args: argparse.Namespace) -> int:
    from sfpo_edu import toy

    cfg = config_from_args(args)
    runs = toy.compare_toy(cfg, seeds=range(args.seeds))
    print(toy.comparison_table(runs, every=max(1, cfg.num_steps // 5)))
    print(
        f"\nToy bandit, K={cfg.num_fast_steps}, α={cfg.alpha}, lr={cfg.lr}, "
        f"G={cfg.group_size}, {cfg.optimizer}. Lookahead samples a fresh batch for "
        "each inner step, so it uses K× the rollouts."
    )
    return 0


# The demo is one cell of the regime map (bench/results/regime_map.json): lr 3e-4 on
# arithmetic-mix, where the multi-pass arms lead early, then fall below GRPO after
# their entropy collapses; 12 steps show both within 15 min on a 2-core CPU (README).
DEMO = SFPOConfig(task="arithmetic-mix", lr=3e-4, num_steps=12, num_prompts=2,
                  group_size=8, eval_every=3, save_every=3)  # fmt: skip
QUICK = dict(num_steps=2, num_prompts=2, group_size=4, max_new_tokens=16,
             eval_every=2, num_eval_prompts=8, save_every=0)  # fmt: skip


def resumed_config(run_dir: Path, given: dict[str, Any]) -> SFPOConfig:
    """The run's saved config with the given flags applied; only ``RESUMABLE``
    fields (e.g. ``--num-steps`` to extend the run) may differ from it."""
    from sfpo_edu.train import RESUMABLE

    saved = SFPOConfig.from_dict(read_config(run_dir))
    changed = {k: v for k, v in given.items() if getattr(saved, k) != v}
    fixed = {k: v for k, v in changed.items() if k not in RESUMABLE}
    if fixed:
        was = {k: getattr(saved, k) for k in fixed}
        may = ", ".join(f"--{k.replace('_', '-')}" for k in RESUMABLE if k != "extra")
        raise ValueError(
            f"cannot resume {run_dir} with {_flags(fixed)}: it was trained with "
            f"{_flags(was)}. Only {may} may change on resume. Fix: drop those "
            "flags, or start a new run (--name)."
        )
    return saved.replace(**changed)


def cmd_train(args: argparse.Namespace) -> int:
    from sfpo_edu.train import Trainer

    if args.resume:
        if args.name or args.output_dir:
            raise ValueError(
                "--resume takes the run folder itself. Fix: drop --name and "
                "--output-dir (e.g. sfpo-edu train --resume runs/my-run)."
            )
        run_dir = Path(args.resume)
        cfg = resumed_config(run_dir, given_config(args))
    else:
        cfg = config_from_args(args)
        run_dir = Path(args.output_dir or "runs") / (args.name or cfg.algo)
    trainer = Trainer(cfg, run_dir, resume=bool(args.resume))
    trainer.train()
    if trainer.interrupted:
        print(
            f"Stopped at step {trainer.step} of {cfg.num_steps} with a checkpoint in "
            f"{run_dir}. Continue with: sfpo-edu train --resume {run_dir}",
            file=sys.stderr,
        )
        return 130
    print(f"Run written to {run_dir}")
    return 0


# What `compare` prints after its table: how to read it, then three things to do next.
NEXT_STEPS = """
Reading the table: reward is the fraction of sampled completions that were right (noisy, from the
same prompts for every arm); entropy is the policy's mean per-token entropy on them, and one that
falls far below GRPO's is the collapse after which multi-pass arms stop improving; held-out acc is
greedy accuracy on unseen problems at the first and last evaluation; one seed, so differences of a
few points are noise.
Next:
  1. open {figure}: held-out accuracy, sampled reward and entropy per step;
  2. notebooks/05_train_grpo_vs_sfpo.ipynb and 06_reading_the_dashboards.ipynb read runs like these;
  3. sfpo-edu eval {run}   (held-out accuracy of a run's checkpoint, on more problems)."""


def compare(
    cfg: SFPOConfig,
    output_dir: str | Path,
    algos: Sequence[str] = ("grpo", "grpo_multi", "sfpo"),
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Train each algorithm from the same initial weights, seed and prompts into
    ``output_dir/<algo>``, write a figure and a table, return the runs. The plan is
    ``output_dir/compare.json``: ``resume=True`` finishes it (same ``cfg`` and
    ``algos``). Each arm's ``extra.wall_s`` sums its time over sessions."""
    output_dir = Path(output_dir)
    plan = _comparison_plan(cfg, output_dir, list(algos), resume)
    runs = {}
    for i, algo in enumerate(algos):
        run_dir = output_dir / algo
        if algo not in plan["done"]:
            trainer = _train_arm(cfg.replace(algo=algo), run_dir, progress)
            if trainer.interrupted:  # Ctrl-C stops the whole comparison, not one arm
                left = ", ".join(algos[i + 1 :]) or "no other arm"
                print(
                    f"{algo} stopped at step {trainer.step} of {cfg.num_steps} with a "
                    f"checkpoint in {run_dir}. Finish the comparison ({algo}, then "
                    f"{left}) with: sfpo-edu compare --resume {output_dir}",
                    file=sys.stderr,
                )
                raise KeyboardInterrupt
            gc.collect()
            plan["done"].append(algo)
            atomic_write_text(output_dir / "compare.json", json.dumps(plan, indent=2))
        runs[algo] = load_run(run_dir)
    table = comparison_table(runs)
    (output_dir / "comparison.txt").write_text(table + "\n")
    figure = output_dir / "comparison.png"
    from sfpo_edu import plotting

    plotting.comparison_figure(runs).savefig(figure, dpi=120, bbox_inches="tight")
    print(table)
    print(f"\nRuns, table and figure written to {output_dir} ({figure.name}).")
    print(NEXT_STEPS.format(figure=figure, run=output_dir / list(runs)[-1]))
    return runs


def _comparison_plan(
    cfg: SFPOConfig, output_dir: Path, algos: list[str], resume: bool
) -> dict[str, Any]:
    """A new ``compare.json`` (refusing a folder that holds a comparison), or, to
    resume, the saved one (refusing one made with other settings)."""
    for algo in algos:  # a misspelt arm fails here, before compare.json is written
        cfg.replace(algo=algo)
    path = output_dir / "compare.json"
    plan = {"config": cfg.to_dict(), "algos": algos, "done": []}
    if resume:
        fix = (
            f"resume each arm with `sfpo-edu train --resume {output_dir}/<arm>`, or "
            "start a new comparison."
        )
        saved = read_json(path, fix)
        if saved["config"] != plan["config"] or saved["algos"] != plan["algos"]:
            raise ValueError(
                f"{path} holds another comparison. Fix: resume it with its own "
                f"settings (`sfpo-edu compare --resume {output_dir}`)."
            )
        return saved
    if path.exists() or any((output_dir / a / "metrics.jsonl").exists() for a in algos):
        raise FileExistsError(
            f"{output_dir} already holds a comparison. Fix: `sfpo-edu compare "
            f"--resume {output_dir}` finishes it; or pass another --output-dir."
        )
    atomic_write_text(path, json.dumps(plan, indent=2))
    return plan


def _train_arm(cfg: SFPOConfig, run_dir: Path, progress: bool) -> Trainer:
    """Train one arm, or continue it; adds this session's time to ``extra.wall_s``."""
    from sfpo_edu.train import Trainer

    start = time.perf_counter()
    started = (run_dir / "metrics.jsonl").exists()
    config = read_config(run_dir) if started else {}
    before = config.get("extra", {}).get("wall_s", 0)  # earlier sessions
    trainer = Trainer(cfg, run_dir, resume=started, progress=progress)
    trainer.train()
    config = read_config(run_dir)
    config["extra"] |= {"wall_s": before + time.perf_counter() - start}
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2))
    return trainer


def cmd_compare(args: argparse.Namespace) -> int:
    if args.resume:  # the settings come from compare.json
        given = given_config(args) | {"quick": args.quick or None, "algos": args.algos}
        given = {k: v for k, v in given.items() if v is not None}
        if given:
            raise ValueError(
                f"compare --resume takes no run settings (got {_flags(given)}): "
                f"they come from {args.resume}/compare.json. Fix: drop them."
            )
        output_dir = Path(args.resume)
        fix = "pass a folder written by `sfpo-edu compare`, or start a new comparison."
        plan = read_json(output_dir / "compare.json", fix)
        cfg = SFPOConfig.from_dict(plan["config"])
        compare(cfg, output_dir, algos=plan["algos"], resume=True)
        return 0
    defaults = args.config_defaults.replace(**(QUICK if args.quick else {}))
    cfg = defaults.replace(**given_config(args))  # flags win over the preset
    output_dir = Path(args.output_dir)
    if args.output_dir == "runs":
        output_dir = output_dir / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    compare(cfg, output_dir, algos=args.algos or ["grpo", "grpo_multi", "sfpo"])
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from sfpo_edu.tasks import load_task
    from sfpo_edu.train import evaluate_accuracy, load_checkpoint, load_policy_for

    run_dir = Path(args.run)
    cfg = SFPOConfig.from_dict(read_config(run_dir))
    policy = load_policy_for(cfg)
    state = load_checkpoint(run_dir, policy)
    step = 0 if state is None else state["next_step"]
    problems = load_task(cfg.task, args.num_prompts, seed=cfg.seed, split="heldout")
    stats = evaluate_accuracy(policy, problems, cfg)
    distinct = len({p.prompt for p in problems})  # a small held-out set repeats
    repeats = f", {distinct} distinct" if distinct < len(problems) else ""
    print(
        f"{run_dir} after {step} steps: held-out greedy accuracy "
        f"{stats['eval/accuracy']:.3f} on {len(problems)} problems{repeats} "
        f"(answer found in {stats['eval/format']:.0%})"
    )
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
    train.add_argument("--output-dir", help="where run folders go [default: runs]")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run folder")
    add_config_args(train, SFPOConfig())
    train.set_defaults(func=cmd_train)
    comp = sub.add_parser(
        "compare", help="GRPO, GRPO×(K+1) and SFPO from the same start: table, figure"
    )
    comp.add_argument("--output-dir", default="runs", help="folder for the runs")
    comp.add_argument("--quick", action="store_true", help="a ~2-minute preset")
    comp.add_argument(
        "--algos", nargs="+", help="arms to train [default: grpo grpo_multi sfpo]"
    )
    comp.add_argument(
        "--resume", metavar="DIR", help="finish the interrupted comparison in DIR"
    )
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
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError) as err:
        # settings, files, folders, missing packages, no network: one clear line
        print(f"sfpo-edu: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nsfpo-edu: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
