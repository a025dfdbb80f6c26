"""Posterior sampling: what users want from a trained model, written to `lfads_output.h5`.

For each trial the encoder runs once; the initial-condition and controller-output posteriors are then
sampled `num_samples` times (dropout off) and every decoder quantity is averaged over the samples
(rates are averaged, not log-rates). Work goes in chunks of at most `max_rows` decoded rows, and
sums accumulate on the CPU, so memory stays bounded whatever the data size.
"""

from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..data.dataset import LFADSData, Split
from ..data.identity import read_identity
from ..data.output_file import INDS, write_output_file
from ..model import LFADS

SAMPLED_FIELDS = ("rates", "factors", "gen_states", "gen_inputs", "gen_init", "con_states", "co_means", "co_stds")
OUTPUT_FIELDS = SAMPLED_FIELDS + ("ic_mean", "ic_std")


@torch.no_grad()
def posterior_sample(
    model: LFADS, split: Split, num_samples: int = 50, max_rows: int = 512, session: int = 0
) -> dict[str, np.ndarray]:
    """Posterior means of every output field for one split of one session: arrays (P, n_trials, ...)."""
    model.eval()
    device = model.rng.device
    no_dropout = torch.zeros(model.population_size, device=device)
    trials_per_chunk = max(1, max_rows // num_samples)
    samples_per_pass = min(num_samples, max_rows)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_FIELDS}
    for indices in torch.arange(split.n_trials).split(trials_per_chunk):
        encod = split.encod[indices].to(device)
        ext = split.ext_input[indices].to(device) if split.ext_input is not None else None
        ic_mean, ic_std, ci = model.encode(encod, no_dropout, session)
        sums: dict[str, np.ndarray] = {}
        for start in range(0, num_samples, samples_per_pass):
            samples = min(samples_per_pass, num_samples - start)

            def tile(t: torch.Tensor | None, dim: int = 1, samples: int = samples) -> torch.Tensor | None:
                return None if t is None else t.repeat_interleave(samples, dim=dim)

            out = model.decode(
                tile(ic_mean), tile(ic_std), tile(ci), tile(ext, 0), no_dropout, sample=True, session=session
            )
            values = {"rates": out.rates, "gen_init": out.states.gen_init}
            values.update({name: getattr(out.states, name) for name in SAMPLED_FIELDS if name not in values})
            for name, value in values.items():
                members, rows = value.shape[:2]
                total = value.reshape(members, rows // samples, samples, *value.shape[2:]).sum(2)
                total = total.double().cpu().numpy()
                sums[name] = sums[name] + total if name in sums else total
        for name, total in sums.items():
            chunks[name].append((total / num_samples).astype(np.float32))
        chunks["ic_mean"].append(ic_mean.float().cpu().numpy())
        chunks["ic_std"].append(ic_std.float().cpu().numpy())
    return {name: np.concatenate(parts, axis=1) for name, parts in chunks.items()}


def output_paths(path: Path, sessions: list[str]) -> list[Path]:
    """`path` for one session (or none named); for several, one file per session named after its data file's
    stem: lfads_output.h5 -> lfads_output_<session>.h5."""
    if len(sessions) <= 1:
        return [path]
    return [path.with_name(f"{path.stem}_{session}{path.suffix}") for session in sessions]


def write_output(
    path: Path,
    model: LFADS,
    data: LFADSData,
    num_samples: int,
    member: int = 0,
    attrs: dict | None = None,
    session: int = 0,
) -> Path:
    """Sample every split of `data` (the model's session `session`) and write `{split}_{field}` and
    `{split}_inds` atomically."""
    splits = {}
    for split in data.splits:
        sampled = posterior_sample(model, split, num_samples, session=session)
        splits[split.name] = {**{name: value[member] for name, value in sampled.items()}, INDS: np.asarray(split.inds)}
    header = {
        "autolfads_version": __version__,
        "num_samples": num_samples,
        "data_file": str(Path(data.path).resolve()),
        "session": data.name,
    }
    if Path(data.path).is_file():  # data built in memory has no file, so no recorded session to carry
        header |= read_identity(data.path)  # the source session's identity, which export-nwb checks
    return write_output_file(path, splits, {**header, **(attrs or {})})
