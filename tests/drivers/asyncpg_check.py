"""asyncpg (its own implementation of the protocol, binary formats) through pgring: run
by tests/drivers.rs.

Settings come from the environment (driver_settings.py); every check prints
"ok <name>" when it passed, and any failure raises, so the exit status is non-zero.
"""

import asyncio
import datetime
import ssl
import time

import asyncpg

from driver_settings import (
    CA,
    CLIENTS,
    FOREIGN_CA,
    HOST,
    PASSWORD,
    PORT,
    SESSION_DB,
    TX_DB,
    USER,
    check,
    expect_sqlstate_async,
)

# verify-full: the chain to the test CA and the host name.
TLS = ssl.create_default_context(cafile=CA)


async def connect(db=TX_DB, **kwargs):
    # Transaction pooling: no statement cache, so no named server-side statements, as
    # with any pooler that does not track them.
    kwargs.setdefault("statement_cache_size", 0)
    return await asyncpg.connect(
        host=HOST, port=PORT, user=USER, password=PASSWORD, database=db, ssl=TLS, timeout=10, **kwargs
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
    # Session pooling keeps one server per client: asyncpg's statement cache works.
    conn = await connect(db=SESSION_DB, statement_cache_size=100)
    try:
        stmt = await conn.prepare("SELECT $1::int + 1")
        for i in range(10):
            check(await stmt.fetchval(i) == i + 1, "prepared statement result")
        check(await conn.fetchval("SELECT count(*) FROM pg_prepared_statements") >= 1, "no prepared statement")
    finally:
        await conn.close()
    print("ok session_prepared")


async def main():
    for step in (tls, types, transactions, errors, large_result, copy, notices, pipeline, cancel, concurrent, session_prepared):
        await step()


asyncio.run(main())
