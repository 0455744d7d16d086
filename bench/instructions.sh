#!/usr/bin/env bash
# The user-space instructions pgring spends per transaction, counted by callgrind.
#
# CPU time per transaction (bench/run.sh, bench/loadgen.sh) is what matters, but on a
# small shared machine it moves by ±10% from run to run, more than most single changes
# to the hot path. An instruction count moves by 0.1-0.3%: it tells whether a change
# made pgring's own work smaller, though not what that is worth in time (the kernel's
# share, cache misses and the machine's noise are left out).
#
#   bench/instructions.sh                      # 50 clients x 400 transactions, pool 20
#   bench/instructions.sh --clients 1 --transactions 5000
#   bench/instructions.sh --connect --clients 8 --transactions 200   # a login per transaction
#   PGRING_BIN=/path/to/pgring bench/instructions.sh   # another build (else a release build)
#   bench/instructions.sh --keep /tmp/tx.callgrind   # keep the profile for callgrind_annotate
#
# Options: --clients N (default 50), --transactions T per client (default 400),
# --pool N (default 20), --shards N (default 1), --connect (pgbench -C: every transaction
# on a new connection, so the figure is per login plus one SELECT 1), --keep FILE (copy the
# callgrind profile of the measured run to FILE).
#
# What it does: a throwaway PostgreSQL; pgring (transaction pooling, md5) under
# `valgrind --tool=callgrind`; a warm-up `pgbench` run; the counters zeroed
# (`callgrind_control -z`); `pgbench -n -f <SELECT 1> -c N -j 2 -t T` with
# sslmode=disable; the counters dumped; instructions / (N x T) printed. The measured run
# includes its N logins, so compare runs made with the same options.
# Needs valgrind (apt-get install valgrind).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib.sh
source bench/lib.sh

CLIENTS=50
TRANSACTIONS=400
POOL=20
SHARDS=1
CONNECT=()
KEEP=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --clients) CLIENTS=${2:?--clients needs a value}; shift ;;
        --transactions) TRANSACTIONS=${2:?--transactions needs a value}; shift ;;
        --pool) POOL=${2:?--pool needs a value}; shift ;;
        --shards) SHARDS=${2:?--shards needs a value}; shift ;;
        --connect) CONNECT=(-C) ;;
        --keep) KEEP=${2:?--keep needs a file name}; shift ;;
        -h | --help)
            sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
require_positive_ints CLIENTS TRANSACTIONS POOL SHARDS
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
    die "valgrind is needed (apt-get install valgrind)"

if [[ -z "${PGRING_BIN:-}" ]]; then
    log "building pgring (cargo build --release --locked -p pgring)"
    cargo build --release --locked -p pgring >&2
fi
BIN=${PGRING_BIN:-$REPO_ROOT/target/release/pgring}

lib_init
start_postgres "max_connections = 300" "fsync = off" "synchronous_commit = off"
write_userlist

PORT=$(free_port)
cat >"$WORK/pgring.toml" <<TOML
# Written by bench/instructions.sh.
[pooler]
listen_addr = "127.0.0.1"
listen_port = $PORT
unix_socket_dir = ""
shards = $SHARDS
pool_mode = "transaction"
default_pool_size = $POOL
max_client_conn = 2000
auth_type = "md5"
auth_file = "$WORK/userlist.txt"
log_connections = false
log_disconnections = false
shutdown_timeout = 1

[databases]
$APP_DB = { host = "127.0.0.1", port = $PG_PORT, dbname = "$APP_DB" }
TOML

log "starting pgring under callgrind ($SHARDS shard(s), pool $POOL)"
valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.%p.out" \
    "$BIN" --config "$WORK/pgring.toml" >"$WORK/pgring.log" 2>&1 &
PGRING_PID=$!
wait_sql_ready "$PORT" "$PGRING_PID" "$WORK/pgring.log" 120 "pgring under callgrind"

echo 'SELECT 1;' >"$WORK/select1.sql"
run_pgbench() { # transactions per client
    PGPASSWORD=$APP_PASSWORD PGSSLMODE=disable pgbench -n "${CONNECT[@]}" -f "$WORK/select1.sql" \
        -c "$CLIENTS" -j 2 -t "$1" -h 127.0.0.1 -p "$PORT" -U "$APP_USER" "$APP_DB" \
        >"$WORK/pgbench.log" 2>&1 || {
        show_log "$WORK/pgbench.log"
        die "pgbench failed"
    }
}
log "warm-up: $CLIENTS clients x 20 transactions"
run_pgbench 20
callgrind_control -z "$PGRING_PID" >/dev/null 2>&1
log "measured: $CLIENTS clients x $TRANSACTIONS transactions (SELECT 1, simple protocol)"
run_pgbench "$TRANSACTIONS"
grep -q "actually processed: $((CLIENTS * TRANSACTIONS))/" "$WORK/pgbench.log" || {
    show_log "$WORK/pgbench.log"
    die "pgbench did not complete every transaction"
}
callgrind_control -d "$PGRING_PID" >/dev/null 2>&1
dump=$(ls "$WORK"/callgrind.*.out.1 2>/dev/null | head -n 1)
[[ -n "$dump" ]] || die "callgrind wrote no dump"
if [[ -n "$KEEP" ]]; then
    cp "$dump" "$KEEP"
    log "profile kept: callgrind_annotate --inclusive=yes $KEEP"
fi
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
[[ "$total" =~ ^[0-9]+$ ]] || die "could not read the instruction total from $dump"
tx=$((CLIENTS * TRANSACTIONS))
if [[ -n "${PGRING_BIN:-}" ]]; then
    what=$PGRING_BIN
else
    what="pgring $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
fi
per="per transaction"
[[ ${#CONNECT[@]} -gt 0 ]] && per="per transaction, each on a new connection (login included)"
printf '%s, %s shard(s), pool %s: %s instructions in user space over %s transactions (%s clients): %s %s\n' \
    "$what" "$SHARDS" "$POOL" "$total" "$tx" "$CLIENTS" "$((total / tx))" "$per"
