#!/usr/bin/env bash
# Profiles pgring under load and renders a flamegraph.
#
#   flamegraphs/profile.sh [SECONDS] [SHARDS] [WORKLOAD]
#       defaults: 10 s, one shard per core, workload `tx`
#
# Builds pgring with the `profiling` profile (release plus debug info), starts a throwaway
# PostgreSQL and pgring in front of it (bench/lib.sh: transaction pooling, pool size 20),
# runs the workload through pgring and records pgring alone with
# `perf record -e cpu-clock -g` (hardware counters are not available on these machines).
# Workloads:
#   tx         `pgbench -S -c 50 -j 2`, md5 logins; writes flamegraphs/tx-select-only-<N>shard.svg
#   handshake  `loadgen handshake` over TLS with SCRAM: full TLS 1.3 handshakes (no resumption),
#              ECDSA P-256 certificate (openssl), SCRAM verifier in the userlist, 8 loops;
#              writes flamegraphs/handshake-tls-scram-<N>shard.svg
# Prints the hottest symbols. Installs linux-perf (apt) and inferno (cargo install) when
# missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=../bench/lib.sh
source bench/lib.sh

SECONDS_TO_RECORD=${1:-10}
SHARDS=${2:-$(nproc)}
WORKLOAD=${3:-tx}
case "$WORKLOAD" in
    tx) OUT="flamegraphs/tx-select-only-${SHARDS}shard.svg" ;;
    handshake) OUT="flamegraphs/handshake-tls-scram-${SHARDS}shard.svg" ;;
    *) die "unknown workload '$WORKLOAD' (tx or handshake)" ;;
esac

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
if [[ "$WORKLOAD" == handshake ]]; then
    log "building loadgen (release)"
    cargo build --release --locked -p loadgen >&2
fi

lib_init
start_postgres "max_connections = 300" "fsync = off" "synchronous_commit = off"

if [[ "$WORKLOAD" == tx ]]; then
    PGPASSWORD=$APP_PASSWORD "$PG_BIN/pgbench" -q -i -s 10 -h 127.0.0.1 -p "$PG_PORT" -U "$APP_USER" "$APP_DB" >/dev/null 2>&1
    start_pgring "$SHARDS" 20
    log "pgbench -S -c 50 -j 2 through pgring for $((SECONDS_TO_RECORD + 2)) s; recording $SECONDS_TO_RECORD s"
    PGPASSWORD=$APP_PASSWORD "$PG_BIN/pgbench" -n -S -c 50 -j 2 -T $((SECONDS_TO_RECORD + 2)) \
        -h 127.0.0.1 -p "$PGRING_PORT" -U "$APP_USER" "$APP_DB" >"$WORK/load.out" 2>&1 &
    TITLE="pgring, pgbench -S -c 50 (transaction pooling, $SHARDS shard(s))"
else
    make_tls_certs "$WORK/tls"
    # SCRAM from the auth_file: PostgreSQL's own verifier of the role, so that pgring logs
    # in to PostgreSQL with the keys of the client's proof.
    verifier=$(psql_super -c "SELECT rolpassword FROM pg_authid WHERE rolname = '$APP_USER'")
    printf '"%s" "%s"\n' "$APP_USER" "$verifier" >"$WORK/userlist.txt"
    PGRING_PORT=$(free_port)
    cat >"$WORK/pgring.toml" <<TOML
[pooler]
listen_addr = "127.0.0.1"
listen_port = $PGRING_PORT
unix_socket_dir = ""
shards = $SHARDS
pool_mode = "transaction"
default_pool_size = 20
auth_type = "scram-sha-256"
auth_file = "$WORK/userlist.txt"
client_tls_sslmode = "prefer"
client_tls_cert_file = "$WORK/tls/server.crt"
client_tls_key_file = "$WORK/tls/server.key"
server_tls_sslmode = "disable"
log_connections = false
log_disconnections = false
shutdown_timeout = 2

[databases]
$APP_DB = { host = "127.0.0.1", port = $PG_PORT, dbname = "$APP_DB" }
TOML
    launch_pgring "$WORK/pgring.toml" "$WORK/pgring.log" "$PGRING_PORT" pgring
    PGRING_PID=$LAUNCHED_PID
    log "loadgen handshake (TLS full handshakes, SCRAM) through pgring for $((SECONDS_TO_RECORD + 2)) s; recording $SECONDS_TO_RECORD s"
    target/release/loadgen handshake \
        "host=127.0.0.1 port=$PGRING_PORT user=$APP_USER password=$APP_PASSWORD dbname=$APP_DB sslmode=require channel_binding=disable" \
        --concurrency 8 --no-tls-resume --duration $((SECONDS_TO_RECORD + 2)) --cpu-pid "$PGRING_PID" \
        >"$WORK/load.out" 2>"$WORK/load.err" &
    TITLE="pgring, loadgen handshake: TLS 1.3 full handshake + SCRAM, ECDSA P-256 ($SHARDS shard(s))"
fi
LOAD=$!
sleep 1
perf record -q -e cpu-clock -g -p "$PGRING_PID" -o "$WORK/perf.data" -- sleep "$SECONDS_TO_RECORD" >&2
wait "$LOAD" || {
    show_log "$WORK/load.out"
    show_log "$WORK/load.err"
    die "the load failed"
}
grep -E "processed|tps|completed|CPU|auth method" "$WORK/load.out" >&2

perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf >"$WORK/folded"
inferno-flamegraph --title "$TITLE" <"$WORK/folded" >"$OUT"
log "wrote $OUT"
log "hottest symbols (self time):"
perf report -i "$WORK/perf.data" --no-children -g none --sort dso,symbol 2>/dev/null |
    grep '%' | awk 'NR <= 25' # (awk reads to the end: no SIGPIPE under pipefail)
