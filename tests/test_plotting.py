"""Every picture returns a Figure whose artists hold the data they were given."""

import io

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from sfpo_edu import plotting
from sfpo_edu.landscape import plane_basis, plane_grid, reposition_line, toy_step_trace
from sfpo_edu.metrics import RunLogger, group_runs, load_run
from sfpo_edu.params import trainable_params
from sfpo_edu.toy import ToyBandit, compare_toy, run_toy, toy_config

matplotlib.use("Agg")


def by_gid(fig: Figure, gid: str) -> list:
    return fig.findobj(lambda a: a.get_gid() == gid)


def render(fig: Figure) -> Figure:
    """Draw the figure (mathtext and layout errors only show up when drawing)."""
    fig.savefig(io.BytesIO(), format="png", dpi=40)
    return fig


def xy(line) -> np.ndarray:
    return np.column_stack([line.get_xdata(), line.get_ydata()])


@pytest.fixture(scope="module")
def toy():
    bandit, cfg = ToyBandit(), toy_config(alpha=0.6)
    return bandit, cfg, toy_step_trace(bandit, cfg, seed=0)


def write_run(path, algo, rows, config=None):
    """A run folder as the trainer writes it."""
    logger = RunLogger(path, config={"algo": algo, **(config or {})})
    for row in rows:
        logger.log(row)
    return load_run(path)


def test_toy_step_marks_theta_tilde_at_fraction_alpha_of_the_chord(toy):
    bandit, cfg, trace = toy
    fig = render(plotting.plot_toy_step(trace, bandit))
    assert isinstance(fig, Figure)
    (chord,) = by_gid(fig, "chord")
    start, end = xy(chord)
    (tilde,) = by_gid(fig, "theta_tilde")
    np.testing.assert_allclose(
        xy(tilde)[0], start + cfg.alpha * (end - start), rtol=1e-5
    )
    (slow,) = by_gid(fig, "slow")  # arrow from θ̃ to θ_{s+1}
    np.testing.assert_allclose(slow.xyann, trace["theta_tilde"].numpy())
    np.testing.assert_allclose(slow.xy, trace["theta_next"].numpy())
    (grpo,) = by_gid(fig, "grpo")
    np.testing.assert_allclose(grpo.xy, trace["grpo_next"].numpy())
    fast = [by_gid(fig, f"fast:{k}")[0] for k in range(cfg.num_fast_steps)]
    np.testing.assert_allclose(fast[-1].xy, trace["theta_k"].numpy())
    assert not by_gid(fig, f"fast:{cfg.num_fast_steps}")


def test_toy_step_with_alpha_zero_draws(toy):
    bandit, _, _ = toy
    trace = toy_step_trace(bandit, toy_config(alpha=0.0), seed=1)
    fig = render(plotting.plot_toy_step(trace, bandit))
    assert not by_gid(fig, "fast:0")
    assert "θ_K" not in "".join(t.get_text() for t in fig.axes[0].texts)
    assert any(" = " in t.get_text() for t in fig.axes[0].texts)  # one shared label


def test_toy_paths_draw_each_runs_outer_iterates():
    bandit, cfg = ToyBandit(), toy_config()
    runs = {algo: run_toy(cfg, algo=algo, num_steps=6) for algo in ("grpo", "sfpo")}
    fig = render(plotting.plot_toy_paths(runs, bandit))
    for name, run in runs.items():
        (line,) = by_gid(fig, f"path:{name}")
        np.testing.assert_allclose(xy(line), run.thetas.numpy())
        assert "SFPO" in line.get_label() or "GRPO" in line.get_label()


def test_reposition_line_plot_marks_alpha_and_theta_k(toy):
    bandit, cfg, trace = toy
    line = reposition_line(
        trainable_params(bandit), trace["theta_0"], trace["theta_k"],
        bandit.make_loss_fn(cfg), trace["batch"],
    )  # fmt: skip
    fig = render(plotting.plot_reposition_line(line, cfg.alpha))
    curves = by_gid(fig, "curve")
    assert len(curves) == 4
    np.testing.assert_allclose(curves[0].get_ydata(), -line["loss"].numpy())
    np.testing.assert_allclose(curves[1].get_ydata(), line["kl"].numpy())
    assert all(list(v.get_xdata()) == [cfg.alpha] * 2 for v in by_gid(fig, "alpha"))
    assert all(list(v.get_xdata()) == [1.0, 1.0] for v in by_gid(fig, "theta_k"))


