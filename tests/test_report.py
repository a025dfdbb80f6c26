"""report/: reports built from a real (tiny) training run and a real embedded search, checked for every
section and figure, self-containedness, decodable images and the summary's facts; rendered in headless
Chromium; TensorBoard logs of every member."""

from __future__ import annotations

import base64
import csv
import io
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image

from autolfads.cli import main
from autolfads.config import Config, apply_overrides
from autolfads.data.dataset import load_sessions
from autolfads.data.multisession_synthetic import write_multisession
from autolfads.errors import ReportError
from autolfads.layout import REPORT_FILE, RUN_LOG, SEARCH_LOG
from autolfads.names import ALL_METRIC
from autolfads.report.build import report_at_end, write_report
from autolfads.report.load import lineage, load_results, logged_wall_time
from autolfads.report.summary import fmt
from autolfads.search.results import SearchSettings
from autolfads.search.run import search
from autolfads.train.records import RunLog
from autolfads.train.run import train

RUN_SECTIONS = ("summary", "training", "rates", "psth", "latents", "raster")


SEARCH_SECTIONS = RUN_SECTIONS + ("search", "lineage")


RUN_FIGURES = ("fig-training", "fig-rates", "fig-psth", "fig-latents", "fig-raster")


SEARCH_FIGURES = RUN_FIGURES + ("fig-hyperparameters", "fig-generations")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def tiny_config(tiny_model, **changes) -> Config:
    return apply_overrides(Config(), tiny_model(**changes))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, lorenz_file, tiny_model) -> Path:
    """A complete 6-epoch training run, its report written as the command line writes it after train()."""
    folder = tmp_path_factory.mktemp("run") / "run"
    result = train(tiny_config(tiny_model, train__max_epochs=6), lorenz_file, folder, echo=None)
    report = report_at_end(result.checkpoint_dir, RunLog(folder / RUN_LOG))
    assert report == folder / REPORT_FILE and report.is_file()
    return folder


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory, lorenz_file, tiny_model) -> Path:
    """A 4-member, 3-generation embedded search, its report written as the command line writes it after search()."""
    workdir = tmp_path_factory.mktemp("search") / "search"
    settings = SearchSettings(population=4, epochs_per_generation=2, max_generations=3)
    outcome = search(tiny_config(tiny_model), lorenz_file, workdir, settings)
    report = report_at_end(outcome.workdir, RunLog(workdir / SEARCH_LOG))
    assert report == workdir / REPORT_FILE and report.is_file()
    assert f"report: {report}" in outcome.summary(report)
    return workdir


STITCHED_NEURONS, STITCHED_CS_DIM = (8, 10, 12), 2


@pytest.fixture(scope="module")
def stitched_data(tmp_path_factory) -> Path:
    """Three tiny synthetic sessions (6 conditions x 5 trials, 20 bins) with 8, 10 and 12 neurons."""
    folder = tmp_path_factory.mktemp("sessions") / "data"
    write_multisession(
        folder,
        neurons_per_session=",".join(map(str, STITCHED_NEURONS)),
        n_conditions=6,
        trials_per_condition=5,
        seq_len=20,
        seed=1,
    )
    return folder


@pytest.fixture(scope="module")
def stitched_run(tmp_path_factory, stitched_data, tiny_model) -> Path:
    """A 2-epoch stitched run over the three sessions, the last 2 neurons of each held out; its report written
    after train, as by the command line."""
    folder = tmp_path_factory.mktemp("stitched") / "run"
    train(
        tiny_config(tiny_model, train__max_epochs=2, model__cs_dim=STITCHED_CS_DIM),
        stitched_data,
        folder,
        echo=None,
    )
    report_at_end(folder, RunLog(folder / RUN_LOG))
    return folder


@pytest.fixture(scope="module")
def stitched_search(tmp_path_factory, stitched_data, tiny_model) -> Path:
    workdir = tmp_path_factory.mktemp("stitched_search") / "search"
    settings = SearchSettings(population=2, epochs_per_generation=1, max_generations=2)
    search(tiny_config(tiny_model, model__cs_dim=STITCHED_CS_DIM), stitched_data, workdir, settings)
    report_at_end(workdir, RunLog(workdir / SEARCH_LOG))
    return workdir


