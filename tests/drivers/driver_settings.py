"""What tests/drivers.rs passes to the Python driver programs, and their check helper."""

import os

HOST = os.environ["PGRING_HOST"]
PORT = int(os.environ["PGRING_PORT"])
USER = os.environ["PGRING_USER"]
PASSWORD = os.environ["PGRING_PASSWORD"]
TX_DB = os.environ["PGRING_TX_DB"]
SESSION_DB = os.environ["PGRING_SESSION_DB"]
CA = os.environ["PGRING_CA"]
FOREIGN_CA = os.environ["PGRING_FOREIGN_CA"]
CLIENTS = int(os.environ.get("PGRING_CLIENTS", "16"))


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
