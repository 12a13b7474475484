#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests and `.ci/run` (docs/slurm.md).
#
#   scripts/slurm-local.sh start    install slurm-wlm + munge when missing, write the config,
#                                   start munged, slurmctld and slurmd, wait until the node is
#                                   idle; prints `export SLURM_CONF=...` on stdout
#   scripts/slurm-local.sh stop     cancel the jobs, stop the daemons it started (idempotent)
#   scripts/slurm-local.sh status   sinfo (exit 1 when the cluster is not running)
#   scripts/slurm-local.sh env      prints `export SLURM_CONF=...`
#   scripts/slurm-local.sh bench [N]  median/min/max submission-to-start latency of N (10)
#                                   trivial jobs, submitted one after another
#
# Everything lives under SLURM_LOCAL_DIR (default /tmp/slurm-local): slurm.conf, the munge key
# and socket, state, spool, logs, pid files. /etc/slurm and /etc/munge are not touched, and no
# system service is started: the daemons run as root, started directly (no systemd needed).
# Clients (sbatch, squeue, scontrol, scancel, sinfo) find the cluster through SLURM_CONF.
# Needs root (slurmd must be root to start jobs as the submitting user); sudo -n is tried.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
CONF=$DIR/slurm.conf
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-6818}
START_TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}
MUNGE_SOCKET=$DIR/munge/munge.socket.2

say() { echo "slurm-local: $*" >&2; }
die() { echo "slurm-local: error: $*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" = 0 ] && return 0
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    exec sudo -n --preserve-env=SLURM_LOCAL_DIR,SLURM_LOCAL_CTLD_PORT,SLURM_LOCAL_SLURMD_PORT,SLURM_LOCAL_TIMEOUT "$0" "$@"
  fi
  die "must run as root (slurmd starts jobs as the submitting user), and sudo -n is not available"
}

# Runs a client command against this cluster.
client() { SLURM_CONF=$CONF "$@"; }

