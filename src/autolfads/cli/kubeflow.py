"""`autolfads kubeflow katib | rayjob`: the command line over `deploy.katib` and `deploy.rayjob`.

The manifest goes to -o FILE (written atomically) or to stdout; --dry-run only prints it; --submit also
creates it on the current kube context. Notes on what Katib cannot express go to stderr.
"""

import argparse
import sys
from pathlib import Path

from .options import EXAMPLES, add_command

HEADER = "# Written by `autolfads kubeflow {kind}`. Create it with: kubectl apply -f FILE\n"
# Options of both manifests, then each one's own: fields of the same name in KatibSettings / RayJobSettings.
COMMON = ("name", "image", "population", "epochs_per_generation", "max_generations", "namespace", "run_as_user")
KATIB_OPTIONS = (*COMMON, "data_pvc", "data_subpath", "gpus", "cpus", "memory", "truncation_threshold")
RAYJOB_OPTIONS = (
    *COMMON,
    "pvc",
    "data_subpath",
    "workdir_subpath",
    "seed",
    "workers",
    "cpus_per_worker",
    "gpus_per_worker",
    "memory_per_worker",
    "cpus_per_member",
    "gpus_per_member",
    "members_per_trial",
    "cpus_per_trial",
    "gpus_per_trial",
)


def add_kubeflow(commands: argparse._SubParsersAction) -> None:
    kubeflow = commands.add_parser(
        "kubeflow",
        help="Kubernetes manifests: a Katib PBT Experiment, or a KubeRay RayJob running "
        "`autolfads search --backend ray`",
        description="Write the Kubernetes manifests of an AutoLFADS run (see deploy/kubernetes/README.md).",
        epilog="examples:\n  autolfads kubeflow katib --name lorenz --image IMAGE --data-pvc autolfads-data "
        "--config-file cfg.yaml --population 20 --epochs-per-generation 50 -o lorenz.yaml\n"
        "  autolfads kubeflow rayjob --name lorenz-ray --image IMAGE-ray --pvc autolfads-data --config-file cfg.yaml "
        "--population 16 --epochs-per-generation 25 --dry-run",
        formatter_class=EXAMPLES,
    )
    kinds = kubeflow.add_subparsers(dest="manifest", metavar="KIND", required=True)
    add_katib(kinds)
    add_rayjob(kinds)


def add_katib(kinds: argparse._SubParsersAction) -> None:
    katib = add_command(
        kinds,
        "katib",
        run_katib,
        help="a Katib Experiment (kubeflow.org/v1beta1): PBT, each trial one generation of `autolfads train`",
        description="A Katib Experiment running AutoLFADS as Katib's PBT, plus a ConfigMap with the config. Each trial "
        "resumes the checkpoint Katib copied from its parent, applies its hyperparameters and trains one generation. "
        "Katib's PBT never copies weights between trials (see deploy/kubernetes/README.md). Log-scale ranges of the "
        "search space become log-spaced discrete lists.",
        epilog="example: autolfads kubeflow katib --name lorenz --image ghcr.io/lab/autolfads:0.1.0 "
        "--data-pvc autolfads-data --data-subpath lorenz --config-file examples/configs/lorenz.yaml --population 20 "
        "--epochs-per-generation 50 -o lorenz.yaml",
    )
    add_manifest_options(katib)
    katib.add_argument(
        "--data-pvc", required=True, help="PersistentVolumeClaim holding the data (mounted read-only at /share/data)"
    )
    katib.add_argument(
        "--data-subpath", help="folder inside the PVC mounted as /share/data (default: the whole volume)"
    )
    katib.add_argument("--gpus", type=int, default=0, help="GPUs per trial (default 0)")
    katib.add_argument(
        "--cpus", type=float, default=2.0, help="CPUs per trial, also its torch thread count (default 2)"
    )
    katib.add_argument("--memory", default="4Gi", help="memory per trial (default 4Gi)")
    katib.add_argument(
        "--truncation-threshold",
        type=float,
        default=0.4,
        help="fraction of trials that exploit each generation (default 0.4)",
    )


