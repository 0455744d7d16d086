#!/usr/bin/env bash
# What the event loop alone costs per transaction: a byte relay with no protocol logic
# (bench/relay.rs) on glommio and on epoll, against PgBouncer and pgring, in one run.
#
#   bench/relay.sh                 # 5 rounds of 4 s per target: about 4 minutes
#   bench/relay.sh --rounds 9 --seconds 5 --clients 50
#
# A relay gives every client a server connection of its own and copies bytes both ways:
# it parses nothing, pools nothing, authenticates nothing. Its CPU per transaction is
# therefore a floor under any pooler built on the same event loop, which does all of
# that and more. The figure to read is the glommio relay's against PgBouncer's: it says
# how much of PgBouncer's CPU per transaction glommio's reactor leaves for pgring's own
# work.
#
# A relay holds as many server connections as it has clients, which changes how
# PostgreSQL runs (more backends share the cores) and how often an event loop finds
# nothing to do: compare the relays with the poolers in session mode, whose pools are
# as large as the client count, and the poolers in transaction mode with each other.
#
# What it does: builds pgring, loadgen and the relay (release); a throwaway PostgreSQL;
# the relay on glommio and on epoll (each pinned to CPU 0); PgBouncer and pgring (one
# shard, pinned to CPU 0) in session mode (pool size = clients) and in transaction mode
# (pool size 20), md5; then rounds in which the six targets take turns:
# `loadgen tx --clients N --cpu-pid PID` (SELECT 1, simple protocol, sslmode=disable).
# Prints each target's median CPU µs per transaction and median rate, and every round's
# figures. Records nothing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib.sh
source bench/lib.sh

ROUNDS=5
SECONDS_PER_RUN=4
CLIENTS=50
POOL=20
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS=${2:?--rounds needs a value}; shift ;;
        --seconds) SECONDS_PER_RUN=${2:?--seconds needs a value}; shift ;;
        --clients) CLIENTS=${2:?--clients needs a value}; shift ;;
        -h | --help)
            sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
require_positive_ints ROUNDS SECONDS_PER_RUN CLIENTS

log "building pgring, loadgen and the relay (cargo build --release --locked)"
cargo build --release --locked -p pgring -p loadgen --example relay >&2
LOADGEN=$REPO_ROOT/target/release/loadgen
RELAY=$REPO_ROOT/target/release/examples/relay

lib_init
start_postgres "max_connections = 300" "fsync = off" "synchronous_commit = off"
write_userlist
start_pgbouncer "$POOL"
start_pgring 1 "$POOL"

# The session-mode twins: the same settings, a pool as large as the client count.
PGB_SESSION_PORT=$(free_port)
as_pg mkdir -p "$WORK/pgbouncer-session"
sed -e "s/^listen_port = .*/listen_port = $PGB_SESSION_PORT/" \
    -e "s/^pool_mode = .*/pool_mode = session/" \
    -e "s/^default_pool_size = .*/default_pool_size = $CLIENTS/" \
    -e "s#/pgbouncer/pgbouncer\.#/pgbouncer-session/pgbouncer.#" \
    "$WORK/pgbouncer/pgbouncer.ini" | as_pg tee "$WORK/pgbouncer-session/pgbouncer.ini" >/dev/null
launch_pgbouncer "$WORK/pgbouncer-session/pgbouncer.ini" "$PGB_SESSION_PORT" "pgbouncer (session)"
PGB_SESSION_PID=$LAUNCHED_PID
PGRING_SESSION_PORT=$(free_port)
sed -e "s/^listen_port = .*/listen_port = $PGRING_SESSION_PORT/" \
    -e 's/^pool_mode = .*/pool_mode = "session"/' \
    -e "s/^default_pool_size = .*/default_pool_size = $CLIENTS/" \
    "$WORK/pgring.toml" >"$WORK/pgring-session.toml"
launch_pgring "$WORK/pgring-session.toml" "$WORK/pgring-session.log" "$PGRING_SESSION_PORT" "pgring (session)"
PGRING_SESSION_PID=$LAUNCHED_PID

