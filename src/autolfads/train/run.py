"""A training run on disk: data in, checkpoints, logs and the output file out; resumable at any point.

The checkpoint folder holds
    config.yaml         the resolved configuration (dimensions filled in from the data)
    last.ckpt           the most recent epoch (weights, optimizer, training state, RNG, history)
    best.ckpt           the best epoch by train.select_metric, counted once the KL/L2 ramps are done
    metrics.csv         one row per epoch, rewritten atomically from the checkpoint's history
    train.log           plain-text log
    tensorboard/        TensorBoard scalars
    lfads_output.h5     posterior-sampled rates and latents, written when training is complete
                        (a stitched model writes lfads_output_<session>.h5, one per session's data file)
Running the same command again continues from last.ckpt; a kill -9 loses at most the current epoch.
"""

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config, ModelConfig, SessionDims, load_saved_config, member_hparams, save_config, saved_config
from ..data.dataset import LFADSData, load_sessions, missing_bins_note
from ..errors import CheckpointError, ConfigError, TrainingDiverged
from ..files import check_distinct
from ..layout import BEST_CKPT, CONFIG_FILE, LAST_CKPT, METRICS_FILE, OUTPUT_FILE, REPORT_FILE, RUN_LOG, TENSORBOARD_DIR
from ..names import HEADLINE_METRICS, MEMBER_HPARAMS
from ..runtime import set_torch_threads
from .checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
from .nlb_scoring import load_nlb_targets
from .output import output_paths, write_output
from .population_state import PopulationState
from .records import Progress, RunLog, TensorBoard, write_csv
from .trainer import Trainer, sampling_model


@dataclass
class TrainResult:
    checkpoint_dir: Path
    epochs: int  # epochs completed in total
    complete: bool  # stopped early or reached max_epochs
    metrics: dict[str, float]  # the last epoch's row
    best_epoch: int
    outputs: list[Path]  # lfads_output.h5, or one file per session of a stitched model; empty if none was written


def load_run_data(config: Config, data_path: str | Path | None) -> tuple[Config, list[LFADSData]]:
    """Load the data named on the command line (or in config.data) and fill the model's dimensions from it.
    A folder or glob naming several files gives several sessions, stitched into one model."""
    path = data_path or config.data.dir
    if path is None:
        raise ConfigError("no data given: pass --data PATH or set data.dir (TRAIN.DATA.DIR) in the config")
    sessions = read_sessions(config, path)
    return resolve_run_config(config, sessions, path), sessions


def resolve_run_config(config: Config, sessions: list[LFADSData], path: str | Path) -> Config:
    """The config with the model's dimensions from `sessions` (read from `path`), and that path recorded."""
    # The resolved config records the data it was fitted to, so `autolfads sample` finds it again.
    given = Path(path)
    paths = {
        "dir": str(
            sessions[0].path.resolve()
            if len(sessions) == 1
            else given.resolve()
            if given.exists()
            else Path.cwd() / given
        )
    }
    if config.data.nlb_targets is not None:
        paths["nlb_targets"] = str(Path(config.data.nlb_targets).resolve())
    data_config = config.data.model_copy(update=paths)
    return config.model_copy(update={"model": resolve_model_config(config.model, sessions), "data": data_config})


def read_sessions(config: Config, path: str | Path) -> list[LFADSData]:
    """The sessions at `path`, read with the config's data options (held-out neurons, forward bins, prefix, ...)."""
    model = config.model
    return load_sessions(
        path,
        cs_dim=model.cs_dim,
        fp_len=model.fp_len,
        prefix=config.data.prefix,
        reconstruction=model.reconstruction,
        allow_nan=config.train.sbtt,
    )


