"""The report's figures: matplotlib (Agg, no display needed), one function per figure, plain arrays in.

Every function returns a Figure; `png` turns it into bytes and closes it. Rates are in counts per bin,
the unit of the data, the output file and the true rates (truth / conversion_factor).
"""

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: reports are made on headless machines too

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..names import ALL_METRIC, HELDIN_METRIC  # noqa: E402

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "figure.dpi": 100,
}
INFERRED, TRUTH, SPIKES, EXPLOIT, LINEAGE = "#1f77b4", "#222222", "#9a9a9a", "#d62728", "#111111"
SMOOTH_SIGMA_BINS = 2.0  # Gaussian kernel that turns spike counts into a rate estimate to compare with

# Training-curve panels: title, [(metrics.csv column, label)], y scale ("log": when the values span decades).
CURVES = [
    ("Loss (scaled objective)", [("loss", "train"), ("val_loss", "valid")], "log"),
    ("Held-in NLL", [("nll_heldin", "train"), ("val_nll_heldin", "valid")], "linear"),
    ("Held-out NLL (valid)", [("val_nll_heldout", "held-out neurons"), ("val_nll_fp", "forward bins")], "linear"),
    ("Smoothed validation NLL", [(ALL_METRIC, "every neuron and bin"), (HELDIN_METRIC, "held-in")], "linear"),
    ("KL terms (train)", [("kl_ic", "initial condition"), ("kl_co", "controller outputs")], "linear"),
    ("L2 penalty (train)", [("l2", "recurrent kernels")], "log"),
    ("Learning rate", [("lr", "lr")], "log"),
    (
        "Validation quality",
        [("val_bps", "bits/spike"), ("val_co_bps", "co-bps"), ("val_fp_bps", "fp-bps"), ("val_r2", "R² vs true rates")],
        "linear",
    ),
]
LINESTYLES = ["-", "--", ":", "-."]


