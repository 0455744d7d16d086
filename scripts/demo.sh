#!/usr/bin/env bash
# pgring's quick start in one command: builds pgring, starts a throwaway PostgreSQL, puts
# pgring in front of it and runs pgbench through it.
#
#   scripts/demo.sh                  # 10 s of pgbench -S -c 50 -j 2 through pgring
#   DEMO_SECONDS=30 scripts/demo.sh  # longer run
#
# Steps:
#   1. scripts/install-deps.sh (PostgreSQL, pgbench, psql, pgbouncer when missing);
#   2. cargo build --release --locked -p pgring;
#   3. a PostgreSQL cluster in a temp folder on a free port, SCRAM authentication,
#      role app (password apppass) owning database app; `pgbench -i -s 1` directly on it;
#   4. pgring on another free port: transaction pooling, one shard per core, pool size 20,
#      md5 authentication against a userlist.txt holding the plaintext password;
#   5. `pgbench -S -c 50 -j 2 -T $DEMO_SECONDS` through pgring, then pgbench's summary and
#      the CPU time pgring spent per transaction.
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

log "installing dependencies when missing (scripts/install-deps.sh)"
scripts/install-deps.sh >&2

log "building pgring (cargo build --release --locked -p pgring)"
cargo build --release --locked -p pgring >&2

lib_init
SHARDS=$(nproc)

start_postgres "max_connections = 100"

log "initialising pgbench tables directly on PostgreSQL (pgbench -i -s 1)"
PGPASSWORD=$APP_PASSWORD pgbench -i -s 1 -q -h 127.0.0.1 -p "$PG_PORT" -U "$APP_USER" "$APP_DB" \
    >"$WORK/pgbench-init.log" 2>&1 || {
    show_log "$WORK/pgbench-init.log"
    die "pgbench -i failed"
}

start_pgring "$SHARDS" "$POOL_SIZE"

log "running pgbench -S -c $CLIENTS -j 2 -T $DEMO_SECONDS through pgring (port $PGRING_PORT)"
before=$(cpu_ticks "$PGRING_PID")
rc=0
PGPASSWORD=$APP_PASSWORD pgbench -S -n -c "$CLIENTS" -j 2 -T "$DEMO_SECONDS" \
    -h 127.0.0.1 -p "$PGRING_PORT" -U "$APP_USER" "$APP_DB" \
    >"$WORK/pgbench.out" 2>"$WORK/pgbench.err" || rc=$?
after=$(cpu_ticks "$PGRING_PID")

if ((rc != 0)); then
    cat "$WORK/pgbench.out"
    show_log "$WORK/pgbench.err"
    show_log "$WORK/pgring.log"
    die "pgbench through pgring failed (exit $rc)"
fi

echo
echo "pgbench through pgring:"
cat "$WORK/pgbench.out"

tx=$(pgbench_field "$WORK/pgbench.out" '^number of transactions actually processed: ([0-9]+).*')
[[ -n "$tx" && "$tx" -gt 0 ]] || die "pgbench processed no transactions"
python3 - "$before" "$after" "$CLK_TCK" "$tx" "$SHARDS" <<'PY'
import sys
before, after, hz, tx, shards = (int(a) for a in sys.argv[1:])
cpu = (after - before) / hz
print()
print(f"pgring ({shards} shard(s)): {cpu:.2f} CPU seconds for {tx} transactions"
      f" = {cpu / tx:.3e} CPU seconds ({cpu / tx * 1e6:.1f} µs) per transaction")
PY

log "done; stopping pgring and PostgreSQL"