# True when the pid file names a live process of that name (a stale file whose pid was reused
# by something else does not count).
pid_alive() { # pidfile name
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

# start and stop hold $DIR/lock, so that tests starting the cluster at once do not race.
lock() {
  mkdir -p "$DIR"
  # Root writes and runs things from here: a directory someone else made (/tmp) is refused.
  [ "$(stat -c %u "$DIR")" = 0 ] || die "$DIR is not owned by root; remove it or set SLURM_LOCAL_DIR"
  chmod 755 "$DIR"
  exec 9>"$DIR/lock"
  flock -w 120 9 || die "another slurm-local.sh start/stop holds $DIR/lock"
}

install_packages() {
  local missing=()
  command -v munged >/dev/null || missing+=(munge)
  { command -v slurmctld && command -v slurmd && command -v sbatch; } >/dev/null || missing+=(slurm-wlm)
  [ ${#missing[@]} = 0 ] && return 0
  command -v apt-get >/dev/null || die "${missing[*]} missing and no apt-get here; install them by hand"
  say "installing ${missing[*]} with apt-get (non-interactive; their system services are not started)"
  # The packages' postinst would start munge (and try slurmctld/slurmd) through invoke-rc.d;
  # a policy-rc.d answering 101 stops that, for the duration of the install only.
  local policy=/usr/sbin/policy-rc.d ours=""
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy && ours=1
  fi
  local rc=0
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
    --no-install-recommends "${missing[@]}")
  if ! "${apt[@]}" >"$DIR/apt.log" 2>&1; then
    say "apt-get install failed; running apt-get update and trying again"
    { apt-get update -q && "${apt[@]}"; } >>"$DIR/apt.log" 2>&1 || rc=$?
  fi
  [ -n "$ours" ] && rm -f $policy
  if [ $rc != 0 ]; then
    tail -n 20 "$DIR/apt.log" >&2
    die "could not install ${missing[*]} (log: $DIR/apt.log)"
  fi
  say "installed $(dpkg-query -W -f='${Package} ${Version}  ' "${missing[@]}")"
}

write_config() {
  local host node cpus
  host=$(hostname -s 2>/dev/null || true)
  [ -n "$host" ] || host=localhost
  # The node line exactly as slurmd detects the hardware (CPUs, sockets, cores, threads,
  # memory): a node configured with more than slurmd finds is drained as invalid.
  node=$(slurmd -C | sed -n 's/^NodeName=[^ ]* //p' | sed 's/ *UpTime=.*//')
  [ -n "$node" ] || die "slurmd -C printed no node line"
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node")
  mkdir -p "$DIR"/{state,spool,log,run,jobcomp}
  cat >"$CONF.new" <<EOF
# Written by scripts/slurm-local.sh; rewritten by every start. See docs/slurm.md.
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET

StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true

# No cgroups and no systemd: processes are tracked through /proc, tasks are not confined.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none

# No slurmdbd: sacct has nothing to read. Finished jobs stay in slurmctld's memory for
# MinJobAge seconds (scontrol show job / squeue -t all), and each one is appended to
# $DIR/jobcomp/jobs.txt for good.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp/jobs.txt
MinJobAge=600

# Fast turnaround. In Slurm 22.05 a submitted batch job is only tested at submission; it is
# started by the main scheduler, which slurmctld's background loop (a 1 s tick) runs when a
# job was queued and batch_sched_delay has passed, and every sched_interval in any case, or by
# backfill every bf_interval. With all three at their minimum a job starts within the next
# tick: about 0.1 to 1 s after sbatch (docs/slurm.md). No "defer" (the default).
# A slurmd that stops answering is marked down after SlurmdTimeout; ReturnToService=2 takes it
# back as soon as it registers again.
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,batch_sched_delay=0,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MessageTimeout=5
TCPTimeout=2
SlurmdTimeout=30
SlurmctldTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
ReturnToService=2

NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host $node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  mv "$CONF.new" "$CONF"
  chmod 644 "$CONF"
  say "config $CONF: node $host with $cpus CPUs"
}

start_munge() {
  mkdir -p "$DIR/munge"
  chmod 755 "$DIR" "$DIR/munge"
  if pid_alive "$DIR/munge/munged.pid" munged; then return 0; fi
  local key=$DIR/munge/munge.key
  if [ ! -s "$key" ]; then
    say "generating a munge key in $key"
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile="$key" --force
    else
      dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
    fi
  fi
  chmod 600 "$key"
  # --force: munged refuses root and a socket under world-writable /tmp without it.
  daemon munged --force --socket="$MUNGE_SOCKET" --key-file="$key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed" \
    || { log_tails; die "munged did not start"; }
  munge -S "$MUNGE_SOCKET" -n | unmunge -S "$MUNGE_SOCKET" >/dev/null \
    || die "munged is running but a credential does not round-trip (log: $DIR/munge/munged.log)"
}

# Starts a daemon (it forks itself into the background) without our lock descriptor, stdin,
# stdout or stderr: a caller that reads this script's output to the end (a test's
# Command::output, $(...)) would otherwise wait for the daemons to exit. What it prints
# before it detaches goes to $DIR/log/daemons.out.
daemon() {
  mkdir -p "$DIR/log"
  "$@" 9>&- </dev/null >>"$DIR/log/daemons.out" 2>&1
}

log_tails() {
  local f
  for f in "$DIR/log/daemons.out" "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" "$DIR/munge/munged.log"; do
    [ -f "$f" ] || continue
    echo "--- last lines of $f" >&2
    tail -n 15 "$f" >&2
  done
}

# The node's state without the flags (idle*, drain~, ...) sinfo appends.
node_state() { client sinfo -h -N -o %T 2>/dev/null | head -n 1; }

# When slurmd registered last (epoch seconds), 0 when it has not since slurmctld started.
slurmd_start_time() {
  local t
  t=$(client scontrol show node -o 2>/dev/null | sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p' | head -n 1)
  case $t in [0-9]*) date -d "$t" +%s 2>/dev/null || echo 0 ;; *) echo 0 ;; esac
}

wait_idle() { # [epoch: slurmd must have registered at or after it]
  local deadline=$((SECONDS + START_TIMEOUT)) state="" since=${1:-0}
  while [ $SECONDS -lt $deadline ]; do
    # A restarted slurmctld reports the node's saved state before slurmd has registered.
    if [ "$since" != 0 ] && [ "$(slurmd_start_time)" -lt "$since" ]; then
      state="waiting for slurmd to register"
      sleep 0.2
      continue
    fi
    state=$(node_state || true)
    case $state in
      # A restarted cluster may still run recovered jobs: allocated/mixed counts as up too.
      idle | mixed | allocated | completing) return 0 ;;
      drained | draining | down | fail | failing | inval | "drained*" | "down*")
        # ReturnToService=2 brings a down node back when its slurmd registers; a drained or
        # invalid one (configuration mismatch) stays so.
        case $state in drain* | inval | fail*)
          client sinfo -R >&2 || true
          log_tails
          die "the node is $state" ;;
        esac ;;
    esac
    sleep 0.2
  done
  log_tails
  die "the node is not idle after ${START_TIMEOUT}s (last state: '${state:-no answer from slurmctld}')"
}

