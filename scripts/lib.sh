# shellcheck shell=bash
# Shell functions shared by scripts/run-local.sh and scripts/run-cluster.sh; sourced, not run.
# They expect PY, HOST and WRENN_DATA_DIR set and the repository root as the working directory.

# DJANGO_ALLOWED_HOSTS, unless set: the loopback names, HOST, and this machine's names and
# addresses when HOST is 0.0.0.0.
export_allowed_hosts() {
  local allowed="localhost,127.0.0.1,[::1]"
  [ "$HOST" = 0.0.0.0 ] && allowed="$allowed,$(hostname),$(hostname -I 2>/dev/null | tr ' ' ',')"
  case ",$allowed," in *",$HOST,"*) ;; *) allowed="$allowed,$HOST" ;; esac
  export DJANGO_ALLOWED_HOSTS=${DJANGO_ALLOWED_HOSTS:-$allowed}
}

# The agent answers only calls carrying this token: capsules share the host's
# network and could otherwise reach its port. Made once, readable by us alone.
export_agent_token() {
  local token_file="$WRENN_DATA_DIR/hostagent.token"
  [ -s "$token_file" ] || (umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(32))' >"$token_file")
  export HOSTAGENT_TOKEN_FILE=$token_file WRENN_HOSTAGENT_TOKEN_FILE=$token_file
}

# Register the host (a fresh heartbeat token each start, kept beside the database).
# Sets host_token_file.
register_host() {
  local host_json
  host_token_file="$WRENN_DATA_DIR/host.token"
  host_json=$("$PY" manage.py create_host "$WRENN_HOSTAGENT_ADDR" --json 2>/dev/null ||
    "$PY" manage.py create_host "$WRENN_HOSTAGENT_ADDR" --rotate --json)
  (umask 077 && "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["token"])' "$host_json" >"$host_token_file")
}

# Starts the host agent, heartbeating to the control plane at $1, and the monitor, both in the
# background; sets agent and monitor to their pids.
# shellcheck disable=SC2034  # agent and monitor are for the caller
start_agent_and_monitor() {
  : >"$WRENN_DATA_DIR/hostagent.log"
  "$PY" -m hostagent --listen "$WRENN_HOSTAGENT_ADDR" --data-dir "$WRENN_DATA_DIR/hostagent" \
    --control-plane "$1" --register-token-file "$host_token_file" \
    >>"$WRENN_DATA_DIR/hostagent.log" 2>&1 &
  agent=$!
  "$PY" manage.py monitor >>"$WRENN_DATA_DIR/monitor.log" 2>&1 &
  monitor=$!
}

# Waits until the agent listens (exits with its log if it dies first); repeats its warning
# when it runs capsules without isolation.
wait_for_agent() {
  for _ in $(seq 100); do
    grep -q "hostagent listening" "$WRENN_DATA_DIR/hostagent.log" 2>/dev/null && break
    kill -0 "$agent" 2>/dev/null || { cat "$WRENN_DATA_DIR/hostagent.log"; exit 1; }
    sleep 0.1
  done
  grep "ISOLATES NOTHING" "$WRENN_DATA_DIR/hostagent.log" || true
}

# The demo user, team, API key and capsule (`manage.py demo`); `field NAME` reads one of them.
load_demo() {
  demo=$("$PY" manage.py demo --json)
}
field() { "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$demo" "$1"; }
