#!/usr/bin/env bash
# The pcluster CLI (aws-parallelcluster 3.16.1) in its own venv, .venv-pcluster: it cannot
# share a venv with Airflow. Idempotent. SCIOPS_PCLUSTER points the DAG at its pcluster.
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(sha256sum requirements-pcluster.txt | cut -d' ' -f1)
if [ "$(cat .venv-pcluster/.requirements.sha256 2>/dev/null)" != "$want" ]; then
    echo "setup: creating .venv-pcluster (aws-parallelcluster)"
    .venv/bin/python -m uv --version >/dev/null 2>&1 || {
        .venv/bin/python -m pip --version >/dev/null 2>&1 || .venv/bin/python -m ensurepip >/dev/null
        .venv/bin/python -m pip install -q --disable-pip-version-check "uv==0.13.9"; }
    .venv/bin/python -m uv venv -q --allow-existing -p "${PYTHON:-python3}" .venv-pcluster
    .venv/bin/python -m uv pip sync -q -p .venv-pcluster/bin/python requirements-pcluster.txt
    echo "$want" > .venv-pcluster/.requirements.sha256
fi
