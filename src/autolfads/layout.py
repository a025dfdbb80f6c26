"""File and folder names of a run folder and of a search's workdir (the on-disk layouts in docs/configuration.md
and docs/pbt-search.md)."""

# A run folder (`autolfads train --checkpoint DIR`, and every member's folder of a search).
CONFIG_FILE = "config.yaml"  # the resolved config
METRICS_FILE = "metrics.csv"  # one row per epoch
RUN_LOG = "train.log"
OUTPUT_FILE = "lfads_output.h5"  # inferred rates, factors and inputs (`autolfads sample`)
LAST_CKPT, BEST_CKPT = "last.ckpt", "best.ckpt"
REPORT_FILE = "report.html"
TENSORBOARD_DIR = "tensorboard"

# A search's workdir.
SETTINGS_FILE = "search.yaml"
SPACE_FILE = "search_space.yaml"
STATE_FILE = "state.csv"  # one row per member and generation
EXPLOITS_FILE = "exploits.csv"
SEARCH_LOG = "search.log"
BEST_DIR = "best_model"  # a run folder of the best member
SEARCH_CKPT = "search.ckpt"  # the embedded backend's population at the last completed generation

# The Ray backend's part of a workdir.
RAY_DIR = "ray"
PBT_STATE_FILE, REPORTS_FILE, MEMBERS_FILE = "pbt_state.json", "reports.jsonl", "members.csv"
MEMBER_CKPT = "member.ckpt"  # a trial's checkpoint of its members

# Where Katib mounts a trial's folder (its suggestion_trial_dir); the container's --checkpoint default there.
KATIB_CHECKPOINT_DIR = "/var/log/katib/checkpoints"


def member_folder(member: int) -> str:
    """A member's folder name under the workdir's tensorboard/ (and the summary's member names)."""
    return f"member_{member:02d}"
