"""Documented default configurations: what `autolfads config show` prints and `autolfads config init` writes.

Our schema lists every key with its default and its description. The lfads-tf2 spelling (MODEL.*, TRAIN.*)
holds the same configuration under lfads-tf2's keys, converted where the conventions differ, so that either
file loads as our defaults (the lfads-tf2 one with lfads-tf2's conventions, config_tf2.TF2_CONVENTIONS); keys
lfads-tf2 has no name for keep our defaults and are listed at the top.
"""

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import yaml

from .config import Config
from .config_tf2 import TF2_CONVENTIONS, TF2_RENAMES, TF2_REQUIRED
from .errors import ConfigError
from .files import write_atomic

USAGE = "autolfads train --config-file {name} --data DATA.h5 --checkpoint RUN_DIR [KEY VALUE ...]"
# our key -> its lfads-tf2 key (TRAIN.SEED rather than early lfads-tf2's top-level SEED)
TF2_NAMES = {ours: tf2 for tf2, ours in TF2_RENAMES.items() if tf2 != "SEED"}


SIZED = "sized from the data"


def default_config_text(
    tf2: bool = False,
    name: str = "FILE",
    config: Config | None = None,
    sized: Collection[str] = (),
    notes: Sequence[str] = (),
) -> str:
    """The documented config: the defaults, or `config` whose keys `sized` ("section.field") were sized from the
    data, as `notes` say (comment lines at the top)."""
    config = config or Config()
    head = [f"# {note}" for text in notes for note in text.splitlines()]
    return _tf2_text(name, config, sized, head) if tf2 else _own_text(name, config, sized, head)


def write_default_config(
    path: str | Path,
    tf2: bool = False,
    force: bool = False,
    config: Config | None = None,
    sized: Collection[str] = (),
    notes: Sequence[str] = (),
) -> Path:
    """Write the documented config (see default_config_text) to `path` atomically; an existing file is kept
    unless `force`."""
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; choose another name or pass --force to overwrite it")
    try:
        return write_atomic(path, default_config_text(tf2, path.name, config, sized, notes))
    except OSError as err:
        raise ConfigError(f"{path}: cannot write config file: {err}") from None


def _described(key: str, description: str | None, sized: Collection[str]) -> str | None:
    return f"{SIZED}; {description}" if key in sized else description


def _own_text(name: str, config: Config, sized: Collection[str], head: list[str]) -> str:
    what = f"its value ({SIZED} where it says so)" if sized else "its default value"
    lines = [
        f"# autolfads configuration: every key with {what} and what it does.",
        *head,
        f"# Use it with:  {USAGE.format(name=name)}",
        "# Leave out any key to take its default; override any on the command line (train.lr_init 0.003).",
        "# null dimensions are read from the data file; null data.dir means --data gives the file.",
    ]
    for section, info in Config.model_fields.items():
        lines.append(f"\n{section}:  # {info.description}")
        values = getattr(config, section)
        for field, field_info in type(values).model_fields.items():
            description = _described(f"{section}.{field}", field_info.description, sized)
            lines.append(_line(1, field, getattr(values, field), description))
    return "\n".join(lines) + "\n"


def _tf2_text(name: str, config: Config, sized: Collection[str], head: list[str]) -> str:
    entries, unnamed = _tf2_entries(config, sized)
    tree: dict = {}
    for key, value, comment in entries:
        *parents, leaf = key.split(".")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = (value, comment)
    conventions = ", ".join(f"{key} {yaml.safe_dump(value).splitlines()[0]}" for key, value in TF2_CONVENTIONS.items())
    required = ", ".join(f"{key} {str(expected).lower()}" for key, (expected, _) in TF2_REQUIRED.items())
    holding = f"autolfads' defaults, {SIZED} where it says so" if sized else "autolfads' defaults"
    lines = [
        f"# autolfads configuration in lfads-tf2's spelling (MODEL.*, TRAIN.*), holding {holding}.",
        *head,
        f"# Use it with:  {USAGE.format(name=name)}",
        "# Keys left out of an lfads-tf2 file take lfads-tf2's defaults, so keep the ones you do not change.",
        "# The keys mean what they meant in lfads-tf2, so where autolfads offers a choice this spelling takes "
        "lfads-tf2's: " + conventions,
        "# Override on the command line in either spelling (TRAIN.LR.INIT 0.003 or train.lr_init 0.003).",
        "# No lfads-tf2 name, autolfads defaults apply: " + ", ".join(unnamed),
        "# Left out, as they can only be: " + required,
    ]
    lines += _tree_lines(tree, 0)
    return "\n".join(lines) + "\n"


def _tf2_entries(config: Config, sized: Collection[str] = ()) -> tuple[list[tuple[str, Any, str]], list[str]]:
    """(lfads-tf2 key, value, comment) of each of our keys lfads-tf2 has a name for, and our keys it has none for."""
    entries: list[tuple[str, Any, str]] = []
    unnamed = []
    for section in Config.model_fields:
        values = getattr(config, section)
        for field, field_info in type(values).model_fields.items():
            ours, value = f"{section}.{field}", getattr(values, field)
            converted = _converted_entry(ours, value, config)
            if ours in TF2_NAMES:
                comment = f"{ours}: {_described(ours, field_info.description, sized)}"
                entries.append((TF2_NAMES[ours], value, comment))
            elif converted is not None:
                entries.append(converted)
            elif ours != "train.lr_decay" and ours not in TF2_CONVENTIONS:
                unnamed.append(ours)
    return entries, unnamed


def _converted_entry(ours: str, value: Any, config: Config) -> tuple[str, Any, str] | None:
    """Our keys that lfads-tf2 spells differently (config_tf2 converts them back): its key, value and comment."""
    if ours == "train.adam_epsilon":
        return "TRAIN.ADAM_EPSILON", value, f"{ours}, as TensorFlow's epsilon-hat (train.adam_epsilon_hat true)"
    if ours == "model.ic_enc_seq_len":
        return "MODEL.IC_ENC_SEQ_LEN", value, f"{ours}; its bins count nowhere in the loss (model.recon_ic_bins false)"
    if ours == "train.lr_schedule":
        decay = config.train.lr_decay if value else 1.0
        return "TRAIN.LR.DECAY", decay, "1.0: no decay on plateau (train.lr_schedule false); < 1: decay by this factor"
    return None


def _tree_lines(tree: dict, depth: int) -> list[str]:
    lines = []
    for key, node in tree.items():
        if isinstance(node, dict):
            lines.append(("\n" if depth == 0 else "") + "  " * depth + f"{key}:")
            lines += _tree_lines(node, depth + 1)
        else:
            lines.append(_line(depth, key, *node))
    return lines


def _line(depth: int, key: str, value: Any, comment: str | None) -> str:
    text = "  " * depth + yaml.safe_dump({key: value}, default_flow_style=False).strip()
    return f"{text:<33} # {comment.replace('None:', 'null:')}" if comment else text
