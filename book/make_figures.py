"""Regenerate the book's figures into ``book/figures/*.png``.

    .venv/bin/python book/make_figures.py [--runs data/runs] [--out book/figures]

The toy figures (one step, paths, learning curves, reposition line, plane) are exact
and take seconds on a CPU. The drift dashboard and the learning curves of real runs
are drawn only when recorded runs (folders with a ``config.json``) exist under
``--runs``; otherwise the script says so and skips them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from sfpo_edu import landscape, plotting
from sfpo_edu.metrics import load_run, load_trajectory
from sfpo_edu.params import trainable_params
from sfpo_edu.toy import ToyBandit, compare_toy, toy_config

matplotlib.use("Agg")  # a script: render to files, never open a window

ROOT = Path(__file__).resolve().parents[1]


def toy_figures(out: Path) -> None:
    bandit = ToyBandit()
    cfg = toy_config()

    trace = landscape.toy_step_trace(bandit, cfg, seed=0)
    save(plotting.plot_toy_step(trace, bandit), out / "toy_step.png")

    runs = compare_toy(cfg, seeds=range(5), num_steps=50)
    first = {algo: seeds[0] for algo, seeds in runs.items()}
    save(plotting.plot_toy_paths(first, bandit), out / "toy_paths.png")
    fig, (left, right) = plotting.new_figure((12, 4.5), 1, 2, sharey=True)
    plotting.plot_toy_learning_curves(runs, x="step", ax=left)
    plotting.plot_toy_learning_curves(runs, x="rollouts", target=0.9, ax=right)
    left.set_title("per outer step (mean of 5 seeds, band: min–max)")
    right.set_title("per rollout used (Lookahead samples K batches per step)")
    save(fig, out / "toy_learning_curves.png")

    # The landscapes are evaluated on the bandit at θ₀ with the trace's batch.
    params, loss_fn = trainable_params(bandit), bandit.make_loss_fn(cfg)
    line = landscape.reposition_line(
        params, trace["theta_0"], trace["theta_k"], loss_fn, trace["batch"]
    )
    save(
        plotting.plot_reposition_line(line, cfg.alpha), out / "toy_reposition_line.png"
    )
    plane = landscape.plane_basis(
        trace["theta_0"], trace["theta_k"], trace["theta_next"], cfg.alpha
    )
    grid = landscape.plane_grid(params, plane, loss_fn, trace["batch"], num=61)
    coords = plane.coords | {"fast": plane.project(trace["fast"])}
    save(plotting.plot_plane(grid, coords), out / "toy_plane.png")


def run_figures(runs_dir: Path, out: Path) -> None:
    run_dirs = sorted(p.parent for p in runs_dir.glob("*/config.json"))
    if not run_dirs:
        print(f"note: no recorded runs under {runs_dir}; skipping the dashboard and "
              f"the learning curves of real runs.")  # fmt: skip
        return
    runs = [load_run(d) for d in run_dirs]
    save(plotting.plot_drift_dashboard(runs), out / "runs_drift_dashboard.png")
    groups: dict[str, list] = {}
    for run in runs:
        groups.setdefault(run.config.get("algo", run.name), []).append(run)
    save(plotting.plot_learning_curves(groups, "reward/mean", smooth=5),
         out / "runs_reward.png")  # fmt: skip
    if any("eval/accuracy" in r.keys() for r in runs):
        save(plotting.plot_learning_curves(groups, "eval/accuracy"),
             out / "runs_eval_accuracy.png")  # fmt: skip
    trajectories = {
        plotting.run_label(run): load_trajectory(run.path)
        for run in runs
        if (run.path / "trajectory").is_dir()
    }
    if trajectories:
        save(plotting.plot_trajectories(trajectories), out / "runs_trajectories.png")


def save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=150)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "data" / "runs")
    parser.add_argument("--out", type=Path, default=ROOT / "book" / "figures")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    toy_figures(args.out)
    run_figures(args.runs, args.out)


if __name__ == "__main__":
    main()
