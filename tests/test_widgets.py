"""The explorers build, redraw when a control changes, and run in a real kernel."""

import base64
import json
import re

import matplotlib
import numpy as np
import pytest
from conftest import notebook_client, python3_kernel_or_skip
from IPython.display import HTML
from matplotlib.figure import Figure

from sfpo_edu import widgets
from sfpo_edu.landscape import reposition_line, toy_step_trace
from sfpo_edu.metrics import RunLogger
from sfpo_edu.params import trainable_params
from sfpo_edu.toy import ToyBandit, toy_config

matplotlib.use("Agg")


def by_gid(fig: Figure, gid: str) -> list:
    return fig.findobj(lambda a: a.get_gid() == gid)


def fake_run(path, algo, scale):
    logger = RunLogger(path, config={"algo": algo})
    for s in range(4):
        logger.log({"step": s, "rollouts/total": 8 * (s + 1), "reward/mean": scale * s,
                    "sfpo/drift_norm": 0.1 * s})  # fmt: skip
        logger.log_samples([
            {"step": s, "prompt": "What is 2 + <b>3</b>?", "completion": f"<script>{s}",
             "answer": "5", "reward": float(i == 0), "advantage": 1.0 - i,
             "truncated": i == 1}
            for i in range(2)
        ])  # fmt: skip
    return path


@pytest.fixture
def run_dirs(tmp_path):
    return [fake_run(tmp_path / "grpo-0", "grpo", 0.1), fake_run(tmp_path / "sfpo-0", "sfpo", 0.2)]  # fmt: skip


def test_toy_explorer_redraws_on_every_control():
    explorer = widgets.toy_explorer()
    assert set(explorer.controls) == {"K", "alpha", "lr", "G", "seed", "new batch"}
    assert explorer.children[1] is explorer.output
    first = explorer.shown
    assert isinstance(first, Figure)

    explorer.controls["alpha"].value = 0.5
    fig = explorer.shown
    assert fig is not first
    (chord,) = by_gid(fig, "chord")
    start, end = np.column_stack([chord.get_xdata(), chord.get_ydata()])
    (tilde,) = by_gid(fig, "theta_tilde")
    np.testing.assert_allclose(
        tilde.get_xydata()[0], start + 0.5 * (end - start), rtol=1e-5
    )

    explorer.controls["K"].value = 5
    assert len(by_gid(explorer.shown, "fast:4")) == 1
    before = explorer.shown
    explorer.controls["new batch"].click()
    assert explorer.controls["seed"].value == 1 and explorer.shown is not before


def test_run_comparer_switches_metric_and_runs(run_dirs):
    explorer = widgets.run_comparer(run_dirs)
    metric, runs = explorer.controls["metric"], explorer.controls["runs"]
    assert metric.value == "reward/mean" and "sfpo/drift_norm" in metric.options
    lines = [
        ln
        for ln in explorer.shown.axes[0].lines
        if str(ln.get_gid()).startswith("mean:")
    ]
    assert len(lines) == 2
    metric.value = "sfpo/drift_norm"
    (line, *_) = [
        ln
        for ln in explorer.shown.axes[0].lines
        if str(ln.get_gid()).startswith("mean:")
    ]
    np.testing.assert_allclose(line.get_ydata(), [0, 0.1, 0.2, 0.3])
    runs.value = runs.options[1:]
    assert len([ln for ln in explorer.shown.axes[0].lines if ln.get_gid()]) == 1
    runs.value = ()
    assert isinstance(explorer.shown, Figure)  # an empty plot, not an error


def test_rollout_browser_escapes_text_and_follows_the_step(run_dirs):
    explorer = widgets.rollout_browser(run_dirs[0])
    page = explorer.shown
    assert isinstance(page, HTML)
    assert "&lt;script&gt;0" in page.data and "<script>" not in page.data
    assert "2 + &lt;b&gt;3&lt;/b&gt;?" in page.data and "(truncated)" in page.data
    explorer.controls["step"].value = 3
    assert (
        "&lt;script&gt;3" in explorer.shown.data
        and "&lt;script&gt;0" not in explorer.shown.data
    )


