"""What a report holds, section by section, and writing it (the summary and sessions tables are summary.py's).

    summary     data shape, run or search overview, metrics (R^2 against the true rates when known),
                best hyperparameters, wall time, hardware, the full config
    sessions    every session's neurons, trials, R^2 and bits/spike                   (stitched models only)
    training    per-epoch curves of every member
    search      hyperparameters per generation, coloured by metric, exploits marked   (searches only)
    lineage     the best member's ancestry through the exploits                        (searches only)
    rates       inferred rates of a few neurons and trials vs smoothed spikes and true rates
    psth        trial averages per condition                                           (data with conditions)
    latents     factors on their top 3 principal components
    raster      one trial: spikes, inferred and true rates
(the rates to raster figures show a stitched model's first session)
"""

import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ReportError
from ..files import check_distinct, write_atomic
from ..layout import (
    CONFIG_FILE,
    EXPLOITS_FILE,
    METRICS_FILE,
    OUTPUT_FILE,
    REPORT_FILE,
    RUN_LOG,
    SEARCH_LOG,
    SETTINGS_FILE,
    SPACE_FILE,
    STATE_FILE,
)
from ..train.output import output_paths
from . import figures
from .html import Section, image, note, page, table
from .load import Inferred, Results, load_results
from .summary import fmt, sessions, summary

N_NEURONS, N_TRIALS, N_CONDITIONS = 4, 3, 8  # how much of the data the rate figures show


def write_report(folder: str | Path, output: str | Path | None = None) -> Path:
    """Build the report of a run folder or search workdir; written atomically to `output`
    (default FOLDER/report.html). Returns its path."""
    results = load_results(folder)
    path = Path(output) if output is not None else results.folder / REPORT_FILE
    check_distinct({"-o": path}, {f"{file.name} of RUN_DIR": file for file in files_read(results)})
    kind = "AutoLFADS search" if results.kind == "search" else "LFADS training run"
    host = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    text = page(
        f"{kind}: {results.folder.resolve().name}",
        str(results.folder.resolve()),
        sections(results),
        f"autolfads {__version__} · report made {time.strftime('%Y-%m-%d %H:%M')} on {host}",
    )
    try:
        return write_atomic(path, text, mkdir=True)
    except OSError as err:
        raise ReportError(f"cannot write the report {path}: {err}") from None


def files_read(results: Results) -> list[Path]:
    """The files a report is made from: the folder's tables, logs and configs, the output and the data."""
    tables = (CONFIG_FILE, METRICS_FILE, RUN_LOG, SETTINGS_FILE, SPACE_FILE, STATE_FILE, EXPLOITS_FILE, SEARCH_LOG)
    names = [dims.name for dims in results.config.model.sessions]
    files = [results.folder / name for name in tables] + [results.model_dir / CONFIG_FILE]
    files += output_paths(results.model_dir / OUTPUT_FILE, names)
    if results.data is not None:
        files.append(Path(results.data.path))
    return [file for file in files if file.is_file()]


def report_at_end(folder: str | Path, log: Callable[[str], None]) -> Path | None:
    """The report the command line writes when `train` or `search` finishes. A failure is logged, not raised:
    the results are safe on disk, and `autolfads report FOLDER` makes the report again."""
    try:
        path = write_report(folder)
    except Exception as err:  # noqa: BLE001 - a figure problem must not fail a finished run
        log(f"report not written ({type(err).__name__}: {err}); retry with `autolfads report {folder}`")
        return None
    log(f"wrote report {path}")
    return path


