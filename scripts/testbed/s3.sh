#!/usr/bin/env bash
# Testbed: S3 endpoints from moto_server on 127.0.0.1 (real HTTP; the one emulator we accept).
#   open  :${SCIOPS_S3_PORT:-5055}       accepts any credentials (the suite's storage root)
#   auth  :${SCIOPS_S3_AUTH_PORT:-5056}  checks SigV4 signatures against its IAM users: one user
#                                         with an access key is made at start (wrong-credential tests)
#   kms   :${SCIOPS_S3_KMS_PORT:-5057}   answers like a bucket with default SSE-KMS encryption: every
#                                         ETag is not the object's MD5 (moto_kms.py; S3's documented rule)
# Idempotent; state in /var/lib/sciops-testbed/s3.
#   bash scripts/testbed/s3.sh start|stop|conn [open|auth]
#   conn prints the Airflow AWS connection (JSON) for AIRFLOW_CONN_<ID>.
set -euo pipefail
source "$(dirname "$0")/common.sh"
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
ACTION="${1:-start}"
STATE=/var/lib/sciops-testbed/s3
OPEN_PORT="${SCIOPS_S3_PORT:-5055}"
AUTH_PORT="${SCIOPS_S3_AUTH_PORT:-5056}"
KMS_PORT="${SCIOPS_S3_KMS_PORT:-5057}"
MOTO="$REPO/.venv/bin/moto_server"
PY="$REPO/.venv/bin/python"

log() { echo "testbed/s3: $*"; }
pid() { cat "$STATE/$1.pid" 2>/dev/null || true; }
# Up = accepts a connection. Not an S3 request: on the auth endpoint every S3 request before the
# IAM user exists would spend one of its INITIAL_NO_AUTH_ACTION_COUNT unauthenticated actions.
up() { "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2).close()" "$1" 2>/dev/null; }

launch() {  # name port [env...]; sets LAUNCHED=1 when it had to start a new server
    local name=$1 port=$2; shift 2
    LAUNCHED=0
    local server=("$MOTO")
    [ "$name" = kms ] && server=("$PY" "$(dirname "$0")/moto_kms.py")
    if ! running "$(pid "$name")"; then
        env "$@" setsid "${server[@]}" -H 127.0.0.1 -p "$port" >"$STATE/$name.log" 2>&1 < /dev/null &
        echo $! > "$STATE/$name.pid"
        LAUNCHED=1
    fi
    for _ in $(seq 1 120); do up "$port" && return 0; sleep 0.25; done
    log "moto_server ($name) does not answer on 127.0.0.1:$port:"; tail -20 "$STATE/$name.log"; exit 1
}

start() {
    [ -x "$MOTO" ] || { log "$MOTO is missing: run scripts/setup.sh"; exit 1; }
    mkdir -p "$STATE"
    chmod 700 "$STATE"
    launch open "$OPEN_PORT"
    launch kms "$KMS_PORT"
    # Auth is enforced after the first 3 requests: the three that make the IAM user below.
    launch auth "$AUTH_PORT" INITIAL_NO_AUTH_ACTION_COUNT=3
    if [ "$LAUNCHED" = 1 ]; then
        "$PY" - "$AUTH_PORT" "$STATE/auth-key.json" <<'PY'
import json, os, sys
import boto3
port, out = sys.argv[1:]
iam = boto3.client("iam", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                   aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam.create_user(UserName="sciops")
key = iam.create_access_key(UserName="sciops")["AccessKey"]
iam.put_user_policy(UserName="sciops", PolicyName="s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, json.dumps({"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}).encode())
os.close(fd)
PY
    fi
    log "ready: open http://127.0.0.1:$OPEN_PORT, auth http://127.0.0.1:$AUTH_PORT, kms http://127.0.0.1:$KMS_PORT"
}

conn() {  # the secret is printed only here, for the caller to put in its environment
    "$PY" - "${1:-open}" "$OPEN_PORT" "$AUTH_PORT" "$STATE/auth-key.json" "$KMS_PORT" <<'PY'
import json, sys
which, open_port, auth_port, key_file, kms_port = sys.argv[1:]
if which == "kms":
    login, password, port = "testing", "testing-secret", kms_port
elif which == "auth":
    key = json.load(open(key_file))
    login, password, port = key["id"], key["secret"], auth_port
else:
    login, password, port = "testing", "testing-secret", open_port
print(json.dumps({"conn_type": "aws", "login": login, "password": password,
                  "extra": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}}))
PY
}

stop() {
    for name in open auth kms; do p=$(pid "$name"); running "$p" && kill "$p" || true; done
    log "stopped"
}

case "$ACTION" in
    start) start ;;
    stop) stop ;;
    conn) conn "${2:-open}" ;;
    *) echo "usage: $0 start|stop|conn [open|auth]" >&2; exit 2 ;;
esac
