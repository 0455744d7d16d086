#!/usr/bin/env bash
# pgring against PgBouncer and direct PostgreSQL with loadgen, in one run on this machine:
# handshakes, transactions (closed and open loop), idle connections, and a pgbench cross-check.
#
#   bench/loadgen.sh            # 3 rounds: 12-14 minutes on 2 cores
#   bench/loadgen.sh --quick    # 1 short round, fewer clients: about 2.5 minutes (4 on a busy machine), a smoke test
#
# Options (and environment variables):
#   --quick                         1 round, 2 s per tx run, 1.5 s per handshake run,
#                                   200 instead of 1000 clients, 1000 idle connections,
#                                   pgbench 3 s at scale 1
#   --rounds N       BENCH_ROUNDS     rounds of the handshake and tx workloads (default 3)
#   --seconds N      BENCH_SECONDS    loadgen --duration of a tx run (default 4)
#   --hs-seconds N   BENCH_HS_SECONDS loadgen --duration of a handshake run (default 3)
#   --many N         BENCH_MANY       clients of the "1000 clients" workloads (default 1000)
#   --idle N         BENCH_IDLE       idle connections held per pooler (default 10000)
#   --shards N       BENCH_SHARDS     pgring's shard count (default: one per core)
#   --no-record                     print the tables only: nothing under bench/results,
#                                   RESULTS.md untouched
#   KEEP_ON_FAILURE=1               keep the temp folder (logs, configs) when something fails
#
# What it does (see bench/README.md, "loadgen benchmark"):
#   1. scripts/install-deps.sh --no-drivers; cargo build --release --locked -p pgring -p loadgen;
#   2. an ECDSA P-256 CA and server certificate (openssl), a throwaway PostgreSQL with TLS
#      on, roles app (md5 from the poolers' userlist), app_scram (SCRAM verifier in the
#      userlist), app_aq (not in the userlist: auth_query) and pgring_auth;
#   3. pgring and PgBouncer with the same settings, certificate and userlist (transaction
#      pooling, pool size 20), twice: server hop in plaintext, and server hop over TLS;
#   4. rounds, the targets alternating (pgring, pgbouncer, direct) inside each workload:
#      loadgen handshake (plain md5, plain SCRAM, SCRAM from auth_query, TLS md5, TLS SCRAM,
#      TLS SCRAM resumed) and loadgen tx (1, 50 and 1000 clients, simple and extended
#      protocol, TLS on both hops, open loop at 1000/s and 5000/s), each pooler's CPU read
#      from /proc over the measured window (loadgen --cpu-pid);
#   5. pgbench -S -c 50 once per target (cross-check), then loadgen idle through each
#      pooler, freshly restarted, plain and TLS (RSS per connection, loadgen --pid);
#   6. bench/results/<UTC stamp>.json, plots in bench/results/<UTC stamp>/, a section
#      appended to bench/RESULTS.md (bench/loadgen_report.py).
# Progress goes to stderr, the tables to stdout.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib.sh
source bench/lib.sh

COMMAND="bench/loadgen.sh${*:+ $*}"
ROUNDS=${BENCH_ROUNDS:-3}
TX_SECONDS=${BENCH_SECONDS:-4}
HS_SECONDS=${BENCH_HS_SECONDS:-3}
MANY=${BENCH_MANY:-1000}
IDLE=${BENCH_IDLE:-10000}
SHARDS=${BENCH_SHARDS:-}
PGBENCH_SECONDS=10
PGBENCH_SCALE=10
QUICK=""
RECORD=1
POOL_SIZE=20

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; }