def html_of(folder: Path) -> str:
    return (folder / REPORT_FILE).read_text(encoding="utf-8")


def embedded_images(html: str) -> list[Image.Image]:
    images = []
    for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html):
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        image.load()  # decodes every pixel: a truncated PNG raises here
        images.append(image)
    return images


def grey_levels(image: Image.Image) -> int:
    return sum(1 for count in image.convert("L").histogram() if count)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------------ content
@pytest.mark.parametrize("kind", ["run", "search"])
def test_every_section_and_figure_is_there_and_every_image_decodes(kind, run_dir, search_dir):
    html = html_of(run_dir if kind == "run" else search_dir)
    sections = SEARCH_SECTIONS if kind == "search" else RUN_SECTIONS
    figures = SEARCH_FIGURES if kind == "search" else RUN_FIGURES
    for section in sections:
        assert f'<section id="{section}">' in html and f'href="#{section}"' in html, section
    for figure in figures:
        assert re.search(rf'<figure id="{figure}"><img src="data:image/png;base64,', html), figure
    if kind == "run":
        assert 'id="search"' not in html and 'id="lineage"' not in html
    images = embedded_images(html)
    assert len(images) == len(figures)
    for image in images:
        assert image.format == "PNG" and image.width > 300 and image.height > 150
        assert grey_levels(image) > 10, "a blank figure"
    assert 'class="note"' not in html, "a complete run with data, output and true rates leaves nothing out"


@pytest.mark.parametrize("kind", ["run", "search"])
def test_the_report_is_self_contained(kind, run_dir, search_dir):
    html = html_of(run_dir if kind == "run" else search_dir)
    assert (
        "http://" not in html
        and "https://" not in html
        and "//" not in re.sub(r"base64,[A-Za-z0-9+/=]+", "", html).replace("file://", "")
    )
    for attribute, value in re.findall(r'\b(src|href)="([^"]*)"', html):
        assert value.startswith(("data:", "#")), f"{attribute}={value[:60]} points outside the file"
    assert "<script" not in html and "url(" not in html and "@import" not in html


def test_run_summary_states_the_facts(run_dir):
    html = html_of(run_dir)
    metrics = read_csv(run_dir / "metrics.csv")
    assert "32 train, 8 valid" in html and ">20<" in html and ">10<" in html  # trials, bins, neurons
    assert "conditions</th><td>8<" in html and "true rates</th><td>yes" in html
    assert f"{len(metrics)} (best: epoch" in html
    assert "R² of the posterior-sampled rates vs true rates (valid)" in html
    assert "cpu, 1 torch thread" in html and "wall time" in html
    assert "Full configuration (config.yaml)" in html and "gen_dim: 16" in html
    assert str(run_dir / "lfads_output.h5") in html


def test_search_summary_and_lineage_match_the_search(search_dir):
    results = load_results(search_dir)
    state, exploits = read_csv(search_dir / "state.csv"), read_csv(search_dir / "exploits.csv")
    last = [row for row in state if row["generation"] == "2"]
    best = min(last, key=lambda row: float(row[ALL_METRIC]))  # the default train.select_metric
    assert results.search.best_member == int(best["member"])
    steps = results.search.lineage
    assert [step.generation for step in steps] == [0, 1, 2] and steps[-1].member == int(best["member"])
    for before, step in zip(steps, steps[1:]):
        if step.inherited_from is None:
            assert before.member == step.member
        else:  # the member lost (an exploit) after the previous generation to the lineage's member there
            assert step.inherited_from == before.member
            assert {
                "generation": str(step.generation - 1),
                "loser": str(step.member),
                "winner": str(before.member),
            }.items() <= next(
                row
                for row in exploits
                if row["generation"] == str(step.generation - 1) and row["loser"] == str(step.member)
            ).items()
    html = html_of(search_dir)
    assert "AutoLFADS search, embedded backend" in html and f"member {results.search.best_member} ({ALL_METRIC}" in html
    assert "1e-05 … 0.005 (log)" in html  # the searched range of lr_init, from search_space.yaml
    assert f"exploits</th><td>{len(exploits)}<" in html


