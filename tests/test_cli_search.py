"""`autolfads search` options: --metric onto train.select_metric and the time budget onto the search
settings."""

import argparse

from autolfads.cli.search import add_search_options, search_settings, selection_overrides
from autolfads.names import HELDIN_METRIC
from autolfads.search.results import SearchSettings


def test_the_command_line_maps_metric_onto_train_select_metric_and_budget_onto_the_settings():
    parser = argparse.ArgumentParser()
    add_search_options(parser)
    parser.add_argument("--metric")
    parser.add_argument("--backend", default="embedded")

    def settings_of(*argv: str) -> tuple[SearchSettings, list[str]]:
        args = parser.parse_args(["--workdir", "w", "--epochs-per-generation", "5", *argv])
        return search_settings(args), selection_overrides(args, ["train.lr_init", "0.01"])

    settings, overrides = settings_of("--metric", HELDIN_METRIC)
    assert settings.metric is None and overrides[-2:] == ["train.select_metric", HELDIN_METRIC]  # one setting
    settings, overrides = settings_of("--metric", "nlb_co_bps", "--no-exploit")
    assert settings.metric == "nlb_co_bps" and overrides == ["train.lr_init", "0.01"] and not settings.exploit
    assert settings_of()[0].max_generations == 50 and settings_of()[0].time_budget_s is None
    budget = settings_of("--time-budget", "2m")[0]
    assert budget.time_budget_s == 120.0 and budget.max_generations is None  # the budget alone bounds it
    assert settings_of("--time-budget", "2m", "--max-generations", "4")[0].max_generations == 4
