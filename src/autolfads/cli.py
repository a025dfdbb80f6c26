"""The `autolfads` command: a thin layer over the Python API.

examples:
    autolfads data lorenz --out data/lorenz.h5
    autolfads train --data data/lorenz.h5 --checkpoint runs/lorenz --config-file examples/configs/lorenz.yaml
    autolfads train --data /share/data --checkpoint /share/output --config-file cfg.yaml --epochs 50 TRAIN.LR.INIT 0.003
    autolfads sample --checkpoint runs/lorenz
    autolfads search --data data/lorenz.h5 --config-file examples/configs/lorenz.yaml --workdir runs/search
    autolfads report runs/search                 # -> runs/search/report.html (train and search write it too)
    autolfads config init my_config.yaml         # a documented default config to edit (--tf2: lfads-tf2 keys)
    autolfads doctor                             # versions, devices, Ray, thread settings
"""

import argparse
import inspect
import sys
from pathlib import Path

from . import __version__
from .cli_options import add_keyword_options, keyword_values
from .errors import AutoLFADSError, TrainingDiverged
from .layout import CONFIG_FILE, KATIB_CHECKPOINT_DIR
from .runtime import return_large_blocks_to_os, use_huge_pages

# A command line that starts with one of these is `train` (the older tools' images took no sub-command).
SEED_TRAIN_OPTIONS = ("--data", "--checkpoint", "--config-file")


