"""book/make_figures.py: the Results page's tables are generated from the committed
benchmark JSON, and the committed page is what the script writes from it."""

import json
import re
from pathlib import Path

import pytest
from conftest import book_script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


@pytest.fixture(scope="module")
def make_figures():
    return book_script("make_figures")


def test_the_committed_results_page_is_generated_from_the_committed_results(
    make_figures, tmp_path
):
    page = tmp_path / "measured.md"
    make_figures.measured_page(RESULTS, page)
    committed = ROOT / "book" / "_generated" / "measured.md"
    assert committed.read_text() == page.read_text(), (
        "book/_generated/measured.md is stale: run .venv/bin/python book/make_figures.py"
    )


def test_every_recorded_figure_appears_on_the_page(make_figures, tmp_path):
    page = tmp_path / "measured.md"
    make_figures.measured_page(RESULTS, page)
    text = page.read_text()
    if (RESULTS / "rollouts_to_target.json").exists():
        r = json.loads((RESULTS / "rollouts_to_target.json").read_text())
        assert f"{r['llm']['target_heldout_accuracy']:.3f}" in text
        for name, arm in r["llm"]["arms"].items():
            assert make_figures.SWEEP_NAMES[name] in text
            assert f"{arm['best']['mean']:.3f}" in text
            assert f"{arm['final']['mean']:.3f}" in text
    if (RESULTS / "step_cost.json").exists():
        r = json.loads((RESULTS / "step_cost.json").read_text())
        for arm in r["results"].values():
            assert f"{arm['step_s']:.1f}" in text
    if (RESULTS / "vs_trl.json").exists():
        r = json.loads((RESULTS / "vs_trl.json").read_text())
        for arm in r["summary"].values():
            assert f"{arm['ours_over_trl']:.2f}" in text


def test_no_results_says_so(make_figures, tmp_path):
    page = tmp_path / "measured.md"
    make_figures.measured_page(tmp_path / "nothing", page)
    assert "No benchmark results are recorded" in page.read_text()


def test_step_costs_have_one_source(make_figures, tmp_path):
    # the intro and the teachers' page include the generated paragraph; neither writes
    # its own seconds per step
    page = tmp_path / "step_costs.md"
    make_figures.step_costs_page(RESULTS, page)
    committed = ROOT / "book" / "_generated" / "step_costs.md"
    assert committed.read_text() == page.read_text(), (
        "book/_generated/step_costs.md is stale: run .venv/bin/python book/make_figures.py"
    )
    if (RESULTS / "step_cost.json").exists():
        r = json.loads((RESULTS / "step_cost.json").read_text())
        for arm in ("grpo/none", "grpo_multi/none", "sfpo/none"):
            assert f"{r['results'][arm]['step_s']:.1f} s" in page.read_text()
    for name in ("intro", "teachers"):
        text = (ROOT / "book" / f"{name}.md").read_text()
        assert "```{include} _generated/step_costs.md" in text, name
        assert not re.search(r"\b\d+(\.\d+)?(-\d+)? s\b[^.]*\bstep", text), name
    make_figures.step_costs_page(tmp_path / "nothing", page)
    assert "No step costs are recorded" in page.read_text()


def test_the_regime_reading_follows_the_numbers(make_figures):
    def arm(fewer, final, per_seed=(), seeds=3, stops=(), reach=None):
        reach = reach or [None if p is None else 32 for p in per_seed]
        return {"seeds": seeds, "rollouts_to_target": None if fewer is None else 32,
                "fewer_rollouts_than_grpo": fewer, "fewer_rollouts_per_seed": list(per_seed),
                "rollouts_to_target_per_seed": reach,
                "final": {"mean": final, "min": final, "max": final},
                "stop_rule_fired_at": list(stops) or [None] * seeds}  # fmt: skip

    grid = {
        "0.0001": {"meets_target": ["sfpo_a0.5"], "arms": {
            "grpo": arm(1.0, 0.4), "grpo_multi": arm(1.5, 0.3),
            "sfpo_a0.5": arm(2.5, 0.45, [2.0, 3.0, None], stops=[None, 12, None])}},
        "3e-05": {"meets_target": [], "arms": {
            "grpo": arm(1.0, 0.4), "grpo_multi": arm(1.2, 0.5),
            "sfpo_a0.5": arm(1.5, 0.35, stops=[9, None, 10]), "sfpo_a0.8": arm(None, 0.2),
            "grpo_lr_x3.4": arm(1.4, 0.41, seeds=2)}},
        "0.0003": {"arms": {"grpo": arm(1.0, 0.4, seeds=1)}},
    }  # fmt: skip
    grid["3e-05"]["arms"]["grpo"] |= {"stop_rule_replayed_at": {"1": [11, None, 9]},
                                      "entropy_step_noise": 0.14,
                                      "entropy_trend_per_step": 0.0012}  # fmt: skip
    lines = make_figures.regime_reading(grid)
    assert [line.split("**")[1] for line in lines] == [
        "lr 3e-05",
        "lr 0.0001",
        "lr 0.0003",
    ]
    met, missed, early = lines[1], lines[0], lines[2]
    assert "SFPO α = 0.5 reaches GRPO's best with 2.50 (2.0–3.0; 1 seed never)×" in met
    assert "claim holds" in met and "(3 seeds in every arm)" in met
    assert "stop rule" not in met  # the arms that meet the target say only that
    assert (
        "no SFPO arm meets the target: SFPO α = 0.5 needs 1.50× fewer rollouts"
        in missed
    )
    assert "SFPO α = 0.8 never reaches GRPO's best and ends at 0.20" in missed
    assert "against GRPO×(K+1)'s 0.50. SFPO's stop rule fired at step 9, 10;" in missed
    assert (
        "GRPO's own entropy (no SFPO involved), the same rule fires at step 11, 9 (3 seeds)"
        in missed
    )
    assert (
        "moves by about ±0.14 from one step to the next, around a trend of +0.001"
        in missed
    )
    assert "3.4× the learning rate (SFPO's path length) needs 1.40× fewer" in missed
    assert "(2–3 seeds per arm)" in missed  # GRPO at 3.4× has a seed fewer
    # equal per-seed ratios are one number; several seeds that never reach, plural
    lone = arm(1.0, 0.4, [2.0, 2.0, None, None], seeds=4)
    assert make_figures._fewer(lone) == "1.00 (2.0; 2 seeds never)"
    # a seed whose start is already at GRPO's best (0 rollouts, no ratio) is named
    early_seed = arm(0.9, 0.4, [1.8, None, None], seeds=3, reach=[160, 0, None])
    assert make_figures._fewer(early_seed) == "0.90 (1.8; 1 seed there at step 0; 1 seed never)"  # fmt: skip
    # an arm whose seed mean starts at GRPO's best has no ratio, and is not "never"
    at_start = arm(None, 0.4, [None], seeds=1, reach=[0]) | {"rollouts_to_target": 0}
    assert make_figures._fewer(at_start) == "no ratio (1 seed there at step 0)"
    assert make_figures._reach(at_start) == "is at GRPO's best from step 0"
    assert "not enough finished arms" in early and "(1 seed in" in early