def test_plane_plot_marks_the_four_points(toy):
    bandit, cfg, trace = toy
    plane = plane_basis(trace["theta_0"], trace["theta_k"], trace["theta_next"], 0.6)
    grid = plane_grid(
        trainable_params(bandit), plane, bandit.make_loss_fn(cfg), trace["batch"], num=9
    )
    coords = plane.coords | {"fast": plane.project(trace["fast"])}
    fig = render(plotting.plot_plane(grid, coords))
    for name in ("theta_0", "theta_k", "theta_tilde", "theta_next"):
        (marker,) = by_gid(fig, name)
        np.testing.assert_allclose(xy(marker)[0], coords[name].numpy(), atol=1e-6)
    (fast,) = by_gid(fig, "fast")
    np.testing.assert_allclose(xy(fast), coords["fast"].numpy(), atol=1e-6)


def test_drift_dashboard_marks_the_stop_and_says_not_logged(tmp_path):
    sfpo_rows = [
        {"step": s, "update/norm": 0.3, "sfpo/drift_norm": 0.4 if s < 3 else 0.0,
         "sfpo/stopped": float(s >= 3), "kl/theta_k": 0.02, "kl/theta_tilde": None,
         "sfpo/entropy_z": None if s < 2 else -1.5, "sfpo/alpha": 0.8 if s < 3 else 0.0}
        for s in range(6)
    ]  # fmt: skip
    grpo_rows = [{"step": s, "update/norm": 0.2} for s in range(6)]
    runs = [
        write_run(
            tmp_path / "a", "sfpo", sfpo_rows, {"stop_threshold": 1.0, "alpha": 0.8}
        ),
        write_run(tmp_path / "grpo", "grpo", grpo_rows),
    ]
    fig = render(plotting.plot_drift_dashboard(runs))
    assert isinstance(fig, Figure)
    (drift,) = by_gid(fig, "sfpo/drift_norm|a")
    assert list(drift.get_ydata()) == [0.4, 0.4, 0.4, 0.0, 0.0, 0.0]
    assert len(by_gid(fig, "update/norm|grpo")) == 1  # GRPO shares the update axes
    stops = by_gid(fig, "stop|a")
    assert stops and all(list(s.get_xdata()) == [3, 3] for s in stops)
    assert not by_gid(fig, "stop|grpo")
    (z,) = by_gid(fig, "sfpo/entropy_z|a")
    assert list(z.get_xdata()) == [2, 3, 4, 5]  # nulls are skipped
    # slow_step_norm, cos_fast_slow, entropy, reposition_norm were never logged
    assert len(by_gid(fig, "not_logged")) == 4
    # the course's names, and the folder only where it says more than the algorithm
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["SFPO α=0.8 · a", "GRPO"]


def test_drift_dashboard_colours_match_the_learning_curves(tmp_path):
    # first run of each algorithm in its own colour; a second SFPO run (another α)
    # gets the colour plot_learning_curves gives a name without one at that index
    rows = [{"step": s, "update/norm": 0.1 * s} for s in range(3)]
    runs = [write_run(tmp_path / n, a, rows) for n, a in
            [("g", "grpo"), ("m", "grpo_multi"), ("s", "sfpo"), ("s2", "sfpo")]]  # fmt: skip
    fig = render(plotting.plot_drift_dashboard(runs))
    colors = {r.name: by_gid(fig, f"update/norm|{r.name}")[0].get_color() for r in runs}
    curves = render(
        plotting.plot_learning_curves(
            {
                "grpo": [runs[0]],
                "grpo_multi": [runs[1]],
                "sfpo": [runs[2]],
                "SFPO (α = 0.5)": [runs[3]],
            },
            "update/norm",
            x="step",
        )
    )
    legend = {t.get_text().split("  (")[0]: h.get_color() for t, h in
              zip(curves.axes[0].get_legend().get_texts(),
                  curves.axes[0].get_legend().legend_handles, strict=True)}  # fmt: skip
    assert colors["g"] == plotting.ALGO_COLORS["grpo"] == legend["GRPO"]
    assert colors["s"] == plotting.ALGO_COLORS["sfpo"] == legend["SFPO"]
    assert colors["s2"] == legend["SFPO (α = 0.5)"]
    assert colors["s2"] not in plotting.ALGO_COLORS.values()