def resolve_model_config(model: ModelConfig, sessions: list[LFADSData]) -> ModelConfig:
    first = sessions[0]
    found: dict = {"seq_len": first.recon_seq_len, "fp_len": first.fp_len, "ext_input_dim": first.ext_input_dim}
    if len(sessions) == 1:
        found |= {"data_dim": first.recon_dim, "cs_dim": first.cs_dim, "sessions": []}
    else:
        found |= {
            "data_dim": None,
            "sessions": [SessionDims(name=s.name, data_dim=s.recon_dim, cs_dim=s.cs_dim) for s in sessions],
        }
    where = (
        f"the data file {first.path}"
        if len(sessions) == 1
        else f"the {len(sessions)} sessions {', '.join(str(s.path) for s in sessions)}"
    )
    # In the encod/recon layout the file says which neurons and bins are held out: cs_dim / fp_len 0 (the default)
    # defer to it.
    deferred = ("cs_dim", "fp_len") if first.layout == "encod_recon" else ()
    for key, value in found.items():
        given = getattr(model, key)
        if given not in (None, []) and given != value and not (key in deferred and given == 0):
            shown = [dims.model_dump() for dims in value] if key == "sessions" else value
            raise ConfigError(
                f"model.{key} is {given} in the config, but {where} has {shown}; fix the config or leave the key out "
                "to take it from the data"
            )
    if model.ic_enc_seq_len >= first.encod_seq_len:
        raise ConfigError(
            f"model.ic_enc_seq_len ({model.ic_enc_seq_len}) must be smaller than the {first.encod_seq_len} "
            f"encoded bins of {first.path}"
        )
    return ModelConfig.model_validate({**model.model_dump(), **found})


def train(
    config: Config,
    data_path: str | Path | None,
    checkpoint_dir: str | Path,
    epochs: int | None = None,
    write_outputs: bool | None = None,
    echo: Callable[[str], None] | None = print,
) -> TrainResult:
    """Train (or resume) one model. `epochs`: train exactly that many more epochs (one PBT generation),
    ignoring max_epochs and early stopping; None: train until early stopping or max_epochs.
    write_outputs: sample the posterior into lfads_output.h5 (None: when training is complete).
    echo: receives Katib-style `name=value` metric lines every epoch (None: silent)."""
    folder = Path(checkpoint_dir)
    config, sessions = load_run_data(config, data_path)
    check_run_files(folder, sessions, config)
    set_torch_threads(config.train.threads)
    trainer = Trainer(config, sessions, nlb_targets=load_nlb_targets(config))
    try:  # only now: a run refused for its config or data leaves no empty folder behind
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(f"cannot create checkpoint folder {folder}: {err}") from None
    remove_stale_temporaries(folder)
    log = RunLog(folder / RUN_LOG)
    if note := missing_bins_note(sessions):
        log(note)
    if trainer.core_note:
        log(trainer.core_note)
    config = resume_or_start(trainer, config, folder, log)
    save_config(config, folder / CONFIG_FILE)
    target = trainer.epoch + epochs if epochs is not None else config.train.max_epochs
    train_epochs(trainer, config, folder, target, until_stopped=epochs is None, echo=echo, log=log)

    complete = bool(trainer.stopped.all()) or trainer.epoch >= config.train.max_epochs
    outputs = []
    if write_outputs or (write_outputs is None and complete):
        outputs = sample(folder, data_path, data=sessions, config=config, log=log)
    best_epoch = int(trainer.best_epoch[0])
    log(f"{'complete' if complete else 'paused'} after {trainer.epoch} epochs")
    best = next((row for row in trainer.history if row["epoch"] == best_epoch), None)
    if best is not None:
        shown = (config.train.select_metric, *HEADLINE_METRICS)
        log(f"best epoch {best_epoch}: " + ", ".join(f"{name} {best[name]:.4f}" for name in shown if name in best))
    last = trainer.history[-1] if trainer.history else {}
    return TrainResult(folder, trainer.epoch, complete, last, best_epoch, outputs)


def check_run_files(folder: Path, sessions: list[LFADSData], config: Config) -> None:
    """Refuse a run folder whose files would overwrite the data or the NLB targets. (Its config.yaml is the
    run's own: read to resume, and rewritten as the resolved config.)"""
    names = (LAST_CKPT, BEST_CKPT, METRICS_FILE, RUN_LOG, REPORT_FILE)
    outputs = output_paths(folder / OUTPUT_FILE, [session.name for session in sessions])
    check_distinct(
        {f"--checkpoint's {path.name}": path for path in [*(folder / name for name in names), *outputs]},
        {"--data": [session.path for session in sessions], "data.nlb_targets": config.data.nlb_targets},
    )


