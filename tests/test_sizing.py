"""Defaults that fit the data (autolfads.sizing): sizes, batch and schedules from a data set's shape, the
command line that uses them when no config file is given, and the shipped small-session configs are what the rule
picks for their data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autolfads.config import Config, load_config
from autolfads.sizing import DataShape, config_for_data, describe_sizing, generation_epochs, sized_values

MC_MAZE_SMALL = dict(heldin=86, heldout=21, bins=140)


def steps(config: Config, trials: int, epochs: int) -> int:
    return epochs * max(trials // config.train.batch_size, 1)


@pytest.mark.parametrize(
    ("trials", "batch", "steps_an_epoch"),
    [(50, 8, 6), (80, 16, 5), (100, 16, 6), (500, 64, 7), (5000, 128, 39), (6, 8, 1)],
)
def test_batch_gives_small_data_several_steps_an_epoch(trials, batch, steps_an_epoch):
    config = config_for_data(DataShape(trials, **MC_MAZE_SMALL))
    assert config.train.batch_size == batch  # trials // 5 rounded down to a power of two, in [8, 128]
    assert max(trials // batch, 1) == steps_an_epoch


@pytest.mark.parametrize("trials", [50, 100, 500, 5000])
def test_schedules_are_about_the_same_number_of_steps_at_every_size(trials):
    config = config_for_data(DataShape(trials, **MC_MAZE_SMALL))
    train = config.train
    assert train.kl_increase_epoch == train.l2_increase_epoch and train.kl_start_epoch == train.l2_start_epoch == 0
    per_epoch = trials // train.batch_size
    # each is the least whole number of epochs reaching its steps: 500, 1,000 and 4,000
    assert 500 <= steps(config, trials, train.kl_increase_epoch) < 500 + per_epoch
    assert 1000 <= steps(config, trials, train.patience) < 1000 + per_epoch
    assert 4000 <= steps(config, trials, train.max_epochs) < 4000 + per_epoch
    assert 200 <= steps(config, trials, generation_epochs(trials, train.batch_size)) < 200 + per_epoch


def test_the_schedules_in_epochs_for_50_and_5000_trials():
    small, large = (config_for_data(DataShape(trials, **MC_MAZE_SMALL)).train for trials in (50, 5000))
    # 50 trials: batch 8, 6 steps an epoch; 5,000 trials: batch 128, 39 steps an epoch
    assert (small.kl_increase_epoch, small.patience, small.max_epochs) == (84, 167, 667)
    assert (large.kl_increase_epoch, large.patience, large.max_epochs) == (13, 26, 103)
    assert (generation_epochs(50, 8), generation_epochs(5000, 128)) == (34, 6)


def test_large_data_is_capped_in_epochs():
    train = config_for_data(DataShape(50_000, **MC_MAZE_SMALL)).train  # 390 steps an epoch
    assert train.batch_size == 128
    assert train.max_epochs == 50  # 19,500 steps: at least 50 epochs whatever the steps say
    assert train.patience == 10  # the smoothed metric needs a few epochs to judge
    assert train.kl_increase_epoch == 2  # 780 steps: whole epochs
    assert generation_epochs(50_000, 128) == 1


@pytest.mark.parametrize(
    ("trials", "gen", "ic_enc", "con", "co"),
    [(50, 64, 64, 32, 2), (100, 64, 64, 32, 2), (500, 80, 80, 64, 4), (5000, 100, 100, 80, 4)],
)
def test_smaller_data_gets_a_smaller_model(trials, gen, ic_enc, con, co):
    model = config_for_data(DataShape(trials, **MC_MAZE_SMALL)).model
    assert (model.gen_dim, model.ic_enc_dim, model.ic_dim, model.con_dim, model.ci_enc_dim, model.co_dim) == (
        gen,
        ic_enc,
        ic_enc,
        con,
        con,
        co,
    )


@pytest.mark.parametrize(
    ("trials", "heldin", "heldout", "factors"),
    [
        (100, 86, 21, 16),  # 107 neurons // 4 = 26, capped at the small tier's 16
        (5000, 86, 21, 26),  # a quarter of the neurons
        (5000, 900, 100, 40),  # capped at the large tier's 40
        (500, 20, 0, 8),  # at least 8
        (500, 5, 0, 5),  # never more than the neurons
        (50, 3, 2, 5),
    ],
)
def test_factors_follow_the_neurons(trials, heldin, heldout, factors):
    assert config_for_data(DataShape(trials, heldin, heldout, bins=50)).model.fac_dim == factors


def test_only_the_sized_keys_change_and_the_base_is_kept():
    base = Config.model_validate({"model": {"dropout_rate": 0.2, "gen_dim": 7}, "train": {"lr_init": 0.01}})
    shape = DataShape(80, **MC_MAZE_SMALL)
    sized = config_for_data(shape, base)
    assert sized.model.dropout_rate == 0.2 and sized.train.lr_init == 0.01
    assert sized.model.gen_dim == 64  # sized keys are the rule's
    tree, before = sized.to_dict(), base.to_dict()
    changed = {f"{s}.{k}" for s in tree for k in tree[s] if tree[s][k] != before[s][k]}
    assert changed <= set(sized_values(shape))


def test_the_printed_lines_say_what_was_read_and_picked():
    shape = DataShape(80, heldin=107, heldout=35, bins=140, forward_bins=40)
    text = describe_sizing(shape, config_for_data(shape))
    assert text.splitlines() == [
        "sized from the data: 80 train trials, 107+35 neurons, 140 + 40 forward bins -> batch 16 (5 steps an epoch), "
        "gen 64, fac 16, ic_enc 64, ci_enc 32, con 32, co 2",
        "  schedules: KL/L2 ramps 100 epochs (500 steps), patience 200 epochs (1000 steps), at most 800 epochs (4000 "
        "steps)",
    ]


def test_config_init_with_data_writes_the_sized_config(autolfads, lorenz_file, tmp_path):
    path = tmp_path / "sized.yaml"
    result = autolfads("config", "init", "--data", lorenz_file, path)
    assert result.returncode == 0, result.stderr
    text = path.read_text()
    assert f"# data: {lorenz_file}" in text and "# sized from the data: " in text
    lines = {line.split(":")[0].strip(): line for line in text.splitlines() if line.startswith("  ")}
    assert "sized from the data;" in lines["gen_dim"] and "sized from the data" not in lines["lr_init"]
    written = load_config(path)
    shown = autolfads("config", "show", "--data", lorenz_file)
    assert shown.returncode == 0 and yaml.safe_load(shown.stdout) == written.to_dict()
    # what train uses with no config file: the same config, said on stderr
    run = tmp_path / "run"
    trained = autolfads(
        "train",
        "--data",
        lorenz_file,
        "--checkpoint",
        run,
        "train.max_epochs",
        "1",
        "--quiet",
        "--no-output",
        "--no-report",
    )
    assert trained.returncode == 0, trained.stderr
    assert "sized from the data: " in trained.stderr
    saved = load_config(run / "config.yaml")
    assert saved.model.gen_dim == written.model.gen_dim and saved.train.batch_size == written.train.batch_size
    assert saved.train.max_epochs == 1  # the overrides win


def test_search_sizes_its_generations_from_the_data_unless_told(lorenz_file, tmp_path, capsys):
    import argparse

    from autolfads.cli.search import EPOCHS_PER_GENERATION, search_config
    from autolfads.sizing import DataShape, generation_epochs
    from autolfads.train.run import load_run_data

    _, sessions = load_run_data(Config(), lorenz_file)
    trials = sessions[0].train.n_trials
    args = argparse.Namespace(config_file=None, data=lorenz_file, epochs_per_generation=None)
    config, epochs = search_config(args, ["train.seed", "3"])
    shape = DataShape(trials, sessions[0].encod_dim, sessions[0].cs_dim)
    assert config.train.batch_size == config_for_data(shape).train.batch_size and config.train.seed == 3
    assert epochs == generation_epochs(trials, config.train.batch_size)
    assert f", generations of {epochs} epochs (" in capsys.readouterr().err
    assert search_config(argparse.Namespace(**{**vars(args), "epochs_per_generation": 3}), [])[1] == 3
    capsys.readouterr()
    path = tmp_path / "given.yaml"
    path.write_text("train:\n  batch_size: 16\n")
    given = argparse.Namespace(config_file=path, data=lorenz_file, epochs_per_generation=None)
    assert search_config(given, [])[1] == EPOCHS_PER_GENERATION  # a config file: nothing sized
    assert "sized from the data" not in capsys.readouterr().err


ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_small_configs_are_what_the_sizing_rule_picks_for_their_data():
    """small_session.yaml: 80 training trials, shapes from the file; mc_maze_small.yaml: NLB's MC_Maze_Small
    (75 training trials, 107 + 35 neurons, 140 + 40 bins). A change of the rule must be carried to them."""
    small, nlb = (
        load_config(ROOT / "examples" / "configs" / "small_session.yaml"),
        load_config(ROOT / "examples" / "configs" / "mc_maze_small.yaml"),
    )
    assert small.model.data_dim is None and small.model.seq_len is None  # shapes from the file: any session
    for config, shape in (
        (small, DataShape(train_trials=80, heldin=86, heldout=21, bins=140)),
        (nlb, DataShape(train_trials=75, heldin=107, heldout=35, bins=140, forward_bins=40)),
    ):
        for key, value in sized_values(shape).items():
            section, field = key.split(".")
            assert getattr(getattr(config, section), field) == value, key
    assert (small.train.batch_size, small.train.max_epochs, nlb.train.batch_size) == (16, 800, 8)
    # NLB's light regularisation (benchmarks/RESULTS.md): not dropout 0.3 and KL/L2 1e-3
    assert (small.model.dropout_rate, small.model.cd_rate) == (nlb.model.dropout_rate, nlb.model.cd_rate) == (0.02, 0.3)
    assert small.train.kl_co_weight == small.train.l2_gen_scale == 1e-4
    assert small.train.select_metric == nlb.train.select_metric == "smth_val_nll_all"
