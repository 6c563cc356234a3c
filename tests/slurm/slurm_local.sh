#!/usr/bin/env bash
# A real single-node SLURM "cluster" on one Debian 12 machine without systemd, for testing
# hrtemflow's SLURM profile (tests/test_slurm.py). Needs root and Debian's package archive.
#
#   tests/slurm/slurm_local.sh install   # apt-get slurm-wlm, munge, slurmdbd, mariadb (~15 s; no-op when present)
#   tests/slurm/slurm_local.sh up        # (re)start munge, mariadb, slurmdbd, slurmctld, slurmd (~4 s)
#   tests/slurm/slurm_local.sh smoke     # one `sbatch --wrap` job, checked through squeue and sacct
#   tests/slurm/slurm_local.sh status    # daemons by pid file, sinfo
#   tests/slurm/slurm_local.sh logs      # tails of the daemons' logs (for failed tests)
#   tests/slurm/slurm_local.sh down      # stop every daemon by the PID in its pid file, never by name
#
# Partitions: `cpu` (default) and `gpu`, the names the profile (profiles/slurm) uses as placeholders.
# Environment:
#   FAKE_GPUS=N   advertise N fake GPUs (gres/gpu, char-device clones of /dev/null) to test the gpu mapping
#   CPUS=N        CPUs the node advertises (default nproc; more => SlurmdParameters=config_overrides)
#   MEM_MB=N      memory the node advertises (default 85% of RAM; more => config_overrides). Nothing is
#                 enforced (no cgroups), so a "bigger" virtual node lets the profile's requests be scheduled.
#   ACCOUNTING=0  no mariadb/slurmdbd (sacct does not work; snakemake then needs --slurm-status-command squeue)
#   SLURM_LOCAL_FORCE=1  take over /etc/slurm/slurm.conf and running daemons that this script did not start
# It refuses (exit 6) to touch a machine with a SLURM config or munge/mariadb daemons of its own: `down`
# stops only what an `up` of this script started (it keeps a marker in /run/hrtemflow-slurm-local).
# Exit codes: 0 ok, 2 usage, 3 not root / not Debian-like, 4 apt-get failed, 5 a daemon did not come up,
#             6 the machine has a SLURM/munge/mariadb of its own.
set -euo pipefail

ACCOUNTING=${ACCOUNTING:-1}
CLUSTER=${CLUSTER:-localcluster}
ACCOUNT=${ACCOUNT:-testacct}
DBPASS=${DBPASS:-slurmdbpass}
NODE=localhost                      # NodeName; independent of `hostname` (slurmd -N localhost)
FAKE_GPUS=${FAKE_GPUS:-0}
NPROC=$(nproc)
REAL_MEM_MB=$(( $(awk '/^MemTotal/{print int($2/1024)}' /proc/meminfo) * 85 / 100 ))
CPUS=${CPUS:-$NPROC}
MEM_MB=${MEM_MB:-$REAL_MEM_MB}
RUN=/run/slurm
LOGDIR=/var/log/slurm
OWNED=/run/hrtemflow-slurm-local     # exists while daemons started by this script may be running
MARKER="# written by hrtemflow tests/slurm/slurm_local.sh"
PIDS=("$RUN/slurmd.pid" "$RUN/slurmctld.pid" "$RUN/slurmdbd.pid" /run/mysqld/mysqld.pid /run/munge/munged.pid)

log() { printf '[slurm-local %(%T)T] %s\n' -1 "$*" >&2; }
die() { local code=$1; shift; log "ERROR: $*"; exit "$code"; }

