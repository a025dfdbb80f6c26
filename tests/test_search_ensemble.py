"""search/ensemble.py: the ensemble of the best members. NLL per entry and the choice of k by hand, the
averaged rates of a finished search, and sampling the ensemble folder."""

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from autolfads.cli import main
from autolfads.data.hdf5 import write_lfads_h5
from autolfads.evaluate.files import read_output_rates
from autolfads.search.ensemble import choose_k, mean_rates, nll_per_entry
from autolfads.search.results import SearchSettings
from autolfads.search.run import search
from autolfads.train.checkpoint import load_checkpoint
from autolfads.train.output import posterior_sample
from autolfads.train.population_state import PopulationState
from autolfads.train.run import load_run_data
from autolfads.train.trainer import Trainer
from helpers import tiny_config, tiny_search_data


def test_nll_per_entry_and_the_choice_of_k_by_hand():
    counts = np.array([[[0.0, 2.0]], [[1.0, np.nan]]])  # 2 trials, 1 bin, 2 neurons; one entry missing
    rates = np.array([[[1.0, 2.0]], [[1.0, 5.0]]])
    # r - n log r over the 3 observed entries: 1, 2 - 2 log 2, 1
    assert nll_per_entry([rates], [counts], [0]) == pytest.approx((4 - 2 * math.log(2)) / 3)
    # one session of 1 trial x 1 bin x 2 neurons with counts (2, 2): rates (2, 2) are the best possible. Member
    # rates (1, 3), (3, 1), (2, 2.2): the mean of the first two is (2, 2), so k = 2 beats k = 1 and k = 3.
    target = [np.array([[[2.0, 2.0]]])]
    members = [[np.array([[[1.0, 3.0]]])], [np.array([[[3.0, 1.0]]])], [np.array([[[2.0, 2.2]]])]]
    k, scores = choose_k(members, target, [0])
    assert k == 2 and scores[1] == pytest.approx(2 - 2 * math.log(2))
    assert scores[0] == pytest.approx((1 + 3 - 2 * math.log(3)) / 2)
    assert choose_k(members[:1] * 3, target, [0])[0] == 1  # ties go to the smaller k
    np.testing.assert_array_equal(mean_rates([members[0][0], members[1][0]]), np.full((1, 1, 2), 2.0, np.float32))


# ----------------------------------------------------------------------------------------- tiny searches


@pytest.fixture(scope="module")
def lorenz(tmp_path_factory) -> Path:
    return tiny_search_data(tmp_path_factory.mktemp("data") / "lorenz.h5")


@pytest.fixture(scope="module")
def finished(lorenz, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("search")
    outcome = search(
        tiny_config(), lorenz, workdir, SearchSettings(population=4, epochs_per_generation=2, max_generations=2)
    )
    return outcome, workdir


@pytest.mark.slow
def test_the_ensemble_averages_the_chosen_members_rates_and_passes_the_evaluator(finished, lorenz):
    outcome, workdir = finished
    record = yaml.safe_load((workdir / "ensemble" / "ensemble.yaml").read_text())
    members = record["members"]
    assert members[0] == outcome.best_member and len(members) == record["k"] == len(outcome.ensemble.members)
    assert min(record["valid_nll_by_k"].values()) == pytest.approx(outcome.ensemble.score)
    assert record["valid_nll_by_k"][1] == pytest.approx(outcome.ensemble.best_score)
    # every member's rates as `autolfads sample` of its final state would write them, averaged by hand
    config, data = load_run_data(tiny_config(), lorenz)
    population = PopulationState.from_dict(load_checkpoint(workdir / "search.ckpt"))
    ours = read_output_rates(workdir / "ensemble" / "lfads_output.h5")  # the evaluator's reader checks the rates
    by_hand = {split.name: [] for split in data[0].splits}
    for member in members:
        trainer = Trainer(config, data)
        trainer.load_population_state(population.select([member]))
        for split in data[0].splits:
            by_hand[split.name].append(posterior_sample(trainer.model, split, config.train.num_samples)["rates"][0])
    for split, rates in by_hand.items():
        np.testing.assert_allclose(ours[split][1], np.mean(rates, axis=0), rtol=1e-5)
    best = read_output_rates(workdir / "best_model" / "lfads_output.h5")
    np.testing.assert_array_equal(best["valid"][1], by_hand["valid"][0])  # the best member's own file
    with h5py.File(workdir / "ensemble" / "lfads_output.h5") as ens, h5py.File(outcome.outputs[0]) as own:
        assert set(ens) == set(own) and np.array_equal(ens["valid_factors"][()], own["valid_factors"][()])
        assert list(ens.attrs["ensemble_members"]) == members
    assert (workdir / "ensemble" / "config.yaml").read_text() == (workdir / "best_model" / "config.yaml").read_text()
    assert (
        "ensemble:" in outcome.summary() and f"best member alone {outcome.ensemble.best_score:.5f}" in outcome.summary()
    )


@pytest.mark.slow
def test_sampling_the_ensemble_folder_averages_its_members_on_the_data_given(finished, lorenz, tmp_path, capsys):
    """`autolfads sample --checkpoint WORKDIR/ensemble`: on the search's own data, the ensemble's own file again
    (each member's kept run folder samples as the search did); on a subset of the trials, those trials' rates."""
    outcome, workdir = finished
    folder = workdir / "ensemble"
    members = yaml.safe_load((folder / "ensemble.yaml").read_text())["members"]
    assert sorted(p.name for p in (folder / "members").iterdir()) == sorted(map(str, members))
    again = tmp_path / "again.h5"
    assert main(["sample", "--checkpoint", str(folder), "--data", str(lorenz), "--output", str(again)]) == 0
    ours, theirs = read_output_rates(folder / "lfads_output.h5"), read_output_rates(again)
    for split in ours:
        np.testing.assert_array_equal(theirs[split][0], ours[split][0])
        np.testing.assert_allclose(theirs[split][1], ours[split][1], rtol=1e-6)
    with h5py.File(again) as h5:
        assert list(h5.attrs["ensemble_members"]) == members
    # other trials: the valid trials given as a file of their own are sampled, and averaged, all the same
    with h5py.File(lorenz) as source:
        arrays = {key: source[key][()] for key in source}
    subset = tmp_path / "subset.h5"
    write_lfads_h5(subset, {**{k: v for k, v in arrays.items() if not k.startswith("train_")},
                            **{"train" + k[5:]: v for k, v in arrays.items() if k.startswith("valid_")}})  # fmt: skip
    other = tmp_path / "other.h5"
    assert main(["sample", "--checkpoint", str(folder), "--data", str(subset), "--output", str(other)]) == 0
    assert read_output_rates(other)["valid"][1].shape == ours["valid"][1].shape
    (folder / "members" / str(members[-1]) / "last.ckpt").rename(tmp_path / "moved.ckpt")
    try:
        assert main(["sample", "--checkpoint", str(folder), "--output", str(tmp_path / "x.h5")]) == 2
        assert "the members' checkpoints are not there" in capsys.readouterr().err
    finally:
        (tmp_path / "moved.ckpt").rename(folder / "members" / str(members[-1]) / "last.ckpt")