def sections(results: Results) -> list[Section]:
    shown = [summary(results)] + ([sessions(results)] if results.sessions else []) + [training(results)]
    if results.search is not None:
        shown += [search_hyperparameters(results), lineage(results)]
    split = results.inferred.get("valid") or next(iter(results.inferred.values()), None)
    if split is None:
        missing = note("Left out: there are no inferred rates to show (the summary says why).")
        inferred = [
            Section(id, title, blocks=[missing])
            for id, title in (
                ("rates", "Inferred rates"),
                ("psth", "PSTHs by condition"),
                ("latents", "Latent factors"),
                ("raster", "Single trial"),
            )
        ]
    else:
        neurons = chosen_neurons(list(results.inferred.values()))
        inferred = [rates(results, split, neurons), psth(results, neurons), latents(results), raster(results, split)]
    if results.sessions:  # a stitched model: the figures show its first session
        for section in inferred:
            section.title += f" (session {results.sessions[0].name})"
            section.intro = (
                f"Session {results.sessions[0].name}, the first of the model's {len(results.sessions)}; "
                "the Sessions table scores every session."
            )
    return shown + inferred


# ------------------------------------------------------------------------------------------------ training and search
def training(results: Results) -> Section:
    if results.search is not None:
        ends = [int(row["epoch"]) for row in results.search.state if int(row["member"]) == 0]
        caption = (
            "Per-epoch metrics of every member (metrics.csv; one colour per member, train solid, validation dashed, "
            "grey lines: "
            "generation ends). A member's curve jumps where it lost (an exploit) and continued from the winner's state."
        )
    else:
        ends = []
        caption = (
            "Per-epoch metrics of the run (metrics.csv), one colour per quantity; "
            "log axes where a quantity spans decades."
        )
    return Section(
        "training",
        "Training curves",
        "Loss, held-in and held-out NLL, the smoothed validation NLLs (train.select_metric selects the model), KL and "
        "L2 terms and the learning rate.",
        [
            image(
                figures.png(figures.training_curves(results.metrics, ends)), "fig-training", "training curves", caption
            )
        ],
    )


def search_hyperparameters(results: Results) -> Section:
    s = results.search
    space = {name: p.log for name, p in s.space.params.items()}
    steps = [(step.generation, step.member) for step in s.lineage]
    caption = (
        "Every member's hyperparameters at the end of each generation (log axes for log-range hyperparameters), "
        f"coloured by {results.select_metric} at the generation's end (yellow: lower, better; red: NaN). Red dashed: "
        "an exploit, from the winner's value to the loser's perturbed value in the next generation; red cross: the "
        "loser's discarded value. Black: the best member's lineage."
    )
    figure = figures.hyperparameters(s.state, s.exploits, space, steps, results.select_metric)
    return Section(
        "search",
        "Hyperparameters by generation",
        blocks=[image(figures.png(figure), "fig-hyperparameters", "hyperparameters per generation", caption)],
    )


def lineage(results: Results) -> Section:
    s = results.search
    names = list(s.space.params)
    rows = []
    for step in s.lineage:
        origin = (
            f"copied member {step.inherited_from}"
            if step.inherited_from is not None
            else ("initial sample" if step.generation == 0 else "continued its own")
        )
        rows.append(
            [
                str(step.generation),
                str(step.member),
                origin,
                fmt(step.metric),
                *(fmt(step.hparams.get(n, math.nan)) for n in names),
            ]
        )
    figure = figures.generations(s.state, [(step.generation, step.member) for step in s.lineage], results.select_metric)
    return Section(
        "lineage",
        "Best member's lineage",
        f"Member {s.best_member} of the last generation, traced back through exploits.csv: after an exploit a "
        "losing member continues from the winner's weights and optimizer state, so its past is the winner's.",
        [
            image(
                figures.png(figure),
                "fig-generations",
                "metric by generation",
                f"{results.select_metric} of every member at each generation's end; black: the best member's lineage.",
            ),
            table("", ["generation", "member", "state before the generation", results.select_metric, *names], rows),
        ],
    )