def test_trajectories_share_one_pca_plane():
    gen = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(30, 2, generator=gen))[0].T  # (2, 30)

    def traj(offset):
        out = []
        for s in range(4):
            t0 = torch.tensor([s + offset, s * 0.5]) @ basis  # (30,)
            fast = torch.stack([t0 + k * 0.2 * basis[0] for k in range(4)])  # (K+1, 30)
            tilde = t0 + 0.8 * (fast[-1] - t0)
            nxt = torch.tensor([s + 1 + offset, (s + 1) * 0.5]) @ basis
            points = {"theta_0": t0, "fast": fast, "theta_tilde": tilde}
            out.append((s, points | {"theta_next": nxt}))
        return out

    runs = {"grpo": traj(0.0), "sfpo": traj(0.3)}
    fig = render(plotting.plot_trajectories(runs))
    (outer,) = by_gid(fig, "outer:sfpo")
    assert len(outer.get_xdata()) == 5  # four θ₀ and the last θ_{s+1}
    # points in a 2-D subspace: PCA keeps all their pairwise distances
    pts = xy(outer)
    exact = torch.stack(
        [p["theta_0"] for _, p in runs["sfpo"]] + [runs["sfpo"][-1][1]["theta_next"]]
    )
    np.testing.assert_allclose(
        np.linalg.norm(pts[:, None] - pts[None], axis=-1),
        torch.cdist(exact, exact).numpy(), atol=1e-4,
    )  # fmt: skip
    assert "% of variance" in fig.axes[0].get_xlabel()
    with pytest.raises(ValueError, match="snapshot_every"):
        plotting.plot_trajectories({})


def test_learning_curves_mean_band_and_target(tmp_path):
    def rows(scale):
        return [{"step": s, "rollouts/total": 8 * (s + 1), "reward/mean": scale * s,
                 "eval/accuracy": None} for s in range(5)]  # fmt: skip

    groups = {
        "grpo": [write_run(tmp_path / f"g{i}", "grpo", rows(0.1 * (i + 1))) for i in range(2)],
        "sfpo": [write_run(tmp_path / f"s{i}", "sfpo", rows(0.2 * (i + 1))) for i in range(2)],
    }  # fmt: skip
    fig = render(plotting.plot_learning_curves(groups, target=0.7))
    (mean,) = by_gid(fig, "mean:GRPO")
    np.testing.assert_allclose(mean.get_xdata(), [8, 16, 24, 32, 40])
    np.testing.assert_allclose(mean.get_ydata(), 0.15 * np.arange(5))
    assert by_gid(fig, "band:GRPO")
    (hit,) = by_gid(fig, "target:SFPO")  # SFPO's mean 0.3·s first reaches 0.7 at s = 3
    assert list(hit.get_xdata()) == [32, 32]
    assert not by_gid(fig, "target:GRPO")  # GRPO's mean peaks at 0.6
    fig = plotting.plot_learning_curves(
        groups, "reward/mean", x="step", smooth=3, band="std"
    )
    (mean,) = by_gid(fig, "mean:SFPO")
    np.testing.assert_allclose(mean.get_ydata()[:3], 0.3 * np.array([0, 0.5, 1.0]))
    empty = render(plotting.plot_learning_curves(groups, "eval/accuracy"))  # all null
    assert not by_gid(empty, "mean:GRPO")


def test_toy_learning_curves_average_the_seeds():
    runs = compare_toy(
        toy_config(), algos=("grpo", "lookahead"), seeds=(0, 1), num_steps=4
    )
    fig = render(plotting.plot_toy_learning_curves(runs))
    (mean,) = by_gid(fig, "mean:Lookahead")
    expected = torch.stack([r.expected_reward for r in runs["lookahead"]]).mean(0)
    np.testing.assert_allclose(mean.get_ydata(), expected.numpy(), rtol=1e-6)
    np.testing.assert_allclose(mean.get_xdata(), runs["lookahead"][0].rollouts.numpy())
    fig = render(plotting.plot_toy_learning_curves(runs, x="step"))
    assert list(by_gid(fig, "mean:GRPO")[0].get_xdata()) == [0, 1, 2, 3, 4]


