# shellcheck shell=bash
# Shell functions shared by scripts/run-local.sh and scripts/run-cluster.sh; sourced, not run.
# They expect PY, HOST and WRENN_DATA_DIR set and the repository root as the working directory.

# The data directory, and from here on every file the script writes (tokens, the secret key, the
# SQLite database, logs), are ours alone: umask 077, and files an earlier version left readable
# are closed. The directory keeps search permission for others (0711, no listing): as root, the
# host agent runs bubblewrap as an unprivileged uid that must pass through it to the capsules'
# directories. The agent keeps the caller's umask (user_umask) for the same reason.
prepare_data_dir() {
  user_umask=$(umask)
  mkdir -p "$WRENN_DATA_DIR"
  chmod 0711 "$WRENN_DATA_DIR"
  umask 077
  find "$WRENN_DATA_DIR" -maxdepth 1 -type f -exec chmod go= {} +
}

# The key that signs sessions and JWTs (settings refuse the public default on a reachable server):
# unless DJANGO_SECRET_KEY or DJANGO_SECRET_KEY_FILE is set, made once in the data directory and
# passed by file name, so that the key itself is in no process's environment.
export_secret_key() {
  if [ -n "${DJANGO_SECRET_KEY:-}" ] || [ -n "${DJANGO_SECRET_KEY_FILE:-}" ]; then return 0; fi
  local key_file="$WRENN_DATA_DIR/secret_key"
  [ -s "$key_file" ] || (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(50))' >"$key_file")
  export DJANGO_SECRET_KEY_FILE=$key_file
}

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
  (umask "${user_umask:-022}" && exec "$PY" -m hostagent --listen "$WRENN_HOSTAGENT_ADDR" \
    --data-dir "$WRENN_DATA_DIR/hostagent" --control-plane "$1" --register-token-file "$host_token_file") \
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

# Waits until the control plane has taken the agent's first heartbeat, so that the banner comes
# once the host is online and its capsules are as they were (a restart after a pause shows no
# window of "no host has capacity" or "missing"); warns and goes on after 30 s.
wait_for_heartbeat() {
  for _ in $(seq 300); do
    grep -q "registered with the control plane" "$WRENN_DATA_DIR/hostagent.log" 2>/dev/null && return 0
    kill -0 "$agent" 2>/dev/null || { cat "$WRENN_DATA_DIR/hostagent.log"; exit 1; }
    sleep 0.1
  done
  echo "warning: the host agent's heartbeats have not reached the control plane yet; see $WRENN_DATA_DIR/hostagent.log" >&2
}

# The demo user, team, API key and capsule (`manage.py demo`); `field NAME` reads one of them.
load_demo() {
  demo=$("$PY" manage.py demo --json)
}
field() { "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$demo" "$1"; }
