"""The population after a search: the rates of its best members averaged, the number chosen on validation.

The members are ranked by the search's ranking metric at the last generation (`pbt.ranking`: NaN members are
left out). Each member's rates are the posterior-sampled rates `autolfads sample` would write of its final state
(`train.output.posterior_sample`, its own random stream); the best member's are read from best_model/'s
lfads_output.h5, so an ensemble of one is the best model exactly. Every member's rates are held in memory at
once (members x trials x bins x neurons, float32). k in 1..M is the one whose averaged rates have the lowest
validation NLL over every reconstructed neuron and bin (Poisson, per observed entry, from model.loss_start_bin;
with several sessions over all of them); a tie goes to the smaller k.

Written to ENSEMBLE_DIR:
    lfads_output.h5     best_model/'s file with every <split>_rates the mean of the k members' rates; the other
                        fields (factors, latents, inputs) stay the best member's: latents of different models do
                        not average. One file per session of a stitched model, as best_model/ has.
    ensemble.yaml       the members (best first), k, and the validation NLL of each k
    members/<m>/        each chosen member as a run folder (config.yaml, last.ckpt, metrics.csv), so that
                        `autolfads sample --checkpoint ENSEMBLE_DIR --data OTHER` averages them on other trials
    config.yaml, metrics.csv   best_model/'s, so `autolfads report` finds the data (and shows the best member's
                        training)
Poisson reconstruction only (the score is the Poisson NLL of rates); otherwise no ensemble is written.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import yaml

from ..config import Config, load_saved_config
from ..data.dataset import LFADSData
from ..data.output_file import OutputFile, read_output, write_output_file
from ..errors import CheckpointError
from ..evaluate.metrics import poisson_nll
from ..files import write_atomic
from ..layout import CONFIG_FILE, LAST_CKPT, METRICS_FILE, OUTPUT_FILE
from ..train.checkpoint import load_checkpoint
from ..train.output import posterior_sample
from ..train.population_state import PopulationState
from ..train.records import RunLog
from ..train.run import load_run_data, resolve_run_config, sample
from ..train.trainer import sampling_model
from .results import EnsembleSummary, save_member_folder

ENSEMBLE_DIR = "ensemble"
ENSEMBLE_FILE = "ensemble.yaml"
MEMBERS_DIR = "members"
VALID = "valid"


def nll_per_entry(rates: Sequence[np.ndarray], counts: Sequence[np.ndarray], starts: Sequence[int]) -> float:
    """Poisson NLL per observed entry (NaN counts are missing) over every session's neurons and bins from its
    loss_start_bin: rates[s], counts[s] (trials, bins, neurons)."""
    total = sum(poisson_nll(r[:, t:], c[:, t:]) for r, c, t in zip(rates, counts, starts, strict=True))
    entries = sum(int((~np.isnan(c[:, t:])).sum()) for c, t in zip(counts, starts, strict=True))
    return total / entries


def choose_k(
    member_rates: Sequence[Sequence[np.ndarray]], counts: Sequence[np.ndarray], starts: Sequence[int]
) -> tuple[int, list[float]]:
    """member_rates[i][s]: the i-th ranked member's validation rates of session s. Returns k (1-based) and the
    validation NLL of the average of the first k members, for every k."""
    scores, running = [], None
    for k, rates in enumerate(member_rates, start=1):
        running = [r.astype(np.float64) for r in rates] if running is None else [a + r for a, r in zip(running, rates)]
        scores.append(nll_per_entry([total / k for total in running], counts, starts))
    return int(np.argmin(scores)) + 1, scores


def write_ensemble(
    workdir: Path,
    config: Config,
    data: list[LFADSData],
    order: Sequence[int],
    member_state: Callable[[int], PopulationState],
    best_outputs: Sequence[Path],
    log: Callable[[str], None],
) -> EnsembleSummary | None:
    """order: the members, best first (`pbt.ranking`); member_state(m): member m's one-member state;
    best_outputs: best_model/'s output files (one per session), whose member is order[0]."""
    if config.model.reconstruction != "poisson":
        log(
            "no ensemble: it is scored by the Poisson NLL of rates, and this model's observation model is "
            + config.model.reconstruction
        )
        return None
    best = [read_output(path) for path in best_outputs]
    if any(VALID not in output.splits for output in best):
        log("no ensemble: the data has no validation split to choose its size on")
        return None
    sessions = [config.model.session(s) for s in range(len(data))]
    counts = [session.valid.recon.numpy() for session in data]
    starts = [cfg.loss_start_bin for cfg in sessions]
    rates = [_file_rates(best)] + [_member_rates(config, data, member_state(m)) for m in order[1:]]
    k, scores = choose_k([member[VALID] for member in rates], counts, starts)
    chosen = list(order[:k])
    folder = workdir / ENSEMBLE_DIR
    for output, path, members in zip(best, best_outputs, _by_session(rates[:k]), strict=True):
        _write_averaged(folder / path.name, output, members, chosen)
    for m in chosen:
        state = member_state(m)
        save_member_folder(folder / MEMBERS_DIR / str(m), config, state.hparams[0], state)
    _write_record(folder, chosen, scores, best_outputs[0].parent)
    log(
        f"wrote {folder}: rates averaged over the best {k} of {len(order)} members ({', '.join(map(str, chosen))}); "
        f"validation NLL {scores[k - 1]:.5f} (best member alone {scores[0]:.5f})"
    )
    return EnsembleSummary(folder, chosen, scores[k - 1], scores[0])


