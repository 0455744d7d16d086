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
