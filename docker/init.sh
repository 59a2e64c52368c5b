#!/usr/bin/env bash
# One-time set-up of a SciOps Airflow deployment; compose's airflow-init runs it, and so does
# the deployment test (tests/deployment/), with the same settings from docker-compose.yaml.
# It touches only what it must:
#   - the logs and config folders (created; chowned to AIRFLOW_UID when run as root),
#   - the projects folder: created if missing, never chowned recursively (it may hold
#     terabytes, or sit on a root-squashed NFS export); nothing for an s3:// storage root,
#   - the shared airflow.cfg ($AIRFLOW_CONFIG): written once, with the generated JWT secret
#     that every component must share (api-server and scheduler sign and check task tokens),
#   - the login: SIMPLE_AUTH_MANAGER_PASSWORDS_FILE gets a generated password once,
#   - the metadata database: migrated.
set -euo pipefail
AIRFLOW_HOME="${AIRFLOW_HOME:-/opt/airflow}"
LOGS="${SCIOPS_INIT_LOGS:-$AIRFLOW_HOME/logs}"
CONFIG_DIR="$(dirname "${AIRFLOW_CONFIG:-$AIRFLOW_HOME/config/airflow.cfg}")"
PROJECTS="${SCIOPS_STORAGE_ROOT:-/opt/sciops/projects}"
case "$PROJECTS" in
    s3://*) PROJECTS="" ;;                      # a bucket: made by its admin, never here
    file://*) PROJECTS="${PROJECTS#file://}" ;;
esac
PASSWORDS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$CONFIG_DIR/passwords.json}"
USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-airflow:admin}"

say() { echo "sciops-init: $*"; }

if [ -z "${AIRFLOW_UID:-}" ] && [ "$(id -u)" -eq 0 ]; then
    say "WARNING: AIRFLOW_UID is not set: files the runs write (results included) will belong to uid 50000."
    say "         On Linux run once: echo \"AIRFLOW_UID=\$(id -u)\" > .env"
fi
UID_TO="${AIRFLOW_UID:-50000}"

mkdir -p "$LOGS" "$CONFIG_DIR"
if [ -n "$PROJECTS" ] && [ ! -d "$PROJECTS" ]; then
    mkdir -p "$PROJECTS"
    [ "$(id -u)" -ne 0 ] || chown "$UID_TO:0" "$PROJECTS"   # the new folder only, never its contents
    say "created the projects folder $PROJECTS (put a project in it: see docs/deployment.md, 'Airflow with docker compose')"
fi

# Writes $AIRFLOW_CONFIG with a generated jwt_secret (and fernet key) if it does not exist yet.
airflow config list >/dev/null
if [ ! -s "$PASSWORDS" ]; then
    python3 - "$PASSWORDS" "$USERS" <<'PY'
import json, secrets, sys
users = [u.split(":")[0] for u in sys.argv[2].split(",") if u.strip()]
with open(sys.argv[1], "w") as fh:
    json.dump({u: secrets.token_urlsafe(12) for u in users}, fh)
PY
    chmod 600 "$PASSWORDS"
    say "login passwords generated in $PASSWORDS (the UI's user: ${USERS%%:*})"
fi
airflow db migrate >/dev/null
if [ "$(id -u)" -eq 0 ]; then
    chown "$UID_TO:0" "$LOGS"          # the folder: Airflow writes its log files as AIRFLOW_UID
    chown -R "$UID_TO:0" "$CONFIG_DIR" # a few small files
fi
say "ready: $(airflow version)"