while (($#)); do
    case "$1" in
        --quick)
            QUICK=1
            ROUNDS=1
            TX_SECONDS=2
            HS_SECONDS=1.5
            MANY=200
            IDLE=1000
            PGBENCH_SECONDS=3
            PGBENCH_SCALE=1
            ;;
        --rounds)
            ROUNDS=${2:?--rounds needs a value}
            shift
            ;;
        --seconds)
            TX_SECONDS=${2:?--seconds needs a value}
            shift
            ;;
        --hs-seconds)
            HS_SECONDS=${2:?--hs-seconds needs a value}
            shift
            ;;
        --many)
            MANY=${2:?--many needs a value}
            shift
            ;;
        --idle)
            IDLE=${2:?--idle needs a value}
            shift
            ;;
        --shards)
            SHARDS=${2:?--shards needs a value}
            shift
            ;;
        --no-record) RECORD="" ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage
            die "unknown argument: $1"
            ;;
    esac
    shift
done
require_positive_ints ROUNDS MANY IDLE
for v in TX_SECONDS HS_SECONDS; do
    [[ "${!v}" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$v must be a number of seconds (got '${!v}')"
done

BENCH_T0=$SECONDS
log "installing dependencies when missing (scripts/install-deps.sh)"
scripts/install-deps.sh --no-drivers >&2
command -v openssl >/dev/null || die "openssl is needed for the certificates (apt-get install openssl)"

log "building pgring and loadgen (cargo build --release --locked -p pgring -p loadgen)"
cargo build --release --locked -p pgring -p loadgen >&2
GIT_HEAD=$(git rev-parse HEAD 2>/dev/null || echo unknown)
GIT_DIRTY_FILES=$(git status --porcelain -- src loadgen/src Cargo.toml Cargo.lock 2>/dev/null | sed 's/^...//' | paste -sd' ' -)
GIT_DIRTY_COUNT=$(wc -w <<<"$GIT_DIRTY_FILES")
PGRING_VERSION=$(target/release/pgring --version 2>/dev/null || echo unknown)
LOADGEN=$PWD/target/release/loadgen

lib_init
find_pgbouncer
NPROC=$(nproc)
SHARDS=${SHARDS:-$NPROC}
STARTED_UTC=$(date -u +%Y-%m-%dT%H:%M:%SZ)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUNS_DIR=$WORK/runs
mkdir -p "$RUNS_DIR"

# File descriptors: the idle workload holds $IDLE connections in loadgen and in the pooler
# (each process has its own limit; the poolers inherit ours).
want_fds=$((IDLE + 2000))
hard_fds=$(ulimit -Hn)
if [[ "$hard_fds" != unlimited ]] && ((hard_fds < want_fds)); then
    ulimit -n "$hard_fds"
    new_idle=$((hard_fds - 2000))
    ((new_idle > 0)) || die "the open-files limit ($hard_fds) is too low for the idle workload"
    log "open-files hard limit $hard_fds: idle connections lowered from $IDLE to $new_idle"
    IDLE=$new_idle
else
    ulimit -n "$want_fds"
fi

# ---- Certificates: an ECDSA P-256 CA and a server certificate for 127.0.0.1 ---------------
TLS_DIR=$WORK/tls
make_tls_certs "$TLS_DIR"

# ---- PostgreSQL ---------------------------------------------------------------------------
start_postgres \
    "max_connections = $((MANY + 300))" \
    "fsync = off" \
    "synchronous_commit = off" \
    "full_page_writes = off" \
    "shared_buffers = 256MB" \
    "ssl = on" \
    "ssl_cert_file = '$TLS_DIR/server.crt'" \
    "ssl_key_file = '$TLS_DIR/server.key'"

AUTH_PASSWORD=pgring-auth-pass
psql_super <<SQL
CREATE ROLE app_scram LOGIN PASSWORD '$APP_PASSWORD';
CREATE ROLE app_aq LOGIN PASSWORD '$APP_PASSWORD';
CREATE ROLE pgring_auth LOGIN PASSWORD '$AUTH_PASSWORD';
SQL
PGPASSWORD=$PG_SUPERUSER_PASSWORD psql -X -q -At -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$APP_DB" <<'SQL'
CREATE FUNCTION public.pgring_lookup(p_usename text)
    RETURNS TABLE (usename name, passwd text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.usename, s.passwd FROM pg_catalog.pg_shadow s WHERE s.usename = p_usename
$$;
REVOKE ALL ON FUNCTION public.pgring_lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.pgring_lookup(text) TO pgring_auth;
SQL
SCRAM_VERIFIER=$(psql_super -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'app_scram'")
[[ "$SCRAM_VERIFIER" == SCRAM-SHA-256* ]] || die "no SCRAM verifier for app_scram"
note "roles app_scram (SCRAM verifier in the userlist), app_aq (auth_query only), pgring_auth"

log "initialising pgbench tables directly on PostgreSQL (pgbench -i -s $PGBENCH_SCALE)"
PGSSLMODE=disable PGPASSWORD=$APP_PASSWORD pgbench -i -s "$PGBENCH_SCALE" -q -h 127.0.0.1 -p "$PG_PORT" \
    -U "$APP_USER" "$APP_DB" >"$WORK/pgbench-init.log" 2>&1 || {
    show_log "$WORK/pgbench-init.log"
    die "pgbench -i failed"
}

# The one userlist both poolers read: app with its plaintext password (md5 with clients,
# SCRAM with PostgreSQL), app_scram with PostgreSQL's own SCRAM verifier (SCRAM with
# clients; the server login reuses the keys of the client's proof), pgring_auth for
# auth_query. app_aq is missing on purpose.
{
    printf '"%s" "%s"\n' "$APP_USER" "$APP_PASSWORD"
    printf '"%s" "%s"\n' app_scram "$SCRAM_VERIFIER"
    printf '"%s" "%s"\n' pgring_auth "$AUTH_PASSWORD"
} >"$WORK/userlist.txt"
is_root && chown "$PG_OS_USER" "$WORK/userlist.txt"
chmod 640 "$WORK/userlist.txt"

# ---- The poolers ----------------------------------------------------------------------------
# Two of each: "plain" (server hop in plaintext) for most workloads, "tls2" (server hop over
# TLS too) for the TLS-on-both-hops workload. Clients may use TLS with either (prefer).
MAX_CLIENT_CONN=$((IDLE + MANY + 1000))
AUTH_QUERY='SELECT usename, passwd FROM pgring_lookup($1)'
declare -A PORT PID CONF

write_pgring_conf() { # name port server_tls_sslmode
    cat >"$WORK/$1.toml" <<TOML
# Written by bench/loadgen.sh: the same settings as the PgBouncer next to it.
[pooler]
listen_addr = "127.0.0.1"
listen_port = $2
unix_socket_dir = ""
shards = $SHARDS
pool_mode = "transaction"
default_pool_size = $POOL_SIZE
max_client_conn = $MAX_CLIENT_CONN
auth_type = "md5"
auth_file = "$WORK/userlist.txt"
auth_user = "pgring_auth"
auth_query = "$AUTH_QUERY"
client_tls_sslmode = "prefer"
client_tls_cert_file = "$TLS_DIR/server.crt"
client_tls_key_file = "$TLS_DIR/server.key"
server_tls_sslmode = "$3"
log_connections = false
log_disconnections = false
shutdown_timeout = 2

[databases]
$APP_DB = { host = "127.0.0.1", port = $PG_PORT, dbname = "$APP_DB" }
TOML
    CONF[$1]=$WORK/$1.toml
}

write_pgbouncer_conf() { # name port server_tls_sslmode
    local dir=$WORK/$1
    as_pg mkdir -p "$dir"
    cat <<INI | as_pg tee "$dir/pgbouncer.ini" >/dev/null
; Written by bench/loadgen.sh: the same settings as the pgring next to it.
[databases]
$APP_DB = host=127.0.0.1 port=$PG_PORT dbname=$APP_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir =
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $MAX_CLIENT_CONN
auth_type = md5
auth_file = $WORK/userlist.txt
auth_user = pgring_auth
auth_query = $AUTH_QUERY
client_tls_sslmode = prefer
client_tls_cert_file = $TLS_DIR/server.crt
client_tls_key_file = $TLS_DIR/server.key
server_tls_sslmode = $3
log_connections = 0
log_disconnections = 0
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
    CONF[$1]=$dir/pgbouncer.ini
}

start_pooler() { # name
    local name=$1
    case "$name" in
        pgring*)
            log "starting $name on port ${PORT[$name]} ($SHARDS shard(s))"
            launch_pgring "${CONF[$name]}" "$WORK/$name.log" "${PORT[$name]}" "$name"
            ;;
        pgbouncer*)
            log "starting $name on port ${PORT[$name]} ($("$PGBOUNCER_BIN" --version | head -n1))"
            launch_pgbouncer "${CONF[$name]}" "${PORT[$name]}" "$name"
            note "open files limit: $(sed -n 's/^Max open files *\([0-9]*\).*/\1/p' "/proc/$LAUNCHED_PID/limits")"
            ;;
    esac
    PID[$name]=$LAUNCHED_PID
    note "$name is up (pid ${PID[$name]})"
}

pooler_log() {
    case "$1" in
        pgring*) echo "$WORK/$1.log" ;;
        pgbouncer*) echo "$WORK/$1/pgbouncer.log" ;;
        *) echo "$WORK/postgres.log" ;;
    esac
}

