"""search/ray_scheduler.py: whether every trial of a generation has a place on the cluster at once."""

from __future__ import annotations


def test_trials_fit_counts_the_places_on_each_live_node():
    """The Ray scheduler lets trials wait at the barrier in their process only when every trial has a place at
    once: a trial runs on one node, dead nodes do not count, fractions count as Ray's fixed point does."""
    from autolfads.search.ray_scheduler import trials_fit

    head = {"Alive": True, "Resources": {"CPU": 0.0}}
    worker = {"Alive": True, "Resources": {"CPU": 2.0, "GPU": 1.0}}
    dead = {"Alive": False, "Resources": {"CPU": 8.0}}
    assert trials_fit([head, worker, dead], {"CPU": 1.0, "GPU": 0.0}, 2)
    assert not trials_fit([head, worker, dead], {"CPU": 1.0, "GPU": 0.0}, 3)
    assert trials_fit([worker], {"CPU": 0.5, "GPU": 0.5}, 2)  # the GPU bounds it: 2 places, not 4
    assert not trials_fit([worker], {"CPU": 0.5, "GPU": 0.5}, 3)
    assert trials_fit([{"Alive": True, "Resources": {"CPU": 0.6}}], {"CPU": 0.2}, 3)
    half = {"Alive": True, "Resources": {"CPU": 1.5}}
    assert not trials_fit([half, half], {"CPU": 1.0}, 3)  # 3 CPUs in all, but one trial per node
    assert trials_fit([head], {"CPU": 0.0}, 5)  # a trial that needs nothing always has a place
