# shellcheck shell=bash
# Shared helpers of bench/run.sh and scripts/demo.sh: a throwaway PostgreSQL cluster, pgring
# and PgBouncer in front of it, process CPU accounting, and cleanup on exit.
#
# Source it from a script running under `set -euo pipefail`, then call `lib_init` once. Every
# process started through these helpers and the temp folder ($WORK) are removed by the EXIT
# trap `lib_init` installs (also on failure, SIGINT and SIGTERM).
#
# PostgreSQL and PgBouncer refuse to run as root: when root, they run as $PG_OS_USER
# (default `postgres`, created by the postgresql package) through `runuser`.

LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LIB_DIR/.." && pwd)

PG_OS_USER=${PG_OS_USER:-postgres}
APP_USER=app
APP_PASSWORD=apppass
APP_DB=app
PG_SUPERUSER_PASSWORD=pgring-bench-superuser

WORK=""            # temp folder holding everything (data dir, configs, logs)
PG_BIN=""          # folder of initdb/postgres/pg_ctl
PG_PORT=""         # port of the throwaway PostgreSQL
PG_DATA=""
PGRING_PID=""
PGRING_PORT=""
PGBOUNCER_PID=""
PGBOUNCER_PORT=""
LIB_EXTRA_PIDS=()  # more processes to stop on exit (launch_pgring, launch_pgbouncer)
LAUNCHED_PID=""    # set by launch_pgring / launch_pgbouncer
CLK_TCK=$(getconf CLK_TCK)

