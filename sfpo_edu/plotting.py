"""Pictures of GRPO and SFPO: the toy step, paths, landscapes, drift, learning curves.

Each function draws arrays it is given (``landscape.toy_step_trace``, ``plane_grid``,
``metrics.load_run`` ...) and returns a ``Figure``, released from pyplot at once so
nothing piles up or shows twice; none trains. One-panel functions accept ``ax=``.
Notation: θ₀ the behaviour policy, θ_K after the K fast steps, θ̃ = θ₀ + α(θ_K − θ₀)
the repositioned point, θ_{s+1} after the slow step.
"""

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import Tensor

from sfpo_edu.metrics import ARM_FIELDS, Run, group_runs
from sfpo_edu.toy import ToyBandit, ToyRun

# Mathtext, so the symbols render the same in every font.
TH0, THK, THT, THN = r"$\theta_0$", r"$\theta_K$", r"$\tilde\theta$", r"$\theta_{s+1}$"
ALPHA = r"$\alpha$"

# algorithm: label, Okabe–Ito colour (readable with colour-vision deficiencies)
_ALGOS = {
    "grpo": ("GRPO", "#0072B2"),
    "grpo_multi": ("GRPO×(K+1)", "#E69F00"),
    "sfpo": ("SFPO", "#009E73"),
    "lookahead": ("Lookahead", "#CC79A7"),
}
ALGO_LABELS = {algo: label for algo, (label, _) in _ALGOS.items()}
ALGO_COLORS = {algo: color for algo, (_, color) in _ALGOS.items()}
PALETTE = ["#0072B2", "#009E73", "#E69F00", "#CC79A7", "#D55E00", "#56B4E9", "#000000"]
TILDE_COLOR = "#D55E00"  # θ̃, wherever it is marked
_ROLLOUTS = "rollouts (completions sampled)"
X_LABELS = {"rollouts/total": _ROLLOUTS, "rollouts": _ROLLOUTS, "step": "outer step s"}


def new_figure(
    figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **kw: Any
) -> tuple[Figure, Any]:
    """``plt.subplots`` with constrained layout, released from pyplot at once."""
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, layout="constrained", **kw)
    plt.close(fig)  # the caller owns it; pyplot keeps no reference
    return fig, axes


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    return new_figure(figsize) if ax is None else (ax.figure, ax)


_OTHER_COLORS = [c for c in PALETTE if c not in ALGO_COLORS.values()]
# after those, for many arms: Paul Tol's muted colours (also colour-blind safe)
_MORE_COLORS = ["#882255", "#999933", "#44AA99", "#332288", "#DDCC77", "#AA4499"]


def _color(name: str, i: int) -> str:
    """An algorithm's own colour; other names get colours no algorithm uses."""
    return ALGO_COLORS.get(name, _OTHER_COLORS[i % len(_OTHER_COLORS)])


def distinct_colors(algos: Sequence[str | None]) -> list[str]:
    """One colour per line, no two alike: the first line of each algorithm gets the
    algorithm's colour, every other line the next colour no algorithm uses."""
    extra = iter(_OTHER_COLORS + _MORE_COLORS)
    colors: list[str] = []
    for i, algo in enumerate(algos):
        first = algo in ALGO_COLORS and algo not in algos[:i]
        colors.append(ALGO_COLORS[algo] if first else next(extra, PALETTE[i % 7]))
    return colors


def _label(name: str) -> str:
    return ALGO_LABELS.get(name, name)


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _key(label: str, **style: Any) -> Line2D:
    """A legend entry: a line or marker drawn in ``style``, with no data."""
    return Line2D([], [], label=label, **style)


def _extent(
    points: Tensor, pad: float, min_half: float, square: bool = False
) -> tuple[float, ...]:
    """(x0, x1, y0, y1) around (N, 2) points, padded, at least 2·min_half wide."""
    lo, hi = points.min(0).values, points.max(0).values
    centre, half = (lo + hi) / 2, ((hi - lo) / 2 * (1 + pad)).clamp(min=min_half)
    if square:
        half = half.max().expand(2)
    lo, hi = centre - half, centre + half
    return lo[0].item(), hi[0].item(), lo[1].item(), hi[1].item()


def _map_axes(
    ax: Axes | None,
    extent: Sequence[float],
    figsize: tuple[float, float] | None,
    width: float,
    extra_height: float = 0.0,
) -> tuple[Figure, Axes]:
    """Axes for an equal-aspect map of ``extent``: a new figure whose height fits the
    map, a colourbar and ``extra_height`` inches (e.g. a legend below) unless given."""
    if ax is None and figsize is None:
        ratio = (extent[3] - extent[2]) / (extent[1] - extent[0])
        figsize = (width, (width - 1.8) * ratio + 0.9 + extra_height)
    return _axes(ax, figsize)