def test_rollout_browser_left_aligns_every_cell():
    # JupyterLab right-aligns `td`; only a style on the cell itself wins over that
    page = widgets.samples_table(
        [{"step": 0, "prompt": "2 + 3?", "completion": "5", "answer": "5",
          "reward": 1.0, "advantage": 0.5}]
    )  # fmt: skip
    cells = re.findall(r"<t[dh][^>]*>", page)
    assert cells and all("text-align:left" in cell for cell in cells), cells


def test_explorers_carry_a_still_for_pages_without_a_kernel(run_dirs):
    bundle = widgets.toy_explorer()._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # the live widget
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")
    browser = widgets.rollout_browser(run_dirs[0])._repr_mimebundle_()
    assert browser["text/html"] == widgets.rollout_browser(run_dirs[0]).shown.data


def test_rollout_browser_without_samples_explains(tmp_path):
    RunLogger(tmp_path, config={"algo": "grpo"})
    with pytest.raises(ValueError, match="num_samples_logged"):
        widgets.rollout_browser(tmp_path)


def test_reposition_explorer_moves_the_alpha_marker():
    bandit, cfg = ToyBandit(), toy_config()
    trace = toy_step_trace(bandit, cfg)
    line = reposition_line(trainable_params(bandit), trace["theta_0"], trace["theta_k"],
                           bandit.make_loss_fn(cfg), trace["batch"])  # fmt: skip
    explorer = widgets.reposition_explorer(line, alpha=0.8)
    assert list(by_gid(explorer.shown, "alpha")[0].get_xdata()) == [0.8, 0.8]
    explorer.controls["alpha"].value = 0.3
    assert list(by_gid(explorer.shown, "alpha")[0].get_xdata()) == [0.3, 0.3]


NOTEBOOK_CELLS = [
    "import matplotlib.pyplot as plt\n"
    "from sfpo_edu import widgets\n"
    "from sfpo_edu.landscape import reposition_line, toy_step_trace\n"
    "from sfpo_edu.params import trainable_params\n"
    "from sfpo_edu.toy import ToyBandit, toy_config",
    "toy = widgets.toy_explorer()\ntoy",
    "first = toy.shown\n"
    "toy.controls['alpha'].value = 0.4\n"
    "toy.controls['new batch'].click()\n"
    "assert toy.shown is not first and toy.controls['seed'].value == 1",
    "bandit, cfg = ToyBandit(), toy_config()\n"
    "trace = toy_step_trace(bandit, cfg)\n"
    "line = reposition_line(trainable_params(bandit), trace['theta_0'], trace['theta_k'],\n"
    "                       bandit.make_loss_fn(cfg), trace['batch'])\n"
    "rep = widgets.reposition_explorer(line)\n"
    "rep.controls['alpha'].value = 0.5\n"
    "rep",
    "cmp = widgets.run_comparer(RUN_DIRS)\n"
    "cmp.controls['metric'].value = 'sfpo/drift_norm'\n"
    "cmp",
    "browser = widgets.rollout_browser(RUN_DIRS[0])\n"
    "browser.controls['step'].value = 2\n"
    "browser",
    "assert plt.get_fignums() == []",
]


@pytest.mark.notebooks
def test_widgets_run_in_a_headless_kernel(run_dirs, tmp_path):
    python3_kernel_or_skip()
    import nbformat

    cells = [f"RUN_DIRS = {json.dumps([str(d) for d in run_dirs])}"] + NOTEBOOK_CELLS
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    client = notebook_client(
        nb, kernel_name="python3", timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )  # fmt: skip
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert not errors
    # the explorers display as widgets, each with a plain-text fallback
    shown = [
        o for c in nb.cells for o in c.outputs if o.output_type == "execute_result"
    ]
    assert len(shown) == 4
    assert all("application/vnd.jupyter.widget-view+json" in o.data for o in shown)
