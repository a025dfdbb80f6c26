"""Where the embedded search's workers run (issue 25, item 2): every visible GPU by default, members split
evenly, `--gpus` / CUDA_VISIBLE_DEVICES / train.device to choose, and what `doctor` says about it.

No GPU here: the placement is pure (GPU counts are arguments), and the command line is checked where it
must refuse GPUs this machine does not have."""

import pytest

from autolfads.cli import main
from autolfads.cli.doctor import search_placement
from autolfads.errors import ConfigError
from autolfads.search.placement import plan_workers, search_gpus
from autolfads.search.workers import on_device
from helpers import config

FOUR = (0, 1, 2, 3)


def members_per_device(plan) -> dict[str, list[int]]:
    placed: dict[str, list[int]] = {}
    for worker, members in enumerate(plan.members):
        placed.setdefault(plan.device(worker), []).extend(members)
    return placed


# ------------------------------------------------------------------------------------------------ the plan
def test_four_gpus_one_worker_each():
    plan = plan_workers(8, cpus=16, gpus=FOUR)
    assert plan.devices == ("cuda:0", "cuda:1", "cuda:2", "cuda:3")
    assert plan.members == ((0, 1), (2, 3), (4, 5), (6, 7)) and plan.threads == (4, 4, 4, 4)
    assert plan.members_per_axis is None  # a GPU worker keeps its slice on one axis
    assert plan.describe() == (
        "8 members on 4 workers (2 members and 4 torch threads each; 16 usable CPUs), "
        "on 4 GPUs cuda:0, cuda:1, cuda:2, cuda:3 (1 worker and 2 members each)"
    )
    plan = plan_workers(20, cpus=16, gpus=FOUR)
    assert [len(m) for m in plan.members] == [5, 5, 5, 5]


def test_four_gpus_two_workers_each_split_the_members_evenly():
    for population in (8, 20):
        plan = plan_workers(population, cpus=16, workers=8, gpus=FOUR)
        placed = members_per_device(plan)
        assert sorted(placed) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
        assert {len(members) for members in placed.values()} == {population // 4}
        assert sorted(m for members in placed.values() for m in members) == list(range(population))
        assert plan.threads == (2,) * 8  # 16 CPUs over 8 workers: never more threads than cores
    # 20 members on 8 workers are slices of 3 and 2; worker w on GPU w % 4 pairs a 3 with a 2 on every GPU
    plan = plan_workers(20, cpus=16, workers=8, gpus=FOUR)
    assert [len(m) for m in plan.members] == [3, 3, 3, 3, 2, 2, 2, 2]
    assert plan.devices[:4] == plan.devices[4:] == ("cuda:0", "cuda:1", "cuda:2", "cuda:3")
    assert "on 4 GPUs cuda:0, cuda:1, cuda:2, cuda:3 (2 workers and 5 members each)" in plan.describe()


def test_chosen_gpus_fewer_members_than_gpus_and_the_cpu():
    plan = plan_workers(8, cpus=4, gpus=(0, 2))
    assert plan.devices == ("cuda:0", "cuda:2") and members_per_device(plan) == {
        "cuda:0": [0, 1, 2, 3],
        "cuda:2": [4, 5, 6, 7],
    }
    assert plan.describe().endswith("on 2 GPUs cuda:0, cuda:2 (1 worker and 4 members each)")
    assert plan_workers(3, cpus=16, gpus=FOUR).devices == ("cuda:0", "cuda:1", "cuda:2")  # a worker needs a member
    assert plan_workers(8, cpus=16, gpus=(1,)).describe().endswith("on cuda:1")
    cpu = plan_workers(8, cpus=2)
    assert cpu.devices == () and cpu.device(1) == "cpu" and cpu.describe().endswith("on cpu")
    with pytest.raises(ConfigError, match="--workers must be between 1 and the population"):
        plan_workers(4, cpus=16, workers=5, gpus=FOUR)


# ------------------------------------------------------------------------------------------------ which GPUs
def test_every_visible_gpu_by_default_or_the_one_of_train_device():
    assert search_gpus("auto", 4) == FOUR and search_gpus("cuda", 4) == FOUR
    assert search_gpus("auto", 0) == () and search_gpus("cpu", 4) == ()
    assert search_gpus("cuda:2", 4) == (2,)
    assert search_gpus("auto", 4, [3, 1]) == (3, 1) and search_gpus("cuda", 4, [0]) == (0,)


@pytest.mark.parametrize(
    ("device", "visible", "chosen", "message"),
    [
        ("cuda", 0, None, "train.device cuda: torch sees no GPU"),
        ("cuda:4", 4, None, r"train.device cuda:4: torch sees 4 GPUs \(0-3\)"),
        ("auto", 4, [0, 4], r"--gpus 0,4: no GPU 4; torch sees 4 GPUs \(0-3\)"),
        ("auto", 0, [0], "--gpus 0: no GPU 0; torch sees no GPU"),
        ("auto", 4, [1, 1], "--gpus 1,1: expected distinct GPU indices"),
        ("cpu", 4, [0], "--gpus 0 needs train.device auto or cuda, got cpu"),
        ("cuda:1", 4, [0], "--gpus 0 needs train.device auto or cuda, got cuda:1"),
    ],
)
def test_gpus_that_do_not_exist_or_conflict_are_one_line(device, visible, chosen, message, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ConfigError, match=message):
        search_gpus(device, visible, chosen)


def test_the_message_names_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    with pytest.raises(ConfigError, match=r"torch sees 2 GPUs \(0-1\) with CUDA_VISIBLE_DEVICES=2,3"):
        search_gpus("auto", 2, [2])


def test_a_worker_trains_on_its_device():
    assert on_device(config(), "cuda:3").train.device == "cuda:3"
    assert on_device(config(), "cuda:3").model == config().model


# ------------------------------------------------------------------------------------------------ command line
def test_gpus_option_parsing_and_refusals(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # this machine's truth, also on a GPU machine
    base = ["search", "--workdir", str(tmp_path / "w"), "--population", "2"]
    with pytest.raises(SystemExit) as exit:
        main([*base, "--gpus", "0,x"])
    assert (
        exit.value.code == 2 and "argument --gpus: expected GPU indices separated by commas" in capsys.readouterr().err
    )
    data = tmp_path / "lorenz.h5"
    assert main(["data", "lorenz", "--out", str(data), "--n-conditions", "4", "--trials-per-condition", "4"]) == 0
    capsys.readouterr()
    assert main([*base, "--data", str(data), "--gpus", "0", "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autolfads: error: --gpus 0: no GPU 0; torch sees no GPU") and "\n" not in err
    assert not (tmp_path / "w").exists()  # refused before anything is written
    assert main([*base, "--data", str(data), "--backend", "ray", "--gpus", "0", "--workers", "2"]) == 2
    assert "--workers, --gpus: options of the embedded backend" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ doctor
def test_doctor_says_what_a_four_gpu_box_does():
    text = search_placement(16, 4)
    assert text.startswith("--population 8 runs 8 members on 4 workers (2 members and 4 torch threads each")
    assert "on 4 GPUs cuda:0, cuda:1, cuda:2, cuda:3 (1 worker and 2 members each)" in text
    assert "--gpus 0,1 (or CUDA_VISIBLE_DEVICES) picks GPUs, --workers 8 puts 2 workers on each" in text
    assert search_placement(2, 0).endswith("on cpu")


def test_doctor_prints_this_machines_plan(capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert main(["doctor"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("search "))
    assert line.split(None, 1)[1] == search_placement(2, 0)
