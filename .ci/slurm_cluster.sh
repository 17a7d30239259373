#!/usr/bin/env bash
# A one-node SLURM cluster on this Debian machine, for the tests marked `slurm` (tests/test_slurm.py):
#   bash .ci/slurm_cluster.sh start    # install (once), configure, start; one line with the cluster's shape
#   bash .ci/slurm_cluster.sh status   # that line, or why there is no cluster (exit 1)
#   bash .ci/slurm_cluster.sh stop     # cancel every job, stop slurmd, slurmctld and munged
# Run as root (apt-get, daemons). `start` is idempotent: a cluster that answers is left as it is.
#
# Choices, and why:
# - No accounting (accounting_storage/none, jobacct_gather/none): accounting needs slurmdbd and a
#   MariaDB server to install, start and wait for, minutes of CI for nothing the tests read. Job states
#   are read from squeue/scontrol instead. So `sacct` is unavailable here (it says "Slurm accounting
#   storage is disabled", exit 1), and submitit's sacct-based job state stays UNKNOWN: a job that
#   finished is still seen through its result file, one that died without one is not.
# - proctrack/linuxproc and task/none: the cgroup plugins need a writable cgroup hierarchy (v2 with
#   delegation, or systemd), which a container lacks; linuxproc tracks a job's processes by parent pid,
#   enough to signal and kill them. No cgroup.conf is read.
# - select/cons_tres with CR_CPU: one CPU per task as requested (no core rounding); memory is not a
#   consumable, so jobs without --mem do not each claim the whole node, yet a --mem above the node's
#   RealMemory is still refused.
# - RealMemory: /proc/meminfo's total less a margin (5%, at least 512 MB): slurmd drains a node whose
#   real memory is below the configured one.
# - JobRequeue=1 (batch jobs may be requeued: scontrol requeue, preemption), ReturnToService=2 (the node
#   comes back idle whenever slurmd registers), MinJobAge=30 (a finished job stays in squeue/scontrol for
#   30 s, long enough for a poll to see how it ended, short enough not to pile up).
# - Fast enough for tests: AuthInfo=cred_expire=5 (a requeued job is held back cred_expire seconds
#   before it may start again: 120 by default, 5 here), sched_interval=1 and bf_interval=1 (a pending job
#   that became eligible starts within a second, not at the next pass a minute later), KillWait=5
#   (SIGKILL 5 s after a cancel's or a requeue's SIGTERM).
# - What a job sees: `scancel --signal=USR2 JOB` signals the job's steps (submitit runs Python under
#   srun, so it gets it), --full the batch shell too; `scontrol requeue JOB` sends SIGTERM, then
#   requeues; SLURM_RESTART_COUNT counts the starts after the first. Verified here: sbatch, both
#   signals, requeue and restart (tests/test_slurm.py runs vaebench through it).
# - SlurmUser=root, everything under $SLURM_TEST_DIR (default /var/lib/vaebench-slurm): state, spool,
#   logs (slurmctld.log, slurmd.log), pid files. slurm.conf goes to /etc/slurm/slurm.conf, where the
#   client commands (sbatch, squeue, submitit) look; a slurm.conf not written by this script is left alone.
set -euo pipefail

DIR=${SLURM_TEST_DIR:-/var/lib/vaebench-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by vaebench's .ci/slurm_cluster.sh"
PARTITION=debug
WAIT_S=60

say() { printf 'slurm_cluster: %s\n' "$*"; }
die() { printf 'slurm_cluster: %s\n' "$*" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# "node vm: 2 CPUs, 22900 MB, partition debug, idle" from the controller, or nothing when it does not
# answer (at once when no slurmctld of ours runs: a client retries a controller that is down for 10 s).
shape() {
    alive "$DIR/run/slurmctld.pid" || return 0
    timeout 5 sinfo -h -N -p "$PARTITION" -o '%N %c %m %T' 2>/dev/null | awk -v p="$PARTITION" \
        'NR == 1 {printf "node %s: %s CPUs, %s MB, partition %s, %s\n", $1, $2, $3, p, $4}' || true
}

install() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null &&
        command -v munged >/dev/null && return
    say "installing slurmctld, slurmd, slurm-client and munge (apt-get)"
    local log=/tmp/vaebench-slurm-apt.log
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq &&
        apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge; } >"$log" 2>&1 ||
        { cat "$log" >&2; die "apt-get could not install SLURM (above)"; }
}

start_munge() {
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    alive /run/munge/munged.pid && return
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged
}

write_conf() {
    [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF" && die "$CONF exists and was not written by this script; \
move it away to use the test cluster."
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ {m = int($2 / 1024); d = int(m / 20); if (d < 512) d = 512; print m - d}' \
        /proc/meminfo)
    mkdir -p "$DIR"/{state,spool,log,run} /etc/slurm
    cat >"$CONF.new" <<EOF
$MARK: a one-node test cluster (see that script)
ClusterName=vaebench-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
SchedulerParameters=sched_interval=1,bf_interval=1
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
MinJobAge=30
KillWait=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.new" "$CONF"
}

start() {
    local t0=$EPOCHREALTIME line
    line=$(shape)
    if [[ "$line" == *", idle" || "$line" == *", mixed" || "$line" == *", allocated" ]]; then
        say "already running: $line"
        return
    fi
    install
    stop_daemons  # whatever half-started before
    write_conf
    start_munge
    # -c: start from an empty state (no jobs left from an earlier cluster).
    slurmctld -c
    slurmd
    local deadline=$((SECONDS + WAIT_S))
    until [[ "$(shape)" == *", idle" ]]; do
        if ((SECONDS >= deadline)); then
            say "the node is not idle after ${WAIT_S} s: $(shape || true)" >&2
            sinfo -R 2>&1 | sed 's/^/  /' >&2 || true
            for log in "$DIR"/log/slurmctld.log "$DIR"/log/slurmd.log; do
                echo "--- tail of $log" >&2
                tail -n 15 "$log" >&2 || true
            done
            exit 1
        fi
        sleep 0.5
    done
    say "started in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}') s: $(shape)"
}

stop_daemons() {
    local pid_file pids=()
    for pid_file in "$DIR"/run/slurmd.pid "$DIR"/run/slurmctld.pid; do
        alive "$pid_file" && pids+=("$(cat "$pid_file")")
    done
    ((${#pids[@]})) || return 0
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do  # up to 5 s, then kill
        kill -0 "${pids[@]}" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "${pids[@]}" 2>/dev/null || true
}

stop() {
    if [ -n "$(shape)" ]; then
        # Every job cancelled and gone before the daemons go: a job's processes would outlive them.
        squeue -h -o %i | xargs -r scancel || true
        for _ in $(seq 40); do  # up to 10 s (KillWait is 5 s)
            [ -z "$(squeue -h -o %i)" ] && break
            sleep 0.25
        done
    fi
    stop_daemons
    if alive /run/munge/munged.pid; then
        kill "$(cat /run/munge/munged.pid)" || true
    fi
    say "stopped"
}

status() {
    local line
    line=$(shape)
    [ -n "$line" ] || die "no cluster answers (start one with: bash .ci/slurm_cluster.sh start)"
    say "$line"
}

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons)"
case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: bash .ci/slurm_cluster.sh start|stop|status" ;;
esac
