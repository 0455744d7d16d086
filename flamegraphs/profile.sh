#!/usr/bin/env bash
# Profiles pgring under a transaction-pooling load and renders a flamegraph.
#
#   flamegraphs/profile.sh [SECONDS] [SHARDS]     # defaults: 10 s, one shard per core
#
# Builds pgring with the `profiling` profile (release plus debug info), starts a throwaway
# PostgreSQL and pgring in front of it (bench/lib.sh: transaction pooling, pool size 20, md5),
# runs `pgbench -S -c 50 -j 2` through pgring and records pgring alone with
# `perf record -e cpu-clock -g` (hardware counters are not available on these machines).
# Writes flamegraphs/tx-select-only-<N>shard.svg (inferno) and prints the hottest symbols.
# Installs linux-perf (apt) and inferno (cargo install) when missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=../bench/lib.sh
source bench/lib.sh

SECONDS_TO_RECORD=${1:-10}
SHARDS=${2:-$(nproc)}
OUT="flamegraphs/tx-select-only-${SHARDS}shard.svg"

scripts/install-deps.sh >&2
if ! command -v perf >/dev/null; then
    log "installing linux-perf"
    apt-get install -y linux-perf >/dev/null
fi
if ! command -v inferno-flamegraph >/dev/null; then
    log "installing inferno (cargo install inferno --locked)"
    cargo install inferno --locked >&2
fi

log "building pgring (profile: profiling)"
cargo build --profile profiling --locked -p pgring >&2
PGRING_BIN=$PWD/target/profiling/pgring
export PGRING_BIN

lib_init
start_postgres "max_connections = 300" "fsync = off" "synchronous_commit = off"
PGPASSWORD=$APP_PASSWORD "$PG_BIN/pgbench" -q -i -s 10 -h 127.0.0.1 -p "$PG_PORT" -U "$APP_USER" "$APP_DB" >/dev/null 2>&1
start_pgring "$SHARDS" 20

log "pgbench -S -c 50 -j 2 through pgring for $((SECONDS_TO_RECORD + 2)) s; recording $SECONDS_TO_RECORD s"
PGPASSWORD=$APP_PASSWORD "$PG_BIN/pgbench" -n -S -c 50 -j 2 -T $((SECONDS_TO_RECORD + 2)) \
    -h 127.0.0.1 -p "$PGRING_PORT" -U "$APP_USER" "$APP_DB" >"$WORK/pgbench.out" 2>&1 &
LOAD=$!
sleep 1
perf record -q -e cpu-clock -g -p "$PGRING_PID" -o "$WORK/perf.data" -- sleep "$SECONDS_TO_RECORD" >&2
wait "$LOAD"
grep -E "processed|tps" "$WORK/pgbench.out" >&2

perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf >"$WORK/folded"
inferno-flamegraph --title "pgring, pgbench -S -c 50 (transaction pooling, $SHARDS shard(s))" \
    <"$WORK/folded" >"$OUT"
log "wrote $OUT"
log "hottest symbols (self time):"
perf report -i "$WORK/perf.data" --no-children -g none --sort dso,symbol 2>/dev/null |
    grep "%" | head -25 || true
