#!/usr/bin/env bash
# A throwaway single-host SLURM cluster on loopback, for `make slurm-test` (run as root).
#
#   deploy/slurm/local_cluster.sh start DIR        # prints `export SLURM_CONF=DIR/slurm.conf`
#   deploy/slurm/local_cluster.sh stop DIR         # cancels its jobs, stops what `start DIR` started (pid files)
#   deploy/slurm/local_cluster.sh run COMMAND...   # start in a new scratch folder, run COMMAND with SLURM_CONF
#                                                  # exported, stop on exit (also on failure or Ctrl-C)
#
# Everything lives in DIR: its own munge key and socket (the machine's /etc/munge and any munged already
# running are left alone), slurm.conf with free ports, state, spool, logs and pid files. One node (this host,
# at 127.0.0.1, with all its logical CPUs and at least 2), one partition (`debug`), JobRequeue=1. No accounting (no slurmdbd).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin # slurmctld, slurmd and munged live there

usage() {
    echo "usage: $0 start DIR | stop DIR | run COMMAND..." >&2
    exit 2
}

# Two distinct free TCP ports on 127.0.0.1 (slurmctld's and slurmd's).
free_ports() {
    python3 - <<'PY'
import socket
sockets = [socket.socket() for _ in range(2)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
PY
}

write_conf() {
    local dir=$1 host=$2 ctld_port=$3 slurmd_port=$4
    local memory cpus
    # at least 2 logical CPUs, so the tests' two-worker jobs fit a 1-CPU machine too (oversubscribed there)
    cpus=$(nproc)
    [ "$cpus" -ge 2 ] || cpus=2
    memory=$(($(free -m | awk '/^Mem:/ {print $2}') * 9 / 10)) # MiB, below the machine's total
    cat >"$dir/slurm.conf" <<CONF
ClusterName=autolfads-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# the node's CPUs as declared below, whatever slurmd detects (a CI box may count 1 core of 2 threads)
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
    local dir=$1 host ports
    host=$(hostname -s)
    mkdir -p "$dir/state" "$dir/spool"
    chmod 700 "$dir"
    dir=$(cd "$dir" && pwd)
    ports=$(free_ports)
    write_conf "$dir" "$host" ${ports}
    # munged insists on a key only its owner can read
    head -c 1024 /dev/urandom >"$dir/munge.key"
    chmod 400 "$dir/munge.key"
    munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" --pid-file="$dir/munged.pid" \
        --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF" -N "$host"
    # the node reports idle within seconds
    for _ in $(seq 60); do
        if [ "$(sinfo -h -n "$host" -o %t 2>/dev/null)" = idle ]; then
            echo "export SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 1
    done
    echo "$0: the node $host did not become idle in 60 s; see $dir/slurmctld.log and $dir/slurmd.log" >&2
    return 1
}

# SIGTERM a daemon by its pid file (and wait up to 10 s for it to go); a missing file means not started.
stop_pid_file() {
    local file=$1 pid
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# Cancel the cluster's jobs (they are all ours) and wait for them to end, so no job outlives its slurmd.
cancel_jobs() {
    local dir=$1
    [ -s "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null || return 0
    export SLURM_CONF=$dir/slurm.conf
    scancel --partition=debug 2>/dev/null || true
    for _ in $(seq 60); do
        [ -z "$(squeue -h -t RUNNING,COMPLETING,PENDING,CONFIGURING 2>/dev/null)" ] && return 0
        sleep 1
    done
    echo "$0: jobs still running after 60 s: $(squeue -h 2>&1)" >&2
}

stop() {
    local dir=$1
    [ -d "$dir" ] || return 0
    cancel_jobs "$dir"
    stop_pid_file "$dir/slurmd.pid"
    stop_pid_file "$dir/slurmctld.pid"
    stop_pid_file "$dir/munged.pid"
}

# A cluster for one command: its folder is removed afterwards unless the command failed (the daemons' logs).
run() {
    local dir status=0
    dir=$(mktemp -d /tmp/autolfads-slurm.XXXXXX)
    trap "stop '$dir'" EXIT
    trap 'exit 130' INT TERM
    start "$dir" >/dev/null
    export SLURM_CONF=$dir/slurm.conf
    "$@" || status=$?
    stop "$dir"
    trap - EXIT
    if [ "$status" -eq 0 ]; then
        rm -rf "$dir"
    else
        echo "$0: the command failed (status $status); the cluster's logs are in $dir" >&2
    fi
    return "$status"
}

case ${1:-} in
start | stop)
    [ $# -eq 2 ] || usage
    "$1" "$2"
    ;;
run)
    [ $# -ge 2 ] || usage
    shift
    run "$@"
    ;;
*) usage ;;
esac