# ------------------------------------------------------------------------------------------------ stitched models
def expected_session_scores(model_dir: Path, data: Path) -> dict[str, dict[str, float]]:
    """R^2 (vs true rates) and held-in bits/spike of every session and split, straight from the output files
    and the data, in NumPy: R^2 per neuron over trials x bins, averaged over neurons; bits/spike against each
    neuron's mean count, rates floored at 1e-9."""
    scores = {}
    for session in load_sessions(data, cs_dim=STITCHED_CS_DIM):
        with h5py.File(model_dir / f"lfads_output_{session.name}.h5") as h5:
            for split in session.splits:
                position = {int(ind): row for row, ind in enumerate(h5[f"{split.name}_inds"][()])}
                rates = h5[f"{split.name}_rates"][()][[position[int(ind)] for ind in split.inds]].astype(np.float64)
                truth = split.truth.numpy().astype(np.float64)
                ss_res = ((rates - truth) ** 2).sum((0, 1))
                ss_tot = ((truth - truth.mean((0, 1))) ** 2).sum((0, 1))
                counts = split.recon.numpy().astype(np.float64)[:, :, : session.encod_dim]
                rates = np.maximum(rates[:, :, : session.encod_dim], 1e-9)
                null = np.broadcast_to(counts.mean((0, 1)), counts.shape)
                nll = (rates - counts * np.log(rates)).sum()
                null_nll = (null - counts * np.log(null)).sum()
                scores[f"{session.name} {split.name}"] = {
                    "r2": float(np.mean(1 - ss_res / ss_tot)),
                    "bps": float((null_nll - nll) / (counts.sum() * np.log(2))),
                }
    return scores


@pytest.mark.parametrize("kind", ["run", "search"])
def test_a_stitched_report_lists_every_session_with_its_scores(kind, stitched_run, stitched_search, stitched_data):
    folder = stitched_run if kind == "run" else stitched_search
    results = load_results(folder)
    names = [f"session_{s:02d}" for s in range(len(STITCHED_NEURONS))]
    assert [row.name for row in results.sessions] == names
    assert [(row.heldin, row.heldout) for row in results.sessions] == [
        (n - STITCHED_CS_DIM, STITCHED_CS_DIM) for n in STITCHED_NEURONS
    ]
    expected = expected_session_scores(results.model_dir, stitched_data)
    for row, session in zip(results.sessions, load_sessions(stitched_data), strict=True):
        assert row.trials == {"train": session.train.n_trials, "valid": session.valid.n_trials}
        for split in ("train", "valid"):
            assert row.r2[split] == pytest.approx(expected[f"{row.name} {split}"]["r2"], abs=1e-5)
            assert row.bps[split] == pytest.approx(expected[f"{row.name} {split}"]["bps"], abs=1e-5)

    html = html_of(folder)
    table = html.split('<section id="sessions">', 1)[1].split("</section>", 1)[0]
    assert 'href="#sessions"' in html and table.count("<tr>") == 1 + len(names)  # the header and a row per session
    for row, n in zip(results.sessions, STITCHED_NEURONS, strict=True):
        cells = [
            f'<td class="num">{cell}</td>'
            for cell in (row.name, f"{n} ({n - 2} held-in + 2 held-out)", fmt(row.r2["valid"]), fmt(row.bps["valid"]))
        ]
        assert all(cell in table for cell in cells), row
    for section in ("rates", "psth", "latents", "raster"):  # the figures say which session they show
        assert re.search(rf'<section id="{section}"><h2>[^<]*\(session session_00\)</h2>', html), section
    assert len(embedded_images(html)) == len(RUN_FIGURES if kind == "run" else SEARCH_FIGURES)
    assert 'class="note"' not in html, "a complete stitched run leaves nothing out"


def test_a_single_session_report_has_no_sessions_table(run_dir, search_dir):
    for folder in (run_dir, search_dir):
        assert load_results(folder).sessions == []
        html = html_of(folder)
        assert 'id="sessions"' not in html and "(session " not in html


