"""Regenerate the book's figures into ``book/figures/*.png``.

    .venv/bin/python book/make_figures.py [--runs data/runs/demo-cpu] [--out book/figures]

The toy figures (one step, paths, learning curves, reposition line, plane) are exact
and take seconds on a CPU. The drift dashboard and the parameter trajectories of real runs
are drawn only when recorded runs (folders with a ``config.json``) exist under
``--runs``; otherwise the script says so and skips them. The benchmark results
(``bench/results/*.json``) and the rollouts-to-target sweep (``--sweep``) become the
tables and figure of ``book/_generated/measured.md``, which the Results page includes,
and the step costs of ``book/_generated/step_costs.md``, which the intro and the
teachers' page include (one source for those numbers),
and ``book/concepts.py`` writes the concept map, ``book/concepts.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from sfpo_edu import landscape, plotting
from sfpo_edu.metrics import load_run, load_trajectory
from sfpo_edu.params import trainable_params
from sfpo_edu.plotting import ALGO_LABELS
from sfpo_edu.toy import ToyBandit, compare_toy, toy_config

matplotlib.use("Agg")  # a script: render to files, never open a window

ROOT = Path(__file__).resolve().parents[1]
# arm names of bench/rollouts_to_target.py: plot keys (colours) and table names
SWEEP_LABELS = {"grpo": "grpo", "grpo_multi": "grpo_multi", "sfpo_a0.8": "sfpo",
                "sfpo_a0.5": "SFPO (α = 0.5)", "sfpo_a0.3": "SFPO (α = 0.3)"}  # fmt: skip
SWEEP_NAMES = {"grpo": "GRPO", "grpo_multi": "GRPO×(K+1)", "sfpo_a0.8": "SFPO (α = 0.8)",
               "sfpo_a0.5": "SFPO (α = 0.5)", "sfpo_a0.3": "SFPO (α = 0.3)"}  # fmt: skip


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
              f"the trajectories of real runs.")  # fmt: skip
        return
    runs = [load_run(d) for d in run_dirs]
    save(plotting.plot_drift_dashboard(runs), out / "runs_drift_dashboard.png")
    trajectories = {
        plotting.run_label(run): load_trajectory(run.path)
        for run in runs
        if (run.path / "trajectory").is_dir()
    }
    if trajectories:
        save(plotting.plot_trajectories(trajectories), out / "runs_trajectories.png")


def sweep_figures(sweep_dir: Path, out: Path) -> None:
    """Held-out accuracy of the rollouts-to-target sweep: seed mean and min–max band."""
    groups: dict[str, list] = {}
    for arm, label in SWEEP_LABELS.items():  # the paper's α first: stable colours
        configs = sorted(sweep_dir.glob(f"{arm}-s*/config.json"))
        if configs:
            groups[label] = [load_run(c.parent) for c in configs]
    if not groups:
        print(f"note: no sweep runs under {sweep_dir}; skipping its figure.")
        return
    fig = plotting.plot_learning_curves(groups, "eval/accuracy", x="step")
    runs = next(iter(groups.values()))
    per_step = runs[0].config["num_prompts"] * runs[0].config["group_size"]
    fig.axes[0].set_xlabel(f"outer step s ({per_step} rollouts each, every arm)")
    fig.axes[0].set_title("held-out greedy accuracy (line: seed mean, band: min–max)")
    for text in fig.axes[0].get_legend().get_texts():  # "sfpo" keeps SFPO's colour
        text.set_text(text.get_text().replace("SFPO  (", "SFPO (α = 0.8)  ("))
    save(fig, out / "sweep_eval_accuracy.png")
    first_seed = [runs[0] for runs in groups.values()]
    save(plotting.plot_drift_dashboard(first_seed), out / "sweep_drift_dashboard.png")


def fast_path_figure(sweep_dir: Path, check_dir: Path, out: Path) -> None:
    """Held-out accuracy of GRPO and SFPO (α = 0.8) recorded before the fast update
    path (shared prompt reads, old log-probs from the first pass) and rerun with it:
    the same learning should fall inside the seed spread."""
    groups: dict[str, list] = {}
    for arm, name in (("grpo", "GRPO"), ("sfpo_a0.8", "SFPO (α = 0.8)")):
        for folder, when in ((sweep_dir, "before"), (check_dir, "fast path")):
            runs = [
                load_run(c.parent) for c in sorted(folder.glob(f"{arm}-s*/config.json"))
            ]
            done = [
                r
                for r in runs
                if r.metrics and r.metrics[-1]["step"] == r.config["num_steps"]
            ]
            if done:  # finished runs only: a run still training would cut a curve short
                groups[f"{name}, {when}"] = done
    if len(groups) < 4:
        print(
            f"note: no complete fast-path check under {check_dir}; skipping its figure."
        )
        return
    fig = plotting.plot_learning_curves(groups, "eval/accuracy", x="step")
    curves = {k: [r.series("eval/accuracy")[1] for r in v] for k, v in groups.items()}
    names = sorted({k.rsplit(", ", 1)[0] for k in groups})
    same = all(curves[f"{n}, before"] == curves[f"{n}, fast path"] for n in names)
    note = "every value identical: each 'before' curve lies under its 'fast path' curve"
    fig.axes[0].set_title(
        "held-out greedy accuracy before and with the fast path\n"
        + (note if same else "line: seed mean, band: min–max")
    )
    save(fig, out / "fast_path_check.png")


def regime_figure(result: Path, out: Path) -> None:
    """The regime map from ``bench/results/regime_map.json`` (partial grids too)."""
    if not result.exists():
        print(f"note: no {result.name}; skipping the regime map figure.")
        return
    save(
        plotting.plot_regime_map(json.loads(result.read_text())["map"]),
        out / "regime_map.png",
    )


def _num(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.0f}%" if pct else f"{x:.2f}"


def _spread(d: dict[str, float]) -> str:
    return f"{d['mean']:.3f} ({d['min']:.2f}–{d['max']:.2f})"


def _fewer(a: dict[str, Any]) -> str:
    """× fewer rollouts of the seed-mean curve, with the per-seed range."""
    if a["rollouts_to_target"] is None:
        return "never"
    reach = a.get("rollouts_to_target_per_seed", [])
    reached = [x for x in a.get("fewer_rollouts_per_seed", []) if x is not None]
    spread = []
    if reached and len(reach) > 1:
        low, high = f"{min(reached):.1f}", f"{max(reached):.1f}"
        spread.append(low if low == high else f"{low}–{high}")
    if at_start := reach.count(0):  # its held-out start is already at GRPO's best
        spread.append(f"{_seeds(at_start)} there at step 0")
    if never := reach.count(None):
        spread.append(f"{_seeds(never)} never")
    head = "no ratio" if (x := a["fewer_rollouts_than_grpo"]) is None else f"{x:.2f}"
    return head + (f" ({'; '.join(spread)})" if spread else "")


def _seeds(n: int) -> str:
    """'1 seed', '3 seeds'."""
    return f"{n} seed{'s' * (n != 1)}"


def _reach(a: dict[str, Any]) -> str:
    """How an arm does against GRPO's best, in words."""
    if a["rollouts_to_target"] is None:
        return "never reaches GRPO's best"
    if a["fewer_rollouts_than_grpo"] is None:  # its seeds' mean starts there
        return "is at GRPO's best from step 0"
    return f"needs {_fewer(a)}× fewer rollouts than GRPO to reach GRPO's best"


