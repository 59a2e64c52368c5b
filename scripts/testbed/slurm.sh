#!/usr/bin/env bash
# Testbed: Slurm 22.05 (Debian) on this host: munge, MariaDB + slurmdbd (sacct needs it),
# slurmctld and slurmd, one partition "batch" with this host's CPUs and memory.
# No systemd here: daemons are started directly. Idempotent; run as root.
#   bash scripts/testbed/slurm.sh start|stop|status
set -euo pipefail
source "$(dirname "$0")/common.sh"
ACTION="${1:-start}"
HOST="$(hostname)"
STATE=/var/lib/sciops-testbed/slurm
CONF=/etc/slurm
JOB_USER="${SCIOPS_TESTBED_USER:-sciops}"

log() { echo "testbed/slurm: $*"; }
pidof_file() { cat "$1" 2>/dev/null || true; }

install() {
    local pkgs=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    id "$JOB_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$JOB_USER"
    mkdir -p "$STATE" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /run/mysqld
    chown slurm:slurm /var/spool/slurmctld /var/log/slurm "$STATE" 2>/dev/null || true
    chown munge:munge /run/munge; chown mysql:mysql /run/mysqld
}

configure() {
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
    local cpus mem
    cpus=$(nproc)
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$(( mem * 9 / 10 ))
    cat > "$CONF/slurm.conf" <<SC
ClusterName=sciops
SlurmctldHost=$HOST
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job with no --mem takes the whole node and array tasks run one at a time.
DefMemPerCPU=512
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmUser=slurm
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
# No cgroups here: enforce --mem from the accounting samples ("exceeded memory limit", FAILED 0:9).
JobAcctGatherParams=OverMemoryKill
MinJobAge=30
MaxArraySize=10001
MaxJobCount=20000
SchedulerParameters=sched_interval=2
GresTypes=fiji
NodeName=$HOST CPUs=$cpus RealMemory=$mem Gres=fiji:1 State=UNKNOWN
PartitionName=batch Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
SC
    echo "Name=fiji Count=1" > "$CONF/gres.conf"
    cat > "$CONF/slurmdbd.conf" <<DB
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=sciops-testbed
StorageLoc=slurm_acct_db
DB
    chown slurm:slurm "$CONF/slurmdbd.conf"; chmod 600 "$CONF/slurmdbd.conf"
}

start_daemons() {
    running "$(pgrep -x munged | head -1)" || { log "starting munged"; su -s /bin/sh munge -c /usr/sbin/munged; }
    if ! mysqladmin ping >/dev/null 2>&1; then
        log "starting MariaDB"
        [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
        (mysqld_safe --user=mysql >/dev/null 2>&1 &)
        for _ in $(seq 1 60); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.5; done
    fi
    mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'sciops-testbed'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    running "$(pidof_file /run/slurmdbd.pid)" || { log "starting slurmdbd"; /usr/sbin/slurmdbd; }
    for _ in $(seq 1 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
    sacctmgr -n list cluster format=cluster | grep -qw sciops || sacctmgr -i add cluster sciops >/dev/null
    running "$(pidof_file /run/slurmctld.pid)" || { log "starting slurmctld"; /usr/sbin/slurmctld; }
    running "$(pidof_file /run/slurmd.pid)" || { log "starting slurmd"; /usr/sbin/slurmd; }
    for _ in $(seq 1 60); do sinfo -h -o %t 2>/dev/null | grep -qE "idle|mix|alloc" && break; sleep 0.5; done
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    scontrol reconfigure >/dev/null 2>&1 || true   # daemons that were already up read the config again
}

smoke() {
    local out
    out=$(su - "$JOB_USER" -c "sbatch --parsable --wait --mem=64M -o /dev/null --wrap=true" 2>&1) || {
        log "a test job failed: $out"; sinfo; exit 1; }
    for _ in $(seq 1 20); do
        sacct -n -X -j "$out" -o State 2>/dev/null | grep -q COMPLETED && { log "ready: $HOST, job $out accounted"; return 0; }
        sleep 0.5
    done
    log "job $out ran but sacct does not show it"; exit 1
}

stop() {
    for f in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid; do
        p=$(pidof_file "$f"); running "$p" && kill "$p" || true
    done
    log "stopped"
}

case "$ACTION" in
    start) install; configure; start_daemons; smoke ;;
    stop) stop ;;
    status) sinfo && squeue ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