def _reward_contours(
    ax: Axes, bandit: ToyBandit, extent: Sequence[float], levels: Any = 12
) -> None:
    """Filled contours of the exact expected reward J(θ) of the toy, with a colourbar."""
    xs, ys = torch.linspace(*extent[:2], 160), torch.linspace(*extent[2:], 160)
    J = bandit.reward_grid(xs, ys)  # (Y, X)
    filled = ax.contourf(xs, ys, J, levels=levels, cmap="Greys", alpha=0.55)
    ax.contour(xs, ys, J, levels=filled.levels, colors="0.45", linewidths=0.4)
    label = r"exact expected reward $J(\theta)$"
    ax.figure.colorbar(filled, ax=ax, shrink=0.95, label=label)
    ax.set(xlim=extent[:2], ylim=extent[2:], aspect="equal")
    ax.set_xlabel(r"$\theta[0]$")
    ax.set_ylabel(r"$\theta[1]$")


def _arrow(ax: Axes, start: Any, end: Any, color: str, lw: float, gid: str) -> None:
    style = dict(arrowstyle="-|>", color=color, lw=lw, mutation_scale=8 + 3 * lw)
    style |= dict(shrinkA=0, shrinkB=0)  # from point to point exactly
    ax.annotate("", tuple(_np(end)), tuple(_np(start)), arrowprops=style, gid=gid)


_OUTLINE = [patheffects.withStroke(linewidth=3, foreground="white")]
_POINT_LABEL = dict(textcoords="offset points", fontsize=14, va="center", zorder=6)


def _mark(ax: Axes, points: list[tuple[str, Any, str, dict[str, Any]]]) -> None:
    """Markers ``(gid, xy, text, style)``, each labelled on the side away from its
    nearest neighbour (the axes have equal aspect, so data directions are screen ones).
    Points that coincide share one label, e.g. θ₀ = θ_K = θ̃ when α = 0."""
    xys = np.stack([_np(xy) for _, xy, _, _ in points])  # (P, 2)
    for i, (gid, _, text, style) in enumerate(points):
        ax.plot(*xys[i], linestyle="none", gid=gid, zorder=5, **style)
        same = [j for j in range(len(points)) if np.array_equal(xys[j], xys[i])]
        if same[0] != i:
            continue  # labelled with the first of the coinciding points
        text = " = ".join(points[j][2] for j in same)
        others = np.delete(xys, same, 0)  # (P − |same|, 2)
        away = np.array([0.0, -1.0])  # below, if there is no other point
        if len(others):
            away = xys[i] - others[np.argmin(np.hypot(*(xys[i] - others).T))]
        direction = away / np.hypot(*away)
        side = "left" if direction[0] > 0 else "right"
        ha = side if abs(direction[0]) >= 0.6 else "center"
        offset = tuple(16 * direction)
        ax.annotate(text, xys[i], offset, ha=ha, path_effects=_OUTLINE, **_POINT_LABEL)