for name in pgring pgbouncer pgring-tls2 pgbouncer-tls2; do
    PORT[$name]=$(free_port)
    server_tls=disable
    [[ "$name" == *-tls2 ]] && server_tls=require
    case "$name" in
        pgring*) write_pgring_conf "$name" "${PORT[$name]}" "$server_tls" ;;
        pgbouncer*) write_pgbouncer_conf "$name" "${PORT[$name]}" "$server_tls" ;;
    esac
    start_pooler "$name"
done
PORT[direct]=$PG_PORT
PID[direct]=""

# ---- Workloads --------------------------------------------------------------------------------
# name|loadgen mode|user|sslmode|hop|targets|loadgen arguments
# hop: which pooler pair ("plain": server hop in plaintext, "tls2": over TLS too).
HS_ARGS="--concurrency 8 --threads $NPROC"
WORKLOADS=(
    "hs-plain-md5|handshake|$APP_USER|disable|plain|pgring pgbouncer direct|$HS_ARGS"
    "hs-plain-scram|handshake|app_scram|disable|plain|pgring pgbouncer direct|$HS_ARGS"
    "hs-plain-scram-authquery|handshake|app_aq|disable|plain|pgring pgbouncer|$HS_ARGS"
    "hs-tls-md5|handshake|$APP_USER|require|plain|pgring pgbouncer direct|$HS_ARGS --no-tls-resume"
    "hs-tls-scram|handshake|app_scram|require|plain|pgring pgbouncer direct|$HS_ARGS --no-tls-resume"
    "hs-tls-scram-resumed|handshake|app_scram|require|plain|pgring pgbouncer direct|$HS_ARGS --tls-resume"
    "tx-c1|tx|$APP_USER|disable|plain|pgring pgbouncer direct|--clients 1"
    "tx-c50-simple|tx|$APP_USER|disable|plain|pgring pgbouncer direct|--clients 50"
    "tx-c50-extended|tx|$APP_USER|disable|plain|pgring pgbouncer direct|--clients 50 --protocol extended"
    "tx-c50-tls|tx|$APP_USER|require|tls2|pgring pgbouncer direct|--clients 50"
    "tx-c$MANY-simple|tx|$APP_USER|disable|plain|pgring pgbouncer direct|--clients $MANY"
    "tx-c$MANY-extended|tx|$APP_USER|disable|plain|pgring pgbouncer direct|--clients $MANY --protocol extended"
    "tx-open-1000|tx|$APP_USER|disable|plain|pgring pgbouncer direct|--clients 50 --rate 1000"
    "tx-open-5000|tx|$APP_USER|disable|plain|pgring pgbouncer direct|--clients 50 --rate 5000"
)