wait_for() {  # wait_for <seconds> <cmd...>
  local t=$1; shift
  for _ in $(seq 1 $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "timeout waiting for: $*"; return 1
}

need_root() {
  [ "$(id -u)" = 0 ] || die 3 "must run as root (starts munge, mariadb and the slurm daemons)"
  command -v apt-get >/dev/null || die 3 "apt-get not found: a Debian-like system is needed"
}

installed() {
  local b
  for b in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/munged /usr/bin/sbatch /usr/bin/sacct; do
    [ -x "$b" ] || return 1
  done
  if [ "$ACCOUNTING" = 1 ]; then
    for b in /usr/sbin/slurmdbd /usr/sbin/mariadbd; do [ -x "$b" ] || return 1; done
  fi
  return 0
}

do_install() {
  need_root
  if installed; then log "slurm already installed"; return 0; fi
  export DEBIAN_FRONTEND=noninteractive
  local pkgs=(slurm-wlm slurmctld slurmd slurm-client munge)
  [ "$ACCOUNTING" = 1 ] && pkgs+=(slurmdbd mariadb-server)
  # without systemd (and with a policy-rc.d) postinst scripts start no daemons: `up` starts them
  local opts=(-o Acquire::Retries=1 -o Acquire::http::Timeout=20)
  timeout 180 apt-get "${opts[@]}" update -qq || die 4 "apt-get update failed (no network to the Debian archive?)"
  timeout 600 apt-get "${opts[@]}" install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null \
    || die 4 "apt-get install ${pkgs[*]} failed"
  installed || die 4 "packages installed but daemons missing"
}

write_config() {
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOGDIR" "$RUN"
  chown slurm:slurm /var/spool/slurmctld "$LOGDIR" "$RUN"
  local acct_lines
  if [ "$ACCOUNTING" = 1 ]; then
    acct_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageEnforce=associations
# lets \`sacct -o Comment\` show the rule name the snakemake plugin puts in --comment
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
  else
    acct_lines="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi
  local override="" gres_node="" gres_types=""
  if [ "$FAKE_GPUS" -gt 0 ]; then
    # gres/gpu needs File= entries that are character devices (else slurmd reports 0 GPUs and the
    # node goes INVAL/DRAIN); clones of /dev/null are enough with task/none
    local i
    for i in $(seq 0 $((FAKE_GPUS - 1))); do
      [ -c "$RUN/fakegpu$i" ] || { rm -f "$RUN/fakegpu$i"; mknod "$RUN/fakegpu$i" c 1 3; }
    done
    gres_types="GresTypes=gpu
AccountingStorageTRES=gres/gpu"
    gres_node="Gres=gpu:$FAKE_GPUS"
    echo "Name=gpu File=$RUN/fakegpu[0-$((FAKE_GPUS - 1))]" > /etc/slurm/gres.conf
  else
    rm -f /etc/slurm/gres.conf
  fi
  # a node advertising more than the hardware has is accepted only with config_overrides
  if [ "$CPUS" -gt "$NPROC" ] || [ "$MEM_MB" -gt "$REAL_MEM_MB" ]; then
    override="SlurmdParameters=config_overrides"
  fi
  cat > /etc/slurm/slurm.conf <<EOF
$MARKER -- a throwaway test cluster
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# no cgroups, no systemd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# without this a job lacking --mem is given the whole node's memory
DefMemPerCPU=1000
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
# keep finished jobs visible to squeue/scontrol for 10 min
MinJobAge=600
JobCompType=jobcomp/none
$override
$gres_types
$acct_lines
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB $gres_node State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE Default=NO  MaxTime=INFINITE State=UP
EOF
  if [ "$ACCOUNTING" = 1 ]; then
    cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
LogFile=$LOGDIR/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
EOF
    chown slurm:slurm /etc/slurm/slurmdbd.conf
    chmod 600 /etc/slurm/slurmdbd.conf   # slurmdbd refuses a world-readable file
  fi
}

start_munge() {
  [ -s /etc/munge/munge.key ] || { mungekey -c -f -k /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  wait_for 10 bash -c 'munge -n | unmunge' || die 5 "munged did not come up"
}

start_mariadb() {
  mkdir -p /run/mysqld && chown mysql:root /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null 2>&1
  # --skip-networking: slurmdbd talks to it over the unix socket; nothing listens on a port
  nohup /usr/sbin/mariadbd --user=mysql --skip-networking --innodb-buffer-pool-size=64M \
        --pid-file=/run/mysqld/mysqld.pid >"$LOGDIR/mariadb.log" 2>&1 </dev/null &
  wait_for 30 mariadb -e 'select 1' || die 5 "mariadbd did not come up (see $LOGDIR/mariadb.log)"
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
              CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

start_slurmdbd() {
  /usr/sbin/slurmdbd
  wait_for 30 sacctmgr -n list cluster || die 5 "slurmdbd did not come up (see $LOGDIR/slurmdbd.log)"
  # idempotent: "Nothing new added" exits non-zero, so ignore failures here
  sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=test Organization=test >/dev/null 2>&1 || true
  sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null 2>&1 || true
  [ "$(id -un)" = root ] || sacctmgr -i add user "$(id -un)" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null 2>&1 || true
}

guard_foreign() {   # never take over a real cluster's config or somebody else's daemons
  [ "${SLURM_LOCAL_FORCE:-0}" = 1 ] && return 0
  if [ -f /etc/slurm/slurm.conf ] && ! grep -qF "$MARKER" /etc/slurm/slurm.conf; then
    die 6 "/etc/slurm/slurm.conf was not written by this script (a real SLURM?); set SLURM_LOCAL_FORCE=1 to replace it"
  fi
  [ -d "$OWNED" ] && return 0
  local f
  for f in "${PIDS[@]}"; do
    if [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
      die 6 "$f names a running process that this script did not start; set SLURM_LOCAL_FORCE=1 to stop it"
    fi
  done
}

do_up() {
  need_root
  installed || die 5 "slurm is not installed: run '$0 install' first"
  guard_foreign
  [ -d "$OWNED" ] && do_down 2>/dev/null   # restart semantics: stop whatever an earlier `up` left running
  mkdir -p "$OWNED"
  write_config
  start_munge
  if [ "$ACCOUNTING" = 1 ]; then start_mariadb; start_slurmdbd; fi
  /usr/sbin/slurmctld || die 5 "slurmctld failed to start (see $LOGDIR/slurmctld.log)"
  /usr/sbin/slurmd -N "$NODE" || die 5 "slurmd failed to start (see $LOGDIR/slurmd.log)"
  # a DRAIN left in the saved state by an earlier bad config is not cleared by ReturnToService
  wait_for 30 bash -c "sinfo -h -N -o %t | grep -qvE '^(unk|down)'" || true
  if sinfo -h -N -o %t 2>/dev/null | grep -q -E 'drain|drng|inval'; then scontrol update nodename="$NODE" state=resume || true; fi
  wait_for 30 bash -c "sinfo -h -N -o %t | grep -qx idle" || die 5 "node not idle: $(sinfo -h -N -o '%t %E' 2>&1 | head -1)"
  log "cluster up"; sinfo >&2
}

stop_pidfiles() {  # TERM every pid named in the given pid files, wait (30 s max), then KILL
  local f p pids=()
  for f in "$@"; do
    [ -s "$f" ] || continue
    p=$(cat "$f")
    kill -0 "$p" 2>/dev/null && { kill -TERM "$p"; pids+=("$p"); }
  done
  for _ in $(seq 1 300); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && { log "pid $p ignored TERM, sending KILL"; kill -KILL "$p"; }; done
  rm -f "$@"
}

do_down() {   # order: slurm daemons, then slurmdbd, then mariadb + munge
  if [ ! -d "$OWNED" ] && [ "${SLURM_LOCAL_FORCE:-0}" != 1 ]; then
    log "nothing to stop: no daemons started by this script (SLURM_LOCAL_FORCE=1 stops them anyway)"; return 0
  fi
  stop_pidfiles "$RUN/slurmd.pid" "$RUN/slurmctld.pid"
  stop_pidfiles "$RUN/slurmdbd.pid"
  stop_pidfiles /run/mysqld/mysqld.pid /run/munge/munged.pid
  rmdir "$OWNED" 2>/dev/null || true
  log "cluster down"
}

do_status() {   # exit 0 only when every daemon named by a pid file is running
  local f rc=0
  for f in "${PIDS[@]}"; do
    if [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then echo "running $f $(cat "$f")"; else echo "stopped $f"; rc=1; fi
  done
  # without slurmctld, sinfo retries for ~9 s before giving up
  if [ -s "$RUN/slurmctld.pid" ] && kill -0 "$(cat "$RUN/slurmctld.pid")" 2>/dev/null; then sinfo 2>/dev/null || true; fi
  return $rc
}

do_logs() {
  local f
  for f in "$LOGDIR"/slurmctld.log "$LOGDIR"/slurmd.log "$LOGDIR"/slurmdbd.log "$LOGDIR"/mariadb.log; do
    [ -f "$f" ] && { echo "==> $f"; tail -n "${LINES_PER_LOG:-30}" "$f"; }
  done
  return 0
}

do_smoke() {
  local jid out
  out=$(mktemp -d)
  jid=$(sbatch --parsable -o "$out/smoke-%j.out" --wrap 'hostname; echo SLURM_JOB_ID=$SLURM_JOB_ID')
  wait_for 60 bash -c "squeue -h --states=all -j $jid -o %T | grep -qx COMPLETED" || die 5 "smoke job $jid did not complete"
  cat "$out/smoke-$jid.out"
  squeue --states=all -j "$jid" -o '%i %j %T %P'
  if [ "$ACCOUNTING" = 1 ]; then
    wait_for 30 bash -c "sacct -X -n -P -j $jid -o State | grep -qx COMPLETED" || die 5 "sacct does not show smoke job $jid COMPLETED"
    sacct -X -j "$jid" -o JobID,JobName,Partition,Account,State
  fi
  rm -rf "$out"
}

case "${1:-}" in
  install) do_install ;;
  up)      do_up ;;
  down)    do_down ;;
  status)  do_status ;;
  logs)    do_logs ;;
  smoke)   do_smoke ;;
  *) echo "usage: $0 install|up|down|status|logs|smoke" >&2; exit 2 ;;
esac
