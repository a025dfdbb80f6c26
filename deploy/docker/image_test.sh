#!/bin/sh
# Run the built CPU image the way users do (README, "Containers"): as its own non-root user, offline, with a
# host folder mounted at /share. Small synthetic data and a few epochs: about a minute once the image exists.
#   usage: image_test.sh IMAGE          (make image-test builds IMAGE first)
# Each step prints "== step"; the first failure prints "image-test FAILED at: STEP" and exits 1. Containers
# started here are removed on exit; the share folder is removed on success and kept on failure.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ $# -eq 1 ] || { echo "usage: $0 IMAGE" >&2; exit 2; }
image=$1
. "$here/engine.sh"
# The compose tool: Docker's plugin, or podman-compose (PODMAN_COMPOSE: its path; make image-test pins one).
if [ "$ENGINE" = docker ]; then compose="docker compose"; else compose=${PODMAN_COMPOSE:-podman-compose}; fi
command -v "${compose%% *}" >/dev/null || { echo "image-test: $compose is not installed (pip install podman-compose)" >&2; exit 1; }

label=autolfads-image-test=$$
project=autolfads-image-test-$$  # its own compose project: `down` at the end touches nothing else
share=$(mktemp -d "${TMPDIR:-/tmp}/autolfads-image-test.XXXXXX")
log=$share/step.log
step_name=setup
compose_started=no
cleanup() {
    status=$?
    ids=$("$ENGINE" ps -aq --filter "label=$label" 2>/dev/null || true)
    [ -z "$ids" ] || "$ENGINE" rm -f $ids >/dev/null 2>&1 || true
    if [ "$compose_started" = yes ]; then
        SHARE=$share $compose -p "$project" -f "$here/docker-compose.yaml" down >/dev/null 2>&1 || true
    fi
    if [ $status -eq 0 ]; then
        rm -rf "$share"
    else
        echo "image-test FAILED at: $step_name (files kept in $share)" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$(date +%s)
step_started=$started
# Each step's name, and how long the one before took (machines are shared: times are for the log only).
step() {
    now=$(date +%s)
    [ "$step_name" = setup ] || echo "   ($((now - step_started)) s)"
    step_name=$1 step_started=$now
    echo "== $1"
}
fail() { echo "image-test: $step_name: $*" >&2; exit 1; }
# Run the image as it is (its USER, its ENTRYPOINT autolfads), without a network: nothing may need one.
# Output goes to $log too, so that checks can read it.
run() {
    "$ENGINE" run --rm --network none --label "$label" -e OMP_NUM_THREADS=1 -v "$share:/share" "$@" >"$log" 2>&1 \
        || { tail -n 40 "$log" >&2; fail "the container exited non-zero (output above)"; }
    tail -n 3 "$log"
}
has() { [ -e "$share/$1" ] || fail "missing /share/$1 in the mounted folder"; }
last_epoch() { tail -n 1 "$share/$1" | cut -d, -f1; }

# The image's user is uid 1000; the mounted folder must be writable by it.
mkdir -p "$share/data"
cp "$repo/examples/configs/lfads_tf2_lorenz.yaml" "$share/data/config.yaml"
if [ "$(id -u)" = 0 ]; then chown -R 1000:1000 "$share"; else chmod -R a+rwX "$share"; fi
train="--data /share/data --checkpoint /share/output --config-file /share/data/config.yaml"
overrides="TRAIN.BATCH_SIZE 16 TRAIN.LR.INIT 0.005 MODEL.DROPOUT_RATE 0.1"

step "image: non-root user, autolfads entrypoint, no build tools or build files"
user=$("$ENGINE" image inspect --format '{{.Config.User}}' "$image")
[ "$user" = 1000:1000 ] || fail "image user is '$user', not 1000:1000"
# Prints the uid, then any compiler or build file left in the runtime stage (there must be none).
run --entrypoint sh "$image" -c 'id -u; for t in gcc cc c++ make; do command -v $t || true; done; ls -d /build 2>/dev/null || true'
[ "$(head -n 1 "$log")" = 1000 ] || fail "the container runs as uid $(head -n 1 "$log"), not 1000"
[ "$(wc -l <"$log")" -eq 1 ] || fail "build tools or build files in the runtime stage: $(tail -n +2 "$log" | tr '\n' ' ')"
size=$("$ENGINE" image inspect --format '{{.Size}}' "$image")
echo "image $image: $((size / 1000000)) MB"

step "--version"
run "$image" --version
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml")
grep -qx "autolfads $version" "$log" || fail "expected 'autolfads $version'"

step "synthetic data (autolfads data lorenz) into /share/data"
run "$image" data lorenz --out /share/data/lorenz.h5 --n-conditions 8 --trials-per-condition 10
has data/lorenz.h5  # the prefix of examples/configs/lfads_tf2_lorenz.yaml (TRAIN.DATA.PREFIX lorenz)

step "train, the seed's form (IMAGE --data/--checkpoint/--config-file, lfads-tf2 YAML) with KEY VALUE overrides, 2 epochs"
# shellcheck disable=SC2086  # $train and $overrides are word lists
run "$image" $train --epochs 2 $overrides
for f in output/config.yaml output/last.ckpt output/metrics.csv output/train.log; do has $f; done
grep -q "smth_val_nll_heldin=" "$log" || fail "no per-epoch metric lines on stdout"
for setting in "batch_size: 16" "lr_init: 0.005" "dropout_rate: 0.1"; do
    grep -q "$setting" "$share/output/config.yaml" || fail "override not in output/config.yaml: $setting"
done
[ "$(last_epoch output/metrics.csv)" = 1 ] || fail "expected epochs 0-1 in metrics.csv, last is $(last_epoch output/metrics.csv)"

step "resume: the same command continues from the checkpoint"
# shellcheck disable=SC2086
run "$image" $train --epochs 2 $overrides
grep -q "resumed from /share/output/last.ckpt at epoch 2" "$log" || fail "the second run did not resume at epoch 2"
[ "$(last_epoch output/metrics.csv)" = 3 ] || fail "expected the resumed run to reach epoch 3, last is $(last_epoch output/metrics.csv)"

step "sample: posterior samples into /share/output/lfads_output.h5"
run "$image" sample --checkpoint /share/output --num-samples 3
has output/lfads_output.h5

step "search: a 2-member AutoLFADS search"
# Short KL/L2 ramps: the first generation runs until they are complete (80 epochs in the config).
# shellcheck disable=SC2086
run "$image" search --data /share/data --config-file /share/data/config.yaml --workdir /share/search \
    --population 2 --epochs-per-generation 2 --max-generations 2 $overrides TRAIN.KL.INCREASE_EPOCH 2 TRAIN.L2.INCREASE_EPOCH 2
for f in search/search.yaml search/search.ckpt search/state.csv search/exploits.csv search/metrics.csv \
    search/report.html search/best_model/last.ckpt search/best_model/lfads_output.h5; do has $f; done

step "compose: the compose file's train service, one more epoch on the same folder"
# `run` with the service's command plus --epochs 1 (its own command trains to early stopping).
# shellcheck disable=SC2086
compose_started=yes
SHARE=$share AUTOLFADS_IMAGE=$image $compose -p "$project" -f "$here/docker-compose.yaml" run --rm -T -l "$label" \
    -e OMP_NUM_THREADS=1 train $train --epochs 1 $overrides >"$log" 2>&1 || { tail -n 40 "$log" >&2; fail "$compose run failed (output above)"; }
tail -n 3 "$log"
[ "$(last_epoch output/metrics.csv)" = 4 ] || fail "expected the compose run to reach epoch 4, last is $(last_epoch output/metrics.csv)"
echo "   ($(($(date +%s) - step_started)) s)"
step_name=done
echo "image-test: all steps passed ($image) in $(($(date +%s) - started)) s"
