"""What a report holds, section by section, and writing it.

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
import yaml

from .. import __version__
from ..data.hdf5 import SPLIT_NAMES
from ..errors import ReportError
from ..evaluate.metrics import r2_score
from ..files import write_atomic
from ..layout import OUTPUT_FILE, REPORT_FILE
from ..names import HEADLINE_METRICS, MEMBER_HPARAMS, METRIC
from . import figures
from .html import Section, details, grid, image, key_values, note, page, table
from .load import Inferred, Results, load_results

SHOWN_METRICS = (METRIC, *HEADLINE_METRICS, "val_nll_heldout", "val_nll_fp")
N_NEURONS, N_TRIALS, N_CONDITIONS = 4, 3, 8  # how much of the data the rate figures show


def write_report(folder: str | Path, output: str | Path | None = None) -> Path:
    """Build the report of a run folder or search workdir; written atomically to `output`
    (default FOLDER/report.html). Returns its path."""
    results = load_results(folder)
    path = Path(output) if output is not None else results.folder / REPORT_FILE
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


def report_at_end(folder: str | Path, log: Callable[[str], None]) -> Path | None:
    """The report `train` and `search` write when they finish. A failure is logged, not raised: the results
    are safe on disk, and `autolfads report FOLDER` makes the report again."""
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
            section.intro = f"Session {results.sessions[0].name}, the first of the model's {len(results.sessions)}; the Sessions table scores every session."
    return shown + inferred


# ------------------------------------------------------------------------------------------------ summary
def summary(results: Results) -> Section:
    best_row, best_epoch = best_metrics(results)
    overview = [("folder", str(results.folder.resolve()))]
    if results.search is not None:
        s = results.search
        generations = int(s.state[-1]["generation"]) + 1
        overview += [
            ("kind", f"AutoLFADS search, {s.settings.get('backend', 'embedded')} backend"),
            ("population", str(s.settings.get("population"))),
            (
                "generations",
                f"{generations} of at most {s.settings.get('max_generations')} ({s.settings.get('epochs_per_generation')} epochs each; the first adds the KL/L2 ramps)",
            ),
            ("exploits", str(len(s.exploits))),
            ("best member", f"member {s.best_member} ({METRIC} {fmt(best_row.get(METRIC, math.nan))})"),
        ]
    else:
        overview += [("kind", "LFADS training run"), ("epochs", f"{len(results.metrics)} (best: epoch {best_epoch})")]
    overview += [
        ("wall time", duration(results.wall_time_s)),
        ("hardware", results.hardware),
    ]
    if results.output_attrs:
        attrs = results.output_attrs
        output = results.sessions[0].output if results.sessions else results.model_dir / OUTPUT_FILE
        overview.append(
            (
                "inferred rates",
                f"{output} ({attrs.get('num_samples', '?')} posterior samples, epoch {attrs.get('epoch', '?')})",
            )
        )

    metric_rows = [
        [name, fmt(best_row[name])] for name in SHOWN_METRICS if name in best_row and math.isfinite(best_row[name])
    ]
    for name, split in results.inferred.items():
        if split.truth is not None:
            session = f", session {results.sessions[0].name}" if results.sessions else ""
            metric_rows.append(
                [
                    f"R² of the posterior-sampled rates vs true rates ({name}{session})",
                    fmt(r2_score(split.truth.astype(np.float64), split.rates.astype(np.float64))),
                ]
            )
    where = f"member {results.search.best_member}, last generation" if results.search else f"epoch {best_epoch}"
    blocks = [grid(key_values("Overview", overview), key_values("Data", data_rows(results)))]
    hparams = hyperparameter_rows(results, best_row)
    blocks.append(
        grid(
            table(f"Validation metrics ({where})", ["metric", "value"], metric_rows),
            table(
                "Hyperparameters" + (" (best member)" if results.search else ""), ["name", "value", "searched"], hparams
            ),
        )
    )
    blocks += [note(text) for text in results.notes]
    blocks.append(
        details("Full configuration (config.yaml)", yaml.safe_dump(results.config.to_dict(), sort_keys=False))
    )
    return Section("summary", "Summary", blocks=blocks)


def best_metrics(results: Results) -> tuple[dict, int]:
    """The row the summary reports: the best member's last generation, or the run's best epoch (lowest
    smoothed validation NLL once the KL/L2 ramps are done, as best.ckpt is chosen)."""
    if results.search is not None:
        last = results.search.state[-1]["generation"]
        row = next(
            r
            for r in results.search.state
            if r["generation"] == last and int(r["member"]) == results.search.best_member
        )
        return row, int(row["epoch"]) - 1
    train = results.config.train
    ramp_end = max(train.kl_start_epoch + train.kl_increase_epoch, train.l2_start_epoch + train.l2_increase_epoch)
    candidates = [
        r for r in results.metrics if r["epoch"] >= ramp_end and math.isfinite(r.get(METRIC, math.nan))
    ] or results.metrics[-1:]
    row = min(candidates, key=lambda r: r.get(METRIC, math.inf))
    return row, int(row["epoch"])


def data_rows(results: Results) -> list[tuple[str, str]]:
    data, model = results.data, results.config.model
    rows = [("file", str(results.config.data.dir))]
    if results.sessions:
        rows.append(
            (
                "sessions",
                f"{len(results.sessions)} stitched (below: {results.sessions[0].name}; every session in the Sessions table)",
            )
        )
    if data is None:
        neurons = f" x {model.data_dim} neurons" if model.data_dim is not None else ""  # a stitched model: per session
        return rows + [("shape", f"{model.seq_len} bins{neurons} (from config.yaml; the file was not read)")]
    splits = ", ".join(f"{split.n_trials} {split.name}" for split in data.splits)
    rows += [
        ("trials", splits),
        (
            "time bins",
            f"{data.recon_seq_len}"
            + (f" ({data.encod_seq_len} encoded + {data.fp_len} forward-prediction)" if data.fp_len else ""),
        ),
        (
            "neurons",
            f"{data.recon_dim}" + (f" ({data.encod_dim} held-in + {data.cs_dim} held-out)" if data.cs_dim else ""),
        ),
        ("layout", data.layout + (f", external inputs: {data.ext_input_dim}" if data.ext_input_dim else "")),
    ]
    conditions = [split.conditions for split in results.inferred.values() if split.conditions is not None]
    if conditions:
        rows.append(("conditions", str(len(np.unique(np.concatenate(conditions))))))
    rows.append(("true rates", "yes" if data.train.truth is not None else "no"))
    return rows


def hyperparameter_rows(results: Results, best_row: dict) -> list[list[str]]:
    searched = results.search.space.params if results.search else {}
    values = {name: best_row[name] for name in MEMBER_HPARAMS if name in best_row} or {
        name: float(getattr(getattr(results.config, section), name)) for name, section in MEMBER_HPARAMS.items()
    }
    rows = []
    for name, value in values.items():
        space = searched.get(name)
        rows.append(
            [name, fmt(value), f"{fmt(space.low)} … {fmt(space.high)}{' (log)' if space.log else ''}" if space else "—"]
        )
    return rows


def sessions(results: Results) -> Section:
    rows = results.sessions
    splits = [name for name in SPLIT_NAMES if any(name in row.trials for row in rows)]
    scores = [(f"R² {name}", "r2", name) for name in splits if any(name in row.r2 for row in rows)]
    scores += [(f"bits/spike {name}", "bps", name) for name in splits if any(name in row.bps for row in rows)]
    header = ["session", "neurons", *(f"{name} trials" for name in splits), *(title for title, _, _ in scores)]
    cells = [
        [
            row.name,
            f"{row.heldin + row.heldout}"
            + (f" ({row.heldin} held-in + {row.heldout} held-out)" if row.heldout else ""),
            *(str(row.trials[name]) if name in row.trials else "—" for name in splits),
            *(fmt(getattr(row, kind).get(name, math.nan)) for _, kind, name in scores),
        ]
        for row in rows
    ]
    intro = (
        f"One model stitched over {len(rows)} sessions (data files), each with its own read-in and read-out; its rates are in "
        f"{rows[0].output.name} and the like. R²: the session's posterior-sampled rates against its true rates, per neuron over trials x bins, "
        "averaged over its neurons (as val_r2). Bits/spike: its held-in neurons and bins against each neuron's mean count (as val_bps; Poisson data)."
    )
    return Section("sessions", "Sessions", intro, [table("", header, cells)])


# ------------------------------------------------------------------------------------------------ training and search
def training(results: Results) -> Section:
    if results.search is not None:
        ends = [int(row["epoch"]) for row in results.search.state if int(row["member"]) == 0]
        caption = (
            "Per-epoch metrics of every member (metrics.csv; one colour per member, train solid, validation dashed, grey lines: "
            "generation ends). A member's curve jumps where it lost a tournament and continued from the winner's state."
        )
    else:
        ends = []
        caption = "Per-epoch metrics of the run (metrics.csv), one colour per quantity; log axes where a quantity spans decades."
    return Section(
        "training",
        "Training curves",
        "Loss, held-in and held-out NLL, the smoothed validation NLL that selects the best model, KL and L2 terms and the learning rate.",
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
        f"coloured by {METRIC} at the generation's end (yellow: lower, better; red: NaN). Red dashed: an exploit, from the winner's value to the loser's perturbed "
        "value in the next generation; red cross: the loser's discarded value. Black: the best member's lineage."
    )
    figure = figures.hyperparameters(s.state, s.exploits, space, steps)
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
    figure = figures.generations(s.state, [(step.generation, step.member) for step in s.lineage])
    return Section(
        "lineage",
        "Best member's lineage",
        f"Member {s.best_member} of the last generation, traced back through exploits.csv: after a lost tournament a member "
        "continues from the winner's weights and optimizer state, so its past is the winner's.",
        [
            image(
                figures.png(figure),
                "fig-generations",
                "metric by generation",
                f"{METRIC} of every member at each generation's end; black: the best member's lineage.",
            ),
            table("", ["generation", "member", "state before the generation", METRIC, *names], rows),
        ],
    )


# ------------------------------------------------------------------------------------------------ what the model inferred
def rates(results: Results, split: Inferred, neurons: list[int]) -> Section:
    trials, titles = chosen_trials(split)
    truth = " and the true rates (dashed)" if split.truth is not None else ""
    figure = figures.rates_vs_spikes(split.spikes, split.rates, split.truth, trials, neurons, titles)
    caption = (
        f"Inferred rates (blue, {results.output_attrs.get('num_samples', '?')}-sample posterior mean) of the {len(neurons)} most active neurons "
        f"on {len(trials)} {split.split} trials, against the spikes smoothed with a Gaussian of {figures.SMOOTH_SIGMA_BINS:g} bins (grey){truth}."
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
        f"Trial-averaged inferred rates (solid) against {reference} (dashed), {len(shown)} of {len(set(conditions.tolist()))} conditions, "
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
    caption = f"The {factors.shape[2]} latent factors of every trial projected on their top 3 principal components ({what}; variance explained in the axis labels)."
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


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    return f"{seconds:.0f} s (from the log)" if seconds < 120 else f"{seconds / 60:.1f} min (from the log)"


def fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}"