def test_figures_do_not_pile_up_in_pyplot(toy):
    bandit, _, trace = toy
    plt.close("all")
    for _ in range(3):
        plotting.plot_toy_step(trace, bandit)
    assert plt.get_fignums() == []


def test_recorded_runs_group_by_folder_and_config_and_are_labelled_by_what_they_are(
    tmp_path,
):
    def rows(steps):
        return [{"step": s, "rollouts/total": 16 * (s + 1), "reward/mean": 0.1 * s}
                for s in range(steps)]  # fmt: skip

    demo = {"num_steps": 10, "alpha": 0.8, "num_fast_steps": 3}
    sweep = {"num_steps": 20, "num_fast_steps": 3}
    runs = [
        write_run(tmp_path / "demo" / "grpo", "grpo", rows(10), demo),
        write_run(tmp_path / "demo" / "sfpo", "sfpo", rows(10), demo),
        *[write_run(tmp_path / "sweep" / f"grpo-s{i}", "grpo", rows(20),
                    sweep | {"alpha": 0.8, "seed": i}) for i in range(2)],
        *[write_run(tmp_path / "sweep" / f"sfpo_a{a}-s{i}", "sfpo", rows(20),
                    sweep | {"alpha": a, "seed": i}) for a in (0.5, 0.8) for i in range(2)],
    ]  # fmt: skip
    groups = group_runs(runs)
    assert [len(g) for g in groups.values()] == [
        1,
        1,
        2,
        2,
        2,
    ]  # seeds pool, folders don't
    arms = plotting.label_arms(runs)
    # the demo's 10-step runs never share an arm with the sweep's 20-step runs
    assert {label: [r.path.parent.name for r in g] for label, g in arms.items()} == {
        "GRPO, steps=10 · demo": ["demo"],
        "SFPO α=0.8, steps=10 · demo": ["demo"],
        "GRPO, steps=20 · sweep": ["sweep"] * 2,
        "SFPO α=0.5, steps=20 · sweep": ["sweep"] * 2,
        "SFPO α=0.8, steps=20 · sweep": ["sweep"] * 2,
    }
    sweep_only = plotting.label_arms(runs[2:])
    assert list(sweep_only) == ["GRPO", "SFPO α=0.5", "SFPO α=0.8"]
    # a learning rate computed as 1e-4 × 3.4 reads as the number, not its float repr
    scaled = [write_run(tmp_path / "lr" / f"grpo-{i}", "grpo", rows(5), {"lr": lr})
              for i, lr in enumerate((1e-4, 1e-4 * 3.4))]  # fmt: skip
    assert list(plotting.label_arms(scaled)) == ["GRPO, η=0.0001", "GRPO, η=0.00034"]
    assert plotting.arm_label({"algo": "grpo_multi", "alpha": 0.8}) == "GRPO×(K+1)"
    # every arm gets a colour of its own, GRPO and the first SFPO their usual ones
    fig = render(plotting.plot_learning_curves(arms, "reward/mean", x="step"))
    colors = [by_gid(fig, f"mean:{label}")[0].get_color() for label in arms]
    assert len(set(colors)) == len(arms)
    assert colors[:2] == [plotting.ALGO_COLORS["grpo"], plotting.ALGO_COLORS["sfpo"]]
    assert "mean over seeds" in fig.axes[0].get_title()


def test_one_seed_curves_do_not_claim_a_mean_or_a_band(tmp_path):
    rows = [
        {"step": s, "rollouts/total": 8 * s, "reward/mean": 0.1 * s} for s in range(3)
    ]
    groups = {"grpo": [write_run(tmp_path / "g", "grpo", rows)],
              "sfpo": [write_run(tmp_path / "s", "sfpo", rows)]}  # fmt: skip
    title = render(plotting.plot_learning_curves(groups)).axes[0].get_title()
    assert "mean" not in title and "shaded" not in title and "one seed" in title


