"""asyncpg (its own implementation of the protocol, binary formats) through pgring: run
by tests/drivers.rs.

Settings come from the environment (driver_settings.py); every check prints
"ok <name>" when it passed, or "FAIL <name>: <error>", and the next check runs; any
failure makes the exit status non-zero.
"""

import asyncio
import datetime
import ssl
import sys
import time

import asyncpg

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
    expect_sqlstate_async,
    run_checks_async,
)

# verify-full: the chain to the test CA and the host name.
TLS = ssl.create_default_context(cafile=CA)


async def connect(db=TX_DB, timeout=10, **kwargs):
    # asyncpg's defaults, its statement cache included (statement_cache_size=100): every
    # statement it runs is a named server-side statement, which pgring keeps track of in
    # transaction pooling.
    return await asyncpg.connect(
        host=HOST, port=PORT, user=USER, password=PASSWORD, database=db, ssl=TLS, timeout=timeout, **kwargs
    )


async def tls():
    # With an SSLContext asyncpg refuses a server that declines TLS; pgring requires it.
    conn = await connect()
    try:
        check(await conn.fetchval("SELECT 1") == 1, "SELECT 1")
    finally:
        await conn.close()
    # The certificate is checked: a context trusting another CA fails.
    try:
        await asyncpg.connect(
            host=HOST, port=PORT, user=USER, password=PASSWORD, database=TX_DB,
            ssl=ssl.create_default_context(cafile=FOREIGN_CA), timeout=10,
        )
        raise AssertionError("a certificate from an unknown CA was accepted")
    except ssl.SSLCertVerificationError:
        pass
    print("ok tls")


async def types():
    big = "é" * 500_000
    conn = await connect()
    try:
        row = await conn.fetchrow(
            "SELECT $1::int, $2::text, $3::text, $4::bytea, $5::float8, $6::timestamptz, length($7::text)",
            7, "pgring ✓", None, b"\x00\xff", 1.5,
            datetime.datetime(2024, 2, 29, 12, tzinfo=datetime.timezone.utc), big,
        )
        check(tuple(row[:3]) == (7, "pgring ✓", None), f"scalars {tuple(row[:3])}")
        check(row[3] == b"\x00\xff" and row[4] == 1.5, f"bytea/float {tuple(row[3:5])}")
        check(row[5].year == 2024 and row[5].day == 29, f"timestamptz {row[5]}")
        check(row[6] == 500_000, f"length {row[6]}")
        check(await conn.fetchval("SELECT $1::text", big) == big, "the 1 MB parameter did not come back intact")
    finally:
        await conn.close()
    print("ok types")


async def transactions():
    conn = await connect()
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS asyncpg_items (id int PRIMARY KEY, note text)")
        await conn.execute("TRUNCATE asyncpg_items")
        async with conn.transaction():
            await conn.execute("INSERT INTO asyncpg_items VALUES (1, 'kept')")
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO asyncpg_items VALUES (2, 'rolled back')")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM asyncpg_items ORDER BY id")]
        check(ids == [1], f"rows after commit and rollback: {ids}")
    finally:
        await conn.close()
    print("ok transactions")


async def errors():
    conn = await connect()
    try:
        await expect_sqlstate_async("22012", conn.fetchval("SELECT 1/0"))
        tx = conn.transaction()
        await tx.start()
        await expect_sqlstate_async("23505", conn.execute("INSERT INTO asyncpg_items VALUES (1, 'duplicate')"))
        await expect_sqlstate_async("25P02", conn.fetchval("SELECT 1"))
        await tx.rollback()
        check(await conn.fetchval("SELECT 2") == 2, "after the errors")
    finally:
        await conn.close()
    print("ok errors")


async def large_result():
    conn = await connect()
    try:
        rows = await conn.fetch("SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g")
        check(len(rows) == 100_000 and rows[-1][0] == 100_000, f"{len(rows)} rows")
    finally:
        await conn.close()
    print("ok large")


async def copy():
    conn = await connect()
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS asyncpg_copy (id int, note text)")
        await conn.execute("TRUNCATE asyncpg_copy")
        await conn.copy_records_to_table(
            "asyncpg_copy", records=[(i, f"row {i}") for i in range(10_000)], columns=["id", "note"]
        )
        check(await conn.fetchval("SELECT count(*) FROM asyncpg_copy") == 10_000, "count after COPY in")
        out = []

        async def sink(chunk):
            out.append(chunk)

        await conn.copy_from_query("SELECT id FROM asyncpg_copy ORDER BY id", output=sink)
        lines = b"".join(out).decode().splitlines()
        check(len(lines) == 10_000 and lines[-1] == "9999", f"{len(lines)} lines copied out")
    finally:
        await conn.close()
    print("ok copy")


