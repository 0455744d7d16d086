#!/usr/bin/env bash
# Tracked named statements against unnamed ones through pgring's transaction pooling, and
# both against direct PostgreSQL, in one run: what prepared-statement tracking costs.
#
#   bench/prepared.sh                    # 3 rounds, 50 clients, pool 20, 2 shards, 5 s runs
#   bench/prepared.sh --rounds 5 --clients 100 --seconds 8 --shards 1
#
# Options: --rounds N (default 3), --clients N (default 50), --pool N (default 20),
# --shards N (default 2), --seconds N per run (default 5), --statements N distinct
# statement texts per transaction (default 1).
#
# What it does: a throwaway PostgreSQL; pgring (transaction pooling, md5, the default
# max_prepared_statements); then, in each round and in alternation, `loadgen tx` with
# --protocol extended (unnamed Parse/Bind/Execute/Sync) and --protocol prepared (named
# statements parsed once per connection, then Bind/Execute/Sync), through pgring and
# directly, pgring's CPU read from /proc over each run (loadgen --cpu-pid). It prints,
# per run and as medians, transactions/s, p50/p99 latency and pgring's CPU per
# transaction, the prepared/extended CPU ratio, and pgring's resident memory before and
# after (the registry of statements and the servers' copies are part of it). Nothing is
# written under bench/results; paste what it prints into bench/RESULTS.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib.sh
source bench/lib.sh

ROUNDS=3
CLIENTS=50
POOL=20
SHARDS=2
SECONDS_PER_RUN=5
STATEMENTS=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS=${2:?--rounds needs a value}; shift ;;
        --clients) CLIENTS=${2:?--clients needs a value}; shift ;;
        --pool) POOL=${2:?--pool needs a value}; shift ;;
        --shards) SHARDS=${2:?--shards needs a value}; shift ;;
        --seconds) SECONDS_PER_RUN=${2:?--seconds needs a value}; shift ;;
        --statements) STATEMENTS=${2:?--statements needs a value}; shift ;;
        -h | --help)
            sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
require_positive_ints ROUNDS CLIENTS POOL SHARDS SECONDS_PER_RUN STATEMENTS

log "building pgring and loadgen (cargo build --release --locked)"
cargo build --release --locked -p pgring -p loadgen >&2
LOADGEN=$REPO_ROOT/target/release/loadgen

lib_init
start_postgres "max_connections = 300" "fsync = off" "synchronous_commit = off"
write_userlist
start_pgring "$SHARDS" "$POOL"

SCRIPT=$WORK/script.sql
: >"$SCRIPT"
for ((i = 1; i <= STATEMENTS; i++)); do
    echo "SELECT $i + 0 AS n, 'statement $i' AS s;" >>"$SCRIPT"
done

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$PGRING_PID/status"; }
RSS_BEFORE=$(rss_kb)

RESULTS=$WORK/results.tsv
: >"$RESULTS"
run() { # round target protocol
    local round=$1 target=$2 protocol=$3 port cpu=() json=$WORK/run.json
    if [[ $target == pgring ]]; then
        port=$PGRING_PORT
        cpu=(--cpu-pid "$PGRING_PID")
    else
        port=$PG_PORT
    fi
    "$LOADGEN" tx "host=127.0.0.1 port=$port user=$APP_USER password=$APP_PASSWORD dbname=$APP_DB sslmode=disable" \
        --clients "$CLIENTS" --protocol "$protocol" --script "$SCRIPT" \
        --duration "$SECONDS_PER_RUN" "${cpu[@]}" --json "$json" >/dev/null 2>"$WORK/loadgen.stderr" ||
        {
            show_log "$WORK/loadgen.stderr"
            die "loadgen failed ($target, $protocol)"
        }
    python3 - "$json" "$round" "$target" "$protocol" >>"$RESULTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if r["errors"]:
    sys.exit(f"{r['errors']} errors: {r['error_messages']}")
tps = r["rate_per_s"]
lat = r["latency_us"]
cpu = (r.get("cpu") or {}).get("us_per_completed")
print("\t".join(str(x) for x in [sys.argv[2], sys.argv[3], sys.argv[4], tps,
      lat.get("p50"), lat.get("p99"), cpu if cpu is not None else ""]))
PY
    note "round $round: $target $protocol: $(tail -1 "$RESULTS" | cut -f4-)"
}

for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round of $ROUNDS"
    for protocol in extended prepared; do
        run "$round" pgring "$protocol"
        run "$round" direct "$protocol"
    done
done
RSS_AFTER=$(rss_kb)

python3 - "$RESULTS" "$RSS_BEFORE" "$RSS_AFTER" "$CLIENTS" "$POOL" "$SHARDS" "$STATEMENTS" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
def med(target, protocol, col):
    vals = [float(r[col]) for r in rows if r[1] == target and r[2] == protocol and r[col] not in ("", "None")]
    return statistics.median(vals) if vals else float("nan")
print(f"clients {sys.argv[4]}, pool {sys.argv[5]}, shards {sys.argv[6]}, "
      f"{sys.argv[7]} statement(s) per transaction, {len(rows) // 4} round(s)")
print()
print("| target | protocol | tx/s | p50 µs | p99 µs | pgring CPU µs/tx |")
print("|---|---|---:|---:|---:|---:|")
for target in ("pgring", "direct"):
    for protocol in ("extended", "prepared"):
        cpu = med(target, protocol, 6)
        cpu_s = "" if cpu != cpu else f"{cpu:.1f}"
        print(f"| {target} | {protocol} | {med(target, protocol, 3):,.0f} | "
              f"{med(target, protocol, 4):.0f} | {med(target, protocol, 5):.0f} | {cpu_s} |")
ratio = med("pgring", "prepared", 6) / med("pgring", "extended", 6)
print()
print(f"pgring CPU per transaction, prepared / extended: {ratio:.2f}x")
print(f"pgring resident memory: {int(sys.argv[2]) / 1024:.1f} MB before, {int(sys.argv[3]) / 1024:.1f} MB after")
PY