def regime_reading(grid: dict[str, Any], noise: list[dict] = ()) -> list[str]:
    """What the map says about the paper's claim, one sentence per learning rate,
    computed from the numbers (so it changes when the runs do); ``noise``: the stop
    rule on pure noise per τ, for the reading of the no-rule control."""
    lines = []
    for lr, cell in sorted(grid.items(), key=lambda kv: float(kv[0])):
        arms, met = cell["arms"], cell.get("meets_target", {})
        sfpo = {n: a for n, a in arms.items() if n.startswith("sfpo")}
        low, high = (
            min(a["seeds"] for a in arms.values()),
            max(a["seeds"] for a in arms.values()),
        )
        seeds = (
            f"{low}–{high} seeds per arm"
            if low < high
            else f"{_seeds(low)} in every arm"
        )
        label = plotting.REGIME_LABELS
        if met:
            verdict = (
                f"{', '.join(label[n] for n in met)} reaches GRPO's best with "
                f"{', '.join(_fewer(arms[n]) for n in met)}× fewer rollouts and ends at "
                "or above GRPO×(K+1): the paper's claim holds here"
            )
        elif not sfpo or "grpo_multi" not in arms:
            verdict = "not enough finished arms to compare yet"
        else:
            parts = [
                f"{label[n]} {_reach(a)} and ends at {a['final']['mean']:.2f}"
                for n, a in sfpo.items()
            ]
            verdict = (
                f"no SFPO arm meets the target: {'; '.join(parts)}, against "
                f"GRPO×(K+1)'s {arms['grpo_multi']['final']['mean']:.2f}"
            )
            fired = sorted(
                s for a in sfpo.values() for s in a["stop_rule_fired_at"] if s
            )
            if fired:
                verdict += (
                    f". SFPO's stop rule fired at step {', '.join(map(str, fired))}"
                )
            replayed = arms["grpo"].get("stop_rule_replayed_at", {}).get("1")
            if fired and replayed is not None:
                on_grpo = [str(s) for s in replayed if s is not None] or ["never"]
                verdict += (
                    "; replayed on GRPO's own entropy (no SFPO involved), the same rule "
                    f"fires at step {', '.join(on_grpo)} ({_seeds(len(replayed))})"
                )
                if (jitter := arms["grpo"].get("entropy_step_noise")) is not None:
                    trend = arms["grpo"]["entropy_trend_per_step"]
                    verdict += (
                        f": that entropy moves by about ±{jitter:.2f} from one step to "
                        f"the next, around a trend of {trend:+.3f} per step"
                    )
            if (lr_x := arms.get("grpo_lr_x3.4")) is not None:
                verdict += (
                    f". GRPO at 3.4× the learning rate (SFPO's path length) {_reach(lr_x)}"
                    f" and ends at {lr_x['final']['mean']:.2f}"
                )
        lines.append(f"- **lr {lr}** ({seeds}): {verdict}.")
        if (free := arms.get("sfpo_a0.8_nostop")) and noise:
            meets = "sfpo_a0.8_nostop" in cell.get("meets_target_with_unfired_rule", {})
            lines.append(_unfired_reading(free, noise, meets))
    return lines