async def notices():
    seen = []
    conn = await connect()
    try:
        conn.add_log_listener(lambda _conn, msg: seen.append(msg.message))
        await conn.execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        await asyncio.sleep(0.1)
    finally:
        await conn.close()
    check(seen == ["hello from plpgsql"], f"notices {seen}")
    print("ok notice")


async def pipeline():
    # executemany sends every Bind/Execute before one Sync.
    conn = await connect()
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS asyncpg_many (id int)")
        await conn.execute("TRUNCATE asyncpg_many")
        await conn.executemany("INSERT INTO asyncpg_many VALUES ($1)", [(i,) for i in range(500)])
        check(await conn.fetchval("SELECT sum(id) FROM asyncpg_many") == sum(range(500)), "sum")
    finally:
        await conn.close()
    print("ok pipeline")


async def cancel():
    # A timeout makes asyncpg send a CancelRequest on a new connection, which may land on
    # another shard of pgring than the query's.
    conn = await connect()
    try:
        start = time.monotonic()
        try:
            await conn.execute("SELECT pg_sleep(30)", timeout=0.5)
            raise AssertionError("pg_sleep(30) was not cancelled")
        except asyncio.TimeoutError:
            pass
        elapsed = time.monotonic() - start
        check(elapsed < 10, f"the cancel took {elapsed:.1f} s")
        check(await conn.fetchval("SELECT 3") == 3, "after the cancel")
    finally:
        await conn.close()
    print("ok cancel")


async def one_client(n):
    conn = await connect()
    try:
        for i in range(20):
            mark = f"{n}-{i}"
            async with conn.transaction():
                pid = await conn.fetchval("SELECT pg_backend_pid() FROM set_config('pgring.mark', $1, true)", mark)
                got = tuple(await conn.fetchrow("SELECT current_setting('pgring.mark'), pg_backend_pid()"))
            check(got == (mark, pid), f"client {n} expected {(mark, pid)}, saw {got}")
    finally:
        await conn.close()


async def concurrent():
    await asyncio.gather(*(one_client(n) for n in range(CLIENTS)))
    print("ok concurrent")


async def session_prepared():
    # Session pooling keeps one server per client: the statements asyncpg prepares stay
    # on the server connection, where pg_prepared_statements shows them.
    conn = await connect(db=SESSION_DB)
    try:
        stmt = await conn.prepare("SELECT $1::int + 1")
        for i in range(10):
            check(await stmt.fetchval(i) == i + 1, "prepared statement result")
        check(await conn.fetchval("SELECT count(*) FROM pg_prepared_statements") >= 1, "no prepared statement")
    finally:
        await conn.close()
    print("ok session_prepared")


# Run by every connection of prepared_tx, with different parameters each time.
SHARED_SQL = "SELECT $1::int * 2 AS doubled, $2::text AS label"


async def prepared_client(n):
    # Many more connections than the pool's 5 server connections, each with statements
    # from the default statement cache (named, prepared at their first execution): one
    # text that every connection prepares, one of its own, each run PREPARED_ROUNDS times,
    # alone or two in a transaction, on whichever server connection the pool hands out.
    conn = await connect(db=PREPARED_DB, timeout=60)
    try:
        own_sql = f"SELECT $1::bigint - {n} AS v, 'client {n}'::text AS who"
        for i in range(PREPARED_ROUNDS):
            value, label = n * 1000 + i, f"c{n}-{i}"

            async def both():
                got = tuple(await conn.fetchrow(SHARED_SQL, value, label))
                check(got == (2 * value, label), f"client {n} round {i}: shared statement gave {got}")
                got = tuple(await conn.fetchrow(own_sql, i))
                check(got == (i - n, f"client {n}"), f"client {n} round {i}: own statement gave {got}")

            if i % 4 == 3:
                async with conn.transaction():
                    await both()
            else:
                await both()
        # Both statements stayed in the cache: they ran as named statements throughout.
        check(len(conn._stmt_cache) >= 2, f"client {n}: {len(conn._stmt_cache)} cached statements")
    finally:
        await conn.close()


async def prepared_tx():
    await all_clients(PREPARED_CLIENTS, prepared_client)
    print("ok prepared_tx")


async def main():
    return await run_checks_async(
        {
            "tls": tls,
            "types": types,
            "transactions": transactions,
            "errors": errors,
            "large": large_result,
            "copy": copy,
            "notice": notices,
            "pipeline": pipeline,
            "cancel": cancel,
            "concurrent": concurrent,
            "session_prepared": session_prepared,
            "prepared_tx": prepared_tx,
        }
    )


sys.exit(1 if asyncio.run(main()) else 0)
