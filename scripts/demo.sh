#!/usr/bin/env bash
# The demo: run fiji_project on the shipped sample project with the embedded default
# (local backend, a local folder as storage, SQLite), then show where the results are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh

DEMO="$SCIOPS_REPO/.demo"
export AIRFLOW_HOME="$DEMO/airflow"
export SCIOPS_STORAGE_ROOT="$DEMO/storage"
mkdir -p "$AIRFLOW_HOME" "$SCIOPS_STORAGE_ROOT"

# "Sync up" the sample project into the storage root (inputs only; earlier runs' outputs stay).
mkdir -p "$SCIOPS_STORAGE_ROOT/demo"
cp -r examples/demo/. "$SCIOPS_STORAGE_ROOT/demo/"
python - <<'PY'
import os
from sciops.imaging.synthetic import make_images
counts = {f"synthetic/nuclei_{n:02d}.tif": n for n in (8, 15, 23, 31, 42, 57)}
make_images(os.path.join(os.environ["SCIOPS_STORAGE_ROOT"], "demo", "input"), counts)
PY

echo "demo: preparing the Airflow metadata database (SQLite) in $AIRFLOW_HOME"
airflow db migrate >"$DEMO/db-migrate.log" 2>&1 || { cat "$DEMO/db-migrate.log"; exit 1; }

echo "demo: running fiji_project on project 'demo' (log: $DEMO/dags-test.log)"
set +e
airflow dags test fiji_project -c '{"project": "demo"}' >"$DEMO/dags-test.log" 2>&1
rc=$?
set -e
python - "$rc" <<'PY'
import json, os, sys
from pathlib import Path
from sciops.phases.record import summary_table
out = Path(os.environ["SCIOPS_STORAGE_ROOT"], "demo", "output")
runs = sorted(out.glob("*/run.json"), key=lambda p: p.stat().st_mtime)
if not runs:
    sys.exit(f"demo: the run wrote no run.json; see {os.environ['AIRFLOW_HOME']}/../dags-test.log")
run = json.loads(runs[-1].read_text())
run_dir = runs[-1].parent
print(f"\ndemo: run {run['run_id']} {run['status']}: {run['images']['ok']} of {run['images']['total']} images ok, "
      f"{run['images']['failed']} failed, ImageJ {run['imagej_version']}")
for name, p in sorted(run["phases"].items(), key=lambda kv: kv[1]["start"]):
    print(f"  {name:<10} {p.get('seconds', 0):7.1f} s  {p['status']}")
cost = run.get("cost") or {}
print(f"  cost {cost.get('total_usd', 0):.4f} USD at {cost.get('hourly_rate_usd', 0)} USD per task-hour "
      f"({sum((cost.get('node_hours') or {}).values()):.4f} task-hours; set hourly_rate_usd for your facility)")
print(f"\nresults in {run_dir}/")
for f in ("results.csv", "results.parquet", "summary.csv", "failures.csv", "run.json", "report.html"):
    print(f"  {f}")
print(f"run ledger: {os.environ['AIRFLOW_HOME']}/sciops_ledger.db (table sciops_runs)")
print("\n" + summary_table(run_dir))
sys.exit(int(sys.argv[1]))
PY
