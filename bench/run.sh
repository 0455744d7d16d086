#!/usr/bin/env bash
# pgring's benchmark: pgring vs PgBouncer vs direct PostgreSQL, in one run, on this machine.
#
#   bench/run.sh            # 3 rounds of 20 s per (workload, target): about 11 minutes
#   bench/run.sh --quick    # 1 round of 5 s: about 1-2 minutes, a smoke test
#
# Options (and environment variables):
#   --quick                    BENCH_SECONDS=5, BENCH_ROUNDS=1
#   --seconds N   BENCH_SECONDS  pgbench -T per run (default 20)
#   --rounds N    BENCH_ROUNDS   rounds; each round runs pgring, PgBouncer, direct (default 3)
#   --scale N     BENCH_SCALE    pgbench -i scale (default 10)
#   --shards N    BENCH_SHARDS   pgring's shard count (default: one per core)
#   --no-record                  print the tables only: no bench/results/*.json, no RESULTS.md
#   KEEP_ON_FAILURE=1            keep the temp folder (logs, configs) when something fails
#
# What it does (see bench/README.md):
#   1. scripts/install-deps.sh --no-drivers; cargo build --release --locked -p pgring;
#   2. a throwaway PostgreSQL (temp folder, free port, max_connections 300, fsync off,
#      SCRAM), role app/apppass owning database app, `pgbench -i -s SCALE` directly;
#   3. pgring (one shard per core) and PgBouncer with the same pool settings: transaction
#      pooling, pool size 20, max_client_conn 2000, md5 against the same userlist.txt;
#   4. workloads `pgbench -S -c 50 -j 2`, `pgbench -S -c 200 -j 2` and the default tpcb-like
#      `pgbench -c 50 -j 2`, each for N seconds per target, the targets alternating in rounds
#      (pgring, pgbouncer, direct) x R; the pooler's CPU time (utime+stime from
#      /proc/PID/stat) is read before and after every run;
#   5. bench/results/<UTC timestamp>.json with every raw number, and a section appended to
#      bench/RESULTS.md with the medians (bench/report.py).
# Progress goes to stderr, the tables to stdout.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib.sh
source bench/lib.sh

COMMAND="bench/run.sh${*:+ $*}"
SECONDS_PER_RUN=${BENCH_SECONDS:-20}
ROUNDS=${BENCH_ROUNDS:-3}
SCALE=${BENCH_SCALE:-10}
SHARDS=${BENCH_SHARDS:-}
RECORD=1
POOL_SIZE=20

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; }

while (($#)); do
    case "$1" in
        --quick)
            SECONDS_PER_RUN=5
            ROUNDS=1
            ;;
        --seconds)
            SECONDS_PER_RUN=${2:?--seconds needs a value}
            shift
            ;;
        --rounds)
            ROUNDS=${2:?--rounds needs a value}
            shift
            ;;
        --scale)
            SCALE=${2:?--scale needs a value}
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
require_positive_ints SECONDS_PER_RUN ROUNDS SCALE

# name|pgbench arguments (besides -T, -n and the connection)
WORKLOADS=(
    "select-only-c50|-S -c 50 -j 2"
    "select-only-c200|-S -c 200 -j 2"
    "tpcb-like-c50|-c 50 -j 2"
)
TARGETS=(pgring pgbouncer direct)