def resume_or_start(trainer: Trainer, config: Config, folder: Path, log: RunLog) -> Config:
    """Continue from the folder's last.ckpt if there is one; hyperparameters given now apply after the restore.
    Returns the run's config: a resumed run keeps the selection metric it started with (its best epoch and early
    stopping were counted by it)."""
    if not (folder / LAST_CKPT).exists():
        described = ", ".join(
            f"{s.path} ({s.train.n_trials} train / {s.valid.n_trials} valid trials)" for s in trainer.sessions
        )
        log(
            f"new run: {described}, device {trainer.device}, threads {torch.get_num_threads()}, "
            f"recurrent core {trainer.core}, selected by {config.train.select_metric}"
        )
        return config
    payload = load_checkpoint(folder / LAST_CKPT, map_location=trainer.device)
    saved = saved_config(payload["config"], str(folder / LAST_CKPT))
    check_compatible(saved, config, folder / LAST_CKPT)
    config = kept_select_metric(saved, config, log)
    trainer.config = config
    state = PopulationState.from_dict(payload)
    # Hyperparameters given now (e.g. by a Katib PBT trial) apply to the restored state.
    changed = {k: v for k, v in member_hparams(config).items() if v != state.hparams[0][k]}
    state.set_hparams(0, changed, config)
    trainer.load_population_state(state)
    log(f"resumed from {folder / LAST_CKPT} at epoch {trainer.epoch}" + (f" with new {changed}" if changed else ""))
    return config


def kept_select_metric(saved: Config, config: Config, log: Callable[[str], None]) -> Config:
    """`config` with the saved run's train.select_metric (a run saved before the setting existed: the held-in
    score); the log says so when `config` named another."""
    metric = saved.train.select_metric
    if config.train.select_metric == metric:
        return config
    log(
        f"train.select_metric stays {metric}, the metric this run started with (the config names "
        f"{config.train.select_metric}; a new checkpoint folder starts a run selected by it)"
    )
    return config.model_copy(update={"train": config.train.model_copy(update={"select_metric": metric})})


def train_epochs(
    trainer: Trainer,
    config: Config,
    folder: Path,
    target: int,
    until_stopped: bool,
    echo: Callable[[str], None] | None,
    log: RunLog,
) -> None:
    """Epochs up to `target` (or early stopping), each logged as it ends and checkpointed by RunFiles."""
    progress = Progress(trainer.epoch, target, log, config.train.select_metric)
    writer = TensorBoard(folder / TENSORBOARD_DIR)
    files = RunFiles(folder, config)
    try:
        while trainer.epoch < target and not (until_stopped and bool(trainer.stopped.all())):
            metrics = trainer.run_epoch()
            if bool(trainer.diverged.all()):
                raise TrainingDiverged(
                    f"the loss became NaN or infinite in epoch {trainer.epoch - 1}; {folder / LAST_CKPT} keeps the "
                    f"last good epoch. Lower train.lr_init (now {trainer.members[0]['lr_init']:g}) or "
                    "train.max_grad_norm and rerun."
                )
            files.epoch_done(trainer, improved=bool(metrics["improved"][0]))
            row = trainer.history[-1]
            writer.add(row)
            if echo is not None:
                for name, value in row.items():
                    if name != "member":
                        echo(f"{name}={value:.6g}" if isinstance(value, float) else f"{name}={value}")
                sys.stdout.flush()
            progress.update(trainer.epoch, row)
    finally:
        files.write()  # the last completed epoch, also after an error or Ctrl-C
        writer.close()
        progress.close()


class RunFiles:
    """last.ckpt, best.ckpt and metrics.csv of a run, written at most every train.checkpoint_every_s seconds and
    when the training loop ends: on small data writing them every epoch cost more than validation did. Every
    epoch keeps a copy of its state in memory (about a millisecond), so what is written is always a whole epoch."""

    def __init__(self, folder: Path, config: Config):
        self.folder, self.config = folder, config.to_dict()
        self.every_s = config.train.checkpoint_every_s
        self.last: dict | None = None  # the newest epoch's state, not yet written
        self.best: dict | None = None  # the newest best epoch's state, not yet written
        self.written_at = time.monotonic()

    def epoch_done(self, trainer: Trainer, improved: bool) -> None:
        state = trainer.population_state().to_dict()
        # history rows are never changed once appended: a new list of the same rows is a copy
        self.last = {**_cloned(state), "history": list(state["history"]), "config": self.config}
        if improved:
            self.best = self.last
        if time.monotonic() - self.written_at >= self.every_s:
            self.write()

    def write(self) -> None:
        """Write what is pending: the best epoch first, so best.ckpt is never older than last.ckpt's best epoch."""
        if self.best is not None:
            save_checkpoint(self.best, self.folder / BEST_CKPT)
            self.best = None
        if self.last is not None:
            save_checkpoint(self.last, self.folder / LAST_CKPT)
            write_csv(self.folder / METRICS_FILE, self.last["history"])
            self.last = None
        self.written_at = time.monotonic()