# start_relay EVENT_LOOP: starts the relay in front of PostgreSQL; sets RELAY_PORT, RELAY_PID.
start_relay() {
    RELAY_PORT=$(free_port)
    "$RELAY" --listen "127.0.0.1:$RELAY_PORT" --upstream "127.0.0.1:$PG_PORT" \
        --event-loop "$1" --cpu 0 >"$WORK/relay-$1.log" 2>&1 &
    RELAY_PID=$!
    LIB_EXTRA_PIDS+=("$RELAY_PID")
    wait_sql_ready "$RELAY_PORT" "$RELAY_PID" "$WORK/relay-$1.log" 30 "relay ($1)"
    note "relay on $1 is up (pid $RELAY_PID, port $RELAY_PORT)"
}
start_relay glommio
GLOMMIO_PORT=$RELAY_PORT GLOMMIO_PID=$RELAY_PID
start_relay epoll
EPOLL_PORT=$RELAY_PORT EPOLL_PID=$RELAY_PID
start_relay glommio-epoll
GEPOLL_PORT=$RELAY_PORT GEPOLL_PID=$RELAY_PID

TARGETS=("relay-glommio $GLOMMIO_PORT $GLOMMIO_PID"
    "relay-epoll $EPOLL_PORT $EPOLL_PID"
    "relay-glommio-epoll $GEPOLL_PORT $GEPOLL_PID"
    "pgbouncer-session $PGB_SESSION_PORT $PGB_SESSION_PID"
    "pgring-session $PGRING_SESSION_PORT $PGRING_SESSION_PID"
    "pgbouncer-tx $PGBOUNCER_PORT $PGBOUNCER_PID"
    "pgring-tx $PGRING_PORT $PGRING_PID")

RESULTS=$WORK/results.tsv
: >"$RESULTS"
for round in $(seq "$ROUNDS"); do
    for target in "${TARGETS[@]}"; do
        read -r name port pid <<<"$target"
        log "round $round/$ROUNDS: $name, $CLIENTS clients, ${SECONDS_PER_RUN} s"
        json=$WORK/$name-$round.json
        "$LOADGEN" tx "host=127.0.0.1 port=$port user=$APP_USER password=$APP_PASSWORD dbname=$APP_DB sslmode=disable" \
            --clients "$CLIENTS" --duration "$SECONDS_PER_RUN" --cpu-pid "$pid" --json "$json" \
            >"$WORK/$name-$round.out" 2>&1 || {
            show_log "$WORK/$name-$round.out"
            die "loadgen failed against $name"
        }
        python3 - "$json" "$name" "$round" >>"$RESULTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
us = (r.get("cpu") or {}).get("us_per_completed")
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{us if us is not None else 'nan'}\t{r['rate_per_s']}")
PY
        note "$(tail -n 1 "$RESULTS" | awk -F'\t' '{printf "%.1f µs CPU per transaction, %.0f transactions/s", $3, $4}')"
    done
done

python3 - "$RESULTS" "$CLIENTS" "$SECONDS_PER_RUN" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
names = list(dict.fromkeys(r[0] for r in rows))
by = {n: [(float(r[2]), float(r[3])) for r in rows if r[0] == n] for n in names}
pgb = statistics.median(c for c, _ in by["pgbouncer-session"])
print(f"CPU per transaction, {sys.argv[2]} clients, SELECT 1, {len(by[names[0]])} rounds of {sys.argv[3]} s (medians)")
print(f"{'target':<21}{'CPU µs/tx':>11}{'vs PgBouncer session':>22}{'tx/s':>10}   every round (µs/tx)")
for n in names:
    cpu = statistics.median(c for c, _ in by[n])
    rate = statistics.median(t for _, t in by[n])
    rounds = " ".join(f"{c:.1f}" for c, _ in by[n])
    print(f"{n:<21}{cpu:>11.1f}{cpu / pgb:>21.2f}x{rate:>10.0f}   {rounds}")
PY
