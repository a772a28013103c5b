#!/usr/bin/env bash
# The embedded quick start behind `make run`: SQLite, the in-memory channel layer,
# one host agent (heartbeating to the control plane), the monitor (dead hosts,
# idle capsules) and one daphne, with a demo user, team, API key and capsule.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
PY=${PY:-.venv/bin/python}
# Exported: the settings refuse the public secret key when daphne binds beyond loopback.
export HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
export WRENN_DATA_DIR=${WRENN_DATA_DIR:-$PWD/var}
export WRENN_HOSTAGENT_ADDR=${WRENN_HOSTAGENT_ADDR:-127.0.0.1:50071}
export_allowed_hosts
prepare_data_dir
export_secret_key
export_agent_token

"$PY" manage.py migrate --noinput >/dev/null

register_host
reach=$HOST; [ "$reach" = 0.0.0.0 ] && reach=127.0.0.1

start_agent_and_monitor "http://$reach:$PORT"
trap 'kill "$agent" "$monitor" 2>/dev/null; wait "$agent" "$monitor" 2>/dev/null' EXIT
wait_for_agent

load_demo
# WebSocket pings after 20 idle seconds; a peer that does not answer within 30 is closed and
# its viewer released.
"$(dirname "$PY")/daphne" -b "$HOST" -p "$PORT" --ping-interval 20 --ping-timeout 30 wrenn.asgi:application &
daphne=$!
trap 'kill "$agent" "$monitor" "$daphne" 2>/dev/null; wait "$agent" "$monitor" "$daphne" 2>/dev/null' EXIT
wait_for_heartbeat
shown=$reach
cat <<MSG

  Wrenn control plane is starting on http://$shown:$PORT/
  Log in:    http://$shown:$PORT/   user $(field username)   password $(field password)
  Admin:     http://$shown:$PORT/admin/
  Terminal:  http://$shown:$PORT$(field terminal_path)
  API key:   $(field api_key)
  Socket:    ws://$shown:$PORT/v1/capsules/$(field capsule_id)/pty   (header X-API-Key)
  Preview:   http://$shown:$PORT/capsules/$(field capsule_id)/preview/<port>/   (a server on <port> in the capsule)

MSG
# Until daphne stops (Ctrl-C stops it with the rest); its exit status is the script's.
wait "$daphne"
