"""psycopg 3 (libpq underneath) through pgring: run by tests/drivers.rs.

Settings come from the environment (driver_settings.py); every check prints
"ok <name>" when it passed, or "FAIL <name>: <error>", and the next check runs; any
failure makes the exit status non-zero.
"""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg

from driver_settings import (
    CA,
    CLIENTS,
    FOREIGN_CA,
    HOST,
    PASSWORD,
    PORT,
    PREPARED_CLIENTS,
    PREPARED_DB,
    PREPARED_ROUNDS,
    SESSION_DB,
    TX_DB,
    USER,
    all_clients,
    check,
    expect_sqlstate,
    run_checks,
)


def settings(db, ca=CA, connect_timeout=10):
    return dict(
        host=HOST,
        port=PORT,
        user=USER,
        password=PASSWORD,
        dbname=db,
        sslmode="verify-full",
        sslrootcert=ca,
        channel_binding="require",
        connect_timeout=connect_timeout,
    )


def connect(db=TX_DB, ca=CA, **kwargs):
    # psycopg's defaults, prepare_threshold=5 included: a statement run a sixth time on a
    # connection becomes a named server-side statement, which pgring keeps track of in
    # transaction pooling.
    return psycopg.connect(**settings(db, ca), **kwargs)


def tls():
    with connect(autocommit=True) as conn:
        check(conn.pgconn.ssl_in_use, "the connection is not encrypted")
        check(conn.execute("SELECT 1").fetchone() == (1,), "SELECT 1")
    # The certificate is checked: trusting another CA fails.
    try:
        connect(ca=FOREIGN_CA).close()
        raise AssertionError("a certificate from an unknown CA was accepted")
    except psycopg.OperationalError as e:
        check("certificate verify failed" in str(e), str(e))
    print("ok tls")


def types():
    big = "é" * 500_000  # 1 MB of UTF-8 as one parameter
    with connect(autocommit=True) as conn:
        row = conn.execute(
            "SELECT %s::int, %s::text, %s::text, %s::bytea, %s::float8, %s::timestamptz, length(%s::text)",
            (7, "pgring ✓", None, b"\x00\xff", 1.5, "2024-02-29 12:00:00+00", big),
        ).fetchone()
        check(row[0] == 7 and row[1] == "pgring ✓" and row[2] is None, f"scalars {row[:3]}")
        check(row[3] == b"\x00\xff" and row[4] == 1.5, f"bytea/float {row[3:5]}")
        check(row[5].year == 2024 and row[5].day == 29, f"timestamptz {row[5]}")
        check(row[6] == 500_000, f"length {row[6]}")
        echoed = conn.execute("SELECT %s::text", (big,)).fetchone()[0]
        check(echoed == big, "the 1 MB parameter did not come back intact")
    print("ok types")


def transactions():
    with connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS psycopg_items (id int PRIMARY KEY, note text)")
        conn.execute("TRUNCATE psycopg_items")
        conn.commit()
        conn.execute("INSERT INTO psycopg_items VALUES (1, 'kept')")
        conn.commit()
        conn.execute("INSERT INTO psycopg_items VALUES (2, 'rolled back')")
        conn.rollback()
        ids = [r[0] for r in conn.execute("SELECT id FROM psycopg_items ORDER BY id")]
        conn.commit()
        check(ids == [1], f"rows after commit and rollback: {ids}")
    print("ok transactions")


def errors_keep_the_connection():
    with connect() as conn:
        expect_sqlstate("22012", lambda: conn.execute("SELECT 1/0"))
        # The transaction is aborted now: the next statement fails until rollback.
        expect_sqlstate("25P02", lambda: conn.execute("SELECT 1"))
        conn.rollback()
        expect_sqlstate("23505", lambda: conn.execute("INSERT INTO psycopg_items VALUES (1, 'duplicate')"))
        conn.rollback()
        check(conn.execute("SELECT 2").fetchone() == (2,), "after the errors")
        conn.commit()
    print("ok errors")


def large_result():
    with connect(autocommit=True) as conn:
        rows = conn.execute("SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g").fetchall()
        check(len(rows) == 100_000 and rows[-1][0] == 100_000, f"{len(rows)} rows")
    print("ok large")


def copy():
    with connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS psycopg_copy (id int, note text)")
        conn.execute("TRUNCATE psycopg_copy")
        with conn.cursor().copy("COPY psycopg_copy (id, note) FROM STDIN") as cp:
            for i in range(10_000):
                cp.write_row((i, f"row {i}"))
        conn.commit()
        out = bytearray()
        with conn.cursor().copy("COPY (SELECT id FROM psycopg_copy ORDER BY id) TO STDOUT") as cp:
            for chunk in cp:
                out += chunk
        conn.commit()
        lines = bytes(out).decode().splitlines()
        check(len(lines) == 10_000 and lines[-1] == "9999", f"{len(lines)} lines copied out")
        # A COPY that fails half-way (bad data) leaves the connection usable.
        def bad_copy():
            with conn.cursor().copy("COPY psycopg_copy (id) FROM STDIN") as cp:
                cp.write(b"1\nnot a number\n")

        expect_sqlstate("22P02", bad_copy)
        conn.rollback()
        check(conn.execute("SELECT count(*) FROM psycopg_copy").fetchone() == (10_000,), "count")
        conn.commit()
    print("ok copy")