def _unfired_reading(free: dict[str, Any], noise: list[dict], meets: bool) -> str:
    """The no-rule control in words: which rules it equals, and how often those fire
    on noise."""
    tau = free.get("rule_never_fires_from")
    text = f"  - without its rule, SFPO α = 0.8 {_reach(free)} and ends at {free['final']['mean']:.2f}. "
    if tau is None:
        return text + "Its entropy triggers the rule at every τ replayed."
    share = next(n["fired_share"] for n in noise if n["stop_threshold"] == tau)
    text += (
        f"Its entropy never triggers the rule at τ ≥ {tau:g} ({_seeds(free['seeds'])}), "
        "so these runs are also SFPO with that rule, bit "
        f"for bit; on pure noise that rule fires in {_percent(share)} of "
        f"{noise[0]['steps']}-step runs."
    )
    if meets:
        text += f" With it (τ = {tau:g}, chosen after seeing the runs) SFPO meets the target."
    return text


def _percent(share: float) -> str:
    """12%, or 0.4% below one percent (0% only when it is 0)."""
    return f"{100 * share:.{0 if share == 0 or share >= 0.01 else 1}f}%"


def noise_reading(noise: list[dict[str, Any]]) -> str:
    """What the stop rule does on an entropy that is pure noise, per τ, in words."""
    first = noise[0]
    shares = ", ".join(
        f"{_percent(n['fired_share'])} (τ = {n['stop_threshold']:g})" for n in noise
    )
    median = first["median_step"]
    return (
        f"- **The stop rule on pure noise**: with i.i.d. entropies (no trend at all) the "
        f"`{first['stop_rule']}` rule with ω = {first['stop_window']} fires within "
        f"{first['steps']} steps in {shares} of {first['trials']:,} simulated runs"
        + (f" (median step {median:g} at τ = {first['stop_threshold']:g})" if median is not None else "")
        + ". With a window that fits a short run and τ = 1, the rule reads the "
        "step-to-step noise of a 16-rollout entropy, not a trend, and switches SFPO "
        "off by chance."
    )  # fmt: skip