def png(figure: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(figure)
    return buffer.getvalue()


def member_colors(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "viridis")
    return [cmap(i if n <= 10 else i / max(n - 1, 1)) for i in range(n)]


def training_curves(rows: Sequence[dict], generation_ends: Sequence[int] = ()) -> Figure:
    """Per-epoch metrics of every member: one panel per quantity, one colour per member, train solid and
    validation dashed. generation_ends: epochs completed at each generation's end (drawn as faint lines)."""
    members = sorted({int(row["member"]) for row in rows})
    panels = [
        (title, [(col, label) for col, label in series if _has(rows, col)], scale) for title, series, scale in CURVES
    ]
    panels = [panel for panel in panels if panel[1]]
    columns = 4 if len(panels) > 6 else 3
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(
            math.ceil(len(panels) / columns),
            columns,
            figsize=(4.0 * columns, 2.9 * math.ceil(len(panels) / columns)),
            squeeze=False,
        )
        colors = member_colors(len(members))
        for ax, (title, series, scale) in zip(axes.flat, panels):
            values = []
            for m, member in enumerate(members):
                mine = [row for row in rows if int(row["member"]) == member]
                epochs = [row["epoch"] for row in mine]
                for s, (column, label) in enumerate(series):
                    y = [row.get(column, math.nan) for row in mine]
                    values += y
                    color = colors[m] if len(members) > 1 else plt.get_cmap("tab10")(s)
                    ax.plot(
                        epochs, y, LINESTYLES[s % len(LINESTYLES)], color=color, lw=1.2, label=label if m == 0 else None
                    )
            for end in generation_ends:
                ax.axvline(end - 0.5, color="#bbbbbb", lw=0.6, zorder=0)
            finite = np.asarray(values, dtype=float)
            finite = finite[np.isfinite(finite)]
            if scale == "log" and finite.size and finite.min() > 0 and finite.max() >= 8 * finite.min():
                ax.set_yscale("log")  # only where it spans decades: within one, log ticks are unreadable
            ax.set_title(title)
            ax.set_xlabel("epoch")
            if len(series) > 1 or len(members) == 1:
                ax.legend(loc="best")
        for ax in axes.flat[len(panels) :]:
            ax.axis("off")
        if len(members) > 1:
            handles = [Line2D([], [], color=colors[m], lw=2) for m in range(len(members))]
            figure.legend(
                handles,
                [f"member {member}" for member in members],
                loc="lower center",
                ncol=min(len(members), 10),
                bbox_to_anchor=(0.5, -0.03),
            )
        figure.tight_layout()
    return figure


def hyperparameters(
    state: Sequence[dict],
    exploits: Sequence[dict],
    space: dict[str, bool],
    lineage: Sequence[tuple[int, int]],
    metric_name: str,
) -> Figure:
    """Every member's hyperparameters at each generation's end, coloured by the selection metric (metric_name).
    space: name -> log axis. Exploits: red dashed from the winner's value to the loser's new (perturbed)
    value in the next generation, the loser's discarded value crossed. lineage: (generation, member) steps
    of the best member, drawn in black."""
    names = list(space)
    metric = np.array([row[metric_name] for row in state], dtype=float)
    colours = {"c": metric, "cmap": plt.get_cmap("viridis_r").with_extremes(bad=EXPLOIT), "norm": _metric_norm(metric)}
    columns = min(len(names), 3)
    rows = math.ceil(len(names) / columns)
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(rows, columns, figsize=(4.3 * columns, 3.0 * rows), squeeze=False)
        for ax, name in zip(axes.flat, names):
            scatter = _hyperparameter_panel(ax, name, state, exploits, lineage, colours)
            if space[name] and min(row[name] for row in state) > 0:
                ax.set_yscale("log")
        for ax in axes.flat[len(names) :]:
            ax.axis("off")
        figure.tight_layout(rect=(0, 0.06, 0.92, 1))
        bar = figure.colorbar(scatter, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02)
        bar.set_label(metric_name)
        handles = [
            Line2D([], [], color="#c8c8c8", lw=1),
            Line2D([], [], color=LINEAGE, lw=2.2),
            Line2D([], [], ls="--", color=EXPLOIT, lw=1),
            Line2D([], [], ls="", marker="x", color=EXPLOIT, mew=1.5),
        ]
        labels = [
            "a member across generations",
            "the best member's lineage",
            "exploit: winner's value → loser's new value",
            "the loser's discarded value",
        ]
        figure.legend(handles, labels, loc="lower center", ncol=4, bbox_to_anchor=(0.46, 0.0))
    return figure


def _hyperparameter_panel(
    ax, name: str, state: Sequence[dict], exploits: Sequence[dict], lineage: Sequence[tuple[int, int]], colours: dict
):
    """One hyperparameter's panel: members' paths, exploits, the best lineage, the coloured values."""
    generations = sorted({int(row["generation"]) for row in state})
    value = {(int(row["generation"]), int(row["member"])): row for row in state}
    for member in sorted({int(row["member"]) for row in state}):
        points = [(g, value[g, member][name]) for g in generations if (g, member) in value]
        ax.plot(*zip(*points), color="#c8c8c8", lw=0.8, zorder=1)
    for row in exploits:
        g, winner = int(row["generation"]), int(row["winner"])
        if (g, winner) in value and f"new_{name}" in row:
            ax.plot([g, g + 1], [value[g, winner][name], row[f"new_{name}"]], "--", color=EXPLOIT, lw=0.9, zorder=2)
            ax.plot(g, row[f"old_{name}"], "x", color=EXPLOIT, ms=6, mew=1.5, zorder=4)
    path = [(g, value[g, m][name]) for g, m in lineage if (g, m) in value]
    if path:
        ax.plot(*zip(*path), color=LINEAGE, lw=2.2, zorder=3)
    scatter = ax.scatter(
        [row["generation"] for row in state],
        [row[name] for row in state],
        s=28,
        edgecolors="white",
        linewidths=0.5,
        zorder=5,
        **colours,
    )
    ax.set_title(name)
    ax.set_xlabel("generation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return scatter


def generations(state: Sequence[dict], lineage: Sequence[tuple[int, int]], metric_name: str) -> Figure:
    """The selection metric (metric_name) of every member at each generation's end; the best member's lineage in
    black."""
    members = sorted({int(row["member"]) for row in state})
    colors = member_colors(len(members))
    metric = {(int(row["generation"]), int(row["member"])): row[metric_name] for row in state}
    with plt.rc_context(STYLE):
        figure, ax = plt.subplots(figsize=(7.5, 3.4))
        for m, member in enumerate(members):
            points = sorted((g, v) for (g, mm), v in metric.items() if mm == member)
            ax.scatter(*zip(*points), color=colors[m], s=22, label=f"member {member}", zorder=3)
        best = [
            (g, np.nanmin([v for (gg, _), v in metric.items() if gg == g] or [math.nan]))
            for g in sorted({g for g, _ in metric})
        ]
        ax.plot(*zip(*best), color="#888888", lw=1, ls=":", label="best of the generation")
        ax.plot(
            *zip(*[(g, metric[g, m]) for g, m in lineage]),
            color=LINEAGE,
            lw=2.2,
            label="best member's lineage",
            zorder=4,
        )
        ax.set_xlabel("generation")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric_name)
        ax.set_title("Selection metric by generation")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 if len(members) <= 12 else 2)
        figure.tight_layout()
    return figure