def _cloned(state: Any) -> Any:
    """A copy of a state dict's tensors and containers, which later training steps cannot change."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {key: _cloned(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_cloned(value) for value in state)
    return state


def check_compatible(saved: Config, current: Config, path: Path) -> None:
    """A checkpoint can continue under new per-member hyperparameters, never under a different model."""
    mutable = {name for name, section in MEMBER_HPARAMS.items() if section == "model"}
    old, new = saved.model.model_dump(), current.model.model_dump()
    differences = [
        f"model.{key}: {old[key]} -> {new[key]}" for key in old if key not in mutable and old[key] != new[key]
    ]
    if differences:
        raise CheckpointError(
            f"{path} was trained with a different model ({'; '.join(differences)}); use a new --checkpoint folder "
            "or restore the config"
        )


def sample(
    checkpoint_dir: str | Path,
    data_path: str | Path | None = None,
    output: str | Path | None = None,
    num_samples: int | None = None,
    data: list[LFADSData] | None = None,
    config: Config | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Posterior-sample the best checkpoint (the last one if none is best yet) into an LFADS output file,
    one per session of a stitched model (`output` then names the first; the others follow its pattern)."""
    if num_samples is not None and num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {num_samples}")
    folder = Path(checkpoint_dir)
    if config is None:
        if not (folder / CONFIG_FILE).exists():
            raise CheckpointError(f"{folder} holds no {CONFIG_FILE}: not an autolfads checkpoint folder")
        config = load_saved_config(folder / CONFIG_FILE)
    if data is None:
        config, data = load_run_data(config, data_path)  # dimensions in config.yaml must match the data
    path = folder / BEST_CKPT if (folder / BEST_CKPT).exists() else folder / LAST_CKPT
    paths = checked_output_paths(folder, output, data)
    state = PopulationState.from_dict(load_checkpoint(path))
    return write_samples(state, config, data, paths, path, num_samples=num_samples, log=log or RunLog(folder / RUN_LOG))


def sample_member(folder: Path, state: PopulationState, config: Config, data: list[LFADSData], log) -> list[Path]:
    """What `sample(folder)` writes when the folder's last.ckpt holds `state` (and no best.ckpt is there), from
    the state in memory: a search's best model is sampled as it is written, not read back."""
    return write_samples(state, config, data, checked_output_paths(folder, None, data), folder / LAST_CKPT, log=log)


def checked_output_paths(folder: Path, output: str | Path | None, data: list[LFADSData]) -> list[Path]:
    """The output files of sampling the run folder (`output`: the first's name), none of them the data's or
    the run's own files."""
    paths = output_paths(Path(output) if output else folder / OUTPUT_FILE, [session.name for session in data])
    check_distinct(
        {f"--output ({p.name})" if len(paths) > 1 else "--output": p for p in paths},
        {
            "--data": [session.path for session in data],
            "the checkpoint": [folder / BEST_CKPT, folder / LAST_CKPT],  # the run's state, read or not
            "its config": folder / CONFIG_FILE,
        },
    )
    return paths


def write_samples(
    state: PopulationState,
    config: Config,
    data: list[LFADSData],
    paths: list[Path],
    checkpoint: Path,
    *,
    num_samples: int | None = None,
    log: Callable[[str], None],
) -> list[Path]:
    """Posterior-sample a one-member state into paths (one per session); `checkpoint`: the file that holds it."""
    set_torch_threads(config.train.threads)
    model = sampling_model(config, data, state)
    samples = config.train.num_samples if num_samples is None else num_samples
    start = time.perf_counter()
    epoch = state.epoch - 1  # the checkpoint's last completed epoch, numbered from 0 as in metrics.csv
    for session, (session_data, out) in enumerate(zip(data, paths, strict=True)):
        write_output(
            out,
            model,
            session_data,
            samples,
            session=session,
            attrs={"checkpoint": str(checkpoint.resolve()), "epoch": epoch},
        )
    shown = str(paths[0]) if len(paths) == 1 else f"{len(paths)} files {', '.join(p.name for p in paths)}"
    log(
        f"wrote {shown} ({samples} posterior samples of {checkpoint.name}, epoch {epoch}) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return paths