total_runs=$((${#WORKLOADS[@]} * ROUNDS * ${#TARGETS[@]}))
log "benchmark: ${#WORKLOADS[@]} workloads x $ROUNDS round(s) x ${#TARGETS[@]} targets x ${SECONDS_PER_RUN}s = $total_runs runs, about $(((total_runs * (SECONDS_PER_RUN + 2) + 60) / 60)) min"

log "installing dependencies when missing (scripts/install-deps.sh)"
scripts/install-deps.sh --no-drivers >&2

log "building pgring (cargo build --release --locked -p pgring)"
cargo build --release --locked -p pgring >&2
# The tree the binary was built from (others may commit or edit while the benchmark runs).
GIT_HEAD=$(git rev-parse HEAD 2>/dev/null || echo unknown)
GIT_DIRTY_FILES=$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | sed 's/^...//' | paste -sd' ' -)
GIT_DIRTY_COUNT=$(wc -w <<<"$GIT_DIRTY_FILES")
PGRING_VERSION=$(target/release/pgring --version 2>/dev/null || echo unknown)

lib_init
find_pgbouncer
NPROC=$(nproc)
SHARDS=${SHARDS:-$NPROC}
STARTED_UTC=$(date -u +%Y-%m-%dT%H:%M:%SZ)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)

start_postgres \
    "max_connections = 300" \
    "fsync = off" \
    "synchronous_commit = off" \
    "full_page_writes = off" \
    "shared_buffers = 256MB"

log "initialising pgbench tables directly on PostgreSQL (pgbench -i -s $SCALE)"
PGPASSWORD=$APP_PASSWORD pgbench -i -s "$SCALE" -q -h 127.0.0.1 -p "$PG_PORT" -U "$APP_USER" "$APP_DB" \
    >"$WORK/pgbench-init.log" 2>&1 || {
    show_log "$WORK/pgbench-init.log"
    die "pgbench -i failed"
}

write_userlist
start_pgring "$SHARDS" "$POOL_SIZE"
start_pgbouncer "$POOL_SIZE"

port_of() {
    case "$1" in
        pgring) echo "$PGRING_PORT" ;;
        pgbouncer) echo "$PGBOUNCER_PORT" ;;
        direct) echo "$PG_PORT" ;;
    esac
}
pid_of() {
    case "$1" in
        pgring) echo "$PGRING_PID" ;;
        pgbouncer) echo "$PGBOUNCER_PID" ;;
        direct) echo "" ;;
    esac
}
log_of() {
    case "$1" in
        pgring) echo "$WORK/pgring.log" ;;
        pgbouncer) echo "$WORK/pgbouncer/pgbouncer.log" ;;
        direct) echo "$WORK/postgres.log" ;;
    esac
}

RUNS_DIR=$WORK/runs
mkdir -p "$RUNS_DIR"
RUNS_TSV=$RUNS_DIR/runs.tsv
DEAD_TARGETS=" "

# Warm-up (not recorded): fills the caches and lets each pooler open its server connections.
log "warm-up: pgbench -S -c 50 for 3 s per target (not recorded)"
for target in "${TARGETS[@]}"; do
    PGPASSWORD=$APP_PASSWORD timeout 60 pgbench -n -S -c 50 -j 2 -T 3 \
        -h 127.0.0.1 -p "$(port_of "$target")" -U "$APP_USER" "$APP_DB" \
        >"$RUNS_DIR/warmup-$target.out" 2>&1 || {
        show_log "$RUNS_DIR/warmup-$target.out"
        show_log "$(log_of "$target")"
        die "warm-up through $target failed"
    }
done

# Resets what tpcb-like changes, directly on PostgreSQL (what pgbench's own vacuum step does;
# done here so that the poolers' CPU counts only the benchmark).
reset_tpcb() {
    psql_app "$PG_PORT" >/dev/null <<'SQL'
VACUUM pgbench_branches;
VACUUM pgbench_tellers;
TRUNCATE pgbench_history;
SQL
}