def test_demo_figure_shows_held_out_accuracy_sampled_reward_and_entropy(tmp_path):
    config = {"num_prompts": 2, "group_size": 8, "num_eval_prompts": 32,
              "model": "smollm2-135m", "task": "arithmetic", "num_fast_steps": 3,
              "alpha": 0.8, "lr": 3e-4}  # fmt: skip
    rows = [{"step": s, "rollouts/total": 16 * (s + 1), "reward/mean": 0.1 * s,
             "sfpo/entropy": 0.9 - 0.05 * s,
             "eval/accuracy": 0.3 + 0.05 * s if s % 5 == 0 else None}
            for s in range(11)]  # fmt: skip
    runs = {a: write_run(tmp_path / a, a, rows, config) for a in ("grpo", "sfpo")}
    fig = render(plotting.comparison_figure(runs))
    acc, reward, entropy = fig.axes
    assert "held-out greedy accuracy" in acc.get_title()
    assert "sampled" in reward.get_title() and "entropy" in entropy.get_title()
    (line,) = [a for a in by_gid(fig, "mean:SFPO") if a.axes is acc]
    assert list(line.get_xdata()) == [0, 5, 10]  # the evaluations only
    (line,) = [a for a in by_gid(fig, "mean:SFPO") if a.axes is entropy]
    assert line.get_ydata()[-1] == pytest.approx(0.4)  # every step
    assert len([a for a in by_gid(fig, "mean:SFPO") if a.axes is reward]) == 1
    title = fig.get_suptitle()
    assert "one seed" in title and "mean" not in title and "shaded" not in title
    assert "lr = 0.0003" in title


def test_regime_map_draws_every_cell_with_its_spread():
    def cell(fewer, per_seed, seeds=3, reach=None):
        d = {"mean": 0.5, "min": 0.4, "max": 0.6}
        reach = reach if reach is not None or fewer is None else 32
        return {"seeds": seeds, "best": d, "final": d, "entropy_last5": 0.3,
                "rollouts_to_target": reach, "fewer_rollouts_than_grpo": fewer,
                "fewer_rollouts_per_seed": per_seed}  # fmt: skip

    grid = {
        "0.0003": {"arms": {"grpo": cell(1.0, [1.0, 1.0, 1.0]), "grpo_multi": cell(1.5, []),
                            "sfpo_a0.5": cell(2.5, [2.0, 3.0, None]),
                            "sfpo_a0.8": cell(0.9, [1.8, None, None])}},
        "3e-05": {"arms": {"grpo": cell(1.0, [1.0], seeds=1),
                           "sfpo_a0.5": cell(None, [None], seeds=1),
                           # at GRPO's best from step 0: no ratio, and not "never"
                           "grpo_multi": cell(None, [None], seeds=1, reach=0)}},
    }  # fmt: skip
    fig = plotting.plot_regime_map(grid)
    acc, fewer, entropy = fig.axes
    # learning rates in numeric order on every panel
    assert [t.get_text() for t in fewer.get_xticklabels()] == ["lr 3e-05", "lr 0.0003"]
    assert len(fewer.patches) == len(entropy.patches) == 7  # one bar per cell
    texts = [t.get_text() for t in fewer.texts]
    assert "never" in texts and "2.5" in texts
    assert texts.count("step 0") == 1 and texts.count("never") == 1
    # a whisker only where two or more seeds reached the target after step 0: GRPO and
    # SFPO α = 0.5 at 3e-4 (α = 0.8 has one ratio: a seed at the start has none)
    whiskers = [c.get_segments()[0][:, 1].tolist() for c in fewer.collections]
    assert whiskers == [[1.0, 1.0], [2.0, 3.0]]
    assert sorted(t.get_text() for t in entropy.texts) == ["n=1"] * 3 + ["n=3"] * 4
    # every arm in the legend once, also one missing at the first learning rate
    legend = [t.get_text() for t in acc.get_legend().get_texts()]
    assert legend == ["GRPO", "GRPO×(K+1)", "SFPO α = 0.5", "SFPO α = 0.8"]
