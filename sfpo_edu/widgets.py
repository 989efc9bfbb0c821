"""Notebook explorers: ipywidgets controls that redraw the pictures of ``plotting``.

    toy_explorer()                     # K, α, lr, G, seed → one SFPO step on the toy
    run_comparer(["runs/a", "runs/b"]) # pick runs and a metric → learning curves
    rollout_browser("runs/a")          # a step slider over samples.jsonl
    reposition_explorer(line)          # an α slider over landscape.reposition_line

Each returns an ``Explorer`` (a VBox): ``controls`` by name, the ``output`` it draws
into and the figure or HTML ``shown`` last. Setting a control's ``.value`` redraws, so
code and tests can drive it; displayed, it also carries a still the book shows.
"""

import base64
import html
import io
import os
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
from IPython.display import HTML, display
from matplotlib.figure import Figure
from torch import Tensor

from sfpo_edu import plotting
from sfpo_edu.config import SFPOConfig
from sfpo_edu.landscape import toy_step_trace
from sfpo_edu.metrics import load_run
from sfpo_edu.toy import ToyBandit, toy_config


class Explorer(widgets.VBox):
    """Controls above an Output; any control's change redraws ``draw()`` into it."""

    def __init__(
        self, controls: dict[str, widgets.Widget], draw: Callable[[], Figure | HTML]
    ) -> None:
        output = widgets.Output()
        row = widgets.HBox(list(controls.values()), layout={"flex_flow": "row wrap"})
        super().__init__([row, output])
        self.controls, self.output, self.draw = controls, output, draw
        self.shown: Figure | HTML | None = None
        for control in controls.values():
            if not isinstance(control, widgets.Button):
                control.observe(lambda _: self.redraw(), names="value")
        self.redraw()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The live widget plus a still of what it shows, for pages without a kernel."""
        bundle = dict(super()._repr_mimebundle_(**kwargs) or {})
        if isinstance(self.shown, Figure):
            png = io.BytesIO()
            self.shown.savefig(png, format="png", dpi=80, bbox_inches="tight")
            bundle["image/png"] = base64.b64encode(png.getvalue()).decode()
        elif isinstance(self.shown, HTML):
            bundle["text/html"] = self.shown.data
        return bundle

    def redraw(self) -> None:
        self.shown = self.draw()
        with self.output:
            self.output.clear_output(wait=True)
            display(self.shown)


def _alpha_slider(alpha: float) -> widgets.FloatSlider:
    return widgets.FloatSlider(alpha, min=0, max=1, step=0.05, description="α")


def toy_explorer(
    bandit: ToyBandit | None = None, cfg: SFPOConfig | None = None
) -> Explorer:
    """Sliders for K, α, lr, G and the batch seed over ``plotting.plot_toy_step``;
    "new batch" samples another batch at the same θ₀."""
    bandit = ToyBandit() if bandit is None else bandit
    cfg = toy_config() if cfg is None else cfg
    wide = {"style": {"description_width": "initial"}}  # long descriptions show whole
    lr = dict(base=10, min=-2, max=0.5, step=0.05, description="lr η", **wide)
    controls = {
        "K": widgets.IntSlider(cfg.num_fast_steps, min=1, max=8, description="K"),
        "alpha": _alpha_slider(cfg.alpha),
        "lr": widgets.FloatLogSlider(cfg.lr, **lr),
        "G": widgets.IntSlider(cfg.group_size, min=2, max=32, description="G"),
        "seed": widgets.IntSlider(cfg.seed, max=999, description="batch seed", **wide),
        "new batch": widgets.Button(description="new batch", icon="refresh"),
    }

    def draw() -> Figure:
        c = {name: w.value for name, w in controls.items() if name != "new batch"}
        step_cfg = cfg.replace(
            num_fast_steps=c["K"], alpha=c["alpha"], lr=c["lr"], group_size=c["G"]
        )
        trace = toy_step_trace(bandit, step_cfg, c["seed"])
        return plotting.plot_toy_step(trace, bandit)

    def new_batch(_: Any) -> None:
        seed = controls["seed"]
        seed.value = (seed.value + 1) % (seed.max + 1)  # redraws through the slider

    controls["new batch"].on_click(new_batch)
    return Explorer(controls, draw)


def run_comparer(run_dirs: Sequence[str | os.PathLike]) -> Explorer:
    """Pick runs, a metric and the x axis → learning curves, one curve per run."""
    runs = [load_run(d) for d in run_dirs]
    if not runs:
        raise ValueError("run_comparer needs at least one run folder.")
    labels = [plotting.run_label(r) for r in runs]
    if len(set(labels)) < len(labels):  # same folder names in different places
        labels = [f"{label} [{i}]" for i, label in enumerate(labels)]
    keys = sorted({k for r in runs for k in r.keys()} - {"step"})
    if not keys:
        raise ValueError(
            f"no metrics in {[str(d) for d in run_dirs]} (empty metrics.jsonl)."
        )
    xs = ["step"] + (["rollouts/total"] if "rollouts/total" in keys else [])
    metric = "reward/mean" if "reward/mean" in keys else keys[0]
    controls = {
        "runs": widgets.SelectMultiple(
            options=labels, value=labels, rows=min(8, len(labels)), description="runs"
        ),
        "metric": widgets.Dropdown(options=keys, value=metric, description="metric"),
        "x": widgets.Dropdown(options=xs, value=xs[-1], description="x"),
        "smooth": widgets.IntSlider(1, min=1, max=25, description="smooth"),
    }

    def draw() -> Figure:
        chosen = controls["runs"].value
        groups = {
            lab: [run] for lab, run in zip(labels, runs, strict=True) if lab in chosen
        }
        key, x, smooth = (controls[name].value for name in ("metric", "x", "smooth"))
        return plotting.plot_learning_curves(groups, key, x, smooth=smooth, band=None)

    return Explorer(controls, draw)


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def samples_table(rows: Sequence[dict[str, Any]]) -> str:
    """An HTML table of sample rows; all model text is escaped: it is untrusted."""
    pre = '<pre style="white-space:pre-wrap;margin:0;font-size:12px;text-align:left">'
    # on every cell: only a cell's own style wins over JupyterLab's right-aligned `td`
    td = '<td style="text-align:left;vertical-align:top"'
    lines, prompt = [], object()
    for i, row in enumerate(rows):
        if row.get("prompt") != prompt:
            prompt = row.get("prompt")
            cell = f'{td} colspan="5"><b>prompt</b>{pre}{_cell(prompt)}</pre></td>'
            lines.append(f'<tr style="background:#eef">{cell}</tr>')
        adv = row.get("advantage")
        shade = "" if not adv else "#e6f4ea" if adv > 0 else "#fdecea"
        cut = " <i>(truncated)</i>" if row.get("truncated") else ""
        lines.append(
            f'<tr style="background:{shade}">{td}>{i}</td>'
            f"{td}>{pre}{_cell(row.get('completion'))}</pre>{cut}</td>"
            f"{td}>{_cell(row.get('answer'))}</td>{td}>{_cell(row.get('reward'))}</td>"
            f"{td}>{_cell(adv, 2)}</td></tr>"
        )
    columns = ("#", "completion", "answer", "reward", "advantage")
    head = "".join(f'<th style="text-align:left">{name}</th>' for name in columns)
    return f'<table style="text-align:left"><tr>{head}</tr>{"".join(lines)}</table>'


def rollout_browser(run_dir: str | os.PathLike) -> Explorer:
    """A step slider over ``samples.jsonl``: each logged completion with its prompt,
    reference answer, reward and advantage (green: reinforced, red: discouraged)."""
    run = load_run(run_dir, samples=True)
    if not run.samples:
        raise ValueError(
            f"no samples in {run.path}. Fix: train with num_samples_logged > 0."
        )
    steps = sorted({row["step"] for row in run.samples})
    controls = {"step": widgets.SelectionSlider(options=steps, description="step")}

    def draw() -> HTML:
        step = controls["step"].value
        rows = [r for r in run.samples if r["step"] == step]
        rewards = [r["reward"] for r in rows if r.get("reward") is not None]
        mean = sum(rewards) / len(rewards) if rewards else float("nan")
        title = f"<b>{html.escape(run.name)}</b>, step {step}: {len(rows)} completions"
        return HTML(f"<p>{title}, mean reward {mean:.3f}</p>" + samples_table(rows))

    return Explorer(controls, draw)


def reposition_explorer(line: dict[str, Tensor], alpha: float = 0.8) -> Explorer:
    """An α slider over ``landscape.reposition_line``: θ̃ between θ₀ and θ_K."""
    controls = {"alpha": _alpha_slider(alpha)}
    return Explorer(
        controls, lambda: plotting.plot_reposition_line(line, controls["alpha"].value)
    )