def test_a_missing_session_output_or_data_is_a_note(stitched_run, tmp_path):
    one_missing = tmp_path / "one_missing"
    shutil.copytree(stitched_run, one_missing)
    (one_missing / "lfads_output_session_01.h5").unlink()
    html = write_report(one_missing).read_text()
    assert "no lfads_output_session_01.h5 in" in html and 'class="note"' in html
    rows = {row.name: row for row in load_results(one_missing).sessions}
    assert rows["session_01"].r2 == {} and rows["session_01"].trials and rows["session_00"].r2 and rows["session_02"].r2
    assert 'id="fig-rates"' in html  # the first session's figures stay

    first_missing = tmp_path / "first_missing"
    shutil.copytree(stitched_run, first_missing)
    (first_missing / "lfads_output_session_00.h5").unlink()
    html = write_report(first_missing).read_text()
    assert (
        "no lfads_output_session_00.h5 in" in html
        and 'id="fig-rates"' not in html
        and '<section id="sessions">' in html
    )

    no_data = tmp_path / "no_data"
    shutil.copytree(stitched_run, no_data)
    config = yaml.safe_load((no_data / "config.yaml").read_text())
    config["data"]["dir"] = str(tmp_path / "moved")
    (no_data / "config.yaml").write_text(yaml.safe_dump(config))
    html = write_report(no_data).read_text()
    assert "cannot be read" in html and '<section id="sessions">' in html and "20 bins (from config.yaml" in html
    assert [row.trials for row in load_results(no_data).sessions] == [{}, {}, {}]


def test_lineage_follows_exploits_backwards():
    state = [
        {"generation": g, "member": m, "smth_val_nll_heldin": 1.0 - 0.1 * g - 0.01 * m, "lr_init": 0.001 * (m + 1)}
        for g in range(3)
        for m in range(4)
    ]
    exploits = [
        {"generation": 0, "loser": 2, "winner": 1},  # 2 continues from 1 in generation 1
        {"generation": 1, "loser": 0, "winner": 2},  # 0 continues from 2 in generation 2
    ]
    steps = lineage(state, exploits, 0, "smth_val_nll_heldin")
    assert [(s.generation, s.member, s.inherited_from) for s in steps] == [(0, 1, None), (1, 2, 1), (2, 0, 2)]
    assert [(s.generation, s.member) for s in lineage(state, exploits, 3, "smth_val_nll_heldin")] == [
        (0, 3),
        (1, 3),
        (2, 3),
    ]


# ---------------------------------------------------------------------------------------- missing pieces and errors
def test_a_run_without_its_output_or_data_is_reported_with_notes(run_dir, tmp_path):
    no_output = tmp_path / "no_output"
    shutil.copytree(run_dir, no_output)
    (no_output / "lfads_output.h5").unlink()
    html = write_report(no_output).read_text()
    assert "no lfads_output.h5" in html and "autolfads sample --checkpoint" in html
    assert 'id="fig-training"' in html and 'id="fig-rates"' not in html and '<section id="rates">' in html

    no_data = tmp_path / "no_data"
    shutil.copytree(run_dir, no_data)
    config = yaml.safe_load((no_data / "config.yaml").read_text())
    config["data"]["dir"] = str(tmp_path / "moved.h5")
    (no_data / "config.yaml").write_text(yaml.safe_dump(config))
    html = write_report(no_data, tmp_path / "elsewhere" / "r.html").read_text()
    assert "cannot be read" in html and "moved.h5" in html
    assert not list((tmp_path / "elsewhere").glob(".*.tmp"))


def test_a_folder_that_is_neither_a_run_nor_a_search_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="neither a training run folder"):
        write_report(tmp_path)
    with pytest.raises(ReportError, match="does not exist"):
        write_report(tmp_path / "missing")
    (tmp_path / "data.h5").write_bytes(b"")
    with pytest.raises(ReportError, match="is a file"):
        write_report(tmp_path / "data.h5")
    logged = []
    assert report_at_end(tmp_path, logged.append) is None
    assert "report not written" in logged[0] and f"autolfads report {tmp_path}" in logged[0]


def test_wall_time_counts_sessions_not_the_pause_between_them(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "2026-01-01 10:00:00 new run: x\n2026-01-01 10:00:30 epoch 3/9\n"  # 30 s
        "2026-01-01 12:00:00 resumed from last.ckpt at epoch 3\n2026-01-01 12:01:00 complete after 9 epochs\n"  # 60 s
    )
    assert logged_wall_time(log) == 90


