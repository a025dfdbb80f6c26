"""The report's tables: the summary (data, run or search, metrics, best hyperparameters, config) and, for a
stitched model, the sessions table; and how their numbers are written."""

import math

import numpy as np
import yaml

from ..data.hdf5 import SPLIT_NAMES
from ..evaluate.metrics import r2_score
from ..layout import OUTPUT_FILE
from ..names import HEADLINE_METRICS, MEMBER_HPARAMS, SELECT_METRICS
from .html import Section, details, grid, key_values, note, table
from .load import Results

SHOWN_METRICS = (*SELECT_METRICS, *HEADLINE_METRICS, "val_nll_heldout", "val_nll_fp")


def summary(results: Results) -> Section:
    best_row, best_epoch = best_metrics(results)
    overview, metrics = overview_rows(results, best_row, best_epoch), metric_rows(results, best_row)
    where = f"member {results.search.best_member}, last generation" if results.search else f"epoch {best_epoch}"
    blocks = [grid(key_values("Overview", overview), key_values("Data", data_rows(results)))]
    hparams = hyperparameter_rows(results, best_row)
    blocks.append(
        grid(
            table(f"Validation metrics ({where})", ["metric", "value"], metrics),
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


def overview_rows(results: Results, best_row: dict, best_epoch: int) -> list[tuple[str, str]]:
    """The Overview block: folder, kind of run, its size (generations or epochs), time, hardware, outputs."""
    overview = [("folder", str(results.folder.resolve()))]
    metric = results.select_metric
    if results.search is not None:
        s = results.search
        generations = int(s.state[-1]["generation"]) + 1
        overview += [
            ("kind", f"AutoLFADS search, {s.settings.get('backend', 'embedded')} backend"),
            ("population", str(s.settings.get("population"))),
            (
                "generations",
                f"{generations} of at most {s.settings.get('max_generations')} "
                f"({s.settings.get('epochs_per_generation')} epochs each; the first adds the KL/L2 ramps)",
            ),
            ("exploits", str(len(s.exploits))),
            ("best member", f"member {s.best_member} ({metric} {fmt(best_row.get(metric, math.nan))})"),
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
    return overview


def metric_rows(results: Results, best_row: dict) -> list[list[str]]:
    """The validation metrics shown, then R² of the inferred rates vs true rates where the data has them."""
    rows = [[name, fmt(best_row[name])] for name in SHOWN_METRICS if name in best_row and math.isfinite(best_row[name])]
    for name, split in results.inferred.items():
        if split.truth is not None:
            session = f", session {results.sessions[0].name}" if results.sessions else ""
            rows.append(
                [
                    f"R² of the posterior-sampled rates vs true rates ({name}{session})",
                    fmt(r2_score(split.truth.astype(np.float64), split.rates.astype(np.float64))),
                ]
            )
    return rows


def best_metrics(results: Results) -> tuple[dict, int]:
    """The row the summary reports: the best member's last generation, or the run's best epoch (lowest
    selection metric (train.select_metric) once the KL/L2 ramps are done, as best.ckpt is chosen)."""
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
    metric = results.select_metric
    candidates = [
        r for r in results.metrics if r["epoch"] >= ramp_end and math.isfinite(r.get(metric, math.nan))
    ] or results.metrics[-1:]
    row = min(candidates, key=lambda r: r.get(metric, math.inf))
    return row, int(row["epoch"])


def data_rows(results: Results) -> list[tuple[str, str]]:
    data, model = results.data, results.config.model
    rows = [("file", str(results.config.data.dir))]
    if results.sessions:
        rows.append(
            (
                "sessions",
                f"{len(results.sessions)} stitched (below: {results.sessions[0].name}; every session in the Sessions "
                "table)",
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
        f"One model stitched over {len(rows)} sessions (data files), each with its own read-in and read-out; its rates "
        "are in "
        f"{rows[0].output.name} and the like. R²: the session's posterior-sampled rates against its true rates, per "
        "neuron over trials x bins, "
        "averaged over its neurons (as val_r2). Bits/spike: its held-in neurons and bins against each neuron's mean "
        "count (as val_bps; Poisson data)."
    )
    return Section("sessions", "Sessions", intro, [table("", header, cells)])


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