def main(argv: list[str] | None = None) -> int:
    use_huge_pages()  # before the parser imports torch
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SEED_TRAIN_OPTIONS:
        argv = ["train", *argv]  # the TensorFlow tools' container form: `IMAGE --data D --checkpoint C --config-file F`
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    options = [item for item in unknown if item.startswith("--")]
    if options or (unknown and args.command not in ("train", "search")):
        parser.error(f"unrecognized arguments: {' '.join(options or unknown)}")
    return_large_blocks_to_os()
    try:
        return args.handler(args, unknown)
    except TrainingDiverged as err:
        print(f"autolfads: training diverged: {err}", file=sys.stderr)
        return 3
    except AutoLFADSError as err:
        print(f"autolfads: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "autolfads: interrupted; the last checkpoint is intact, rerun the same command to continue", file=sys.stderr
        )
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autolfads", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"autolfads {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train (or resume) one LFADS model",
        description="Train one LFADS model, or continue the one in --checkpoint. Trailing KEY VALUE pairs override the "
        "config, in our schema (train.lr_init 0.003) or lfads-tf2's (TRAIN.LR.INIT 0.003). Every epoch prints "
        "name=value metric lines on stdout (Katib's StdOut metrics collector reads them).",
        epilog="example: autolfads train --data data/lorenz.h5 --checkpoint runs/lorenz --config-file examples/configs/lorenz.yaml model.dropout_rate 0.1",
    )
    train.add_argument(
        "--data",
        type=Path,
        help="HDF5 data file, a folder or a glob; several files are sessions of one stitched model (data.prefix selects in a folder); default: data.dir of the config",
    )
    train.add_argument(
        "--checkpoint",
        type=Path,
        default=Path(KATIB_CHECKPOINT_DIR),
        help=f"run folder: checkpoints, logs, outputs (default {KATIB_CHECKPOINT_DIR}, as in the Katib container)",
    )
    train.add_argument(
        "--config-file",
        type=Path,
        help="YAML config, our schema or lfads-tf2's; default: the run folder's config.yaml, else built-in defaults",
    )
    train.add_argument(
        "--epochs",
        type=int,
        help="train exactly this many more epochs and return (one PBT generation); default: until early stopping or max_epochs",
    )
    outputs = train.add_mutually_exclusive_group()
    outputs.add_argument(
        "--output",
        dest="write_outputs",
        action="store_true",
        default=None,
        help="always write lfads_output.h5 at the end",
    )
    outputs.add_argument(
        "--no-output",
        dest="write_outputs",
        action="store_false",
        help="never write lfads_output.h5 (default: write it once training is complete)",
    )
    train.add_argument("--quiet", action="store_true", help="do not print the per-epoch name=value metric lines")
    train.add_argument(
        "--no-report", dest="report", action="store_false", help="do not write report.html when training completes"
    )
    train.set_defaults(handler=run_train)

    search = commands.add_parser(
        "search",
        help="AutoLFADS: population-based training of LFADS hyperparameters",
        description="Population-based training (AutoLFADS): members train in synchronous generations; after each, random "
        "pairs compete on the smoothed validation NLL and each loser copies the winner's weights and optimizer state and "
        "perturbs its hyperparameters. Rerunning the same command resumes from the last completed generation. Trailing "
        "KEY VALUE pairs override the config as in `autolfads train`.",
        epilog="examples:\n  autolfads search --data data/lorenz.h5 --config-file examples/configs/lorenz.yaml --population 8 --workdir runs/search\n"
        "  autolfads search ... --backend ray --address auto --cpus-per-member 2 --gpus-per-member 0.5\n"
        "  autolfads search ... --backend ray --address auto --members-per-trial 8 --gpus-per-trial 1 --cpus-per-trial 4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    search.add_argument(
        "--data",
        type=Path,
        help="HDF5 data file, a folder or a glob (several files: one stitched model); default: data.dir of the config",
    )
    search.add_argument(
        "--config-file", type=Path, help="YAML config (our schema or lfads-tf2's); default: built-in defaults"
    )
    search.add_argument(
        "--search-space",
        type=Path,
        help="YAML search space (name: {low, high, log, explore_weight, enforce_limits, initial}); default: the published AutoLFADS one",
    )
    search.add_argument("--population", type=int, default=8, help="members (default 8)")
    search.add_argument(
        "--workdir", type=Path, required=True, help="folder for the search's checkpoints, tables, logs and best model"
    )
    search.add_argument(
        "--epochs-per-generation",
        type=int,
        default=25,
        help="epochs between exploits (default 25; the first generation adds the KL/L2 ramps)",
    )
    search.add_argument("--max-generations", type=int, default=50, help="upper bound on generations (default 50)")
    search.add_argument(
        "--seed", type=int, default=0, help="seed of the sampling, tournaments and perturbations (default 0)"
    )
    search.add_argument(
        "--backend",
        choices=["embedded", "ray"],
        default="embedded",
        help="embedded: this machine, worker processes each training a slice of the population on its population axis (default); ray: Ray Tune trials on a cluster",
    )
    search.add_argument(
        "--workers",
        type=int,
        help="embedded: worker processes, each training a slice of the population (default: one per usable CPU, at most the population; 1 on a GPU)",
    )
    search.add_argument(
        "--threads-per-worker",
        type=int,
        help="embedded: torch threads of each worker (default: its share of the usable CPUs; train.threads applies to `autolfads train`)",
    )
    search.add_argument(
        "--address", help="Ray cluster to join: auto or HOST:PORT (default: start a local Ray instance on 127.0.0.1)"
    )
    search.add_argument(
        "--cpus-per-member",
        type=float,
        default=1.0,
        help="Ray: CPUs per member, also its torch thread count (default 1)",
    )
    search.add_argument(
        "--gpus-per-member", type=float, default=0.0, help="Ray: GPUs per member, fractions allowed (default 0)"
    )
    search.add_argument(
        "--members-per-trial",
        type=int,
        default=1,
        help="Ray: members trained together by one trial on one population axis (default 1); the trial asks for the per-trial resources",
    )
    search.add_argument(
        "--cpus-per-trial",
        type=float,
        help="Ray: CPUs of one trial, also its torch threads (default: members per trial x --cpus-per-member)",
    )
    search.add_argument(
        "--gpus-per-trial",
        type=float,
        help="Ray: GPUs of one trial, shared by its members (default: members per trial x --gpus-per-member)",
    )
    search.add_argument(
        "--resume",
        action="store_true",
        help="require an existing search in --workdir to continue (rerunning resumes anyway)",
    )
    from .names import METRIC, PBT_METRICS, SAMPLED_METRIC

    search.add_argument(
        "--metric",
        default=METRIC,
        choices=list(PBT_METRICS),
        help=f"what PBT ranks members by: {METRIC} (default: held-in neurons and bins, posterior means; lower is better), {SAMPLED_METRIC} (every neuron and bin, a posterior sample, as lfads-torch and lfads-tf2; needs train.sampled_metric true) or an NLB metric (higher is better; needs data.nlb_targets)",
    )
    search.add_argument(
        "--no-report", dest="report", action="store_false", help="do not write WORKDIR/report.html at the end"
    )
    search.set_defaults(handler=run_search)

    sample = commands.add_parser(
        "sample",
        help="write posterior-sampled rates and latents from a checkpoint",
        description="Sample the best (else last) checkpoint's posterior into an LFADS output file.",
        epilog="examples:\n  autolfads sample --checkpoint runs/lorenz\n  autolfads sample --checkpoint runs/search/best_model --data data/other_session.h5 --output rates.h5 --num-samples 200",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sample.add_argument("--checkpoint", type=Path, required=True, help="run folder written by `autolfads train`")
    sample.add_argument("--data", type=Path, help="data to sample (default: the data the model was trained on)")
    sample.add_argument("--output", type=Path, help="output file (default: CHECKPOINT/lfads_output.h5)")
    sample.add_argument("--num-samples", type=int, help="posterior samples per trial (default: train.num_samples, 50)")
    sample.set_defaults(handler=run_sample)

    data = commands.add_parser(
        "data",
        help="make data sets",
        description="Write synthetic data sets with ground truth in the LFADS HDF5 layout.",
        epilog="examples:\n  autolfads data lorenz --out data/lorenz.h5\n  autolfads data chaotic-rnn --out data/rnn.h5 --n-conditions 20 --seed 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = data.add_subparsers(dest="kind", metavar="KIND", required=True)
    from .data import SYNTHETIC_SETS

    for kind, make in SYNTHETIC_SETS.items():
        summary = (inspect.getdoc(make) or "").split("\n")[0]
        sub = kinds.add_parser(
            kind,
            help=summary,
            description=inspect.getdoc(make),
            epilog=f"example: autolfads data {kind} --out data/{kind}.h5 --seed 1",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
        add_keyword_options(sub, make)
        sub.set_defaults(handler=run_data, make_kind=kind)
    add_nlb_parsers(commands, kinds)
    from .cli_sessions import add_session_parsers

    add_session_parsers(commands, kinds)
    from .cli_continuous import add_continuous_parsers

    add_continuous_parsers(kinds)
    from .cli_synthetic import add_synthetic_parsers

    add_synthetic_parsers(kinds)

    report = commands.add_parser(
        "report",
        help="an HTML report with figures of a training run or a search",
        description="Write one self-contained HTML file (figures embedded, opens offline) about a run folder or search workdir:\n"
        "training curves, hyperparameters per generation with exploits and the best member's lineage, inferred rates\n"
        "against spikes and true rates, PSTHs, latent factors, a single-trial raster and a summary table.",
        epilog="examples:\n  autolfads report runs/lorenz                  # -> runs/lorenz/report.html\n  autolfads report runs/search -o search.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument(
        "folder",
        type=Path,
        metavar="RUN_DIR",
        help="a run folder (autolfads train --checkpoint) or a search workdir (autolfads search --workdir)",
    )
    report.add_argument("-o", "--output", type=Path, help="HTML file to write (default: RUN_DIR/report.html)")
    report.set_defaults(handler=run_report)

    config = commands.add_parser(
        "config",
        help="print or write a documented default config",
        description="The default configuration with every key documented, in our schema or (--tf2) lfads-tf2's MODEL/TRAIN keys.",
        epilog="examples:\n  autolfads config show\n  autolfads config init my_config.yaml --tf2\n"
        "  autolfads train --config-file my_config.yaml --data data/lorenz.h5 --checkpoint runs/mine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show",
        help="print the documented default config",
        description="Print the documented default config.",
        epilog="example: autolfads config show --tf2",
    )
    init = actions.add_parser(
        "init",
        help="write the documented default config to FILE",
        description="Write the documented default config to FILE (never over an existing file unless --force).",
        epilog="example: autolfads config init my_config.yaml && autolfads train --config-file my_config.yaml --data data/lorenz.h5 --checkpoint runs/mine",
    )
    init.add_argument("file", type=Path, metavar="FILE", help="YAML file to write")
    init.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    for sub in (show, init):
        sub.add_argument("--tf2", action="store_true", help="lfads-tf2 keys (MODEL.*, TRAIN.*) instead of our schema")
        sub.set_defaults(handler=run_config)

    doctor = commands.add_parser(
        "doctor",
        help="show versions, devices, Ray and thread settings",
        description="Print versions (python, torch, numpy, ray ...), torch devices, CUDA and Ray availability, thread settings and the recommended thread setting.",
        epilog="example: autolfads doctor",
    )
    doctor.set_defaults(handler=run_doctor)

    from .deploy.commands import add_kubeflow_parser

    add_kubeflow_parser(commands)
    return parser


def run_train(args: argparse.Namespace, overrides: list[str]) -> int:
    from .config import Config, apply_overrides, load_config
    from .layout import RUN_LOG
    from .train.records import RunLog
    from .train.run import train

    config_file = args.config_file
    if config_file is None and (args.checkpoint / CONFIG_FILE).exists():
        config_file = args.checkpoint / CONFIG_FILE
    config = load_config(config_file) if config_file else Config()
    config = apply_overrides(config, overrides)
    if args.epochs is not None and args.epochs < 1:
        raise_config(f"--epochs must be >= 1, got {args.epochs}")
    result = train(
        config,
        args.data,
        args.checkpoint,
        epochs=args.epochs,
        write_outputs=args.write_outputs,
        echo=None if args.quiet else print,
    )
    for output in result.outputs:
        print(f"# output: {output}", file=sys.stderr)
    if args.report and (result.complete or result.outputs):
        from .report import report_at_end  # matplotlib is imported only when a report is made

        report = report_at_end(result.checkpoint_dir, RunLog(result.checkpoint_dir / RUN_LOG))
        if report is not None:
            print(f"# report: {report}", file=sys.stderr)
    return 0


def run_search(args: argparse.Namespace, overrides: list[str]) -> int:
    from pydantic import ValidationError

    from .config import Config, apply_overrides, explain_errors, load_config
    from .errors import ConfigError
    from .layout import SEARCH_LOG, SETTINGS_FILE
    from .search.results import SearchSettings
    from .search.run import search
    from .search.space import load_search_space
    from .train.records import RunLog

    if args.resume and not (args.workdir / SETTINGS_FILE).exists():
        raise ConfigError(f"--resume: {args.workdir} holds no search to continue")
    config = apply_overrides(load_config(args.config_file) if args.config_file else Config(), overrides)
    try:
        settings = SearchSettings(
            population=args.population,
            epochs_per_generation=args.epochs_per_generation,
            max_generations=args.max_generations,
            seed=args.seed,
            backend=args.backend,
            metric=args.metric,
        )
    except ValidationError as err:
        options = {name: "--" + name.replace("_", "-") for name in SearchSettings.model_fields}
        raise ConfigError("invalid search settings: " + "; ".join(explain_errors(err, options))) from None
    space = load_search_space(args.search_space) if args.search_space else None
    if args.backend == "ray":
        options = {
            "address": args.address,
            "cpus_per_member": args.cpus_per_member,
            "gpus_per_member": args.gpus_per_member,
            "members_per_trial": args.members_per_trial,
            "cpus_per_trial": args.cpus_per_trial,
            "gpus_per_trial": args.gpus_per_trial,
        }
    else:
        options = {"workers": args.workers, "threads_per_worker": args.threads_per_worker}
    outcome = search(config, args.data, args.workdir, settings, space, **options)
    report = None
    if args.report:
        from .report import report_at_end  # matplotlib is imported only when a report is made

        report = report_at_end(outcome.workdir, RunLog(outcome.workdir / SEARCH_LOG))
    print(outcome.summary(report))
    return 0


def run_sample(args: argparse.Namespace, _: list[str]) -> int:
    from .train.run import sample

    for path in sample(args.checkpoint, args.data, args.output, args.num_samples):
        print(path)
    return 0


def run_report(args: argparse.Namespace, _: list[str]) -> int:
    from .report import write_report

    print(write_report(args.folder, args.output))
    return 0


def run_config(args: argparse.Namespace, _: list[str]) -> int:
    from .config_template import default_config_text, write_default_config

    if args.action == "show":
        print(default_config_text(args.tf2), end="")
    else:
        print(write_default_config(args.file, args.tf2, args.force))
    return 0


def run_doctor(args: argparse.Namespace, _: list[str]) -> int:
    from .doctor import report

    print(report())
    return 0


def run_data(args: argparse.Namespace, _: list[str]) -> int:
    from .data import SYNTHETIC_SETS, write_synthetic

    path = write_synthetic(args.make_kind, args.out, **keyword_values(args, SYNTHETIC_SETS[args.make_kind]))
    print(path)
    return 0


def add_nlb_parsers(commands: argparse._SubParsersAction, kinds: argparse._SubParsersAction) -> None:
    """`autolfads data nlb`, `autolfads data nlb-synthetic` and `autolfads evaluate`."""
    from .data import nlb, nlb_synthetic

    prepare = kinds.add_parser(
        "nlb",
        help="an NLB data set from its NWB file(s): training file + evaluation targets",
        description=nlb.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare.add_argument("--dataset", required=True, choices=list(nlb.DATASETS), help="NLB data set")
    source = prepare.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--nwb",
        type=Path,
        help="the data set's NWB file, or a folder of its NWB files (e.g. NLB's train and test files)",
    )
    source.add_argument(
        "--tensors",
        type=Path,
        nargs="+",
        help="nlb_tools' tensor file(s) instead (make_train_input_tensors, make_eval_input_tensors); see autolfads.data.nlb_tensors",
    )
    prepare.add_argument(
        "--eval-targets",
        type=Path,
        help="with --tensors: make_eval_target_tensors' file (held-out spikes, forward bins, behaviour of the eval trials)",
    )
    prepare.add_argument(
        "--valid-fraction",
        type=float,
        default=0.2,
        help="with --tensors, when the eval trials' held-out spikes are unknown: train trials drawn for validation (default 0.2)",
    )
    prepare.add_argument(
        "--seed", type=int, default=0, help="with --tensors: seed of those validation trials (default 0)"
    )
    prepare.add_argument("--bin-ms", type=int, default=5, help="bin width in ms (default 5; NLB scores 5 and 20)")
    prepare.add_argument("--out", type=Path, required=True, help="training file to write")
    prepare.add_argument(
        "--targets", type=Path, help="evaluation targets file to write (default: OUT's name + _targets.h5)"
    )
    prepare.add_argument(
        "--truth",
        type=Path,
        help="true rates of a synthetic file (NAME_truth.h5 of `data nlb-synthetic`), stored as {split}_truth",
    )
    prepare.set_defaults(handler=run_data_nlb)

    synthetic = kinds.add_parser(
        "nlb-synthetic",
        help="a synthetic NLB session (NWB, mc_maze layout) with known rates",
        description=nlb_synthetic.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    synthetic.add_argument(
        "--out", type=Path, required=True, help="NWB file to write; its true rates go to NAME_truth.h5 beside it"
    )
    add_keyword_options(synthetic, nlb_synthetic.write_nlb_synthetic)
    synthetic.set_defaults(handler=run_data_nlb_synthetic)

    evaluate = commands.add_parser(
        "evaluate",
        help="NLB metrics of an LFADS output; NLB submission files",
        description="Score an LFADS output file with the Neural Latents Benchmark's metrics (co-bps, vel R2 or tp corr, psth R2, "
        "fp-bps: the same numbers as nlb_tools' evaluate) against the targets of `autolfads data nlb`; print a table, and "
        "optionally write JSON and the rates as an NLB submission file.",
        epilog="example: autolfads evaluate --output runs/mc_maze/lfads_output.h5 --targets data/mc_maze_targets.h5 --json scores.json --nlb-submission submission.h5",
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
        help="val (default): score and submit the 'val' trials; test: submit the output's 'test' trials (nothing to score locally)",
    )
    evaluate.set_defaults(handler=run_evaluate)


def run_data_nlb(args: argparse.Namespace, _: list[str]) -> int:
    from .data.nlb import prepare_nlb

    if args.tensors:
        from .data.nlb_tensors import prepare_tensors

        if args.truth:
            raise_config("--truth goes with --nwb (a synthetic NWB session), not --tensors")
        print(
            prepare_tensors(
                args.dataset,
                args.tensors,
                args.bin_ms,
                args.out,
                args.targets,
                args.eval_targets,
                args.valid_fraction,
                args.seed,
            ).summary
        )
        return 0
    if args.eval_targets:
        raise_config("--eval-targets goes with --tensors; with --nwb the targets are made from the NWB file")
    print(prepare_nlb(args.dataset, args.nwb, args.bin_ms, args.out, args.targets, args.truth).summary)
    return 0


def run_data_nlb_synthetic(args: argparse.Namespace, _: list[str]) -> int:
    from .data.nlb_synthetic import write_nlb_synthetic

    options = keyword_values(args, write_nlb_synthetic)
    print("\n".join(map(str, write_nlb_synthetic(args.out, **options))))
    return 0


def run_evaluate(args: argparse.Namespace, _: list[str]) -> int:
    from .evaluate import (
        evaluate_output,
        format_table,
        read_targets,
        submission_for_test_phase,
        write_json,
        write_submission,
    )

    targets = read_targets(args.targets)
    if args.phase == "test":
        if not args.nlb_submission:
            raise_config("--phase test writes a submission only: give --nlb-submission FILE")
        submission = submission_for_test_phase(args.output, targets)
        print(
            f"# NLB test-phase submission ({targets.name}): {write_submission(args.nlb_submission, targets.name, submission)}",
            file=sys.stderr,
        )
        return 0
    scores, submission = evaluate_output(args.output, targets)
    unavailable = targets.unavailable()
    print(format_table({targets.name: scores}))
    for metric, reason in unavailable.items():
        print(f"{metric}: not available ({reason})")
    if args.json:
        write_json(
            args.json,
            {
                "dataset": targets.name,
                "output": str(args.output),
                "targets": str(args.targets),
                "metrics": scores,
                "not_available": unavailable,
            },
        )
    if args.nlb_submission:
        print(
            f"# NLB submission ({targets.name}): {write_submission(args.nlb_submission, targets.name, submission)}",
            file=sys.stderr,
        )
    return 0


def raise_config(message: str) -> None:
    from .errors import ConfigError

    raise ConfigError(message)


if __name__ == "__main__":
    sys.exit(main())
