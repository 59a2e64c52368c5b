#!/usr/bin/env bash
# Testbed: Son of Grid Engine (Debian's gridengine 8.1.9) on this host, qmaster + execd,
# queue all.q with slots = nproc, tuned for tests (1 s scheduling and accounting flush).
# Idempotent; run as root. Jobs run as an ordinary user (SGE refuses uid < min_uid).
#   bash scripts/testbed/gridengine.sh start|stop|status
set -euo pipefail
source "$(dirname "$0")/common.sh"
ACTION="${1:-start}"
HOST="$(hostname)"
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
SPOOL=/var/spool/gridengine
JOB_USER="${SCIOPS_TESTBED_USER:-sciops}"

log() { echo "testbed/gridengine: $*"; }

qmaster_pid() { cat "$SPOOL/qmaster/qmaster.pid" 2>/dev/null || true; }
execd_pid() { cat "$SPOOL"/execd/*/execd.pid 2>/dev/null | head -n 1 || true; }
stop_pid() {
    running "$1" || return 0
    kill "$1" 2>/dev/null || true
    for _ in $(seq 1 60); do running "$1" || return 0; sleep 0.5; done
    kill -9 "$1" 2>/dev/null || true
}

install() {
    if ! dpkg-query -W -f='${Status}' gridengine-master 2>/dev/null | grep -q "install ok installed"; then
        log "installing gridengine (master, exec, client)"
        apt-get update -qq
        # Preseed the questions the packages would ask.
        debconf-set-selections <<SEL
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginesgeroot string /var/lib/gridengine
gridengine-common shared/gridenginemaster string $HOST
gridengine-client shared/gridengineconfig boolean true
gridengine-client shared/gridenginecell string default
gridengine-client shared/gridenginemaster string $HOST
gridengine-master shared/gridengineconfig boolean true
gridengine-master shared/gridenginecell string default
gridengine-master shared/gridenginemaster string $HOST
gridengine-exec shared/gridengineconfig boolean true
gridengine-exec shared/gridenginecell string default
gridengine-exec shared/gridenginemaster string $HOST
SEL
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gridengine-master gridengine-exec gridengine-client >/dev/null
    fi
    id "$JOB_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$JOB_USER"
    # The host name resolves to 127.0.0.1, which reverse-resolves to "localhost":
    # without this alias every command is refused ("access denied ... localhost").
    mkdir -p "$SGE_ROOT/$SGE_CELL/common"
    grep -qs "^$HOST localhost" "$SGE_ROOT/$SGE_CELL/common/host_aliases" ||
        echo "$HOST localhost" >> "$SGE_ROOT/$SGE_CELL/common/host_aliases"
}

start_daemons() {
    if ! running "$(qmaster_pid)"; then
        log "starting sge_qmaster"
        /usr/sbin/sge_qmaster
    fi
    for _ in $(seq 1 60); do qconf -sh >/dev/null 2>&1 && break; sleep 0.5; done
    qconf -sh >/dev/null 2>&1 || { log "qmaster does not answer"; exit 1; }
}

configure() {
    local tmp; tmp=$(mktemp -d)
    # Global configuration: allow the job user, faster accounting flush.
    qconf -sconf global > "$tmp/global"
    sed -i -e ':a' -e '/\\$/{N;s/\\\n[[:space:]]*/ /;ba' -e '}' "$tmp/global"   # join continued lines
    sed -i -e 's/^min_uid .*/min_uid                      100/' -e 's/^min_gid .*/min_gid                      100/' \
        -e 's/^reporting_params .*/reporting_params             accounting=true reporting=false flush_time=00:00:01 joblog=false sharelog=00:00:00/' \
        "$tmp/global"
    qconf -Mconf "$tmp/global" >/dev/null
    # Scheduler: 1 s interval.
    qconf -ssconf > "$tmp/sched"
    sed -i -e 's/^schedule_interval .*/schedule_interval                 0:0:1/' "$tmp/sched"
    qconf -Msconf "$tmp/sched" >/dev/null
    # This host: admin, submit and exec host.
    qconf -sh | grep -qx "$HOST" || qconf -ah "$HOST" >/dev/null
    qconf -ss | grep -qx "$HOST" || qconf -as "$HOST" >/dev/null
    # Complexes: exclusive node use and one ImageJ per host (see the scheduler's resource requests).
    qconf -sc > "$tmp/complex"
    grep -q "^exclusive " "$tmp/complex" || echo "exclusive excl BOOL EXCL YES YES 0 1000" >> "$tmp/complex"
    grep -q "^fiji " "$tmp/complex" || echo "fiji fiji INT <= YES YES 0 0" >> "$tmp/complex"
    qconf -Mc "$tmp/complex" >/dev/null 2>&1 || true
    if ! qconf -sel 2>/dev/null | grep -qx "$HOST"; then
        cat > "$tmp/exechost" <<EH
hostname              $HOST
load_scaling          NONE
complex_values        exclusive=true,fiji=1
user_lists            NONE
xuser_lists           NONE
projects              NONE
xprojects             NONE
usage_scaling         NONE
report_variables      NONE
EH
        qconf -Ae "$tmp/exechost" >/dev/null
    fi
    # Parallel environment smp (slots on one host).
    if ! qconf -spl | grep -qx smp; then
        cat > "$tmp/pe" <<PE
pe_name            smp
slots              999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    \$pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
PE
        qconf -Ap "$tmp/pe" >/dev/null
    fi
    # Queue all.q: slots = nproc, no load threshold (a busy test machine must not block it).
    if ! qconf -sql 2>/dev/null | grep -qx all.q; then
        qconf -sq > "$tmp/q" 2>/dev/null || true
        cat > "$tmp/q" <<Q
qname                 all.q
hostlist              $HOST
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               smp
rerun                 FALSE
slots                 $(nproc)
tmpdir                /tmp
shell                 /bin/sh
prolog                NONE
epilog                NONE
shell_start_mode      unix_behavior
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
Q
        qconf -Aq "$tmp/q" >/dev/null
    fi
    rm -rf "$tmp"
}

start_execd() {
    if ! running "$(execd_pid)"; then
        log "starting sge_execd"
        /usr/sbin/sge_execd
    fi
    for _ in $(seq 1 60); do
        qstat -f -q all.q 2>/dev/null | grep -q "all.q@$HOST" && qhost -h "$HOST" 2>/dev/null | grep -q "^$HOST .* [0-9.]*[KMG] " && break
        sleep 0.5
    done
    # A queue instance left in error state by an earlier crash would block every job.
    qmod -c "all.q@$HOST" >/dev/null 2>&1 || true
    qmod -e "all.q@$HOST" >/dev/null 2>&1 || true
}

smoke() {
    local out; out=$(su - "$JOB_USER" -c "qsub -terse -sync y -b y -o /dev/null -e /dev/null true" 2>&1) || {
        log "a test job failed: $out"; qstat -f; exit 1; }
    log "ready: qmaster and execd on $HOST, all.q with $(nproc) slots, test job $out ran"
}

case "$ACTION" in
    start)
        install; start_daemons; configure; start_execd; smoke ;;
    stop)
        stop_pid "$(execd_pid)"
        stop_pid "$(qmaster_pid)"
        log "stopped" ;;
    status)
        running "$(qmaster_pid)" && running "$(execd_pid)" && qstat -f ;;
    *)
        echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