def mean_rates(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The members' rates averaged (in float64), stored as float32 as every output's rates are."""
    return np.mean(np.stack([part.astype(np.float64) for part in parts]), axis=0).astype(np.float32)


def _file_rates(outputs: list[OutputFile]) -> dict[str, list[np.ndarray]]:
    """{split: [rates of each session]} of best_model's output files."""
    return {split: [output.field(split, "rates") for output in outputs] for split in outputs[0].splits}


def _by_session(rates: Sequence[dict[str, list[np.ndarray]]]) -> list[list[dict[str, np.ndarray]]]:
    """[member][{split: [session]}] -> [session][member][{split: rates}]."""
    sessions = len(next(iter(rates[0].values())))
    return [[{split: member[split][s] for split in member} for member in rates] for s in range(sessions)]


def _write_averaged(path: Path, output: OutputFile, members: Sequence[dict[str, np.ndarray]], chosen: list) -> None:
    """`output` (one session's file) with each split's rates the members' mean, written to path."""
    splits = {
        split: {**fields, "rates": mean_rates([member[split] for member in members])}
        for split, fields in output.splits.items()
    }
    write_output_file(path, splits, {**output.attrs, "ensemble_members": chosen})


def sample_ensemble(
    folder: Path, data_path: Path | None = None, output: Path | None = None, num_samples: int | None = None
) -> list[Path]:
    """`autolfads sample` of an ensemble folder: each chosen member (members/<m>/) sampled on the data, their
    rates averaged; the other fields are the first (best) member's, as in the search's own ensemble file."""
    record = yaml.safe_load((folder / ENSEMBLE_FILE).read_text())
    members = [folder / MEMBERS_DIR / str(m) for m in record["members"]]
    missing = [str(m) for m in members if not (m / LAST_CKPT).is_file()]
    if missing:
        raise CheckpointError(
            f"{folder}: the members' checkpoints are not there ({', '.join(missing)}); an ensemble written before "
            "they were kept samples only on the search's data: its lfads_output.h5"
        )
    log = RunLog(folder / "sample.log")
    config, data = load_run_data(load_saved_config(members[0] / CONFIG_FILE), data_path)
    paths = sample(
        members[0], output=output or folder / OUTPUT_FILE, num_samples=num_samples, data=data, config=config, log=log
    )
    best = [read_output(path) for path in paths]
    rates = [_file_rates(best)]
    for member in members[1:]:  # the data read once: the members of one search read it alike
        saved = load_saved_config(member / CONFIG_FILE)
        member_config = resolve_run_config(saved, data, data_path or saved.data.dir)
        state = PopulationState.from_dict(load_checkpoint(member / LAST_CKPT))
        rates.append(_member_rates(member_config, data, state, num_samples))
    for path, output, session_rates in zip(paths, best, _by_session(rates), strict=True):
        _write_averaged(path, output, session_rates, record["members"])
    log(f"averaged the rates of {len(members)} members ({', '.join(map(str, record['members']))}) into {paths[0]}")
    return paths


def _member_rates(
    config: Config, data: list[LFADSData], state: PopulationState, num_samples: int | None = None
) -> dict[str, list[np.ndarray]]:
    """One member's posterior-sampled rates, {split: [rates of each session]}: the rates `autolfads sample` of
    its state would write (the same random stream, session by session, split by split)."""
    model = sampling_model(config, data, state)
    samples = config.train.num_samples if num_samples is None else num_samples
    rates: dict[str, list[np.ndarray]] = {}
    for s, session in enumerate(data):
        for split in session.splits:
            sampled = posterior_sample(model, split, samples, session=s)["rates"]
            rates.setdefault(split.name, []).append(sampled[0])
    return rates


def _write_record(folder: Path, members: list[int], scores: list[float], best_dir: Path) -> None:
    record = {
        "members": members,
        "k": len(members),
        "chosen_by": "validation NLL of the averaged posterior-sampled rates: every neuron and bin, Poisson, per entry",
        "valid_nll_by_k": {k: float(score) for k, score in enumerate(scores, start=1)},
        "best_model": str(best_dir),
    }
    try:
        write_atomic(folder / ENSEMBLE_FILE, yaml.safe_dump(record, sort_keys=False))
        for name in (CONFIG_FILE, METRICS_FILE):
            write_atomic(folder / name, (best_dir / name).read_bytes())
    except OSError as err:
        raise CheckpointError(f"cannot write the ensemble's files in {folder}: {err}") from None