def plot_toy_step(
    trace: dict[str, Any],
    bandit: ToyBandit,
    *,
    ax: Axes | None = None,
    extent: Sequence[float] | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """One SFPO and one GRPO update from the same θ₀ and batch
    (``landscape.toy_step_trace``), on the exact reward landscape."""
    fast, t0, tk = trace["fast"], trace["theta_0"], trace["theta_k"]  # fast: (K+1, 2)
    tilde, nxt, grpo = trace["theta_tilde"], trace["theta_next"], trace["grpo_next"]
    if extent is None:
        points = torch.stack([*fast, tilde, nxt, grpo])  # (K+4, 2)
        extent = _extent(points, pad=0.5, min_half=0.1, square=True)
    fig, ax = _map_axes(ax, extent, figsize, width=7.5, extra_height=0.9)
    _reward_contours(ax, bandit, extent)
    sfpo_c, grpo_c, slow_c = ALGO_COLORS["sfpo"], ALGO_COLORS["grpo"], "#004D3C"
    _arrow(ax, t0, grpo, grpo_c, 5, "grpo")  # underneath the first fast step
    for k in range(len(fast) - 1):
        _arrow(ax, fast[k], fast[k + 1], sfpo_c, 1.4, f"fast:{k}")
    ax.plot(*_np(torch.stack([t0, tk])).T, "--", color="0.15", lw=1.3, gid="chord")
    _arrow(ax, tilde, nxt, slow_c, 3.2, "slow")
    points = [
        ("theta_0", t0, TH0, dict(marker="o", color="k", ms=7)),
        ("theta_k", tk, THK, dict(marker="o", mfc="white", mec="k", ms=7)),
        ("theta_tilde", tilde, THT, dict(marker="D", color=TILDE_COLOR, ms=7)),
        ("theta_next", nxt, THN, dict(marker="*", color=slow_c, ms=13)),
    ]
    _mark(ax, points)
    # Labels that change on every redraw are plain text: mathtext is slow to parse.
    K, alpha, G = trace["num_fast_steps"], trace["alpha"], trace["batch"].group_size
    fast_key = f"K = {K} fast steps" if alpha > 0 else "no fast steps: α = 0 skips them"
    tilde_label = rf"{THT} $= \theta_0 + \alpha(\theta_K - \theta_0)$"
    handles = [
        _key(fast_key, color=sfpo_c, lw=1.4, marker=">", ms=5),
        _key(rf"chord {TH0}$\to${THK}", color="0.15", ls="--"),
        _key(tilde_label, color=TILDE_COLOR, marker="D", ls="none"),
        _key(f"SFPO: slow step from {THT}", color=slow_c, lw=3.2),
        _key("GRPO: one step, same batch", color=grpo_c, lw=5),
    ]
    below = dict(loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    ax.legend(handles=handles, ncols=2, fontsize=9, **below)
    J = bandit.expected_reward
    ax.set_title(
        f"One update on one batch: K = {K}, α = {alpha:g}, G = {G}, η = {trace['lr']:.3g}\n"
        f"exact J:  θ₀ {J(t0):.3f}  →  GRPO {J(grpo):.3f},  SFPO {J(nxt):.3f}",
        fontsize=11,
    )
    return fig


def plot_toy_paths(
    runs: dict[str, ToyRun],
    bandit: ToyBandit,
    *,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Outer iterates θ_s of several toy runs on the exact reward landscape; faint lines
    are each step's fast path θ⁰ … θ_K (SFPO, GRPO×(K+1))."""
    points = torch.cat([r.thetas for r in runs.values()])  # (ΣS, 2)
    x0, x1, y0, y1 = _extent(points, pad=0.15, min_half=1.0)
    grow = max(0.0, 0.45 * (x1 - x0) - (y1 - y0)) / 2  # show the landscape around
    extent = (x0, x1, y0 - grow, y1 + grow)
    fig, ax = _map_axes(ax, extent, figsize, width=10)
    _reward_contours(ax, bandit, extent, levels=np.linspace(0, 1, 11))
    for i, (name, run) in enumerate(runs.items()):
        color = _color(name, i)
        for path in run.fast_paths:  # (K+1, 2) per step
            if len(path) > 1:
                ax.plot(*_np(path).T, color=color, lw=0.9, alpha=0.6)
        xy = _np(run.thetas)  # (S+1, 2)
        final = run.expected_reward[-1].item()
        label = f"{_label(name)}  ($J$ = {final:.2f} after {len(xy) - 1} steps)"
        ax.plot(*xy[-1], "o", color=color, ms=7, mec="k", zorder=4)  # the end
        ax.plot(*xy.T, "-o", color=color, lw=2, ms=2.5, gid=f"path:{name}", label=label)
    start = next(iter(runs.values())).thetas[0]
    _mark(ax, [("theta_0", start, TH0, dict(marker="o", color="k", ms=7))])
    ax.legend(loc="lower left", fontsize=9, framealpha=0.92)
    title = r"Outer iterates $\theta_s$ from the same start; faint: fast steps"
    ax.set_title(title, fontsize=11)
    return fig


def plot_reposition_line(
    line: dict[str, Tensor], alpha: float, *, figsize: tuple[float, float] = (9, 6.2)
) -> Figure:
    """Drift vs gain along θ(t) = θ₀ + t(θ_K − θ₀) (``landscape.reposition_line``),
    with θ̃ (t = α) and θ_K (t = 1) marked."""
    fig, axes = new_figure(figsize, 2, 2, sharex=True)
    t = _np(line["t"])
    ratio = r"mean $|\rho - 1|$,  $\rho = \pi_\theta / \pi_{\theta_0}$"
    panels = [
        (-_np(line["loss"]), "surrogate objective $-L$  (gain)"),
        (_np(line["kl"]), r"KL($\pi_{\theta_0} \| \pi_{\theta(t)}$)  (drift)"),
        (_np(line["clip_frac"]), "clip fraction"),
        (_np(line["ratio_dev"]), ratio),
    ]
    for ax, (y, title) in zip(axes.flat, panels, strict=True):
        ax.plot(t, y, color="0.15", lw=2, gid="curve")
        ax.axvline(alpha, color=TILDE_COLOR, lw=1.5, gid="alpha")
        ax.axvline(1.0, color="0.4", ls="--", lw=1.2, gid="theta_k")
        ax.plot([alpha], [np.interp(alpha, t, y)], "D", color=TILDE_COLOR, ms=7)
        ax.plot([1.0], [np.interp(1.0, t, y)], "o", mfc="white", mec="k", ms=7)
        ax.set_title(title, fontsize=11)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel(r"$t$  along  $\theta(t) = \theta_0 + t(\theta_K - \theta_0)$")
    handles = [
        _key(f"{THT}: t = {ALPHA} = {alpha:g}", color=TILDE_COLOR, marker="D"),
        _key(f"{THK}: t = 1", color="0.4", ls="--", marker="o", mfc="white", mec="k"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=10)
    fig.suptitle(f"Along the reposition line, on the batch sampled at {TH0}")
    return fig


def plot_plane(
    grid: dict[str, Tensor],
    coords: dict[str, Any],
    *,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """−L in the plane of θ₀, θ_K, θ_{s+1} (``landscape.plane_grid``), KL-to-θ₀
    contours and the ``Plane.coords`` points (an optional ``"fast"`` (K+1, 2) too)."""
    x, y = _np(grid["x"]), _np(grid["y"])
    fig, ax = _map_axes(ax, (x[0], x[-1], y[0], y[-1]), figsize, width=7.5)
    filled = ax.contourf(x, y, -_np(grid["loss"]), levels=16, cmap="viridis")
    label = "surrogate objective $-L$ on the batch"
    fig.colorbar(filled, ax=ax, shrink=0.95, label=label)
    kl_style = dict(levels=5, colors="white", linewidths=0.9, linestyles="--")
    kl = ax.contour(x, y, _np(grid["kl"]), **kl_style)
    ax.clabel(kl, fontsize=8, fmt=lambda v: f"KL {v:.2g}")
    c = {k: _np(v) for k, v in coords.items()}
    t0, tk, tilde, nxt = c["theta_0"], c["theta_k"], c["theta_tilde"], c["theta_next"]
    handles = []
    if "fast" in c:
        ax.plot(*c["fast"].T, "-o", color="white", lw=1.2, ms=3, gid="fast")
        handles.append(_key("fast steps", color="white", marker="o", ms=3))
    ax.plot(*np.stack([t0, tk]).T, "--", color="white", lw=1.3, gid="chord")
    slow_c, edge = "#C2185B", dict(mec="white", mew=1.2, ms=8)
    _arrow(ax, tilde, nxt, slow_c, 3, "slow")
    points = [
        ("theta_0", t0, TH0, dict(marker="o", color="k", **edge)),
        ("theta_k", tk, THK, dict(marker="o", mfc="white", mec="k", ms=8)),
        ("theta_tilde", tilde, THT, dict(marker="D", color=TILDE_COLOR, **edge)),
        ("theta_next", nxt, THN, dict(marker="*", color=slow_c, **edge | dict(ms=14))),
    ]
    _mark(ax, points)
    ax.set(aspect="equal", xlim=(x[0], x[-1]), ylim=(y[0], y[-1]))
    ax.set_xlabel(rf"along {THK} $-$ {TH0}")
    ax.set_ylabel(rf"orthogonal, toward {THN}")
    handles += [
        _key(rf"chord {TH0}$\to${THK}", color="white", ls="--"),
        _key(rf"slow step {THT}$\to${THN}", color=slow_c, lw=3),
    ]
    legend = dict(facecolor="0.35", labelcolor="white", framealpha=0.8)
    ax.legend(handles=handles, loc="lower right", fontsize=9, **legend)
    ax.set_title(f"The plane through {TH0}, {THK} and {THN}", fontsize=11)
    return fig


DASHBOARD = [
    (("update/norm",), r"update $\|\theta_{s+1} - \theta_0\|$"),
    (("sfpo/drift_norm",), r"drift $\|\theta_K - \theta_0\|$"),
    (("sfpo/reposition_norm",), r"reposition $\|\tilde\theta - \theta_0\|$"),
    (("sfpo/slow_step_norm",), r"slow step $\|\theta_{s+1} - \tilde\theta\|$"),
    (("sfpo/cos_fast_slow",), r"cos($\theta_K - \theta_0$, $\theta_{s+1} - \tilde\theta$)"),
    (("kl/theta_k", "kl/theta_tilde"), rf"KL to {TH0}: at {THK} (—), at {THT} (- -)"),
    (("sfpo/entropy",), "policy entropy"),
    (("sfpo/entropy_z",), "entropy z-score (stop rule)"),
    (("sfpo/alpha",), rf"effective {ALPHA} (0 once stopped)"),
]  # fmt: skip


def run_label(run: Run) -> str:
    """``arm_label``, then the folder unless it only names the algorithm (as in
    ``sfpo-edu compare``): ``SFPO α=0.8 · sfpo-s0``; ``SFPO α=0.8`` for ``x/sfpo``."""
    label = arm_label(run.config)
    return label if run.name == run.config.get("algo") else f"{label} · {run.name}"


# how a setting reads in a label: K=3, η=0.0003, G=8 ...
_FIELD_NAMES = {"num_fast_steps": "K", "lr": "η", "group_size": "G", "kl_coef": "β",
                "num_prompts": "prompts", "num_steps": "steps", "lora_r": "LoRA r",
                "max_new_tokens": "tokens", "stop_rule": "stop"}  # fmt: skip


def arm_label(config: dict[str, Any]) -> str:
    """What a run is, in the course's words: ``GRPO``, ``GRPO×(K+1)`` or ``SFPO α=0.8``
    (α means something only to SFPO; GRPO×(K+1) is SFPO at α = 1)."""
    algo = config.get("algo", "?")
    if algo == "sfpo":
        return f"SFPO α={config.get('alpha')}"
    return ALGO_LABELS.get(algo, algo)


def label_arms(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Recorded runs as arms ``{label: runs}``, one per folder and setting with seeds
    pooled (``metrics.group_runs``), labelled ``arm_label``, then the settings that
    differ between arms (``K=5``, ``η=0.001``), then the folder if there are several."""
    groups = list(group_runs(list(runs)).items())
    several_folders = len({key[0] for key, _ in groups}) > 1
    labels: dict[str, list[Run]] = {}
    for _, arm in groups:
        config = arm[0].config
        label = arm_label(config)
        for i, field in enumerate(ARM_FIELDS, start=1):  # key[0] is the folder
            if field in ("algo", "alpha"):  # named by arm_label
                continue
            if len({k[i] for k, _ in groups}) > 1:
                value = config.get(field)  # 0.00034, not 0.0003400000000000001
                value = f"{value:g}" if isinstance(value, float) else value
                label += f", {_FIELD_NAMES.get(field, field)}={value}"
        if several_folders:
            label += f" · {arm[0].path.parent.name}"
        while label in labels:  # differ only where a label does not look
            label += "′"
        labels[label] = arm
    return labels


def stop_step(run: Run) -> int | None:
    """The first step at which the stop rule had switched SFPO off, or None."""
    for row in run.metrics:
        if row.get("sfpo/stopped") == 1:
            return row.get("step")
    return None


def plot_drift_dashboard(
    runs: Sequence[Run], *, figsize: tuple[float, float] = (12, 9.5)
) -> Figure:
    """Nine panels of per-step SFPO geometry (one line per run), the stop rule's step
    dotted; a key no run logged leaves its panel saying "not logged"."""
    fig, axes = new_figure(figsize, 3, 3, sharex=True)
    # the colours plot_learning_curves gives the same runs
    colors = distinct_colors([run.config.get("algo") for run in runs])
    taus = {r.config.get("stop_threshold") for r in runs} - {None}
    at = dict(xycoords=("axes fraction", "data"), textcoords="offset points")
    for ax, (keys, title) in zip(axes.flat, DASHBOARD, strict=True):
        ax.set_title(f"{title}\n{' / '.join(keys)}", fontsize=10)
        drawn = False
        for run, color in zip(runs, colors, strict=True):
            for key, ls in zip(keys, ("-", "--"), strict=False):
                xs, ys = run.series(key)
                if xs:
                    ax.plot(xs, ys, ls, color=color, lw=1.4, gid=f"{key}|{run.name}")
                    drawn = True
            if drawn and (s := stop_step(run)) is not None:
                ax.axvline(s, color=color, ls=":", lw=1.5, gid=f"stop|{run.name}")
        if drawn and keys == ("sfpo/entropy_z",):
            for tau in taus:
                ax.axhline(tau, color="0.3", ls="--", lw=1)
                ax.axhline(-tau, color="0.3", ls="--", lw=1)
                ax.annotate(
                    r"$\pm\tau$", (1, tau), (-4, -3), ha="right", va="top", **at
                )
        if not drawn:
            tag = dict(transform=ax.transAxes, gid="not_logged")
            style = dict(ha="center", va="center", color="0.5", fontsize=12)
            ax.text(0.5, 0.5, "not logged", **tag, **style)
            ax.set_yticks([])
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("outer step s")
    handles = [
        _key(run_label(r), color=c, lw=2) for r, c in zip(runs, colors, strict=True)
    ]
    handles.append(_key("stop rule fired", color="0.3", ls=":"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)))
    fig.suptitle("Drift dashboard: where each SFPO step goes")
    return fig


def shared_pca(points: Tensor) -> tuple[Tensor, Tensor]:
    """2-D PCA scores of N flat points, (N, D) → (N, 2), and each component's share of
    the variance (2,). Uses the N × N Gram matrix (N ≪ D), so no second N × D copy is
    made; points are taken relative to the first to keep fp32 differences precise."""
    X = points.float() - points[0].float()  # (N, D)
    N = len(X)
    centre = torch.eye(N, dtype=torch.float64) - 1.0 / N  # (N, N)
    gram = centre @ (X @ X.T).double() @ centre  # (N, N), of the centred points
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    evals, evecs = evals.flip(0).clamp(min=0), evecs.flip(1)
    pad = max(0, 2 - N)
    scores = torch.cat([evecs[:, :2] * evals[:2].sqrt(), torch.zeros(N, pad)], 1)
    share = torch.cat([evals[:2], torch.zeros(pad)]) / evals.sum().clamp(min=1e-30)
    return scores.float(), share.float()


def plot_trajectories(
    runs: dict[str, list[tuple[int, dict[str, Tensor]]]],
    *,
    ax: Axes | None = None,
    figsize: tuple[float, float] = (7.5, 6),
) -> Figure:
    """Paths of runs (``metrics.load_trajectory``) in one PCA plane of all their points:
    outer iterates bold, fast steps θ⁰ … θ_K faint, θ̃ diamonds, slow steps thin."""
    fig, ax = _axes(ax, figsize)
    points = []  # per step: θ₀, θ⁰ … θ_K, θ̃, θ_{s+1}, each (D,)
    for traj in runs.values():
        for _, p in traj:
            points += [p["theta_0"], *p["fast"], p["theta_tilde"], p["theta_next"]]
    if not points:
        raise ValueError("no trajectory points. Fix: train with snapshot_every > 0.")
    scores, share = shared_pca(torch.stack(points))  # (N, 2)
    xy = _np(scores)
    cursor = 0
    for r, (name, traj) in enumerate(runs.items()):
        color, outer = _color(name, r), []
        for _, p in traj:
            n = 1 + len(p["fast"])
            fast = xy[cursor + 1 : cursor + n]  # (K+1, 2)
            tilde, nxt = xy[cursor + n], xy[cursor + n + 1]
            outer.append(xy[cursor])
            ax.plot(*fast.T, color=color, lw=0.8, alpha=0.4)
            ax.plot(*tilde, "D", color=color, ms=3, alpha=0.7)
            ax.plot(*np.stack([tilde, nxt]).T, color=color, lw=0.8, alpha=0.7)
            cursor += n + 2
        if traj:
            outer = np.stack([*outer, nxt])  # (S+1, 2)
            style = dict(color=color, lw=2.2, ms=3.5, label=_label(name))
            ax.plot(*outer.T, "-o", gid=f"outer:{name}", **style)
            ax.plot(*outer[0], "o", color="k", ms=7, zorder=5)
    ax.set_xlabel(f"PC 1 ({100 * share[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * share[1]:.0f}% of variance)")
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        _key("first saved step", color="k", marker="o", ls="none"),
        _key(f"fast steps {TH0}…{THK}", color="0.4", lw=0.8, alpha=0.6),
        _key(f"{THT} → {THN}", color="0.4", marker="D", ms=3, ls="-", lw=0.8),
    ]
    ax.legend(handles=handles, fontsize=9)
    ax.set_title("Trainable parameters, projected on a shared PCA plane", fontsize=11)
    return fig


def smooth_curve(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (shorter at the start)."""
    if window <= 1:
        return y
    csum = np.concatenate([[0.0], np.cumsum(y)])
    i = np.arange(1, len(y) + 1)
    lo = np.maximum(0, i - window)
    return (csum[i] - csum[lo]) / (i - lo)


def _draw_curves(
    ax: Axes,
    groups: list[tuple[str, str, list[tuple[Any, Any]]]],
    x: str,
    ylabel: str,
    *,
    band: str | None,
    target: float | None,
    smooth: int = 1,
) -> None:
    """Per group ``(name, colour, [(x, y) per seed])``: the seed mean on the x values
    they share, a band and where the mean first reaches ``target``; labels, legend."""
    seeds = []  # seeds drawn per group with data
    for name, color, curves in groups:
        curves = [(np.asarray(xs, float), np.asarray(ys, float)) for xs, ys in curves]
        curves = [(xs, smooth_curve(ys, smooth)) for xs, ys in curves if len(xs)]
        if not curves:
            continue
        lo, hi = max(xs[0] for xs, _ in curves), min(xs[-1] for xs, _ in curves)
        grid = np.unique(np.concatenate([xs for xs, _ in curves]))
        grid = grid[(grid >= lo) & (grid <= hi)]
        if not len(grid):  # seeds share no x range: show the first one only
            grid, curves = curves[0][0], curves[:1]
        seeds.append(len(curves))
        Y = np.stack([np.interp(grid, xs, ys) for xs, ys in curves])  # (seeds, N)
        mean = Y.mean(0)
        label = f"{name}  (n={len(curves)})"
        if target is not None and (hit := np.flatnonzero(mean >= target)).size:
            x_hit = grid[hit[0]]
            label += f", reaches {target:g} at {x_hit:,.0f}"
            ax.axvline(x_hit, color=color, ls=":", lw=1.3, gid=f"target:{name}")
            ax.plot([x_hit], [mean[hit[0]]], "o", color=color, ms=6)
        marker = "o" if len(grid) <= 30 else None  # sparse (eval steps): show points
        style = dict(color=color, lw=2, marker=marker, ms=4, label=label)
        ax.plot(grid, mean, gid=f"mean:{name}", **style)
        if band is not None and len(curves) > 1:
            if band == "minmax":
                low, high = Y.min(0), Y.max(0)
            elif band == "std":
                low, high = mean - Y.std(0), mean + Y.std(0)
            else:
                raise ValueError(f"band={band!r} is not one of 'minmax', 'std', None.")
            style = dict(color=color, alpha=0.2, lw=0, gid=f"band:{name}")
            ax.fill_between(grid, low, high, **style)
    ax.set_title(curves_title(seeds, band), fontsize=10)
    if target is not None:
        ax.axhline(target, color="0.5", ls="--", lw=1, gid="target")
    ax.set_xlabel(X_LABELS.get(x, x))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=9)


def curves_title(seeds: Sequence[int], band: str | None) -> str:
    """A title that claims no mean and no band where every group is a single run."""
    seeds = [n for n in seeds if n]
    if not seeds or max(seeds) == 1:
        return "one run (one seed) per arm: noisy, a first look"
    shade = {"minmax": "min–max", "std": "±1 std"}.get(band or "")
    return "mean over seeds (n in the legend)" + (f", shaded: {shade}" if shade else "")


def plot_learning_curves(
    groups: dict[str, list[Run]],
    key: str = "reward/mean",
    x: str = "rollouts/total",
    target: float | None = None,
    smooth: int = 1,
    band: str | None = "minmax",
    *,
    ax: Axes | None = None,
    figsize: tuple[float, float] = (7.5, 4.5),
) -> Figure:
    """``key`` against rollouts (``x="rollouts/total"``) or ``"step"``: per group (named
    by algorithm or ``label_arms``) the seed mean with a min–max or ±std band, smoothed
    over ``smooth`` points, and where it first reaches ``target``."""
    fig, ax = _axes(ax, figsize)
    algos = [
        name if name in ALGO_COLORS else runs[0].config.get("algo") if runs else None
        for name, runs in groups.items()
    ]
    colors = distinct_colors(algos)
    curves = [
        (_label(name), color, [run.series(key, x) for run in runs])
        for (name, runs), color in zip(groups.items(), colors, strict=True)
    ]
    _draw_curves(ax, curves, x, key, band=band, target=target, smooth=smooth)
    return fig


def plot_toy_learning_curves(
    runs: dict[str, list[ToyRun]],
    x: str = "rollouts",
    target: float | None = None,
    band: str | None = "minmax",
    *,
    ax: Axes | None = None,
    figsize: tuple[float, float] = (7.5, 4.5),
) -> Figure:
    """Exact expected reward J(θ_s) of toy runs (``toy.compare_toy``) against rollouts
    (``x="rollouts"``) or outer steps (``"step"``): mean over seeds, min–max band."""
    fig, ax = _axes(ax, figsize)
    curves = []
    for i, (name, seeds) in enumerate(runs.items()):
        pairs = [(_np(r.rollouts), _np(r.expected_reward)) for r in seeds]
        if x == "step":  # the outer step s = 0 … S instead of rollouts
            pairs = [(np.arange(len(xs)), ys) for xs, ys in pairs]
        curves.append((_label(name), _color(name, i), pairs))
    ylabel = r"exact expected reward $J(\theta_s)$"
    _draw_curves(ax, curves, x, ylabel, band=band, target=target)
    return fig


def comparison_figure(runs: dict[str, Any]) -> Figure:
    """``sfpo-edu compare``'s figure: held-out accuracy, sampled reward and policy
    entropy per outer step, one line per arm (``runs``: arm → run)."""
    fig, axes = new_figure((17, 4.6), 1, 3)
    groups = {algo: [run] for algo, run in runs.items()}
    titles = {
        "eval/accuracy": "held-out greedy accuracy, {num_eval_prompts} problems",
        "reward/mean": "reward of the sampled completions (noisy)",
        "sfpo/entropy": "policy entropy (sfpo/entropy, the stop rule's signal)",
    }
    cfg = next(iter(runs.values())).config
    per_step = cfg["num_prompts"] * cfg["group_size"]
    for ax, (key, title) in zip(axes, titles.items(), strict=True):
        plot_learning_curves(groups, key, x="step", ax=ax)
        ax.set(title=title.format(**cfg), ylabel=key)
        ax.set_xlabel(f"outer step s ({per_step} rollouts each, every arm)")
    fig.suptitle(
        f"{cfg['model']} on {cfg['task']}, K = {cfg['num_fast_steps']}, "
        f"α = {cfg['alpha']}, lr = {cfg['lr']:g}: {curves_title([1] * len(runs), None)}"
    )
    return fig


# The arms of the regime map (bench/rollouts_to_target.py --regime), in drawing order:
# arm: label, colour.
_REGIME = {
    "grpo": ("GRPO", ALGO_COLORS["grpo"]),
    "grpo_multi": ("GRPO×(K+1)", ALGO_COLORS["grpo_multi"]),
    "sfpo_a0.5": ("SFPO α = 0.5", "#56B4E9"),
    "sfpo_a0.8": ("SFPO α = 0.8", ALGO_COLORS["sfpo"]),
    "grpo_lr_x3.4": ("GRPO, lr × 3.4", "#CC79A7"),
    "sfpo_a0.8_nostop": ("SFPO α = 0.8, no stop rule", "#999933"),
}
REGIME_LABELS = {arm: label for arm, (label, _) in _REGIME.items()}
REGIME_COLORS = {arm: color for arm, (_, color) in _REGIME.items()}


def plot_regime_map(grid: dict[str, Any]) -> Figure:
    """The regime map of ``grid``, the ``map`` of ``bench/results/regime_map.json``:
    per learning rate and arm, best (●) and final (○) held-out accuracy, × fewer
    rollouts than GRPO to GRPO's best (whisker: the seeds' range), and the entropy
    averaged over the last five steps (``entropy_last5``). Defined in :doc:`results`."""
    lrs = sorted(grid, key=float)
    arms = [a for a in REGIME_LABELS if any(a in grid[lr]["arms"] for lr in lrs)]
    fig, (acc, fewer, entropy) = new_figure((15, 4.6), 1, 3)
    width = 0.8 / max(len(arms), 1)
    for j, arm in enumerate(arms):
        color, name = REGIME_COLORS[arm], REGIME_LABELS[arm]
        for i, lr in enumerate(lrs):
            if (cell := grid[lr]["arms"].get(arm)) is None:
                continue
            x = i + (j - (len(arms) - 1) / 2) * width
            for key, face, dx in (("best", color, -0.2), ("final", "white", 0.2)):
                d = cell[key]
                span = [[d["mean"] - d["min"]], [d["max"] - d["mean"]]]
                first = key == "best" and name not in acc.get_legend_handles_labels()[1]
                label = name if first else None
                style = dict(fmt="o", color=color, mfc=face, capsize=2, label=label)
                acc.errorbar(x + dx * width, d["mean"], span, **style)
            ratio = cell["fewer_rollouts_than_grpo"] or 0.0
            fewer.bar(x, ratio, width, color=color)
            reached = [r for r in cell.get("fewer_rollouts_per_seed", []) if r]
            if len(reached) > 1:
                fewer.vlines(x, min(reached), max(reached), color="black", lw=1)
            no_ratio = "never" if cell["rollouts_to_target"] is None else "step 0"
            label, turn = (f"{ratio:.1f}", 0) if ratio else (no_ratio, 90)
            style = dict(ha="center", va="bottom", fontsize=7, rotation=turn)
            fewer.text(x, ratio + 0.03, label, **style)
            entropy.bar(x, cell["entropy_last5"] or 0.0, width, color=color)
            style = dict(ha="center", fontsize=6, rotation=90, va="bottom")
            entropy.text(x, 0.01, f"n={cell['seeds']}", **style)
    for ax in (acc, fewer, entropy):
        ax.set_xticks(range(len(lrs)), [f"lr {lr}" for lr in lrs])
        for i in range(len(lrs) - 1):  # one learning rate per column
            ax.axvline(i + 0.5, color="0.85", lw=1)
    acc.set_ylabel("held-out accuracy (● best, ○ final)")
    fewer.set_ylabel("× fewer rollouts than GRPO to GRPO's best")
    fewer.axhline(1, color="grey", lw=0.8)
    fewer.axhline(2, color="grey", lw=0.8, ls="--")  # the paper's claim: ≥ 2×
    entropy.set_ylabel("policy entropy, last 5 steps")
    acc.legend(fontsize=7)
    fig.suptitle("Regime map (bars and whiskers: seed mean and range; n = seeds)")
    return fig