conninfo() { # target user sslmode hop
    local target=$1 user=$2 sslmode=$3 hop=$4 name=$1
    [[ "$target" != direct && "$hop" == tls2 ]] && name=$target-tls2
    local password=$APP_PASSWORD
    printf 'host=127.0.0.1 port=%s user=%s password=%s dbname=%s sslmode=%s channel_binding=disable application_name=loadgen' \
        "${PORT[$name]}" "$user" "$password" "$APP_DB" "$sslmode"
}
instance_of() { # target hop
    if [[ "$1" != direct && "$2" == tls2 ]]; then echo "$1-tls2"; else echo "$1"; fi
}

RUNS_TSV=$RUNS_DIR/runs.tsv
PLOTS_DIR=$RUNS_DIR/plots
mkdir -p "$PLOTS_DIR"
: >"$RUNS_TSV"
DEAD=" "

# run_loadgen NO WORKLOAD ROUND TARGET INSTANCE MODE DURATION ARGS...
run_loadgen() {
    local no=$1 workload=$2 round=$3 target=$4 instance=$5 mode=$6 duration=$7
    shift 7
    local out=$RUNS_DIR/$no pid=${PID[$instance]}
    if [[ "$DEAD" == *" $instance "* ]]; then
        note "$instance died earlier: skipped"
        printf '%s\t%s\t%s\t%s\t%s\tskipped\t\t\t\t\t\n' "$no" "$workload" "$round" "$target" "$instance" >>"$RUNS_TSV"
        return 0
    fi
    local extra=()
    [[ -n "$pid" ]] && extra+=(--cpu-pid "$pid")
    # loadgen's own percentile plot, for the last round only (enough to look at).
    ((round == ROUNDS)) && extra+=(--plot "$PLOTS_DIR/$workload-$target.svg")
    local load_before load_after t0 t1 rc=0
    load_before=$(cut -d' ' -f1 /proc/loadavg)
    t0=$(date +%s.%N)
    timeout 300 "$LOADGEN" "$mode" "$@" --duration "$duration" --json "$out.json" "${extra[@]}" \
        >"$out.out" 2>"$out.err" || rc=$?
    t1=$(date +%s.%N)
    load_after=$(cut -d' ' -f1 /proc/loadavg)
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
        log "$instance (pid $pid) died; its remaining runs are skipped"
        show_log "$(pooler_log "$instance")"
        DEAD+="$instance "
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$no" "$workload" "$round" "$target" \
        "$instance" "$rc" "$t0" "$t1" "$load_before" "$load_after" "$mode $*" >>"$RUNS_TSV"
    note "exit $rc; $(python3 bench/loadgen_report.py --summarise-run "$out.json")"
    if ((rc != 0)); then
        show_log "$out.err" 8
    fi
}

