#!/usr/bin/env bash
# pgring's quick start in one command: builds pgring and loadgen, starts a throwaway
# PostgreSQL, puts pgring in front of it and runs loadgen through it.
#
#   scripts/demo.sh                  # 3 s of logins, then 10 s of transactions, 50 clients
#   DEMO_SECONDS=30 scripts/demo.sh  # longer transaction run
#
# Steps:
#   1. scripts/install-deps.sh --no-drivers (PostgreSQL, pgbench, psql, pgbouncer when missing);
#   2. cargo build --release --locked -p pgring -p loadgen;
#   3. a PostgreSQL cluster in a temp folder on a free port, SCRAM authentication,
#      role app (password apppass) owning database app;
#   4. pgring on another free port: transaction pooling, one shard per core, pool size 20,
#      md5 authentication against a userlist.txt holding the plaintext password;
#   5. `loadgen handshake` (connect, log in, leave; 4 at a time) for 3 s, then
#      `loadgen tx` (50 clients running SELECT 1 through a pool of 20) for $DEMO_SECONDS s,
#      each printing its latency table and the CPU time pgring spent per operation.
# Everything (processes, temp folder) is removed on exit, on failure and on Ctrl-C.
# KEEP_ON_FAILURE=1 keeps the temp folder (logs, configs) when something fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=../bench/lib.sh
source bench/lib.sh

DEMO_SECONDS=${DEMO_SECONDS:-10}
[[ "$DEMO_SECONDS" =~ ^[1-9][0-9]*$ ]] || die "DEMO_SECONDS must be a positive integer (got '$DEMO_SECONDS')"
CLIENTS=50
POOL_SIZE=20
LOADGEN=$PWD/target/release/loadgen

log "installing dependencies when missing (scripts/install-deps.sh)"
scripts/install-deps.sh --no-drivers >&2

log "building pgring and loadgen (cargo build --release --locked -p pgring -p loadgen)"
cargo build --release --locked -p pgring -p loadgen >&2

lib_init
SHARDS=$(nproc)

start_postgres "max_connections = 100"
start_pgring "$SHARDS" "$POOL_SIZE"
TARGET="host=127.0.0.1 port=$PGRING_PORT user=$APP_USER password=$APP_PASSWORD dbname=$APP_DB sslmode=disable"

run_loadgen() {
    local what=$1
    shift
    log "$what"
    local rc=0
    "$LOADGEN" "$@" --cpu-pid "$PGRING_PID" >"$WORK/loadgen.out" 2>"$WORK/loadgen.err" || rc=$?
    echo
    cat "$WORK/loadgen.out"
    if ((rc != 0)); then
        show_log "$WORK/loadgen.err"
        show_log "$WORK/pgring.log"
        die "loadgen through pgring failed (exit $rc)"
    fi
}

run_loadgen "logins through pgring: loadgen handshake, 4 at a time, 3 s (port $PGRING_PORT)" \
    handshake "$TARGET" --concurrency 4 --duration 3
run_loadgen "transactions through pgring: loadgen tx, $CLIENTS clients, pool $POOL_SIZE, ${DEMO_SECONDS} s" \
    tx "$TARGET" --clients "$CLIENTS" --duration "$DEMO_SECONDS"

log "done; stopping pgring and PostgreSQL"