log() { printf '==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# require_positive_ints NAME...: each named variable holds a positive integer, or die.
require_positive_ints() {
    local v
    for v in "$@"; do
        [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
    done
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# Runs a command as the unprivileged PostgreSQL account when we are root.
as_pg() {
    if is_root; then
        runuser -u "$PG_OS_USER" -- "$@"
    else
        "$@"
    fi
}

# The newest /usr/lib/postgresql/<version>/bin with postgres and initdb ($PG_BIN overrides).
find_pg_bin() {
    if [[ -n "${PGRING_PG_BIN:-}" ]]; then
        PG_BIN=$PGRING_PG_BIN
    else
        PG_BIN=""
        local best=-1 dir v
        for dir in /usr/lib/postgresql/*/bin; do
            [[ -x "$dir/postgres" && -x "$dir/initdb" ]] || continue
            v=$(basename "$(dirname "$dir")")
            v=${v%%.*}
            if [[ "$v" =~ ^[0-9]+$ ]] && ((v > best)); then
                best=$v
                PG_BIN=$dir
            fi
        done
    fi
    [[ -n "$PG_BIN" && -x "$PG_BIN/postgres" ]] ||
        die "no PostgreSQL server under /usr/lib/postgresql/*/bin (run scripts/install-deps.sh)"
    # Prefer the server's own client tools (pgbench, psql, pg_isready) when it has them.
    PATH="$PG_BIN:$PATH"
    export PATH
}

find_pgbouncer() {
    PGBOUNCER_BIN=$(command -v pgbouncer || true)
    if [[ -z "$PGBOUNCER_BIN" && -x /usr/sbin/pgbouncer ]]; then
        PGBOUNCER_BIN=/usr/sbin/pgbouncer
    fi
    [[ -n "$PGBOUNCER_BIN" ]] || die "pgbouncer not found (run scripts/install-deps.sh)"
}

# A TCP port nobody listens on right now (bind to port 0 and release it).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Is something accepting TCP connections on 127.0.0.1:$1?
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Removes the libpq variables that could send our clients elsewhere, sets the common ones.
libpq_env() {
    unset PGSERVICE PGSERVICEFILE PGPASSFILE PGOPTIONS PGHOSTADDR PGSSLMODE PGDATABASE PGUSER PGPORT
    export PGHOST=127.0.0.1 PGCONNECT_TIMEOUT=10
}

# Temp folder, environment and the cleanup trap.
lib_init() {
    find_pg_bin
    libpq_env
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgring-bench.XXXXXX")
    chmod 755 "$WORK"
    if is_root; then
        id -u "$PG_OS_USER" >/dev/null 2>&1 ||
            die "running as root and user $PG_OS_USER does not exist (install the postgresql package)"
        chown "$PG_OS_USER" "$WORK"
    fi
    trap lib_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Sends SIGTERM to $1, waits up to $2 seconds for it to go, then SIGKILL.
stop_pid() {
    local pid=$1 timeout=${2:-10} i
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

lib_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [[ -n "$PGRING_PID" ]]; then
        stop_pid "$PGRING_PID" 10
        wait "$PGRING_PID" 2>/dev/null
    fi
    [[ -n "$PGBOUNCER_PID" ]] && stop_pid "$PGBOUNCER_PID" 10
    local extra
    for extra in "${LIB_EXTRA_PIDS[@]}"; do
        stop_pid "$extra" 10
    done
    if [[ -n "$PG_DATA" && -f "$PG_DATA/postmaster.pid" ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 20 stop >/dev/null 2>&1 ||
            stop_pid "$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null)" 10
    fi
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        if [[ $rc -ne 0 && -n "${KEEP_ON_FAILURE:-}" ]]; then
            printf 'kept %s for inspection\n' "$WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}

# Prints the last lines of a log file on stderr (for failures).
show_log() {
    [[ -f "$1" ]] || return 0
    printf -- '---- last lines of %s ----\n' "$1" >&2
    tail -n "${2:-30}" "$1" >&2 || true
}

# psql as the superuser on the throwaway cluster, over TCP.
psql_super() {
    PGPASSWORD=$PG_SUPERUSER_PASSWORD psql -X -q -At -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"
}

# psql as the app role against port $1 (PostgreSQL or a pooler).
psql_app() {
    local port=$1
    shift
    PGPASSWORD=$APP_PASSWORD psql -X -q -At -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$port" -U "$APP_USER" -d "$APP_DB" "$@"
}

# Polls `psql_app $port -c 'select 1'` until it answers (or $pid dies, or $timeout seconds).
wait_sql_ready() {
    local port=$1 pid=$2 logfile=$3 timeout=${4:-30} what=$5
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            show_log "$logfile"
            die "$what exited during startup"
        fi
        if port_open "$port" && psql_app "$port" -c 'select 1' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    show_log "$logfile"
    die "$what did not answer on port $port within ${timeout}s"
}

# start_postgres [extra postgresql.conf lines...]
# initdb (SCRAM everywhere), start on a free port, create role app/apppass owning db app.
start_postgres() {
    PG_PORT=$(free_port)
    PG_DATA=$WORK/pgdata
    local sock=$WORK/pgsock pwfile=$WORK/pg-superuser-password
    log "starting PostgreSQL on port $PG_PORT ($("$PG_BIN/postgres" --version))"
    as_pg mkdir -p "$sock"
    as_pg chmod 700 "$sock"
    printf '%s\n' "$PG_SUPERUSER_PASSWORD" >"$pwfile"
    is_root && chown "$PG_OS_USER" "$pwfile"
    chmod 600 "$pwfile"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$pwfile" \
        --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log" 2>&1 ||
        as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$pwfile" \
            --auth=scram-sha-256 -E UTF8 --locale=C >"$WORK/initdb.log" 2>&1 ||
        {
            show_log "$WORK/initdb.log"
            die "initdb failed"
        }
    rm -f "$pwfile"
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $PG_PORT"
        echo "unix_socket_directories = '$sock'"
        echo "password_encryption = 'scram-sha-256'"
        echo "logging_collector = off"
        local line
        for line in "$@"; do echo "$line"; done
    } | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
    # pg_ctl returns at once (no -w); readiness is polled below.
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$WORK/postgres.log" start >/dev/null ||
        {
            show_log "$WORK/postgres.log"
            die "pg_ctl start failed"
        }
    local deadline=$((SECONDS + 60))
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; do
        if ((SECONDS >= deadline)); then
            show_log "$WORK/postgres.log"
            die "PostgreSQL did not become ready on port $PG_PORT"
        fi
        sleep 0.1
    done
    psql_super <<SQL
CREATE ROLE $APP_USER LOGIN PASSWORD '$APP_PASSWORD';
CREATE DATABASE $APP_DB OWNER $APP_USER;
SQL
    note "role $APP_USER/$APP_PASSWORD owns database $APP_DB (scram-sha-256)"
}

# The PgBouncer-format userlist both poolers read: the plaintext password, so that the
# pooler can log in to PostgreSQL with SCRAM and check clients with md5.
write_userlist() {
    printf '"%s" "%s"\n' "$APP_USER" "$APP_PASSWORD" >"$WORK/userlist.txt"
    is_root && chown "$PG_OS_USER" "$WORK/userlist.txt"
    chmod 640 "$WORK/userlist.txt"
}

# start_pgring SHARDS POOL_SIZE: writes $WORK/pgring.toml and starts $PGRING_BIN
# (default target/release/pgring).
start_pgring() {
    local shards=$1 pool_size=$2
    PGRING_PORT=$(free_port)
    [[ -f "$WORK/userlist.txt" ]] || write_userlist
    cat >"$WORK/pgring.toml" <<TOML
# Written by bench/lib.sh: the same pool settings as the PgBouncer run.
[pooler]
listen_addr = "127.0.0.1"
listen_port = $PGRING_PORT
unix_socket_dir = ""
shards = $shards
pool_mode = "transaction"
default_pool_size = $pool_size
max_client_conn = 2000
auth_type = "md5"
auth_file = "$WORK/userlist.txt"
shutdown_timeout = 5

[databases]
$APP_DB = { host = "127.0.0.1", port = $PG_PORT, dbname = "$APP_DB" }
TOML
    log "starting pgring on port $PGRING_PORT ($shards shard(s), transaction pooling, pool size $pool_size, md5)"
    "${PGRING_BIN:-$REPO_ROOT/target/release/pgring}" --config "$WORK/pgring.toml" >"$WORK/pgring.log" 2>&1 &
    PGRING_PID=$!
    wait_sql_ready "$PGRING_PORT" "$PGRING_PID" "$WORK/pgring.log" 30 pgring
    note "pgring is up (pid $PGRING_PID)"
}

# start_pgbouncer POOL_SIZE: writes $WORK/pgbouncer.ini and starts PgBouncer (as the
# unprivileged user when root: PgBouncer refuses to run as root).
start_pgbouncer() {
    local pool_size=$1
    find_pgbouncer
    PGBOUNCER_PORT=$(free_port)
    [[ -f "$WORK/userlist.txt" ]] || write_userlist
    local dir=$WORK/pgbouncer
    as_pg mkdir -p "$dir"
    cat <<INI | as_pg tee "$dir/pgbouncer.ini" >/dev/null
; Written by bench/lib.sh: the same pool settings as the pgring run.
[databases]
$APP_DB = host=127.0.0.1 port=$PG_PORT dbname=$APP_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = md5
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $pool_size
max_client_conn = 2000
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
    log "starting PgBouncer on port $PGBOUNCER_PORT ($("$PGBOUNCER_BIN" --version | head -n1), transaction pooling, pool size $pool_size, md5)"
    as_pg "$PGBOUNCER_BIN" -d "$dir/pgbouncer.ini" >"$WORK/pgbouncer.stderr" 2>&1 || {
        show_log "$WORK/pgbouncer.stderr"
        show_log "$dir/pgbouncer.log"
        die "pgbouncer failed to start"
    }
    # -d: the daemon writes its pid file before it listens; poll for it.
    local deadline=$((SECONDS + 20))
    until [[ -s "$dir/pgbouncer.pid" ]]; do
        if ((SECONDS >= deadline)); then
            show_log "$dir/pgbouncer.log"
            die "pgbouncer wrote no pid file"
        fi
        sleep 0.1
    done
    PGBOUNCER_PID=$(<"$dir/pgbouncer.pid")
    wait_sql_ready "$PGBOUNCER_PORT" "$PGBOUNCER_PID" "$dir/pgbouncer.log" 30 pgbouncer
    note "pgbouncer is up (pid $PGBOUNCER_PID)"
}

# launch_pgring CONFIG LOG PORT NAME: starts ${PGRING_BIN:-target/release/pgring} with a
# config written by the caller, waits until it answers SQL on PORT, sets $LAUNCHED_PID.
# The process is stopped on exit (LIB_EXTRA_PIDS) unless stopped earlier with stop_pid.
launch_pgring() {
    local config=$1 logfile=$2 port=$3 name=$4
    "${PGRING_BIN:-$REPO_ROOT/target/release/pgring}" --config "$config" >"$logfile" 2>&1 &
    LAUNCHED_PID=$!
    LIB_EXTRA_PIDS+=("$LAUNCHED_PID")
    wait_sql_ready "$port" "$LAUNCHED_PID" "$logfile" 30 "$name"
}

# launch_pgbouncer INI PORT NAME: starts PgBouncer as a daemon (as $PG_OS_USER when root)
# with an ini written by the caller, which must set `pidfile` and `logfile`; waits until it
# answers SQL on PORT and sets $LAUNCHED_PID. Stopped on exit like launch_pgring's.
launch_pgbouncer() {
    local ini=$1 port=$2 name=$3
    local pidfile logfile
    pidfile=$(sed -n 's/^pidfile = //p' "$ini")
    logfile=$(sed -n 's/^logfile = //p' "$ini")
    find_pgbouncer
    rm -f "$pidfile"
    # runuser goes through PAM, whose pam_limits resets the soft open-files limit (to 1024,
    # typically): raise it again to the hard limit, which the caller may have set (ulimit -n).
    # shellcheck disable=SC2016
    as_pg bash -c 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"' pgbouncer \
        "$PGBOUNCER_BIN" -d "$ini" >"$ini.stderr" 2>&1 || {
        show_log "$ini.stderr"
        show_log "$logfile"
        die "$name failed to start"
    }
    local deadline=$((SECONDS + 20))
    until [[ -s "$pidfile" ]]; do
        if ((SECONDS >= deadline)); then
            show_log "$logfile"
            die "$name wrote no pid file"
        fi
        sleep 0.1
    done
    LAUNCHED_PID=$(<"$pidfile")
    LIB_EXTRA_PIDS+=("$LAUNCHED_PID")
    wait_sql_ready "$port" "$LAUNCHED_PID" "$logfile" 30 "$name"
}

# make_tls_certs DIR: an ECDSA P-256 CA (DIR/ca.crt) and a server certificate for 127.0.0.1
# and localhost signed by it (DIR/server.crt, key DIR/server.key, PKCS#8, mode 0600), made
# with the openssl CLI. Owned by $PG_OS_USER when root, so that PostgreSQL and PgBouncer
# may read the key too.
make_tls_certs() {
    local dir=$1
    command -v openssl >/dev/null || die "openssl is needed for the certificates (apt-get install openssl)"
    mkdir -p "$dir"
    log "generating an ECDSA P-256 CA and server certificate (openssl) in $dir"
    (
        cd "$dir"
        openssl ecparam -name prime256v1 -genkey -noout -out ca.key.sec1 &&
            openssl pkcs8 -topk8 -nocrypt -in ca.key.sec1 -out ca.key &&
            openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=pgring bench CA" \
                -addext "basicConstraints=critical,CA:TRUE" \
                -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt &&
            openssl ecparam -name prime256v1 -genkey -noout -out server.key.sec1 &&
            openssl pkcs8 -topk8 -nocrypt -in server.key.sec1 -out server.key &&
            openssl req -new -key server.key -subj "/CN=127.0.0.1" -out server.csr &&
            printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
                "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >server.ext &&
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
                -sha256 -extfile server.ext -out server.crt &&
            rm -f ca.key.sec1 server.key.sec1 server.csr server.ext
    ) >"$dir/openssl.log" 2>&1 || {
        show_log "$dir/openssl.log"
        die "openssl failed"
    }
    chmod 600 "$dir/server.key" "$dir/ca.key"
    is_root && chown -R "$PG_OS_USER" "$dir"
    note "$(openssl x509 -in "$dir/server.crt" -noout -subject), key $(openssl pkey -in "$dir/server.key" -noout -text 2>/dev/null | grep -m1 -o 'NIST CURVE: .*\|ASN1 OID: .*')"
}

# CPU time of process $1 in clock ticks: utime + stime (fields 14 and 15 of /proc/PID/stat,
# which cover all its threads, live and exited). The fields are counted after the `)` that
# ends the command name, which may itself hold spaces.
cpu_ticks() {
    local line rest
    read -r line <"/proc/$1/stat" || return 1
    rest=${line##*) }
    # rest starts at field 3 (state): field 14 is the 12th word, field 15 the 13th.
    local -a f
    read -r -a f <<<"$rest"
    echo $((f[11] + f[12]))
}

# Prints a single field of pgbench's summary: `pgbench_field FILE 'regex with one group'`.
pgbench_field() {
    sed -nE "s/$2/\\1/p" "$1" | head -n1
}