# ----------------------------------------------------------------------------------------- what the model inferred
def rates(results: Results, split: Inferred, neurons: list[int]) -> Section:
    trials, titles = chosen_trials(split)
    truth = " and the true rates (dashed)" if split.truth is not None else ""
    figure = figures.rates_vs_spikes(split.spikes, split.rates, split.truth, trials, neurons, titles)
    caption = (
        f"Inferred rates (blue, {results.output_attrs.get('num_samples', '?')}-sample posterior mean) of the "
        f"{len(neurons)} most active neurons "
        f"on {len(trials)} {split.split} trials, against the spikes smoothed with a Gaussian of "
        f"{figures.SMOOTH_SIGMA_BINS:g} bins (grey){truth}."
    )
    return Section(
        "rates", "Inferred rates", blocks=[image(figures.png(figure), "fig-rates", "inferred rates vs spikes", caption)]
    )


def psth(results: Results, neurons: list[int]) -> Section:
    splits = [s for s in results.inferred.values() if s.conditions is not None]
    if not splits:
        return Section(
            "psth",
            "PSTHs by condition",
            blocks=[note("The data file has no conditions ({split}_cond_idx), so there are no PSTHs.")],
        )
    spikes, rates_, conditions = (
        np.concatenate([getattr(s, name) for s in splits]) for name in ("spikes", "rates", "conditions")
    )
    truth = np.concatenate([s.truth for s in splits]) if all(s.truth is not None for s in splits) else None
    shown = sorted(set(conditions.tolist()))[:N_CONDITIONS]
    reference = "the true rates" if truth is not None else "the smoothed spikes"
    figure = figures.psths(spikes, rates_, truth, conditions, neurons, shown)
    caption = (
        f"Trial-averaged inferred rates (solid) against {reference} (dashed), {len(shown)} of "
        f"{len(set(conditions.tolist()))} conditions, "
        f"over the {', '.join(s.split for s in splits)} trials."
    )
    return Section(
        "psth", "PSTHs by condition", blocks=[image(figures.png(figure), "fig-psth", "PSTHs per condition", caption)]
    )


def latents(results: Results) -> Section:
    splits = list(results.inferred.values())
    factors = np.concatenate([s.factors for s in splits])
    conditions = (
        np.concatenate([s.conditions for s in splits]) if all(s.conditions is not None for s in splits) else None
    )
    figure = figures.latent_pcs(factors, conditions)
    what = "condition averages" if conditions is not None else "single trials"
    caption = (
        f"The {factors.shape[2]} latent factors of every trial projected on their top 3 principal components "
        f"({what}; variance explained in the axis labels)."
    )
    return Section(
        "latents",
        "Latent factors",
        blocks=[image(figures.png(figure), "fig-latents", "latent factors on their top principal components", caption)],
    )


def raster(results: Results, split: Inferred) -> Section:
    trial = chosen_trials(split)[0][0]
    condition = f" (condition {split.conditions[trial]})" if split.conditions is not None else ""
    truth = split.truth[trial] if split.truth is not None else None
    figure = figures.raster(split.spikes[trial], split.rates[trial], truth, f"{split.split} trial {trial}{condition}")
    caption = (
        "One trial: the spike raster (dot size: spikes in the bin) beside the inferred rates"
        + (" and the true rates" if truth is not None else "")
        + ", every neuron, same colour scale."
    )
    return Section(
        "raster",
        "Single trial: spikes and rates",
        blocks=[image(figures.png(figure), "fig-raster", "single-trial raster and rates", caption)],
    )


def chosen_trials(split: Inferred) -> tuple[list[int], list[str]]:
    """One trial from each of the first few conditions (or the first few trials)."""
    if split.conditions is None:
        trials = list(range(min(N_TRIALS, len(split.spikes))))
        return trials, [f"{split.split} trial {t}" for t in trials]
    trials = [int(np.flatnonzero(split.conditions == c)[0]) for c in sorted(set(split.conditions.tolist()))[:N_TRIALS]]
    return trials, [f"{split.split} trial {t} (condition {split.conditions[t]})" for t in trials]


def chosen_neurons(splits: list[Inferred]) -> list[int]:
    """The most active neurons over every trial, in their own order."""
    activity = np.concatenate([split.spikes for split in splits]).mean((0, 1))
    return sorted(np.argsort(-activity, kind="stable")[:N_NEURONS].tolist())
