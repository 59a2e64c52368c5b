# Sourced by the scripts: Airflow settings for running SciOps from this checkout.
# AIRFLOW_HOME and SCIOPS_STORAGE_ROOT are set by the caller.
SCIOPS_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AIRFLOW__CORE__DAGS_FOLDER="$SCIOPS_REPO/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$SCIOPS_REPO/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__UNIT_TEST_MODE=False
export PYTHONPATH="$SCIOPS_REPO/plugins${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SCIOPS_REPO/.venv/bin:$PATH"