cmd_start() {
  need_root start
  lock
  install_packages
  local t0=$SECONDS since=0
  if pid_alive "$DIR/run/slurmctld.pid" slurmctld && pid_alive "$DIR/run/slurmd.pid" slurmd \
    && pid_alive "$DIR/munge/munged.pid" munged; then
    say "already running"
  else
    # Whatever half of it is still up goes first, so the new config applies to all of it.
    cmd_stop_daemons quiet
    write_config
    start_munge
    daemon slurmctld -f "$CONF" || { log_tails; die "slurmctld did not start"; }
    since=$(date +%s)
    daemon slurmd -f "$CONF" || { log_tails; die "slurmd did not start"; }
  fi
  wait_idle "$since"
  say "node $(client sinfo -h -N -o '%N %T %c CPUs') after $((SECONDS - t0))s; $(client sinfo -V)"
  echo "export SLURM_CONF=$CONF"
}

# Sends TERM to daemons by their pid files and waits for them to go (KILL after 15 s).
stop_pids() { # name pidfile [name pidfile]...
  local pids=() names=() files=() pid i alive
  while [ $# -gt 0 ]; do
    if pid_alive "$2" "$1"; then
      pid=$(cat "$2")
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$1")
    fi
    files+=("$2")
    shift 2
  done
  for i in $(seq 150); do
    alive=""
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ -n "$alive" ] || break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      say "${names[$i]} (pid ${pids[$i]}) ignored TERM for 15s; killing it"
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
  done
  rm -f "${files[@]}"
}

cmd_stop_daemons() {
  local quiet=${1:-}
  pid_alive "$DIR/run/slurmctld.pid" slurmctld || pid_alive "$DIR/run/slurmd.pid" slurmd \
    || pid_alive "$DIR/munge/munged.pid" munged || { [ -n "$quiet" ] || say "not running"; return 0; }
  if pid_alive "$DIR/run/slurmctld.pid" slurmctld; then
    # Jobs would outlive the daemons (their slurmstepd keeps going): cancel them first.
    local jobs
    jobs=$(client squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      say "cancelling jobs: $(echo "$jobs" | tr "\n" " ")"
      # shellcheck disable=SC2086
      client scancel $jobs 2>/dev/null || true
      local i
      for i in $(seq 100); do
        [ -z "$(client squeue -h -o %i -t running,completing 2>/dev/null)" ] && break
        sleep 0.1
      done
    fi
  fi
  # slurmd and slurmctld together (each takes a second or two), munged once they are gone.
  stop_pids slurmd "$DIR/run/slurmd.pid" slurmctld "$DIR/run/slurmctld.pid"
  stop_pids munged "$DIR/munge/munged.pid"
  [ -n "$quiet" ] || say "stopped"
}

cmd_stop() {
  need_root stop
  lock
  cmd_stop_daemons
}

cmd_status() {
  pid_alive "$DIR/run/slurmctld.pid" slurmctld || { say "not running (no slurmctld for $CONF)"; exit 1; }
  client sinfo
}

cmd_bench() {
  local n=${1:-10} i t0 t1 f out id
  pid_alive "$DIR/run/slurmctld.pid" slurmctld || die "not running; scripts/slurm-local.sh start first"
  # The jobs run as the caller and write their start time here.
  out=$(mktemp -d "${TMPDIR:-/tmp}/slurm-bench.XXXXXX")
  : >"$out/latencies"
  for i in $(seq "$n"); do
    f=$out/start.$i
    t0=$(date +%s.%N)
    id=$(client sbatch --parsable --chdir="$out" --output=/dev/null --job-name=bench \
      --wrap "date +%s.%N > $f.tmp && mv $f.tmp $f")
    t1=$(date +%s.%N)
    local deadline=$((SECONDS + 60))
    until [ -s "$f" ]; do
      [ $SECONDS -lt $deadline ] || { log_tails; die "job $id did not start within 60s"; }
      sleep 0.01
    done
    # Wait for the job to leave the node, so that every job finds it idle.
    until [ -z "$(client squeue -h -j "$id" -t running,completing,pending -o %i 2>/dev/null)" ]; do
      sleep 0.05
    done
    awk -v a="$t0" -v b="$(cat "$f")" -v s="$t1" -v id="$id" \
      'BEGIN { printf "job %s: sbatch returned after %.3f s, started after %.3f s\n", id, s - a, b - a }' >&2
    awk -v a="$t0" -v b="$(cat "$f")" 'BEGIN { printf "%.3f\n", b - a }' >>"$out/latencies"
  done
  sort -n "$out/latencies" | awk -v n="$n" '
    { v[NR] = $1 }
    END {
      med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      printf "submission-to-start latency over %d jobs: median %.3f s, min %.3f s, max %.3f s\n", n, med, v[1], v[n]
    }'
  rm -rf "$out"
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  bench) shift; cmd_bench "$@" ;;
  *) echo "usage: $0 start|stop|status|env|bench [N]" >&2; exit 2 ;;
esac
