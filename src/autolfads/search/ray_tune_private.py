"""Every use of Ray's private API, in one place (checked against Ray 2.60; see tests/test_search_ray_backend.py).

The synchronous PBT scheduler needs five things Tune offers no public call for: point a paused
trial at the checkpoint it must start from (as Ray's own PopulationBasedTraining does on exploit), reset a
trial's failure count, keep a restored trial from reusing checkpoint names, file a requeued trial as paused,
and let a trial that waits at the barrier in its process (a report answered NOOP) go on. The driver resumes
every trial of an unfinished experiment with the experimental ResumeConfig, and turns token authentication on
for an explicit cluster address as Ray does for "auto".
"""

from __future__ import annotations

from pathlib import Path


def reset_failures(trial) -> None:
    trial.run_metadata.num_failures = 0
    trial.run_metadata.invalidate_cache()


def pause_requeued(tune_controller, trial) -> None:
    """A restarted (requeued) trial that already reported its generation waits at the barrier, paused."""
    from ray.tune.experiment import Trial

    tune_controller._set_trial_status(trial, Trial.PAUSED)


def continue_waiting(tune_controller, trial) -> None:
    """Let a trial that waits in its process, inside its report (answered NOOP), go on: Tune's next train call."""
    tune_controller._tune_controller._schedule_trial_train(trial)


def skip_used_checkpoint_names(trial) -> None:
    """Tune names checkpoints checkpoint_<index> by a counter kept with the trial. A trial restored from an
    experiment snapshot older than its last checkpoints would count from the snapshot and overwrite them -
    checkpoints other members are to restore from. Continue after the highest index on disk instead."""
    if getattr(trial.storage, "trial_dir_name", None) is None:  # a new trial: its folder does not exist yet
        return
    folder = Path(trial.storage.trial_fs_path)
    used = [
        int(p.name[len("checkpoint_") :]) for p in folder.glob("checkpoint_*") if p.name[len("checkpoint_") :].isdigit()
    ]
    if used and trial.storage.current_checkpoint_index < max(used):
        trial.storage.current_checkpoint_index = max(used)


def set_latest_checkpoint(trial, folder: Path | None, metrics: dict) -> None:
    """Point a (paused or pending) trial at the checkpoint it must start from, as Ray's own PBT does on exploit."""
    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint

    manager = trial.run_metadata.checkpoint_manager
    manager._latest_checkpoint_result = (
        None if folder is None else _TrainingResult(checkpoint=Checkpoint(str(folder)), metrics=dict(metrics))
    )
    trial.invalidate_json_state()


def resume_everything() -> dict:
    """The search is unfinished, so every member continues - also trials Tune saved as TERMINATED (stopped when
    another member failed for good) or ERROR. Tune's ResumeConfig is marked experimental: without it, Tune's
    defaults (unfinished and errored trials resume) apply."""
    try:
        from ray.tune.tune_config import ResumeConfig
    except ImportError:  # pragma: no cover - other Ray versions
        return {}
    resume = ResumeConfig.ResumeType.RESUME
    return {"_resume_config": ResumeConfig(finished=resume, unfinished=resume, errored=resume)}


def use_token_if_available() -> bool:
    """Ray turns token authentication on by itself when RAY_AUTH_MODE is unset and a token is at hand
    (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH, RAY_AUTH_TOKEN) - in `ray start --head` and ray.init("auto"), but
    not for an explicit HOST:PORT, which then fails with InvalidAuthToken. Do the same for that address;
    returns whether token authentication is on."""
    try:
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    except ImportError:  # pragma: no cover - other Ray versions: the error message names RAY_AUTH_MODE
        return False
    return maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
