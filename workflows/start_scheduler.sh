#!/usr/bin/env bash
# Start the Dask scheduler of a multi-host cohort run (on one host that every worker can reach).
#   workflows/start_scheduler.sh            # port 8786, dashboard on 8787
# Env: PORT, DASHBOARD_PORT, RETRIES (times a task is rerun after its worker died).
set -euo pipefail
PORT="${PORT:-8786}"
DASHBOARD_PORT="${DASHBOARD_PORT:-8787}"
# A task whose worker dies (OOM, node lost) is retried this often, then reported as KilledWorker.
export DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="${RETRIES:-2}"
echo "scheduler: tcp://$(hostname -f):${PORT}   dashboard: http://$(hostname -f):${DASHBOARD_PORT}/status"
exec dask scheduler --port "${PORT}" --dashboard-address ":${DASHBOARD_PORT}"