def measured_page(results: Path, path: Path) -> None:
    """Write the tables of ``bench/results/*.json`` as a MyST fragment that
    ``book/results.md`` includes; a benchmark without results is said to be missing."""
    load = {n: json.loads(f.read_text()) for n in ("rollouts_to_target", "step_cost", "vs_trl", "contention",
                      "fast_path_check", "regime_map")
            if (f := results / f"{n}.json").exists()}  # fmt: skip
    lines = [
        "% Generated by book/make_figures.py from bench/results/*.json; do not edit.",
        "",
    ]
    if not load:
        lines.append(
            "No benchmark results are recorded in this edition (`make bench`)."
        )
    env = next(iter(load.values()))["environment"] if load else {}
    if env:
        lines += [f"Measured with torch {env['torch']}, transformers {env['transformers']}, "
                  f"peft {env['peft']} on a {env['cpu_count']}-core {env['cpu']} CPU "
                  f"without a GPU ({env['date'][:10]}).", ""]  # fmt: skip
    if "rollouts_to_target" in load:
        r = load["rollouts_to_target"]
        llm, cfg = r.get("llm"), r.get("config", {})
        if llm:
            lines += [
                "### Rollouts to GRPO's best held-out accuracy", "",
                f"SmolLM2-135M-Instruct + LoRA, {cfg['num_steps']} outer steps of "
                f"{cfg['num_prompts']} prompts × $G$ = {cfg['group_size']}, held-out greedy "
                f"accuracy on {cfg['num_eval_prompts']} problems every {cfg['eval_every']} "
                f"steps (mean over seeds, in brackets min–max). "
                f"Target: GRPO's best seed-mean accuracy after a 3-point moving average, "
                f"**{llm['target_heldout_accuracy']:.3f}**.", "",
                "| arm | seeds | best held-out | final held-out | rollouts to target | vs GRPO "
                "| entropy, last 5 steps | groups without signal, last 5 steps |",
                "|---|---|---|---|---|---|---|---|",
            ]  # fmt: skip
            for name, a in llm["arms"].items():
                reach, ratio = a["rollouts_to_target"], a["speedup_vs_grpo"]
                lines.append(
                    f"| {SWEEP_NAMES.get(name, name)} | {a.get('seeds', r['seeds'])} | "
                    f"{_spread(a['best'])} | "
                    f"{_spread(a['final'])} | {reach if reach is not None else 'not reached'} | "
                    f"{f'{ratio:.2f}×' if ratio else '–'} | {_num(a.get('entropy_last5'))} | "
                    f"{_num(a.get('zero_std_groups_last5'), pct=True)} |"
                )  # fmt: skip
            lines += ["", "```{figure} figures/sweep_eval_accuracy.png", ":width: 90%", "",
                      "Held-out greedy accuracy of the sweep's arms (mean over seeds, band: "
                      "min to max).", "```", ""]  # fmt: skip
        toy = r["toy"]
        ks = sorted({int(k.split(",")[0][2:]) for k in toy["grid"]})
        alphas = sorted({float(k.split("alpha=")[1]) for k in toy["grid"]})
        grpo = toy["grpo"]
        lines += [
            "### The toy: α × K", "",
            f"The exact toy bandit, {toy['seeds']} seeds, {toy['steps']} outer steps: "
            f"rollouts until the seed-mean $J(\\theta)$ first reaches {toy['target']}, and "
            f"in brackets the seed-mean $J$ after the last step. GRPO: "
            f"{grpo['rollouts_to_target'] or 'never'} ({grpo['final_J']:.3f}). The α = 1 "
            "column is GRPO×(K+1).", "",
            "| K \\ α | " + " | ".join(f"{a:g}" for a in alphas) + " |",
            "|---|" + "---|" * len(alphas),
        ]  # fmt: skip
        for k in ks:
            cells = [toy["grid"][f"K={k},alpha={a}"] for a in alphas]
            lines.append(f"| {k} | " + " | ".join(
                f"{c['rollouts_to_target'] or 'never'} ({c['final_J']:.3f})" for c in cells
            ) + " |")  # fmt: skip
        lines.append("")
    if "step_cost" in load:
        r = load["step_cost"]
        cfg = r["config"]
        lines += [
            "### What one outer step costs", "",
            f"{cfg['num_prompts']} prompts × $G$ = {cfg['group_size']}, up to "
            f"{cfg['max_new_tokens']} new tokens; median seconds over {r['steps'] - 1} steps "
            "after a warm-up step (*step* is the median whole step, not the sum of the "
            "column medians); peak resident memory of a fresh process per row.", "",
            "| arm | generate | old log-probs | update (per pass) | step | GFLOP/s of a pass | peak MB |",
            "|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for name, a in r["results"].items():
            algo, quant = name.split("/")
            label = ALGO_LABELS.get(algo.removesuffix("_diagnostics"), algo) + (
                " + θ_K diagnostics" if algo.endswith("_diagnostics") else ""
            )
            gflops = f"{a['pass_gflop_per_s']:.0f}" if "pass_gflop_per_s" in a else "–"
            lines.append(
                f"| {label}, {'fp32' if quant == 'none' else quant} | "
                f"{a['generate_s']:.1f} | {a['old_logps_s']:.1f} | {a['update_s']:.1f} "
                f"({a['update_per_pass_s']:.1f}) | {a['step_s']:.1f} | {gflops} | "
                f"{a['peak_rss_mb']:.0f} |"
            )  # fmt: skip
        lines.append("")
        if "cpu" in r:
            c = r["cpu"]
            lines += [
                f"- This CPU's fp32 matrix-product peak (2048², {r['environment']['torch_threads']} "
                f"threads) is {c['gemm_peak_gflops']['float32']:.0f} GFLOP/s; an fp32 update "
                f"pass reaches {100 * c['fp32_pass_share_of_gemm_peak']:.0f}% of it (the "
                "rest: attention, the softmax over the vocabulary, small LoRA products).",
                f"- bf16: {c.get('bf16', 'measured above')} (bf16 GEMM peak "
                f"{c['gemm_peak_gflops']['bfloat16']:.1f} GFLOP/s); `dtype=\"auto\"` picks "
                "bf16 on a CPU only where it is native.",
                f"- SFPO's optional θ_K diagnostics forward (`diagnostics=True`, for "
                f"`kl/theta_k`) makes its step {c['sfpo_diagnostics_step_ratio']:.2f}× as long.",
            ]  # fmt: skip
        for quant, sm in r["summary"].items():
            g, f = r["results"][f"grpo/{quant}"], r["results"][f"sfpo/{quant}"]
            m = r["results"].get(f"grpo_multi/{quant}")  # absent in older results
            lines.append(
                f"- {'fp32' if quant == 'none' else quant}: an SFPO step costs "
                f"{sm['sfpo_over_grpo_step_time']:.2f}× a GRPO step"
                + (f" and {sm['sfpo_over_grpo_multi_step_time']:.2f}× a GRPO×(K+1) step"
                   if m else "")
                + f"; its two snapshots of "
                f"the trainable vector take {sm['sfpo_snapshot_mb']:.1f} MB, "
                f"{100 * sm['sfpo_snapshot_mb'] / g['peak_rss_mb']:.2f}% of GRPO's peak "
                f"memory (measured peaks: SFPO {f['peak_rss_mb'] - g['peak_rss_mb']:+.0f} MB "
                "against GRPO"
                + (f", {f['peak_rss_mb'] - m['peak_rss_mb']:+.0f} MB against GRPO×(K+1)" if m else "")
                + ")."
            )  # fmt: skip
        lines.append("")
    if "vs_trl" in load:
        r = load["vs_trl"]
        cfg, machine = r["config"], r.get("machine", {})
        lines += [
            "### Against TRL's GRPOTrainer", "",
            f"Same model, LoRA ({cfg['lora']}), {cfg['num_prompts']} prompt × $G$ = "
            f"{cfg['G']}, {cfg['max_new_tokens']} new tokens, learning rate {cfg['lr']}, "
            f"{cfg['dtype']}; the two trainers alternate within one process, "
            f"{cfg['steps']} GRPO updates and {cfg['cycles']} rollout batches of "
            f"{cfg['K'] + 1} passes each per side (`bench/vs_trl.py` says how it is timed). "
            "Our rollouts read each prompt once for its group of $G$ and share its "
            "key/value cache; TRL's read it $G$ times. "
            "*s/update*: median seconds per optimizer update, rollouts included.", "",
            "The two sides sample different completions, and a batch costs more the "
            "longer its longest completion, so *at the limit* compares only the batches "
            f"whose longest completion reached {cfg['max_new_tokens']} tokens (same work "
            "on both sides; how many of each side's batches, in brackets): that is the "
            "fair ratio when the two sides' lengths differ.", "",
            "| passes per batch | TRL s/update | ours s/update | ours / TRL | "
            "ours / TRL at the limit | update pass TRL | update pass ours |",
            "|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for name, a in r["summary"].items():
            passes = "1 (GRPO)" if name == "grpo" else f"{cfg['K'] + 1} (GRPO×(K+1))"
            n = a.get("full_length_batches", {})
            at_limit = a.get("ours_over_trl_full_length")
            at_limit = (
                f"{at_limit:.2f} ({n.get('trl')} TRL, {n.get('ours')} ours)"
                if at_limit is not None else "–"
            )  # fmt: skip
            lines.append(
                f"| {passes} | {a['trl_s_per_update']:.1f} | {a['ours_s_per_update']:.1f} | "
                f"{a['ours_over_trl']:.2f} | {at_limit} | {a['trl_update_s_per_pass']:.1f} | "
                f"{a['ours_update_s_per_pass']:.1f} |"
            )  # fmt: skip
        if machine.get("cores_used_by_other_processes", 0) > 0.25:
            lines += ["", f"This run shared the CPU with other processes "
                      f"({machine['cores_used_by_other_processes']:.1f} cores busy elsewhere "
                      "on average); read the ratios, not the seconds."]  # fmt: skip
        lines.append("")
    if "fast_path_check" in load and "rollouts_to_target" in load:
        before = load["rollouts_to_target"]["llm"]["arms"]
        after = load["fast_path_check"]["llm"]["arms"]
        lines += [
            "### The same learning with the fast update path", "",
            "GRPO and SFPO (α = 0.8) on the sweep's setup above, recorded before the update "
            "path read each prompt once per group and took the old log-probabilities from "
            "the first pass, and rerun with it (`bench/rollouts_to_target.py --arms "
            "grpo,sfpo_a0.8 --runs-dir data/runs/fast_path_check --name "
            "fast_path_check`); held-out accuracy, mean (min–max) over seeds. The figure "
            "is `fast_path_check.png`.", "",
            "| arm | best, before | best, fast path | final, before | final, fast path |",
            "|---|---|---|---|---|",
        ]  # fmt: skip
        for arm in after:
            lines.append(f"| {SWEEP_NAMES.get(arm, arm)} ({after[arm]['seeds']} seeds) | "
                         f"{_spread(before[arm]['best'])} | {_spread(after[arm]['best'])} | "
                         f"{_spread(before[arm]['final'])} | {_spread(after[arm]['final'])} |")  # fmt: skip
        lines.append("")
    if "regime_map" in load:
        r = load["regime_map"]
        runs = sum(
            a["seeds"] for cell in r["map"].values() for a in cell["arms"].values()
        )
        planned = len(r["lrs"]) * len(r["arms"]) * r["planned_seeds"]
        progress = f" (in progress: {runs} of {planned} runs)" if runs < planned else ""
        noise = r.get("stop_rule_on_noise", [])
        lines += [
            f"### The regime map{progress}", "",
            f"`bench/rollouts_to_target.py --regime`: task `{r['config']['task']}`, "
            f"{r['config']['num_steps']} steps of {r['config']['num_prompts']} prompts × "
            f"$G$ = {r['config']['group_size']}; held-out accuracy on "
            f"{r['config']['num_eval_prompts']} problems every {r['config']['eval_every']} "
            f"steps; {r['planned_seeds']} seeds per cell"
            + (", the *seeds* column says how many are finished" if progress else "")
            + ". *× fewer*: GRPO's rollouts to its best smoothed seed-mean accuracy at "
            "that learning rate, over the arm's; in brackets, the same ratio on each "
            "seed's own curve (a seed whose held-out start is already above GRPO's best "
            "is *there at step 0*). The figure is "
            "`regime_map.png`. The target: an SFPO arm reaches GRPO's best with ≥ 2× fewer "
            "rollouts and ends at or above GRPO×(K+1)'s final accuracy.", "",
            *regime_reading(r["map"], noise),
            *([noise_reading(noise)] if noise else []),
            "",
            "```{figure} figures/regime_map.png", ":width: 100%", "",
            "The regime map: per learning rate and arm, best (●) and final (○) held-out "
            "accuracy, how many times fewer rollouts than GRPO each arm needs to reach "
            "GRPO's best, and the final policy entropy; n = seeds finished per cell.",
            "```", "",
            "| lr | arm | seeds | best | final | × fewer (seed range) | entropy, last 5 | stop rule fired at |",
            "|---|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for lr, cell in r["map"].items():
            for arm, a in cell["arms"].items():
                fired = [s for s in a["stop_rule_fired_at"] if s is not None]
                lines.append(f"| {lr} | {plotting.REGIME_LABELS.get(arm, arm)} | {a['seeds']} | "
                             f"{_spread(a['best'])} | {_spread(a['final'])} | "
                             f"{_fewer(a)} | "
                             f"{_num(a['entropy_last5'])} | {fired or '–'} |")  # fmt: skip
        lines.append("")
    if "contention" in load:
        r = load["contention"]["results"]
        lines += [
            "### Two runs on the same cores", "",
            "`bench/contention.py`: GRPO on the demo's batch, one run alone and two side "
            "by side; median seconds per step once the adaptive thread count "
            "(`num_threads=0`, the default) has seen the other run.", "",
            "| arm | s/step | × alone | threads |", "|---|---|---|---|",
        ]  # fmt: skip
        names = {"alone": "alone (adaptive threads)",
                 "pair_adaptive": "two side by side, adaptive threads",
                 "pair_fixed": "two side by side, every core each"}  # fmt: skip
        for name, a in r.items():
            lines.append(f"| {names.get(name, name)} | {a['median_step_s']:.1f} | "
                         f"{a['over_alone']:.2f} | {a['threads_settled']} |")  # fmt: skip
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def step_costs_page(results: Path, path: Path) -> None:
    """The measured cost of one outer step, from ``bench/results/step_cost.json``, as one
    MyST paragraph: the single source the intro and the teachers' page include."""
    lines = ["% Generated by book/make_figures.py from bench/results/step_cost.json; "
             "do not edit.", ""]  # fmt: skip
    file = results / "step_cost.json"
    if not file.exists():
        lines.append("No step costs are recorded in this edition (`make bench`).")
    else:
        r = json.loads(file.read_text())
        cfg, env, arms = r["config"], r["environment"], r["results"]
        step = {algo: arms[f"{algo}/none"]["step_s"] for algo in ALGO_LABELS
                if f"{algo}/none" in arms}  # fmt: skip
        costs = ", ".join(f"{ALGO_LABELS[a]} **{s:.1f} s**" for a, s in step.items())
        grpo = arms["grpo/none"]
        lines.append(
            f"Measured on a {env['cpu_count']}-core CPU (`bench/step_cost.py`, float32, "
            f"median): one outer step of {cfg['num_prompts']} prompts × "
            f"{cfg['group_size']} completions of up to {cfg['max_new_tokens']} tokens "
            f"takes {costs}. Sampling the batch takes {grpo['generate_s']:.1f} s and each "
            f"pass over it about {grpo['update_per_pass_s']:.1f} s, so on a CPU every "
            f"extra pass costs {grpo['update_per_pass_s'] / grpo['generate_s']:.1f}× "
            "the sampling."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=150)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=Path, default=ROOT / "data" / "runs" / "demo-cpu"
    )
    parser.add_argument("--sweep", type=Path,
                        default=ROOT / "data" / "runs" / "rollouts_to_target")  # fmt: skip
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "book" / "figures")
    parser.add_argument("--page", type=Path,
                        default=ROOT / "book" / "_generated" / "measured.md")  # fmt: skip
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    toy_figures(args.out)
    run_figures(args.runs, args.out)
    sweep_figures(args.sweep, args.out)
    fast_path_figure(args.sweep, ROOT / "data" / "runs" / "fast_path_check", args.out)
    regime_figure(args.results / "regime_map.json", args.out)
    measured_page(args.results, args.page)
    step_costs_page(args.results, args.page.with_name("step_costs.md"))
    concept_page()


def concept_page() -> None:
    """book/concepts.md from the table in book/concepts.py (the generator next door)."""
    spec = importlib.util.spec_from_file_location(
        "concepts", Path(__file__).with_name("concepts.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write()


if __name__ == "__main__":
    main()
