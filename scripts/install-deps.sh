#!/usr/bin/env bash
# Installs what pgring's tests and demo need, when it is missing (Debian/Ubuntu, apt):
#   - PostgreSQL server + client (initdb, postgres, pg_isready, psql, pgbench) for the
#     integration tests, which start their own throwaway clusters;
#   - pgbouncer, the benchmark's reference point;
#   - ss (iproute2), with which a test reads the backlog of pgring's listening sockets;
#   - openssl, with which the benchmark makes its certificate;
#   - the client drivers of tests/drivers.rs: psycopg 3 and asyncpg (Debian's python3
#     packages), pgjdbc with a JDK (its test is a single-file Java source), and
#     node-postgres from npm at the version locked in tests/drivers/node (with Debian's
#     nodejs and npm when there is no node at all). `--no-drivers` leaves these out (the
#     demo and the benchmarks do not use them).
# Idempotent: runs `apt-get update` (once) only when something is missing. Uses sudo when
# not root. Never starts services: Debian's own PostgreSQL cluster / pgbouncer service are
# left alone if they exist, and nothing in the tests depends on them.
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*"; }

drivers=1
case "${1:-}" in
    --no-drivers) drivers=0 ;;
    "") ;;
    *)
        log "unknown argument: $1 (the only one is --no-drivers)" >&2
        exit 2
        ;;
esac

missing=()

# The server: any /usr/lib/postgresql/<version>/bin with postgres and initdb.
have_server=""
for bin in /usr/lib/postgresql/*/bin; do
    if [[ -x "$bin/postgres" && -x "$bin/initdb" ]]; then
        have_server="$bin"
    fi
done
if [[ -n "$have_server" ]]; then
    log "PostgreSQL server: found in $have_server"
else
    log "PostgreSQL server: missing"
    missing+=(postgresql postgresql-contrib)
fi

# The clients (pgbench ships with the server package on Debian, psql with the client).
for tool in psql pg_isready pgbench; do
    if command -v "$tool" >/dev/null 2>&1 || [[ -n "$have_server" && -x "$have_server/$tool" ]]; then
        log "$tool: found"
    else
        log "$tool: missing"
        case "$tool" in
            pgbench) missing+=(postgresql postgresql-contrib) ;;
            *) missing+=(postgresql-client) ;;
        esac
    fi
done

if command -v pgbouncer >/dev/null 2>&1 || [[ -x /usr/sbin/pgbouncer ]]; then
    log "pgbouncer: found"
else
    log "pgbouncer: missing"
    missing+=(pgbouncer)
fi

for tool in ss:iproute2 openssl:openssl; do
    if command -v "${tool%%:*}" >/dev/null 2>&1; then
        log "${tool%%:*}: found"
    else
        log "${tool%%:*}: missing"
        missing+=("${tool#*:}")
    fi
done

if ((drivers)); then
    # Debian's interpreter: its dist-packages are where python3-psycopg/asyncpg install.
    for module in psycopg:python3-psycopg asyncpg:python3-asyncpg; do
        if [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c "import ${module%%:*}" 2>/dev/null; then
            log "python ${module%%:*}: found"
        else
            log "python ${module%%:*}: missing"
            missing+=("${module#*:}")
        fi
    done

    if [[ -f /usr/share/java/postgresql.jar ]]; then
        log "pgjdbc: found"
    else
        log "pgjdbc: missing"
        missing+=(libpostgresql-jdbc-java)
    fi
    # `java File.java` compiles in memory: it needs a JDK's compiler, not only a runtime.
    if command -v javac >/dev/null 2>&1; then
        log "JDK: found"
    else
        log "JDK: missing"
        missing+=(default-jdk-headless)
    fi

    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
        log "node and npm: found"
    else
        log "node and npm: missing"
        missing+=(nodejs npm)
    fi
fi

# node-postgres, from npm into tests/drivers/node/node_modules, as package-lock.json says.
install_node_postgres() {
    local dir
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/drivers/node" && pwd)"
    local want have=""
    want=$(sed -n 's/.*"pg": *"\([^"]*\)".*/\1/p' "$dir/package.json")
    if [[ -f "$dir/node_modules/pg/package.json" ]]; then
        have=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$dir/node_modules/pg/package.json" | head -n 1)
    fi
    if [[ -n "$want" && "$have" == "$want" ]]; then
        log "node-postgres $have: found in $dir/node_modules"
        return
    fi
    log "node-postgres: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
}

if ((${#missing[@]} == 0)); then
    log "no packages to install"
    if ((drivers)); then install_node_postgres; fi
    exit 0
fi

# Deduplicate.
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if ! command -v apt-get >/dev/null 2>&1; then
    log "no apt-get here: install these yourself: ${missing[*]}" >&2
    exit 1
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        log "not root and no sudo: install these yourself: ${missing[*]}" >&2
        exit 1
    fi
fi

# Keep package scripts from starting services (Debian's cluster on 5432, pgbouncer on 6432):
# a policy-rc.d that refuses, unless the system already has one (containers usually do).
policy=/usr/sbin/policy-rc.d
remove_policy=""
if [[ ! -e $policy ]]; then
    log "adding a temporary $policy so that no service starts"
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    remove_policy=1
fi
cleanup() {
    if [[ -n "$remove_policy" ]]; then
        "${sudo[@]}" rm -f "$policy"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
"${sudo[@]}" apt-get update -qq
log "apt-get install ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}"
if ((drivers)); then install_node_postgres; fi
log "done"