def rates_vs_spikes(
    spikes: np.ndarray,
    rates: np.ndarray,
    truth: np.ndarray | None,
    trials: Sequence[int],
    neurons: Sequence[int],
    titles: Sequence[str],
) -> Figure:
    """Single-trial inferred rates of a few neurons against smoothed spikes (and the true rates)."""
    smoothed = smooth_spikes(spikes)
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(
            len(neurons), len(trials), figsize=(3.6 * len(trials), 1.9 * len(neurons)), sharex=True, squeeze=False
        )
        bins = np.arange(spikes.shape[1])
        for r, neuron in enumerate(neurons):
            for c, trial in enumerate(trials):
                ax = axes[r, c]
                ax.plot(bins, smoothed[trial, :, neuron], color=SPIKES, lw=1.2, label="smoothed spikes")
                if truth is not None:
                    ax.plot(bins, truth[trial, :, neuron], "--", color=TRUTH, lw=1.2, label="true rate")
                ax.plot(bins, rates[trial, :, neuron], color=INFERRED, lw=1.6, label="inferred rate")
                if r == 0:
                    ax.set_title(titles[c])
                if c == 0:
                    ax.set_ylabel(f"neuron {neuron}\nspikes/bin")
                if r == len(neurons) - 1:
                    ax.set_xlabel("time bin")
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        figure.tight_layout(rect=(0, 0.03, 1, 1))
        figure.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=3)
    return figure


def psths(
    spikes: np.ndarray,
    rates: np.ndarray,
    truth: np.ndarray | None,
    conditions: np.ndarray,
    neurons: Sequence[int],
    shown: Sequence[int],
) -> Figure:
    """Trial-averaged rates per condition: inferred (solid) against the true rates or, without them, the
    smoothed spikes (dashed)."""
    reference = truth if truth is not None else smooth_spikes(spikes)
    colors = member_colors(len(shown))
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(1, len(neurons), figsize=(3.6 * len(neurons), 3.0), squeeze=False)
        bins = np.arange(spikes.shape[1])
        for ax, neuron in zip(axes[0], neurons):
            for color, condition in zip(colors, shown):
                trials = conditions == condition
                ax.plot(bins, reference[trials, :, neuron].mean(0), "--", color=color, lw=1.0, alpha=0.9)
                ax.plot(bins, rates[trials, :, neuron].mean(0), color=color, lw=1.6)
            ax.set_title(f"neuron {neuron}")
            ax.set_xlabel("time bin")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0, 0].set_ylabel("spikes/bin")
        handles = [Line2D([], [], color=c, lw=2) for c in colors] + [
            Line2D([], [], color=TRUTH, lw=1.6),
            Line2D([], [], color=TRUTH, ls="--", lw=1),
        ]
        labels = [f"condition {condition}" for condition in shown] + [
            "inferred",
            "true rate" if truth is not None else "smoothed spikes",
        ]
        figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 10), bbox_to_anchor=(0.5, -0.1))
        figure.tight_layout()
    return figure


