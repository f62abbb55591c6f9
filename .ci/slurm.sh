#!/usr/bin/env bash
# A real single-node SLURM scheduler for the tests marked `slurm` (and for trying the
# launchers by hand): Debian's slurm-wlm and munge, a minimal configuration, no systemd,
# no cgroups, no accounting.
#
#   .ci/slurm.sh start    install (apt-get) if needed, configure, start munged, slurmctld
#                         and slurmd; prints `export SLURM_CONF=...` on stdout
#   .ci/slurm.sh stop     stop exactly the daemons `start` started (by their recorded pid)
#   .ci/slurm.sh status   sinfo of the running scheduler
#
# Environment: DEJAVU_SLURM_DIR (state, logs and slurm.conf; default /tmp/dejavu-slurm),
# DEJAVU_SLURM_GPUS (advertise that many placeholder GPUs through gres.conf, character
# devices made with mknod, so `--gpus-per-node N` jobs are accepted and run N tasks; the
# tasks find no CUDA and run on the CPU; default 0). Needs root (apt-get, munged, slurmd). Measured on CI's
# machine: install ~15 s, start ~2 s. The partition is `cpu` (default), with the machine's
# CPUs and memory; a job's tasks run as the submitting user with its environment.
set -euo pipefail

STATE=${DEJAVU_SLURM_DIR:-/tmp/dejavu-slurm}
CONF=$STATE/slurm.conf
GPUS=${DEJAVU_SLURM_GPUS:-0}
HOST=$(hostname -s)

die() { echo "slurm.sh: $*" >&2; exit 1; }

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
  command -v apt-get >/dev/null || die "slurm-wlm is not installed and there is no apt-get"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 ||
    { timeout 300 apt-get update -qq >/dev/null 2>&1 || true
      timeout 300 apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1; } ||
    die "apt-get install slurm-wlm munge failed"
}

write_conf() {
  local cpus mem gres=""
  cpus=$(nproc --all)
  mem=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
  mkdir -p "$STATE/spool/ctld" "$STATE/spool/d" "$STATE/log"
  echo "AutoDetect=off" >"$STATE/gres.conf"
  for ((i = 0; i < GPUS; i++)); do
    # slurmd 22.05 drops a GPU whose device file is missing: a placeholder char device (/dev/null's)
    mkdir -p "$STATE/dev"
    if [[ ! -c "$STATE/dev/fakegpu$i" ]] && ! mknod "$STATE/dev/fakegpu$i" c 1 3 2>/dev/null; then
      echo "slurm.sh: mknod not permitted here: no placeholder GPUs" >&2
      gres=""
      break
    fi
    gres="Gres=gpu:$GPUS"
    echo "NodeName=$HOST Name=gpu File=$STATE/dev/fakegpu$i" >>"$STATE/gres.conf"
  done
  cat >"$CONF" <<EOF
# written by .ci/slurm.sh (dejavu CI): a single-node scheduler
ClusterName=dejavu-ci
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it may start again (default 120)
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
# test pending jobs every 2 s (defaults 60 and 30: a requeued job would wait up to a minute);
# cancel a job whose dependency failed (default: pending forever)
SchedulerParameters=sched_interval=2,bf_interval=2,kill_invalid_depend
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# refuse at submission a job the partition can never run (default: pending forever)
EnforcePartLimits=ALL
JobRequeue=1
MinJobAge=300
KillWait=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0
MpiDefault=none
${gres:+GresTypes=gpu}
NodeName=$HOST CPUs=$cpus RealMemory=$mem $gres State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

alive() { local pid; pid=$(cat "$1" 2>/dev/null) && kill -0 "$pid" 2>/dev/null; }

start() {
  [[ $(id -u) == 0 ]] || die "needs root (slurmd runs jobs as their users)"
  install
  write_conf
  export SLURM_CONF=$CONF
  # munge: reuse a running one (then `stop` leaves it alone)
  if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
    cp /run/munge/munged.pid "$STATE/munged.pid"
  fi
  alive "$STATE/slurmctld.pid" || /usr/sbin/slurmctld -f "$CONF" ||
    die "slurmctld did not start (see $STATE/log/slurmctld.log)"
  alive "$STATE/slurmd.pid" || /usr/sbin/slurmd -f "$CONF" || die "slurmd did not start (see $STATE/log/slurmd.log)"
  local i state=""
  for ((i = 0; i < 60; i++)); do
    state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
    case "$state" in
      idle* | mix* | alloc*) break ;;
      drain* | down*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  case "$state" in
    idle* | mix* | alloc*) ;;
    *) die "node $HOST is '${state:-unknown}' (see $STATE/log/)" ;;
  esac
  echo "slurm.sh: scheduler up ($(sinfo -h -o '%P %D nodes %c cpus %m MB %G')); SLURM_CONF=$CONF" >&2
  echo "export SLURM_CONF=$CONF"
}

stop() {
  local f pid i
  for f in slurmd slurmctld munged; do
    pid=$(cat "$STATE/$f.pid" 2>/dev/null || true)
    rm -f "$STATE/$f.pid"
    if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then continue; fi
    kill "$pid"
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.3; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
  done
  return 0
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) SLURM_CONF=$CONF sinfo ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
