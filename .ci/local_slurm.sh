#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for trying and testing `--profile profiles/slurm` (root only;
# Debian's slurmctld, slurmd, slurmdbd, munge and mariadb-server: `make test-deps` installs them).
#   bash .ci/local_slurm.sh start   # idempotent; prints the node once it is idle
#   bash .ci/local_slurm.sh stop
# Accounting (slurmdbd) is on because the SLURM executor plugin polls job states with sacct; the node declares one
# GPU backed by /dev/null, so that jobs asking for `gpu: 1` are scheduled as on a GPU node (they see
# CUDA_VISIBLE_DEVICES=0 and, without a real GPU, run on the CPU).
set -euo pipefail
PIDS="/run/slurm/slurmctld.pid /run/slurm/slurmd.pid /run/slurm/slurmdbd.pid /run/mysqld/mysqld.pid /run/munge/munged.pid"
CONFIGS="/etc/slurm/slurm.conf /etc/slurm/gres.conf /etc/slurm/slurmdbd.conf"
MARK="# written by audiofeat scripts/local_slurm.sh"  # unchanged since the script moved: it marks files written before

wait_for() {  # wait_for SECONDS COMMAND...: retry until the command succeeds, each try bounded by 5 s
  local deadline=$((SECONDS + $1)); shift
  until timeout 5 "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "local_slurm: timed out waiting for: $*" >&2; return 1; }
    sleep 0.5
  done
}

start() {
  if timeout 5 sinfo -h -o %T 2>/dev/null | grep -q idle; then sinfo; return 0; fi
  for config in $CONFIGS; do  # a cluster's own configuration is never overwritten
    if [ -f "$config" ] && [ "$(head -n 1 "$config")" != "$MARK" ]; then
      echo "local_slurm: $config exists and was not written by this script; leaving SLURM alone" >&2
      return 1
    fi
  done
  local host cpus mem
  host=$(hostname -s)
  # The node declares at least 8 CPUs and 32 GB, what profiles/slurm asks of one job, so the profile runs here
  # unchanged; SlurmdParameters=config_overrides makes slurmd take these figures instead of the hardware's.
  cpus=$(( $(nproc) > 8 ? $(nproc) : 8 ))
  mem=$(awk '/MemTotal/ {m = int($2 / 1024 * 0.8); print (m > 32000 ? m : 32000)}' /proc/meminfo)
  mkdir -p /var/spool/slurmctld /var/spool/slurmd /run/slurm /var/log/slurm /run/munge /run/mysqld
  chown slurm:slurm /var/spool/slurmctld /run/slurm /var/log/slurm
  chown munge:munge /run/munge
  chown mysql:mysql /run/mysqld
  cat > /etc/slurm/slurm.conf <<EOF
$MARK
ClusterName=localcluster
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
GresTypes=gpu
SlurmdParameters=config_overrides
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  printf '%s\nNodeName=%s Name=gpu File=/dev/null\n' "$MARK" "$host" > /etc/slurm/gres.conf
  cat > /etc/slurm/slurmdbd.conf <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm-local
StorageLoc=slurm_acct_db
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
EOF
  chown slurm:slurm /etc/slurm/slurmdbd.conf
  chmod 600 /etc/slurm/slurmdbd.conf
  [ -s /run/munge/munged.pid ] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null \
    || runuser -u munge -- /usr/sbin/munged
  if ! mariadb-admin ping >/dev/null 2>&1; then
    nohup /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 >/var/log/mariadbd.out 2>&1 </dev/null &
    wait_for 60 mariadb-admin ping
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm-local';
    ALTER USER 'slurm'@'localhost' IDENTIFIED BY 'slurm-local';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  pgrep -x slurmdbd >/dev/null || /usr/sbin/slurmdbd
  wait_for 60 bash -c 'ss -ltn | grep -q ":6819 "'
  pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
  pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
  wait_for 60 bash -c 'sinfo -h -o %T | grep -q idle'
  # The plugin's jobs hang at "Execute 1 jobs..." when the submitting user has no account: make sure it has one.
  sacctmgr -i add account local Cluster=localcluster Description=local Organization=local >/dev/null 2>&1 || true
  sacctmgr -i add user "$(id -un)" Account=local DefaultAccount=local >/dev/null 2>&1 || true
  wait_for 60 bash -c "sacctmgr -n -P show assoc user=$(id -un) format=account | grep -q ."
  sinfo
}

# Stops the daemons, waits (30 s at most) until they are gone, and removes the configuration start wrote: with a
# slurm.conf naming a controller that is down, every `scontrol show config` waits about 9 s, and the SLURM
# executor plugin runs one whenever Snakemake starts, local runs included.
stop() {
  local pids=()
  for pid_file in $PIDS; do
    [ -s "$pid_file" ] && pids+=("$(cat "$pid_file")")
  done
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "${pids[@]}" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  fi
  for config in $CONFIGS; do
    [ -f "$config" ] && [ "$(head -n 1 "$config")" = "$MARK" ] && rm -f "$config"
  done
  return 0
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
