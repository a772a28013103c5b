#!/usr/bin/env bash
# `make cluster`: WORKERS daphne processes on PORT+1 … PORT+WORKERS behind HAProxy on HOST:PORT,
# sharing PostgreSQL (DATABASE_URL) and the Redis channel layer (REDIS_URL, else a Redis of the
# cluster's own), with one host agent (heartbeating through the proxy), the monitor, and the demo
# user, team, API key and capsule.
# Every process it starts is its child and is stopped when it exits (Ctrl-C, SIGTERM or a crash).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
PY=${PY:-.venv/bin/python}
# Exported: the settings refuse the public secret key when the workers bind beyond loopback.
export HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
WORKERS=${WORKERS:-3}
HAPROXY=${HAPROXY:-haproxy}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/wrenn_cluster}
# Its own data directory: the demo key file there matches this database, not make run's SQLite.
export WRENN_DATA_DIR=${WRENN_DATA_DIR:-$PWD/var/cluster}
export WRENN_HOSTAGENT_ADDR=${WRENN_HOSTAGENT_ADDR:-127.0.0.1:50071}

die() { echo "run-cluster: $*" >&2; exit 1; }
[[ $WORKERS =~ ^[1-9][0-9]?$ ]] || die "WORKERS must be a number from 1 to 99, got '$WORKERS'"
if ! [[ $PORT =~ ^[0-9]+$ ]] || [ "$((PORT + WORKERS))" -gt 65535 ]; then
  die "PORT must be a port number with room for $WORKERS worker ports above it, got '$PORT'"
fi
command -v "$HAPROXY" >/dev/null ||
  die "HAProxy is not installed; 'make cluster' installs it (Debian package haproxy) when run as root with apt-get"
case $DATABASE_URL in
  postgres://* | postgresql://*) ;;
  *) die "DATABASE_URL must be a PostgreSQL URL: workers share one database (got '${DATABASE_URL%%:*}://…')" ;;
esac
if [ -z "${REDIS_URL:-}" ] && ! command -v "$REDIS_SERVER" >/dev/null; then
  die "redis-server is not installed; 'make cluster' installs it (Debian package redis-server) when run as root with apt-get, or set REDIS_URL"
fi

export_allowed_hosts
prepare_data_dir
export_secret_key
export_agent_token

# Children, by pid, with a name for messages; all stopped on exit: SIGTERM, then SIGKILL after 15 s.
children=()
declare -A names=()
started() { children+=("$1"); names[$1]=$2; }
stop_children() {
  [ "${#children[@]}" -gt 0 ] || return 0
  kill "${children[@]}" 2>/dev/null || true
  local alive=1 pid
  for _ in $(seq 150); do
    alive=0
    for pid in "${children[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  [ "$alive" = 0 ] || kill -KILL "${children[@]}" 2>/dev/null || true
  wait "${children[@]}" 2>/dev/null || true
}
trap stop_children EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Unless REDIS_URL names one, the cluster's own Redis: on a Unix socket in the data directory
# (mode 0700: nothing on the network reaches it, capsules on the host's network included) with a
# password made at each start, kept in its configuration file (0600) and off every command line.
start_redis() {
  local socket password redis
  socket="$(cd "$WRENN_DATA_DIR" && pwd)/redis.sock"
  [ "${#socket}" -le 100 ] ||
    die "the Redis socket $socket is too long a path for a Unix socket; set a shorter WRENN_DATA_DIR, or REDIS_URL"
  password=$("$PY" -c 'import secrets; print(secrets.token_hex(32))')
  printf '%s\n' "port 0" "unixsocket \"$socket\"" "unixsocketperm 700" "requirepass $password" \
    'save ""' "appendonly no" "dir \"$(dirname "$socket")\"" >"$WRENN_DATA_DIR/redis.conf"
  rm -f "$socket"
  : >"$WRENN_DATA_DIR/redis.log"
  "$REDIS_SERVER" "$WRENN_DATA_DIR/redis.conf" >>"$WRENN_DATA_DIR/redis.log" 2>&1 &
  redis=$!
  started "$redis" "Redis (on $socket)"
  for _ in $(seq 100); do
    [ -S "$socket" ] && break
    kill -0 "$redis" 2>/dev/null || { tail -n 20 "$WRENN_DATA_DIR/redis.log" >&2; die "Redis exited at start"; }
    sleep 0.1
  done
  export REDIS_URL="unix://:$password@$socket?db=0"
}
[ -n "${REDIS_URL:-}" ] || start_redis

# PostgreSQL and Redis must answer; the database (and the workers' role) is made when missing.
services=$("$PY" scripts/cluster_services.py)
eval "$services"
"$PY" manage.py migrate --noinput >/dev/null
register_host
reach=$HOST; [ "$reach" = 0.0.0.0 ] && reach=127.0.0.1