n_runs=0
for spec in "${WORKLOADS[@]}"; do
    IFS='|' read -r _ _ _ _ _ targets _ <<<"$spec"
    read -r -a t <<<"$targets"
    n_runs=$((n_runs + ${#t[@]} * ROUNDS))
done
log "benchmark: ${#WORKLOADS[@]} workloads x $ROUNDS round(s) = $n_runs loadgen runs ($TX_SECONDS s per tx run, $HS_SECONDS s per handshake run), then pgbench and idle"

# Warm-up (not recorded): every pooler opens its server connections for every user.
log "warm-up (not recorded)"
for instance in pgring pgbouncer pgring-tls2 pgbouncer-tls2; do
    target=${instance%-tls2}
    hop=plain
    [[ "$instance" == *-tls2 ]] && hop=tls2
    for user in "$APP_USER" app_scram app_aq; do
        "$LOADGEN" tx "$(conninfo "$target" "$user" disable "$hop")" --clients 20 --duration 1 \
            >"$RUNS_DIR/warmup-$instance-$user.out" 2>&1 || {
            show_log "$RUNS_DIR/warmup-$instance-$user.out"
            show_log "$(pooler_log "$instance")"
            die "warm-up through $instance as $user failed"
        }
    done
done

run_no=0
for ((round = 1; round <= ROUNDS; round++)); do
    for spec in "${WORKLOADS[@]}"; do
        IFS='|' read -r workload mode user sslmode hop targets args <<<"$spec"
        read -r -a targets_a <<<"$targets"
        read -r -a args_a <<<"$args"
        duration=$TX_SECONDS
        [[ "$mode" == handshake ]] && duration=$HS_SECONDS
        # The targets alternate; their order rotates with the round so that none always
        # runs first (right after another workload) or last.
        n=${#targets_a[@]}
        for ((i = 0; i < n; i++)); do
            target=${targets_a[$(((i + round - 1) % n))]}
            run_no=$((run_no + 1))
            instance=$(instance_of "$target" "$hop")
            log "[$run_no/$n_runs, $((SECONDS - BENCH_T0)) s] round $round/$ROUNDS $workload: $target"
            run_loadgen "$run_no" "$workload" "$round" "$target" "$instance" "$mode" "$duration" \
                "$(conninfo "$target" "$user" "$sslmode" "$hop")" "${args_a[@]}"
        done
    done
done

# ---- pgbench cross-check: one run per target -------------------------------------------------
PGBENCH_TSV=$RUNS_DIR/pgbench.tsv
: >"$PGBENCH_TSV"
log "pgbench cross-check: pgbench -n -S -c 50 -j 2 -T $PGBENCH_SECONDS per target (plaintext)"
for target in pgring pgbouncer direct; do
    pid=${PID[$target]}
    out=$RUNS_DIR/pgbench-$target.out
    cpu_before=""
    [[ -n "$pid" ]] && cpu_before=$(cpu_ticks "$pid")
    rc=0
    PGSSLMODE=disable PGPASSWORD=$APP_PASSWORD timeout $((PGBENCH_SECONDS + 120)) \
        pgbench -n -S -c 50 -j 2 -T "$PGBENCH_SECONDS" \
        -h 127.0.0.1 -p "${PORT[$target]}" -U "$APP_USER" "$APP_DB" >"$out" 2>"$out.err" || rc=$?
    cpu_after=""
    [[ -n "$pid" ]] && cpu_after=$(cpu_ticks "$pid" || true)
    printf '%s\t%s\t%s\t%s\n' "$target" "$rc" "$cpu_before" "$cpu_after" >>"$PGBENCH_TSV"
    note "$target: exit $rc; $(python3 bench/report.py --summarise-run "$out" "$cpu_before" "$cpu_after" "$CLK_TCK")"
done

# ---- Idle connections: RSS per connection, each pooler freshly restarted ---------------------
# loadgen idle holds the connections until --duration has passed since its start, so the
# duration must cover the opening too: about 2 s per 1000 plaintext logins here, and up to
# 4 s per 1000 TLS logins on a busy 2-core machine. When the opening is slower than that,
# loadgen measures the connections held just before the end (all_open false in the JSON).
IDLE_HOLD=$((IDLE / 1000 * 2 + 5))
IDLE_HOLD_TLS=$((IDLE / 1000 * 4 + 5))
log "idle: $IDLE connections per pooler, plain then TLS, held until $IDLE_HOLD s / $IDLE_HOLD_TLS s after the start"
for sslmode in disable require; do
    for target in pgring pgbouncer; do
        stop_pid "${PID[$target]}" 10
        start_pooler "$target"
        # One login first so that the pool has its server connection and the pooler has
        # settled: the RSS baseline is taken right after.
        "$LOADGEN" tx "$(conninfo "$target" "$APP_USER" "$sslmode" plain)" --clients 1 --duration 0.5 \
            >/dev/null 2>&1 || true
        sleep 0.5
        run_no=$((run_no + 1))
        workload=idle-plain
        [[ "$sslmode" == require ]] && workload=idle-tls
        log "[$run_no, $((SECONDS - BENCH_T0)) s] $workload: $target, $IDLE connections"
        hold=$IDLE_HOLD
        [[ "$sslmode" == require ]] && hold=$IDLE_HOLD_TLS
        run_loadgen "$run_no" "$workload" 1 "$target" "$target" idle "$hold" \
            "$(conninfo "$target" "$APP_USER" "$sslmode" plain)" --clients "$IDLE" \
            --threads "$NPROC" --pid "${PID[$target]}"
    done
done

FINISHED_UTC=$(date -u +%Y-%m-%dT%H:%M:%SZ)
{
    printf 'started_utc\t%s\n' "$STARTED_UTC"
    printf 'finished_utc\t%s\n' "$FINISHED_UTC"
    printf 'wall_seconds\t%s\n' "$((SECONDS - BENCH_T0))"
    printf 'command\t%s\n' "$COMMAND"
    printf 'quick\t%s\n' "${QUICK:-0}"
    printf 'nproc\t%s\n' "$NPROC"
    printf 'cpu_model\t%s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
    printf 'kernel\t%s\n' "$(uname -r)"
    printf 'clk_tck\t%s\n' "$CLK_TCK"
    printf 'git_head\t%s\n' "$GIT_HEAD"
    printf 'git_dirty_src\t%s\n' "$GIT_DIRTY_COUNT"
    printf 'git_dirty_src_files\t%s\n' "$GIT_DIRTY_FILES"
    printf 'pgring_version\t%s\n' "$PGRING_VERSION"
    printf 'loadgen_version\t%s\n' "$("$LOADGEN" --version)"
    printf 'postgres_version\t%s\n' "$("$PG_BIN/postgres" --version)"
    printf 'pgbench_version\t%s\n' "$(pgbench --version)"
    printf 'pgbouncer_version\t%s\n' "$("$PGBOUNCER_BIN" --version | head -n1)"
    printf 'openssl_version\t%s\n' "$(openssl version)"
    printf 'rounds\t%s\n' "$ROUNDS"
    printf 'tx_seconds\t%s\n' "$TX_SECONDS"
    printf 'hs_seconds\t%s\n' "$HS_SECONDS"
    printf 'many_clients\t%s\n' "$MANY"
    printf 'idle_clients\t%s\n' "$IDLE"
    printf 'idle_hold_seconds\t%s\n' "$IDLE_HOLD"
    printf 'idle_tls_hold_seconds\t%s\n' "$IDLE_HOLD_TLS"
    printf 'pgbench_seconds\t%s\n' "$PGBENCH_SECONDS"
    printf 'pgbench_scale\t%s\n' "$PGBENCH_SCALE"
    printf 'pool_size\t%s\n' "$POOL_SIZE"
    printf 'pgring_shards\t%s\n' "$SHARDS"
    printf 'ulimit_n\t%s\n' "$(ulimit -n)"
} >"$RUNS_DIR/meta.tsv"
for name in pgring pgbouncer pgring-tls2 pgbouncer-tls2; do
    cp "${CONF[$name]}" "$RUNS_DIR/config-$name" 2>/dev/null || true
done

report_args=(--runs-dir "$RUNS_DIR")
if [[ -n "$RECORD" ]]; then
    mkdir -p "bench/results/$STAMP"
    report_args+=(--json "bench/results/$STAMP.json" --plots "bench/results/$STAMP" --markdown bench/RESULTS.md)
fi
python3 bench/loadgen_report.py "${report_args[@]}" || {
    # Keep the raw runs, so that a fixed report script can still read them.
    keep=${TMPDIR:-/tmp}/pgring-bench-runs-$STAMP
    cp -r "$RUNS_DIR" "$keep"
    die "bench/loadgen_report.py failed; the raw runs are in $keep (--runs-dir)"
}
if [[ -n "$RECORD" ]]; then
    log "wrote bench/results/$STAMP.json, plots in bench/results/$STAMP/, a section in bench/RESULTS.md"
fi
log "done in $((SECONDS - BENCH_T0)) s"
if [[ "$DEAD" != " " ]]; then
    die "these poolers died during the benchmark:$DEAD(see the tables and the JSON)"
fi
