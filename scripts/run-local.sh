#!/usr/bin/env bash
# The embedded quick start behind `make run`: SQLite, the in-memory channel layer,
# one host agent (heartbeating to the control plane), the monitor (dead hosts,
# idle capsules) and one daphne, with a demo user, team, API key and capsule.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
export WRENN_DATA_DIR=${WRENN_DATA_DIR:-$PWD/var}
export WRENN_HOSTAGENT_ADDR=${WRENN_HOSTAGENT_ADDR:-127.0.0.1:50071}
allowed="localhost,127.0.0.1,[::1]"
[ "$HOST" = 0.0.0.0 ] && allowed="$allowed,$(hostname),$(hostname -I 2>/dev/null | tr ' ' ',')"
case ",$allowed," in *",$HOST,"*) ;; *) allowed="$allowed,$HOST" ;; esac
export DJANGO_ALLOWED_HOSTS=${DJANGO_ALLOWED_HOSTS:-$allowed}
mkdir -p "$WRENN_DATA_DIR"
# The agent answers only calls carrying this token: capsules share the host's
# network and could otherwise reach its port. Made once, readable by us alone.
token_file="$WRENN_DATA_DIR/hostagent.token"
[ -s "$token_file" ] || (umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(32))' >"$token_file")
export HOSTAGENT_TOKEN_FILE=$token_file WRENN_HOSTAGENT_TOKEN_FILE=$token_file

"$PY" manage.py migrate --noinput >/dev/null

# Register the host (a fresh heartbeat token each start, kept beside the database).
host_token_file="$WRENN_DATA_DIR/host.token"
host_json=$("$PY" manage.py create_host "$WRENN_HOSTAGENT_ADDR" --json 2>/dev/null ||
  "$PY" manage.py create_host "$WRENN_HOSTAGENT_ADDR" --rotate --json)
(umask 077 && "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["token"])' "$host_json" >"$host_token_file")
reach=$HOST; [ "$reach" = 0.0.0.0 ] && reach=127.0.0.1

: >"$WRENN_DATA_DIR/hostagent.log"
"$PY" -m hostagent --listen "$WRENN_HOSTAGENT_ADDR" --data-dir "$WRENN_DATA_DIR/hostagent" \
  --control-plane "http://$reach:$PORT" --register-token-file "$host_token_file" \
  >>"$WRENN_DATA_DIR/hostagent.log" 2>&1 &
agent=$!
"$PY" manage.py monitor >>"$WRENN_DATA_DIR/monitor.log" 2>&1 &
monitor=$!
trap 'kill "$agent" "$monitor" 2>/dev/null; wait "$agent" "$monitor" 2>/dev/null' EXIT
for _ in $(seq 100); do
  grep -q "hostagent listening" "$WRENN_DATA_DIR/hostagent.log" 2>/dev/null && break
  kill -0 "$agent" 2>/dev/null || { cat "$WRENN_DATA_DIR/hostagent.log"; exit 1; }
  sleep 0.1
done
grep "ISOLATES NOTHING" "$WRENN_DATA_DIR/hostagent.log" || true

demo=$("$PY" manage.py demo --json)
field() { "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$demo" "$1"; }
shown=$reach
cat <<MSG

  Wrenn control plane is starting on http://$shown:$PORT/
  Log in:    http://$shown:$PORT/admin/   user $(field username)   password $(field password)
  Terminal:  http://$shown:$PORT$(field terminal_path)
  API key:   $(field api_key)
  Socket:    ws://$shown:$PORT/v1/capsules/$(field capsule_id)/pty   (header X-API-Key)

MSG
"$(dirname "$PY")/daphne" -b "$HOST" -p "$PORT" wrenn.asgi:application
