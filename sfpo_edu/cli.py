"""``sfpo-edu``: the command line. Every SFPOConfig field is a flag of the same name.

    sfpo-edu toy                      # GRPO vs GRPO×(K+1) vs Lookahead vs SFPO on the toy
    sfpo-edu toy --alpha 0.5 --lr 1   # any config field, e.g. --num-fast-steps 5
    sfpo-edu demo                     # what `make demo` runs

``--help`` on a subcommand lists the fields with their documentation.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
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

    demo = sub.add_parser("demo", help="the main demo (what `make demo` runs)")
    demo.add_argument("--seeds", type=int, default=5, help="seeds to average over")
    add_config_args(demo, toy_config())
    demo.set_defaults(func=cmd_toy)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:  # invalid configuration: one clear line, no traceback
        print(f"sfpo-edu: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nsfpo-edu: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