# True when http://$1:$2$3 answers 200 (bash's /dev/tcp: no curl needed).
answers_200() {
  local status=""
  { printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$3" "$1" >&3 && read -r -t 5 _ status _ <&3; } \
    2>/dev/null 3<>"/dev/tcp/$1/$2" || return 1
  [ "$status" = 200 ]
}
# Waits up to 60 s for http://$2:$3$4 to answer 200 while pid $5 runs; else shows log $6 and exits.
wait_for_200() {
  for _ in $(seq 600); do
    answers_200 "$2" "$3" "$4" && return 0
    kill -0 "$5" 2>/dev/null || { tail -n 40 "$6" >&2; die "$1 exited before it answered"; }
    sleep 0.1
  done
  tail -n 40 "$6" >&2
  die "$1 did not answer http://$2:$3$4 within 60 s"
}

# The workers: same environment, consecutive ports; keepalive pings notice dead WebSocket peers.
daphne="$(dirname "$PY")/daphne"
declare -A worker_of=() worker_pid=()
start_worker() {
  local port=$((PORT + $1))
  "$daphne" -b "$HOST" -p "$port" --proxy-headers --ping-interval 20 --ping-timeout 30 \
    wrenn.asgi:application >>"$WRENN_DATA_DIR/worker$1.log" 2>&1 &
  started $! "worker$1 (daphne on port $port)"
  worker_of[$!]=$1
  worker_pid[$1]=$!
}
for i in $(seq "$WORKERS"); do
  start_worker "$i"
done
for i in $(seq "$WORKERS"); do
  wait_for_200 "worker$i" "$reach" "$((PORT + i))" /admin/login/ "${worker_pid[$i]}" "$WRENN_DATA_DIR/worker$i.log"
done

# The proxy, once every worker answers (so all start in rotation); its configuration is
# written from the template at every start.
servers=""
for i in $(seq "$WORKERS"); do
  servers+="    server worker$i $reach:$((PORT + i)) check"$'\n'
done
config=$(<deploy/haproxy.cfg.in)
config=${config//@BIND@/"$HOST:$PORT"}
config=${config//@CHECK_HOST@/"$reach"}
config=${config//@SERVERS@/"${servers%$'\n'}"}
printf '%s\n' "$config" >"$WRENN_DATA_DIR/haproxy.cfg"
"$HAPROXY" -c -q -f "$WRENN_DATA_DIR/haproxy.cfg" || die "invalid $WRENN_DATA_DIR/haproxy.cfg"
: >"$WRENN_DATA_DIR/haproxy.log"
"$HAPROXY" -db -f "$WRENN_DATA_DIR/haproxy.cfg" >>"$WRENN_DATA_DIR/haproxy.log" 2>&1 &
proxy=$!
started "$proxy" "HAProxy (port $PORT)"
wait_for_200 HAProxy "$reach" "$PORT" /admin/login/ "$proxy" "$WRENN_DATA_DIR/haproxy.log"

# The host agent heartbeats through the proxy, like any client of the cluster.
start_agent_and_monitor "http://$reach:$PORT"
started "$agent" "the host agent"
started "$monitor" "the monitor"
wait_for_agent
wait_for_heartbeat
load_demo

# A URL without its password, for the banner.
redact() { printf '%s' "$1" | sed -E 's#//([^:/@]*):[^@/]*@#//\1:***@#'; }
shown=$reach
worker_lines=""
for i in $(seq "$WORKERS"); do
  worker_lines+="  Worker $i:  http://$shown:$((PORT + i))/   (X-Wrenn-Worker: worker$i)"$'\n'
done
cat <<MSG

  Wrenn cluster is running on http://$shown:$PORT/   (HAProxy, round robin over $WORKERS daphne workers)
  Log in:    http://$shown:$PORT/   user $(field username)   password $(field password)
  Admin:     http://$shown:$PORT/admin/
  Terminal:  http://$shown:$PORT$(field terminal_path)
  API key:   $(field api_key)
  Socket:    ws://$shown:$PORT/v1/capsules/$(field capsule_id)/pty   (header X-API-Key)
${worker_lines}  Every response through the proxy names its worker in the header X-Wrenn-Worker.
  Database:  $(redact "$DATABASE_URL")   Redis: $(redact "$REDIS_URL")
  Logs:      $WRENN_DATA_DIR/
  Ctrl-C stops everything.

MSG

# Runs until a signal ends it. A daphne worker that dies is started again on its port (its
# terminal viewers reconnect through the proxy to the others meanwhile and lose nothing);
# when any other child dies, the rest are stopped and the script fails.
while true; do
  wait -n || true
  alive=()
  for pid in "${children[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      alive+=("$pid")
    elif [ -n "${worker_of[$pid]:-}" ]; then
      echo "run-cluster: ${names[$pid]} exited; starting it again (see $WRENN_DATA_DIR/worker${worker_of[$pid]}.log)" >&2
      sleep 1
      children=("${alive[@]}" "${children[@]:${#alive[@]}+1}")
      start_worker "${worker_of[$pid]}"
      unset "worker_of[$pid]"
      continue 2
    else
      die "${names[$pid]} exited; see its log in $WRENN_DATA_DIR/"
    fi
  done
done