def add_rayjob(kinds: argparse._SubParsersAction) -> None:
    rayjob = add_command(
        kinds,
        "rayjob",
        run_rayjob,
        help="a KubeRay RayJob (ray.io/v1): real PBT with `autolfads search --backend ray` on a Ray cluster",
        description="A RayJob that starts a Ray cluster (head + a worker group), runs `autolfads search --backend ray "
        "--address auto` on it and tears it down; plus a ConfigMap with the config and search space. Data and workdir "
        "live on one RWX PVC mounted at /share in every pod.",
        epilog="example: autolfads kubeflow rayjob --name lorenz-ray --image ghcr.io/lab/autolfads:0.1.0-ray "
        "--pvc autolfads-data --config-file examples/configs/lorenz.yaml --population 16 --epochs-per-generation 25 "
        "--workers 4 --cpus-per-worker 4",
    )
    add_manifest_options(rayjob)
    rayjob.add_argument(
        "--pvc", required=True, help="RWX PersistentVolumeClaim for the data and the workdir (mounted at /share)"
    )
    rayjob.add_argument("--data-subpath", default="data", help="data folder (or file) inside the PVC (default data)")
    rayjob.add_argument("--workdir-subpath", help="search workdir inside the PVC (default runs/NAME)")
    rayjob.add_argument("--seed", type=int, default=0, help="seed of the search (default 0)")
    rayjob.add_argument("--workers", type=int, default=2, help="worker pods (default 2)")
    rayjob.add_argument("--cpus-per-worker", type=float, default=4.0, help="CPUs per worker pod (default 4)")
    rayjob.add_argument("--gpus-per-worker", type=int, default=0, help="GPUs per worker pod (default 0)")
    rayjob.add_argument("--memory-per-worker", default="8Gi", help="memory per worker pod (default 8Gi)")
    rayjob.add_argument(
        "--cpus-per-member", type=float, default=1.0, help="CPUs per member, also its torch threads (default 1)"
    )
    rayjob.add_argument(
        "--gpus-per-member", type=float, default=0.0, help="GPUs per member, fractions allowed (default 0)"
    )
    rayjob.add_argument(
        "--members-per-trial",
        type=int,
        default=1,
        help="members trained together on one population axis in one Ray trial (default 1)",
    )
    rayjob.add_argument(
        "--cpus-per-trial", type=float, help="CPUs of one trial (default: members per trial x --cpus-per-member)"
    )
    rayjob.add_argument(
        "--gpus-per-trial",
        type=float,
        help="GPUs of one trial, shared by its members (default: members per trial x --gpus-per-member)",
    )


def add_manifest_options(parser: argparse.ArgumentParser) -> None:
    """What both manifests need: names, image, config, search, namespace and where the manifest goes."""
    parser.add_argument("--name", required=True, help="name of the Experiment / RayJob (and prefix of its ConfigMap)")
    parser.add_argument("--image", required=True, help="container image with autolfads (deploy/docker/)")
    parser.add_argument(
        "--config-file",
        type=Path,
        required=True,
        help="YAML config, our schema or lfads-tf2's (shipped in a ConfigMap)",
    )
    parser.add_argument("--search-space", type=Path, help="YAML search space (default: the published AutoLFADS one)")
    parser.add_argument("--population", type=int, required=True, help="members trained side by side")
    parser.add_argument("--epochs-per-generation", type=int, required=True, help="epochs between exploit/explore steps")
    parser.add_argument("--max-generations", type=int, default=50, help="upper bound on generations (default 50)")
    parser.add_argument("--namespace", help="namespace (default: none in the manifest; --submit uses the context's)")
    parser.add_argument(
        "--run-as-user", type=int, default=1000, help="uid of the pods (default 1000, the image's user)"
    )
    parser.add_argument("-o", "--output", type=Path, help="write the manifest here (default: stdout)")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--dry-run", action="store_true", help="print the manifest; write and submit nothing")
    modes.add_argument(
        "--submit", action="store_true", help="also create it on the current kube context (needs the kubeflow extra)"
    )


def run_katib(args: argparse.Namespace, _: list[str]) -> int:
    from ..config import load_config
    from ..deploy import read_text
    from ..deploy.katib import KatibSettings, katib_documents, limitations
    from ..search.space import default_search_space, load_search_space

    space = load_search_space(args.search_space) if args.search_space else default_search_space()
    config, config_text = load_config(args.config_file), read_text(args.config_file, "config")
    settings = KatibSettings(config=config, config_text=config_text, space=space, **options(args, KATIB_OPTIONS))
    for note in limitations(space):
        print(f"autolfads: note: {note}", file=sys.stderr)
    return emit(katib_documents(settings), "katib", args)


def run_rayjob(args: argparse.Namespace, _: list[str]) -> int:
    from ..config import load_config
    from ..deploy import read_text
    from ..deploy.rayjob import RayJobSettings, rayjob_documents
    from ..search.space import load_search_space

    load_config(args.config_file)  # fail here, not in the cluster
    if args.search_space:
        load_search_space(args.search_space)
    settings = RayJobSettings(
        config_text=read_text(args.config_file, "config"),
        space_text=read_text(args.search_space, "search space") if args.search_space else None,
        **options(args, RAYJOB_OPTIONS),
    )
    return emit(rayjob_documents(settings), "rayjob", args)


def options(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The parsed options that are fields of the same name in a manifest's settings."""
    return {name: getattr(args, name) for name in names}


def emit(documents: list[dict], kind: str, args: argparse.Namespace) -> int:
    from ..deploy import connect, to_yaml, write_manifest

    text = to_yaml(documents, HEADER.format(kind=kind))
    cluster = connect(args.namespace) if args.submit else None  # before anything is written
    if args.dry_run or args.output is None:
        sys.stdout.write(text)
    else:
        print(f"wrote {write_manifest(args.output, text)}", file=sys.stderr)
    if cluster is not None:
        for created in cluster.create(documents):
            print(f"created {created}", file=sys.stderr)
    return 0
