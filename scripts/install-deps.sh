#!/usr/bin/env bash
# Installs what pgring's tests and demo need, when it is missing (Debian/Ubuntu, apt):
#   - PostgreSQL server + client (initdb, postgres, pg_isready, psql, pgbench) for the
#     integration tests, which start their own throwaway clusters;
#   - pgbouncer, the benchmark's reference point;
#   - ss (iproute2), with which a test reads the backlog of pgring's listening sockets;
#   - openssl, with which the benchmark makes its certificate.
# Idempotent: runs `apt-get update` (once) only when something is missing. Uses sudo when
# not root. Never starts services: Debian's own PostgreSQL cluster / pgbouncer service are
# left alone if they exist, and nothing in the tests depends on them.
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*"; }

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

if ((${#missing[@]} == 0)); then
    log "nothing to install"
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
log "done"