run_no=0
for spec in "${WORKLOADS[@]}"; do
    workload=${spec%%|*}
    read -r -a args <<<"${spec#*|}"
    for ((round = 1; round <= ROUNDS; round++)); do
        for target in "${TARGETS[@]}"; do
            run_no=$((run_no + 1))
            out=$RUNS_DIR/$run_no.out
            pid=$(pid_of "$target")
            if [[ "$DEAD_TARGETS" == *" $target "* ]]; then
                log "[$run_no/$total_runs] $workload round $round: $target skipped (it died earlier)"
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
                    "$run_no" "$workload" "$round" "$target" "skipped" "" "" "" "" "" >>"$RUNS_TSV"
                continue
            fi
            [[ "$workload" == tpcb-like* ]] && reset_tpcb
            log "[$run_no/$total_runs] $workload round $round/$ROUNDS: $target (pgbench ${args[*]} -T $SECONDS_PER_RUN)"
            load_before=$(cut -d' ' -f1 /proc/loadavg)
            cpu_before=""
            [[ -n "$pid" ]] && cpu_before=$(cpu_ticks "$pid")
            t0=$(date +%s.%N)
            rc=0
            PGPASSWORD=$APP_PASSWORD timeout $((SECONDS_PER_RUN + 120)) \
                pgbench -n "${args[@]}" -T "$SECONDS_PER_RUN" \
                -h 127.0.0.1 -p "$(port_of "$target")" -U "$APP_USER" "$APP_DB" \
                >"$out" 2>"$out.err" || rc=$?
            t1=$(date +%s.%N)
            cpu_after=""
            if [[ -n "$pid" ]]; then
                if kill -0 "$pid" 2>/dev/null; then
                    cpu_after=$(cpu_ticks "$pid")
                else
                    log "$target (pid $pid) died during the run; its remaining runs are skipped"
                    show_log "$(log_of "$target")"
                    cp "$(log_of "$target")" "$RUNS_DIR/$target-died.log" 2>/dev/null || true
                    DEAD_TARGETS+="$target "
                fi
            fi
            load_after=$(cut -d' ' -f1 /proc/loadavg)
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
                "$run_no" "$workload" "$round" "$target" "$rc" "$cpu_before" "$cpu_after" \
                "$t0" "$t1" "$load_before" "$load_after" "${args[*]}" >>"$RUNS_TSV"
            summary=$(python3 bench/report.py --summarise-run "$out" "$cpu_before" "$cpu_after" "$CLK_TCK")
            note "exit $rc; $summary"
            if ((rc != 0)); then
                show_log "$out.err" 10
            fi
        done
    done
done

FINISHED_UTC=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# Facts about the machine and the software, for the JSON.
{
    printf 'started_utc\t%s\n' "$STARTED_UTC"
    printf 'finished_utc\t%s\n' "$FINISHED_UTC"
    printf 'command\t%s\n' "$COMMAND"
    printf 'nproc\t%s\n' "$NPROC"
    printf 'cpu_model\t%s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
    printf 'kernel\t%s\n' "$(uname -r)"
    printf 'clk_tck\t%s\n' "$CLK_TCK"
    printf 'git_head\t%s\n' "$GIT_HEAD"
    printf 'git_dirty_src\t%s\n' "$GIT_DIRTY_COUNT"
    printf 'git_dirty_src_files\t%s\n' "$GIT_DIRTY_FILES"
    printf 'pgring_version\t%s\n' "$PGRING_VERSION"
    printf 'postgres_version\t%s\n' "$("$PG_BIN/postgres" --version)"
    printf 'pgbench_version\t%s\n' "$(pgbench --version)"
    printf 'pgbouncer_version\t%s\n' "$("$PGBOUNCER_BIN" --version | head -n1)"
    printf 'seconds_per_run\t%s\n' "$SECONDS_PER_RUN"
    printf 'rounds\t%s\n' "$ROUNDS"
    printf 'scale\t%s\n' "$SCALE"
    printf 'pool_size\t%s\n' "$POOL_SIZE"
    printf 'pgring_shards\t%s\n' "$SHARDS"
} >"$RUNS_DIR/meta.tsv"
cp "$WORK/pgring.toml" "$RUNS_DIR/pgring.toml"
cp "$WORK/pgbouncer/pgbouncer.ini" "$RUNS_DIR/pgbouncer.ini"

report_args=(--runs-dir "$RUNS_DIR")
if [[ -n "$RECORD" ]]; then
    mkdir -p bench/results
    report_args+=(--json "bench/results/$STAMP.json" --markdown bench/RESULTS.md)
fi
python3 bench/report.py "${report_args[@]}"
if [[ -n "$RECORD" ]]; then
    log "wrote bench/results/$STAMP.json and appended a section to bench/RESULTS.md"
fi
if [[ "$DEAD_TARGETS" != " " ]]; then
    die "these targets died during the benchmark:$DEAD_TARGETS(see the tables and the JSON)"
fi
