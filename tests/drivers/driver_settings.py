"""What tests/drivers.rs passes to the Python driver programs, and their check helpers."""

import asyncio
import os
import sys
import traceback

HOST = os.environ["PGRING_HOST"]
PORT = int(os.environ["PGRING_PORT"])
USER = os.environ["PGRING_USER"]
PASSWORD = os.environ["PGRING_PASSWORD"]
TX_DB = os.environ["PGRING_TX_DB"]
SESSION_DB = os.environ["PGRING_SESSION_DB"]
CA = os.environ["PGRING_CA"]
FOREIGN_CA = os.environ["PGRING_FOREIGN_CA"]
CLIENTS = int(os.environ.get("PGRING_CLIENTS", "16"))
# The prepared-statement checks: a transaction-pooled database with a small pool, and how
# many connections share it.
PREPARED_DB = os.environ["PGRING_PREPARED_DB"]
PREPARED_CLIENTS = int(os.environ.get("PGRING_PREPARED_CLIENTS", "150"))
# Executions of each statement per connection: well past every prepare threshold.
PREPARED_ROUNDS = 20


def check(cond, what):
    """Fails the program with `what` unless `cond` holds."""
    if not cond:
        raise AssertionError(what)


def _sqlstate_of(error, state):
    got = getattr(error, "sqlstate", None)
    if got is None:
        raise error
    check(got == state, f"expected SQLSTATE {state}, got {got}: {error}")


def expect_sqlstate(state, run):
    """Calls `run()`, which must fail with SQLSTATE `state` (psycopg's and asyncpg's
    errors carry it as `.sqlstate`)."""
    try:
        run()
    except Exception as e:  # noqa: BLE001 - any driver error; others are re-raised
        _sqlstate_of(e, state)
        return
    raise AssertionError(f"expected SQLSTATE {state}, the statement succeeded")


async def expect_sqlstate_async(state, awaitable):
    """`expect_sqlstate` for an awaitable."""
    try:
        await awaitable
    except Exception as e:  # noqa: BLE001 - any driver error; others are re-raised
        _sqlstate_of(e, state)
        return
    raise AssertionError(f"expected SQLSTATE {state}, the statement succeeded")


def _describe(error):
    state = getattr(error, "sqlstate", None)
    return f"{type(error).__name__}{f' (SQLSTATE {state})' if state else ''}: {error}"


async def all_clients(count, client):
    """Runs `client(n)` for n in 0..count concurrently, lets every one finish, and fails
    with how many failed and the first few distinct errors."""
    results = await asyncio.gather(*(client(n) for n in range(count)), return_exceptions=True)
    failed = [(n, r) for n, r in enumerate(results) if isinstance(r, BaseException)]
    if failed:
        kinds = {}
        for n, e in failed:
            kinds.setdefault(_describe(e), n)
        shown = "; ".join(f"client {n}: {what}" for what, n in list(kinds.items())[:5])
        raise AssertionError(f"{len(failed)} of {count} clients failed: {shown}") from failed[0][1]


def _failed(name, error):
    print(f"FAIL {name}: {_describe(error)}", flush=True)
    traceback.print_exception(error, file=sys.stderr)


def run_checks(checks):
    """Runs every check of `checks` (name: function), even after one failed: each prints
    "ok <name>" when it passes, a failure prints "FAIL <name>: <error>". Exits non-zero if
    any failed."""
    failures = 0
    for name, step in checks.items():
        try:
            step()
        except Exception as e:  # noqa: BLE001 - reported, then the next check runs
            failures += 1
            _failed(name, e)
    sys.exit(1 if failures else 0)


async def run_checks_async(checks):
    """`run_checks` for coroutine functions; returns the number of failed checks."""
    failures = 0
    for name, step in checks.items():
        try:
            await step()
        except Exception as e:  # noqa: BLE001 - reported, then the next check runs
            failures += 1
            _failed(name, e)
    return failures
