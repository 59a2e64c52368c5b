#!/usr/bin/env bash
# The whole test suite: installs what the tests need (scripts/setup.sh), then runs pytest.
# Services the tests need are started by the tests' fixtures or scripts here; one that
# cannot start fails the run, it is never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/pcluster-venv.sh      # pcluster's own venv, for checking generated cluster configs
# What only the tests need: Debian's chromium, driven by Playwright (report.html, the trigger form, the dashboard).
command -v chromium >/dev/null || {
    echo "test: installing chromium (the browser tests drive it through Playwright)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
}
source scripts/env.sh
for tool in java Xvfb docker-compose aws chromium; do
    command -v "$tool" >/dev/null || { echo "test: $tool is missing after setup" >&2; exit 1; }
done
# The real systems the tests talk to: Grid Engine, Slurm, sshd, S3 (moto_server) and PostgreSQL on 127.0.0.1. If one cannot
# start, the suite fails here (set -e), it is never skipped.
bash scripts/testbed/gridengine.sh start
bash scripts/testbed/slurm.sh start
bash scripts/testbed/sshd.sh start
bash scripts/testbed/s3.sh start
bash scripts/testbed/postgres.sh start
bash scripts/testbed/vendor_sample.sh   # a Zeiss CZI for the Bio-Formats tests
exec python -m pytest "$@"