def test_the_noise_reading_follows_the_numbers(make_figures):
    noise = [{"stop_rule": "rise", "stop_window": 8, "stop_threshold": t, "steps": 20,
              "trials": 2000, "fired_share": p, "median_step": 11.0}
             for t, p in [(1.0, 0.962), (2.0, 0.168)]]  # fmt: skip
    line = make_figures.noise_reading(noise)
    assert (
        "`rise` rule with ω = 8 fires within 20 steps in 96% (τ = 1), 17% (τ = 2)"
        in line
    )
    assert "of 2,000 simulated runs (median step 11 at τ = 1)" in line
    noise[0]["median_step"] = None
    assert "(median" not in make_figures.noise_reading(noise)
    assert [make_figures._percent(x) for x in (0, 0.004, 0.168, 1)] == [
        "0%", "0.4%", "17%", "100%"
    ]  # fmt: skip


def test_the_no_rule_control_is_read_as_the_rule_that_never_fired(make_figures):
    noise = [{"stop_rule": "rise", "stop_window": 8, "stop_threshold": t, "steps": 20,
              "trials": 2000, "fired_share": p, "median_step": 11.0}
             for t, p in [(1.0, 0.962), (2.0, 0.168)]]  # fmt: skip
    free = {"seeds": 3, "rollouts_to_target": 32, "fewer_rollouts_than_grpo": 2.5,
            "fewer_rollouts_per_seed": [2.0, 3.0, 2.0], "rule_never_fires_from": 2.0,
            "rollouts_to_target_per_seed": [32, 32, 32],
            "final": {"mean": 0.6, "min": 0.5, "max": 0.7},
            "stop_rule_fired_at": [None] * 3}  # fmt: skip
    other = free | {"fewer_rollouts_than_grpo": 1.0, "final": {"mean": 0.5}}
    cell = {"meets_target": {}, "meets_target_with_unfired_rule": {"sfpo_a0.8_nostop": 2.0},
            "arms": {"grpo": other, "grpo_multi": other, "sfpo_a0.8_nostop": free}}  # fmt: skip
    lines = make_figures.regime_reading({"1e-4": cell}, noise)
    control = lines[1]
    assert control.startswith(
        "  - without its rule, SFPO α = 0.8 needs 2.50 (2.0–3.0)×"
    )
    assert (
        "ends at 0.60. Its entropy never triggers the rule at τ ≥ 2 (3 seeds)"
        in control
    )
    assert (
        "bit for bit; on pure noise that rule fires in 17% of 20-step runs." in control
    )
    assert "(τ = 2, chosen after seeing the runs) SFPO meets the target." in control
    # not meeting it, or a rule that fires at every τ, is said as such
    cell["meets_target_with_unfired_rule"] = {}
    assert "meets" not in make_figures.regime_reading({"1e-4": cell}, noise)[1]
    free["rule_never_fires_from"] = None
    assert (
        "triggers the rule at every τ"
        in make_figures.regime_reading({"1e-4": cell}, noise)[1]
    )
    # without the noise results there is no control line
    assert len(make_figures.regime_reading({"1e-4": cell})) == 1


def test_the_regime_heading_says_how_far_the_sweep_is(make_figures, tmp_path):
    recorded = RESULTS / "regime_map.json"
    if not recorded.exists():
        pytest.skip("no regime map recorded in bench/results")
    r = json.loads(recorded.read_text())
    planned = len(r["lrs"]) * len(r["arms"]) * r["planned_seeds"]
    done = sum(a["seeds"] for c in r["map"].values() for a in c["arms"].values())
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "regime_map.json").write_text(json.dumps(r))
    make_figures.measured_page(tmp_path / "results", tmp_path / "page.md")
    heading = "### The regime map" + (
        f" (in progress: {done} of {planned} runs)" if done < planned else ""
    )
    assert f"{heading}\n" in (tmp_path / "page.md").read_text()
    for cell in r["map"].values():  # every run finished: a plain heading
        for arm in cell["arms"].values():
            arm["seeds"] = r["planned_seeds"]
    (tmp_path / "results" / "regime_map.json").write_text(json.dumps(r))
    make_figures.measured_page(tmp_path / "results", tmp_path / "page.md")
    assert "### The regime map\n" in (tmp_path / "page.md").read_text()