def test_tensorboard_shows_every_member_of_a_search(search_dir):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    # what `tensorboard --logdir WORKDIR` loads: every folder of event files under the workdir is a run
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(search_dir))
    multiplexer.Reload()
    runs = sorted(multiplexer.Runs())
    assert runs == [f"tensorboard/member_{m:02d}" for m in range(4)]
    metrics = read_csv(search_dir / "metrics.csv")
    for m, run in enumerate(runs):
        events = multiplexer.Scalars(run, "smth_val_nll_heldin")
        mine = [row for row in metrics if row["member"] == str(m)]
        assert [e.step for e in events] == [int(row["epoch"]) for row in mine]
        assert [e.value for e in events] == pytest.approx([float(row["smth_val_nll_heldin"]) for row in mine])


# ------------------------------------------------------------------------------------ the command line and a browser
@pytest.mark.slow
def test_cli_train_and_search_write_and_print_the_report_and_report_rewrites_it(
    lorenz_file, tiny_model, tmp_path, capsys
):
    # in-process main(): the same handlers as the installed command, without a torch import per call
    assert (
        main(["train", "--data", str(lorenz_file), "--checkpoint", str(tmp_path / "run"), "--quiet", *tiny_model()])
        == 0
    )
    assert (
        f"# report: {tmp_path / 'run' / REPORT_FILE}" in capsys.readouterr().err
        and (tmp_path / "run" / REPORT_FILE).is_file()
    )

    assert (
        main(
            [
                "train",
                "--data",
                str(lorenz_file),
                "--checkpoint",
                str(tmp_path / "quiet"),
                "--quiet",
                "--no-report",
                *tiny_model(),
            ]
        )
        == 0
    )
    assert "report" not in capsys.readouterr().err and not (tmp_path / "quiet" / REPORT_FILE).exists()

    workdir = tmp_path / "search"
    args = [
        "search",
        "--data",
        str(lorenz_file),
        "--workdir",
        str(workdir),
        "--population",
        "2",
        "--epochs-per-generation",
        "1",
        "--max-generations",
        "2",
    ]
    assert main([*args, *tiny_model()]) == 0
    out, err = capsys.readouterr()
    assert f"report: {workdir / REPORT_FILE}" in out and (workdir / REPORT_FILE).is_file()
    assert "search: done after 2 generations" in err  # the progress line when stderr is no terminal

    assert main(["report", str(tmp_path / "nothing-here")]) == 2
    assert capsys.readouterr().err.startswith("autolfads: error: ")


@pytest.mark.slow
def test_the_installed_report_command(autolfads, search_dir, tmp_path):
    result = autolfads("report", search_dir, "-o", tmp_path / "copy.html")
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip() == str(tmp_path / "copy.html")
        and 'id="fig-hyperparameters"' in (tmp_path / "copy.html").read_text()
    )


def chromium_screenshot(page: Path, screenshot: Path) -> str:
    """Render `page` in headless Chromium with a fresh profile; returns its log (console messages included)."""
    with tempfile.TemporaryDirectory() as profile:
        command = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--no-first-run", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
            f"--screenshot={screenshot}",
            "--window-size=1280,2400", "--enable-logging=stderr", "--v=0", page.resolve().as_uri(),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")
@pytest.mark.parametrize("kind", ["run", "search"])
def test_the_report_renders_in_headless_chromium_without_console_errors(kind, run_dir, search_dir, tmp_path):
    screenshot = tmp_path / f"{kind}.png"
    log = chromium_screenshot((run_dir if kind == "run" else search_dir) / REPORT_FILE, screenshot)
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert not console, console
    image = Image.open(screenshot)
    image.load()
    assert image.size == (1280, 2400)
    assert grey_levels(image) > 50, "the page rendered blank"


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")
def test_the_console_check_sees_page_errors(tmp_path):
    """The check above would notice: a page that logs errors shows them in Chromium's log."""
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body><script>console.error("boom"); '
        "missing();</script></body></html>"
    )
    log = chromium_screenshot(page, tmp_path / "broken.png")
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert any("boom" in line for line in console) and any("missing is not defined" in line for line in console)