def notices():
    seen = []
    with connect(autocommit=True) as conn:
        conn.add_notice_handler(lambda d: seen.append(d.message_primary))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
    check(seen == ["hello from plpgsql"], f"notices {seen}")
    print("ok notice")


def pipeline():
    with connect(autocommit=True) as conn:
        with conn.pipeline():
            curs = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(50)]
        got = [c.fetchone()[0] for c in curs]
        check(got == [i * 2 for i in range(50)], "pipelined results out of order")
    print("ok pipeline")


def cancel():
    with connect(autocommit=True) as conn:
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        start = time.monotonic()
        try:
            expect_sqlstate("57014", lambda: conn.execute("SELECT pg_sleep(30)"))
        finally:
            timer.cancel()
        elapsed = time.monotonic() - start
        check(elapsed < 10, f"the cancel took {elapsed:.1f} s")
        check(conn.execute("SELECT 3").fetchone() == (3,), "after the cancel")
    print("ok cancel")


def one_client(n):
    # Each transaction marks its server session and checks that every statement of the
    # transaction saw that mark and the same backend, while other clients share the pool.
    with connect() as conn:
        for i in range(20):
            mark = f"{n}-{i}"
            pid = conn.execute(
                "SELECT pg_backend_pid() FROM set_config('pgring.mark', %s, true)", (mark,)
            ).fetchone()[0]
            got = conn.execute("SELECT current_setting('pgring.mark'), pg_backend_pid()").fetchone()
            conn.commit()
            check(got == (mark, pid), f"client {n} expected {(mark, pid)}, saw {got}")


def concurrent():
    with ThreadPoolExecutor(max_workers=CLIENTS) as ex:
        list(ex.map(one_client, range(CLIENTS)))
    print("ok concurrent")


def session_prepared():
    # Session pooling keeps one server per client: psycopg's prepared statements work.
    with connect(db=SESSION_DB, autocommit=True, prepare_threshold=0) as conn:
        for i in range(10):
            got = conn.execute("SELECT %s::int + 1", (i,), prepare=True).fetchone()[0]
            check(got == i + 1, f"{got}")
        names = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
        check(names >= 1, "no server-side prepared statement")
    print("ok session_prepared")


# Run by every connection of the prepared_tx checks, with different parameters each time.
SHARED_SQL = "SELECT %s::int * 2 AS doubled, %s::text AS label"


async def prepared_client(n, **kwargs):
    # Many more connections than the pool's 5 server connections, each with one statement
    # text that every connection prepares and one of its own, each run PREPARED_ROUNDS
    # times (past the prepare threshold), alone or two in a transaction, on whichever
    # server connection the pool hands out.
    conn = await psycopg.AsyncConnection.connect(
        **settings(PREPARED_DB, connect_timeout=60), autocommit=True, **kwargs
    )
    try:
        own_sql = f"SELECT %s::bigint - {n} AS v, 'client {n}'::text AS who"
        for i in range(PREPARED_ROUNDS):
            value, label = n * 1000 + i, f"c{n}-{i}"

            async def both():
                got = await (await conn.execute(SHARED_SQL, (value, label))).fetchone()
                check(got == (2 * value, label), f"client {n} round {i}: shared statement gave {got}")
                got = await (await conn.execute(own_sql, (i,))).fetchone()
                check(got == (i - n, f"client {n}"), f"client {n} round {i}: own statement gave {got}")

            if i % 4 == 3:
                async with conn.transaction():
                    await both()
            else:
                await both()
        # psycopg prepared both (its record of the names it gave them; no public API).
        names = len(conn._prepared._names)
        check(names >= 2, f"client {n}: {names} prepared statements")
    finally:
        await conn.close()


def prepared_tx():
    # The default prepare_threshold: prepared at the sixth execution.
    asyncio.run(all_clients(PREPARED_CLIENTS, prepared_client))
    print("ok prepared_tx")


def prepared_tx_threshold0():
    # prepare_threshold=0: prepared at the first execution.
    asyncio.run(all_clients(PREPARED_CLIENTS, lambda n: prepared_client(n, prepare_threshold=0)))
    print("ok prepared_tx_threshold0")


run_checks(
    {
        "tls": tls,
        "types": types,
        "transactions": transactions,
        "errors": errors_keep_the_connection,
        "large": large_result,
        "copy": copy,
        "notice": notices,
        "pipeline": pipeline,
        "cancel": cancel,
        "concurrent": concurrent,
        "session_prepared": session_prepared,
        "prepared_tx": prepared_tx,
        "prepared_tx_threshold0": prepared_tx_threshold0,
    }
)
