#!/usr/bin/env bash
# Testbed: OpenSSH's sshd on 127.0.0.1:${SCIOPS_SSH_PORT:-2222}, with a generated host key
# and a generated client key for the job user (the "head node" of the existing backend).
# Idempotent; run as root.   bash scripts/testbed/sshd.sh start|stop|conn
#   conn prints the Airflow connection (JSON) for AIRFLOW_CONN_<ID>.
set -euo pipefail
source "$(dirname "$0")/common.sh"
ACTION="${1:-start}"
STATE=/var/lib/sciops-testbed/ssh
PORT="${SCIOPS_SSH_PORT:-2222}"
JOB_USER="${SCIOPS_TESTBED_USER:-sciops}"

log() { echo "testbed/sshd: $*"; }
pid() { cat "$STATE/sshd.pid" 2>/dev/null || true; }

setup() {
    command -v /usr/sbin/sshd >/dev/null || {
        log "installing openssh-server"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
    }
    id "$JOB_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$JOB_USER"
    # A new user's password is "!" (locked), and sshd without PAM refuses locked accounts
    # even for key logins: "*" means no password, not locked.
    usermod -p '*' "$JOB_USER"
    mkdir -p "$STATE/authorized_keys" /run/sshd
    chmod 755 /var/lib/sciops-testbed "$STATE" "$STATE/authorized_keys"
    [ -f "$STATE/host_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -f "$STATE/host_ed25519"
    [ -f "$STATE/client_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -C "sciops-testbed" -f "$STATE/client_ed25519"
    install -m 644 "$STATE/client_ed25519.pub" "$STATE/authorized_keys/$JOB_USER"
    (umask 077; cat > "$STATE/sshd_config") <<CONF
ListenAddress 127.0.0.1
Port $PORT
HostKey $STATE/host_ed25519
PidFile $STATE/sshd.pid
AuthorizedKeysFile $STATE/authorized_keys/%u
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
AllowUsers $JOB_USER
# Tests poll and fan out: let many sessions start at once (the default 10:30:100 drops them).
MaxStartups 100:30:200
MaxSessions 50
# One line per connection and per command (with the client port): the load test counts them.
LogLevel VERBOSE
# What a cluster's login environment would set: Grid Engine's root, and the AWS credentials the
# head node stages projects in and out of S3 with (on AWS: its instance role). The S3 endpoint
# is moto's (scripts/testbed/s3.sh), which accepts these; only root can read this file.
SetEnv SGE_ROOT=/var/lib/gridengine SGE_CELL=default AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing-secret AWS_DEFAULT_REGION=us-east-1
CONF
}

start() {
    setup
    if ! running "$(pid)"; then
        /usr/sbin/sshd -f "$STATE/sshd_config" -E "$STATE/sshd.log"
    fi
    for _ in $(seq 1 40); do
        ssh -q -i "$STATE/client_ed25519" -p "$PORT" -o BatchMode=yes -o StrictHostKeyChecking=no \
            -o UserKnownHostsFile=/dev/null "$JOB_USER@127.0.0.1" true 2>/dev/null && {
            log "ready: $JOB_USER@127.0.0.1:$PORT"; return 0; }
        sleep 0.25
    done
    log "sshd does not accept the test key"; exit 1
}

conn() {
    # Host key pinned (no blind trust); the private key is referenced by path, never printed.
    python3 - "$STATE" "$PORT" "$JOB_USER" <<'PY'
import json, sys
state, port, user = sys.argv[1:]
host_key = open(f"{state}/host_ed25519.pub").read().split()[:2]
print(json.dumps({"conn_type": "ssh", "host": "127.0.0.1", "port": int(port), "login": user,
                  "extra": {"key_file": f"{state}/client_ed25519", "host_key": " ".join(host_key)}}))
PY
}

case "$ACTION" in
    start) start ;;
    stop) p=$(pid); running "$p" && kill "$p"; log "stopped" ;;
    # restart drops every open session too, as a real sshd restart or a reboot of the head node does
    restart) p=$(pid); running "$p" && kill "$p"; pkill -f "^sshd: $JOB_USER" || true; sleep 1; start ;;
    conn) conn ;;
    *) echo "usage: $0 start|stop|restart|conn" >&2; exit 2 ;;
esac