def latent_pcs(factors: np.ndarray, conditions: np.ndarray | None, max_trajectories: int = 20) -> Figure:
    """Factors projected on their top 3 principal components: condition averages (or single trials) in 3D,
    and each component over time."""
    n, steps, dims = factors.shape
    flat = factors.reshape(-1, dims).astype(np.float64)
    mean = flat.mean(0)
    _, singular, components = np.linalg.svd(flat - mean, full_matrices=False)
    k = min(3, dims)
    explained = singular**2 / max((singular**2).sum(), 1e-12)
    projected = ((flat - mean) @ components[:k].T).reshape(n, steps, k)
    if conditions is not None:
        labels = sorted(set(conditions.tolist()))[:max_trajectories]
        curves = [projected[conditions == c].mean(0) for c in labels]
        names = [f"condition {c}" for c in labels]
    else:
        curves = list(projected[:max_trajectories])
        names = [f"trial {i}" for i in range(len(curves))]
    colors = member_colors(len(curves))
    with plt.rc_context(STYLE):
        figure = plt.figure(figsize=(12, 4.6))
        grid = figure.add_gridspec(k, 2, width_ratios=(1.25, 1))
        if k == 3:
            ax = figure.add_subplot(grid[:, 0], projection="3d")
            for color, curve in zip(colors, curves):
                ax.plot(curve[:, 0], curve[:, 1], curve[:, 2], color=color, lw=1.5)
                ax.scatter(*curve[0], color=color, s=14)
            ax.set_zlabel(f"PC3 ({explained[2]:.0%})")
        else:
            ax = figure.add_subplot(grid[:, 0])
            for color, curve in zip(colors, curves):
                ax.plot(curve[:, 0], curve[:, min(1, k - 1)], color=color, lw=1.5)
        ax.set_xlabel(f"PC1 ({explained[0]:.0%})")
        ax.set_ylabel(f"PC{min(2, k)} ({explained[min(1, k - 1)]:.0%})")
        ax.set_title("Factor trajectories (dot: first bin)")
        for i in range(k):
            sub = figure.add_subplot(grid[i, 1])
            for color, curve, name in zip(colors, curves, names):
                sub.plot(curve[:, i], color=color, lw=1.2, label=name)
            sub.set_ylabel(f"PC{i + 1}")
            sub.xaxis.set_major_locator(MaxNLocator(integer=True))
            if i == k - 1:
                sub.set_xlabel("time bin")
            else:
                sub.tick_params(labelbottom=False)
        legend = len(curves) <= 12
        figure.tight_layout(rect=(0, 0, 0.87 if legend else 1, 1))
        if legend:
            figure.legend(*sub.get_legend_handles_labels(), loc="center right")
    return figure


def raster(spikes: np.ndarray, rates: np.ndarray, truth: np.ndarray | None, title: str) -> Figure:
    """One trial: the spikes as a raster (dot size: count), the inferred rates and the true rates as heat maps."""
    panels = [("inferred rates", rates)] + ([("true rates", truth)] if truth is not None else [])
    top = max(float(np.nanmax(p)) for _, p in panels) or 1.0
    with plt.rc_context({**STYLE, "axes.grid": False}):
        figure, axes = plt.subplots(1, 1 + len(panels), figsize=(4.2 * (1 + len(panels)), 3.4), sharey=True)
        times, neurons = np.nonzero(spikes)
        axes[0].scatter(
            times,
            neurons,
            s=6 + 10 * spikes[times, neurons],
            color="#222222",
            marker="|" if spikes.max() <= 1 else "o",
            linewidths=1,
        )
        axes[0].set_xlim(-0.5, spikes.shape[0] - 0.5)
        axes[0].set_ylim(spikes.shape[1] - 0.5, -0.5)
        axes[0].set_title(f"{title}: spikes")
        axes[0].set_ylabel("neuron")
        for ax, (name, values) in zip(axes[1:], panels):
            image = ax.imshow(values.T, aspect="auto", cmap="magma", vmin=0, vmax=top, interpolation="nearest")
            ax.set_title(name)
        for ax in axes:
            ax.set_xlabel("time bin")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        figure.tight_layout()
        figure.colorbar(image, ax=list(axes), fraction=0.03, pad=0.02, label="spikes/bin")
    return figure


def smooth_spikes(spikes: np.ndarray, sigma: float = SMOOTH_SIGMA_BINS) -> np.ndarray:
    """Gaussian smoothing along time (axis 1), normalised at the edges so rates keep their scale there."""
    steps = spikes.shape[1]
    radius = max(0, min(int(math.ceil(3 * sigma)), (steps - 1) // 2))  # np.convolve "same" needs kernel <= series
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    smoothed = np.apply_along_axis(np.convolve, 1, spikes.astype(np.float64), kernel, mode="same")
    weight = np.convolve(np.ones(steps), kernel, mode="same")
    return smoothed / weight[None, :, None]


def _has(rows: Sequence[dict], column: str) -> bool:
    return any(column in row and math.isfinite(row[column]) for row in rows)


def _metric_norm(metric: np.ndarray) -> Normalize:
    """Colour scale over the finite metrics, the worst 5% clipped (one diverging member would flatten it)."""
    finite = metric[np.isfinite(metric)]
    if finite.size == 0:
        return Normalize(0, 1)
    low, high = float(finite.min()), float(np.percentile(finite, 95))
    return Normalize(low, high if high > low else low + 1e-9)
