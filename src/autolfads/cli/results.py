"""`autolfads evaluate | export-nwb | report`: what a trained model's outputs become (NLB scores and
submissions, an NWB copy with the inferred signals, an HTML report)."""

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..data import nwb_export
from ..errors import ConfigError
from ..files import check_distinct
from .options import EXAMPLES, add_command

if TYPE_CHECKING:
    from ..evaluate import Targets


def add_evaluate(commands: argparse._SubParsersAction) -> None:
    evaluate = add_command(
        commands,
        "evaluate",
        run_evaluate,
        help="NLB metrics of an LFADS output; NLB submission files",
        description="Score an LFADS output file with the Neural Latents Benchmark's metrics (co-bps, vel R2 or tp "
        "corr, psth R2, fp-bps: the same numbers as nlb_tools' evaluate) against the targets of `autolfads data nlb`; "
        "print a table, and optionally write JSON and the rates as an NLB submission file.",
        epilog="example: autolfads evaluate --output runs/mc_maze/lfads_output.h5 --targets data/mc_maze_targets.h5 "
        "--json scores.json --nlb-submission submission.h5",
    )
    evaluate.add_argument(
        "--output",
        type=Path,
        required=True,
        help="LFADS output file (lfads_output.h5 of `autolfads train` or `sample`)",
    )
    evaluate.add_argument(
        "--targets", type=Path, required=True, help="NLB targets file written by `autolfads data nlb`"
    )
    evaluate.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    evaluate.add_argument(
        "--nlb-submission",
        type=Path,
        help="write the rates as an NLB submission h5 (an existing file keeps its other data sets)",
    )
    evaluate.add_argument(
        "--phase",
        choices=["val", "test"],
        default="val",
        help="val (default): score and submit the 'val' trials; test: submit the output's 'test' trials "
        "(nothing to score locally)",
    )


def add_export_nwb(commands: argparse._SubParsersAction) -> None:
    export = add_command(
        commands,
        "export-nwb",
        run_export_nwb,
        help="a copy of the NWB session with the inferred rates, factors and inputs",
        description=nwb_export.__doc__,
        formatter_class=EXAMPLES,
    )
    export.add_argument(
        "--output", type=Path, required=True, help="LFADS output file (lfads_output.h5 of train or sample)"
    )
    export.add_argument(
        "--nwb", type=Path, required=True, help="the NWB session the training file was made from (`data nwb`)"
    )
    export.add_argument("--data", type=Path, help="the training file (default: the output's data_file attribute)")
    export.add_argument(
        "--config",
        type=Path,
        help="the model's config.yaml, stored in the description (default: config.yaml beside the output)",
    )
    export.add_argument("--out", type=Path, required=True, help="NWB file to write")


def add_report(commands: argparse._SubParsersAction) -> None:
    report = add_command(
        commands,
        "report",
        run_report,
        help="an HTML report with figures of a training run or a search",
        description="Write one self-contained HTML file (figures embedded, opens offline) about a run folder or "
        "search workdir:\ntraining curves, hyperparameters per generation with exploits and the best member's "
        "lineage, inferred rates\nagainst spikes and true rates, PSTHs, latent factors, a single-trial raster and a "
        "summary table.",
        epilog="examples:\n  autolfads report runs/lorenz                  # -> runs/lorenz/report.html\n"
        "  autolfads report runs/search -o search.html",
        formatter_class=EXAMPLES,
    )
    report.add_argument(
        "folder",
        type=Path,
        metavar="RUN_DIR",
        help="a run folder (autolfads train --checkpoint) or a search workdir (autolfads search --workdir)",
    )
    report.add_argument("-o", "--output", type=Path, help="HTML file to write (default: RUN_DIR/report.html)")


def run_evaluate(args: argparse.Namespace, _: list[str]) -> int:
    from ..evaluate import evaluate_output, format_table, read_targets, submission_for_test_phase, write_json

    check_distinct(
        {"--json": args.json, "--nlb-submission": args.nlb_submission},
        {"--output": args.output, "--targets": args.targets},
    )
    targets = read_targets(args.targets)
    if args.phase == "test":
        if not args.nlb_submission:
            raise ConfigError("--phase test writes a submission only: give --nlb-submission FILE")
        submission = submission_for_test_phase(args.output, targets)
        write_nlb_submission(args.nlb_submission, targets, submission, "NLB test-phase submission")
        return 0
    scores, submission = evaluate_output(args.output, targets)
    unavailable = targets.unavailable()
    print(format_table({targets.name: scores}))
    for metric, reason in unavailable.items():
        print(f"{metric}: not available ({reason})")
    if args.json:
        record = {"dataset": targets.name, "output": str(args.output), "targets": str(args.targets)}
        write_json(args.json, {**record, "metrics": scores, "not_available": unavailable})
    if args.nlb_submission:
        write_nlb_submission(args.nlb_submission, targets, submission, "NLB submission")
    return 0


def write_nlb_submission(path: Path, targets: "Targets", submission: dict, what: str) -> None:
    from ..evaluate import write_submission

    print(f"# {what} ({targets.name}): {write_submission(path, targets.name, submission)}", file=sys.stderr)


def run_export_nwb(args: argparse.Namespace, _: list[str]) -> int:
    def note(line: str) -> None:
        print(f"autolfads: note: {line}", file=sys.stderr)

    print(nwb_export.export_nwb(args.output, args.nwb, args.out, data=args.data, config=args.config, note=note))
    return 0


def run_report(args: argparse.Namespace, _: list[str]) -> int:
    from ..report.build import write_report

    print(write_report(args.folder, args.output))
    return 0
