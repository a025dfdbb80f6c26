"""search/results.py: the search's settings (bounds, the time budget) and files saved before the selection
metric existed."""

import argparse

import pytest
import yaml

from autolfads.cli.search import duration_s
from autolfads.config import saved_config
from autolfads.names import ALL_METRIC, HELDIN_METRIC
from autolfads.search.results import SearchSettings, saved_settings
from helpers import tiny_config

# ----------------------------------------------------------------------------------------- settings and old files


def test_search_settings_bounds_and_the_time_budget_option():
    with pytest.raises(ValueError, match="only with a time budget"):
        SearchSettings(max_generations=None)
    assert SearchSettings(max_generations=None, time_budget_s=600.0).max_generations is None
    assert [duration_s(text) for text in ("90s", "10m", "1.5h")] == [90.0, 600.0, 5400.0]
    for bad in ("10", "m", "-5m", "0s", "10d"):
        with pytest.raises(argparse.ArgumentTypeError):
            duration_s(bad)


def test_files_saved_before_the_selection_metric_existed_keep_the_held_in_score(tmp_path):
    old = tiny_config().to_dict()
    del old["train"]["select_metric"]
    assert saved_config(old).train.select_metric == HELDIN_METRIC  # a saved run meant the held-in score
    assert tiny_config().train.select_metric == ALL_METRIC  # a new one: the default
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({**SearchSettings().model_dump(), "metric": HELDIN_METRIC}))
    assert saved_settings(path).metric is None  # PBT ranked by the selection metric: the config's held-in one


def test_searches_saved_before_the_selection_setting_existed_keep_the_tournament(tmp_path):
    assert SearchSettings().selection == "truncation"  # a new search: the default
    old = SearchSettings().model_dump()
    del old["selection"]
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(old))
    assert saved_settings(path).selection == "tournament"  # what it was started with: a rerun continues it
    path.write_text(yaml.safe_dump({**old, "selection": "truncation"}))
    assert saved_settings(path).selection == "truncation"
    with pytest.raises(ValueError, match="selection"):
        SearchSettings(selection="roulette")
