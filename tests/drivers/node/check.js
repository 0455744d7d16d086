// node-postgres (pure JavaScript protocol) through pgring: run by tests/drivers.rs.
//
// Settings come from the environment (see tests/drivers.rs); every check prints
// "ok <name>" when it passed, or "FAIL <name>: <error>", and the next check runs; any
// failure makes the exit status non-zero.
'use strict'

const fs = require('fs')
const { Client, Pool, Query } = require('pg')

const env = process.env
const CLIENTS = Number(env.PGRING_CLIENTS || 16)
// The prepared-statement check: a transaction-pooled database with a small pool, how many
// connections share it, and how many times each runs each statement.
const PREPARED_CLIENTS = Number(env.PGRING_PREPARED_CLIENTS || 150)
const PREPARED_ROUNDS = 20

function config(db = env.PGRING_TX_DB, ca = env.PGRING_CA) {
  return {
    host: env.PGRING_HOST,
    port: Number(env.PGRING_PORT),
    user: env.PGRING_USER,
    password: env.PGRING_PASSWORD,
    database: db,
    // verify-full: Node checks the chain to the test CA and the host name.
    ssl: { ca: fs.readFileSync(ca), rejectUnauthorized: true },
    // SCRAM-SHA-256-PLUS: the proof is bound to pgring's certificate.
    enableChannelBinding: true,
    connectionTimeoutMillis: 10000,
  }
}

function check(cond, what) {
  if (!cond) throw new Error(what)
}

async function withClient(fn, db) {
  const c = new Client(config(db))
  await c.connect()
  try {
    return await fn(c)
  } finally {
    await c.end()
  }
}

async function expectError(promise, code) {
  try {
    await promise
  } catch (e) {
    check(e.code === code, `expected SQLSTATE ${code}, got ${e.code}: ${e.message}`)
    return
  }
  throw new Error(`expected SQLSTATE ${code}, the statement succeeded`)
}

async function tls() {
  await withClient(async (c) => {
    check(c.connection.stream.encrypted === true, 'the connection is not encrypted')
    const r = await c.query('SELECT 1 AS one')
    check(r.rows[0].one === 1, 'SELECT 1')
  })
  // The certificate is checked: trusting another CA fails.
  const foreign = new Client(config(env.PGRING_TX_DB, env.PGRING_FOREIGN_CA))
  try {
    await foreign.connect()
    throw new Error('a certificate from an unknown CA was accepted')
  } catch (e) {
    check(e.code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', `unexpected failure: ${e.code} ${e.message}`)
  }
  console.log('ok tls')
}

async function types() {
  const big = 'é'.repeat(500000)
  await withClient(async (c) => {
    const r = await c.query(
      'SELECT $1::int AS i, $2::text AS t, $3::text AS n, $4::bytea AS b, $5::float8 AS f, $6::timestamptz AS ts, length($7::text) AS len',
      [7, 'pgring ✓', null, Buffer.from([0, 255]), 1.5, new Date(Date.UTC(2024, 1, 29, 12)), big]
    )
    const row = r.rows[0]
    check(row.i === 7 && row.t === 'pgring ✓' && row.n === null, `scalars ${JSON.stringify(row)}`)
    check(row.b.equals(Buffer.from([0, 255])) && row.f === 1.5, 'bytea/float')
    check(row.ts.getUTCDate() === 29 && row.ts.getUTCFullYear() === 2024, `timestamptz ${row.ts}`)
    check(row.len === 500000, `length ${row.len}`)
    const echoed = await c.query('SELECT $1::text AS t', [big])
    check(echoed.rows[0].t === big, 'the 1 MB parameter did not come back intact')
  })
  console.log('ok types')
}

async function transactions() {
  await withClient(async (c) => {
    await c.query('CREATE TABLE IF NOT EXISTS node_items (id int PRIMARY KEY, note text)')
    await c.query('TRUNCATE node_items')
    await c.query('BEGIN')
    await c.query("INSERT INTO node_items VALUES (1, 'kept')")
    await c.query('COMMIT')
    await c.query('BEGIN')
    await c.query("INSERT INTO node_items VALUES (2, 'rolled back')")
    await c.query('ROLLBACK')
    const r = await c.query('SELECT id FROM node_items ORDER BY id')
    const ids = r.rows.map((x) => x.id)
    check(JSON.stringify(ids) === '[1]', `rows after commit and rollback: ${ids}`)
  })
  console.log('ok transactions')
}

async function errors() {
  await withClient(async (c) => {
    await expectError(c.query('SELECT 1/0'), '22012')
    await c.query('BEGIN')
    await expectError(c.query("INSERT INTO node_items VALUES (1, 'duplicate')"), '23505')
    await expectError(c.query('SELECT 1'), '25P02')
    await c.query('ROLLBACK')
    const r = await c.query('SELECT 2 AS two')
    check(r.rows[0].two === 2, 'after the errors')
  })
  console.log('ok errors')
}

async function large() {
  await withClient(async (c) => {
    const r = await c.query("SELECT g, repeat('x', 100) AS x FROM generate_series(1, 100000) g")
    check(r.rows.length === 100000 && r.rows[99999].g === 100000, `${r.rows.length} rows`)
  })
  console.log('ok large')
}

async function notices() {
  const seen = []
  await withClient(async (c) => {
    c.on('notice', (n) => seen.push(n.message))
    await c.query("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
  })
  check(JSON.stringify(seen) === '["hello from plpgsql"]', `notices ${JSON.stringify(seen)}`)
  console.log('ok notice')
}

async function cancel() {
  // node-postgres sends the CancelRequest over a new plaintext connection, as libpq did
  // before version 17: pgring must route it even though its clients must use TLS.
  await withClient(async (c) => {
    const start = Date.now()
    const query = new Query('SELECT pg_sleep(30)')
    const sleeping = new Promise((resolve, reject) => {
      query.on('end', resolve)
      query.on('error', reject)
    })
    c.query(query)
    await new Promise((resolve) => setTimeout(resolve, 500))
    new Client(config()).cancel(c, query)
    await expectError(sleeping, '57014')
    const elapsed = (Date.now() - start) / 1000
    check(elapsed < 10, `the cancel took ${elapsed} s`)
    const r = await c.query('SELECT 3 AS three')
    check(r.rows[0].three === 3, 'after the cancel')
  })
  console.log('ok cancel')
}

async function concurrent() {
  // Each transaction marks its server session and checks that every statement of the
  // transaction saw that mark and the same backend, while other clients share the pool.
  const pool = new Pool({ ...config(), max: CLIENTS })
  try {
    await Promise.all(
      Array.from({ length: CLIENTS }, async (_, n) => {
        const c = await pool.connect()
        try {
          for (let i = 0; i < 20; i++) {
            const mark = `${n}-${i}`
            await c.query('BEGIN')
            const a = await c.query("SELECT pg_backend_pid() AS pid FROM set_config('pgring.mark', $1, true)", [mark])
            const b = await c.query("SELECT current_setting('pgring.mark') AS mark, pg_backend_pid() AS pid")
            await c.query('COMMIT')
            const got = b.rows[0]
            check(got.mark === mark && got.pid === a.rows[0].pid, `client ${n} expected ${mark}, saw ${JSON.stringify(got)}`)
          }
        } finally {
          c.release()
        }
      })
    )
  } finally {
    await pool.end()
  }
  console.log('ok concurrent')
}

async function sessionPrepared() {
  // Session pooling keeps one server per client: named statements work.
  await withClient(async (c) => {
    for (let i = 0; i < 10; i++) {
      const r = await c.query({ name: 'plus_one', text: 'SELECT $1::int + 1 AS v', values: [i] })
      check(r.rows[0].v === i + 1, 'prepared statement result')
    }
    const r = await c.query('SELECT count(*)::int AS n FROM pg_prepared_statements')
    check(r.rows[0].n >= 1, 'no server-side prepared statement')
  }, env.PGRING_SESSION_DB)
  console.log('ok session_prepared')
}

function describe(e) {
  return `${e.code ? `SQLSTATE ${e.code}: ` : ''}${e.message}`
}

// Run by every connection of prepared_tx, with different parameters each time.
const SHARED_TEXT = 'SELECT $1::int * 2 AS doubled, $2::text AS label'

async function preparedClient(n) {
  // Named queries: node-postgres parses each name once per connection, then only binds
  // and executes it. Many more connections than the pool's 5 server connections, each
  // with the name `shared` for the same text and the name `own` for a text of its own (the
  // same name on every connection, another text), each run PREPARED_ROUNDS times, alone or
  // two in a transaction, on whichever server connection the pool hands out.
  const c = new Client({ ...config(env.PGRING_PREPARED_DB), connectionTimeoutMillis: 60000 })
  // A lost connection fails the pending query too; without a listener it would end the
  // program.
  c.on('error', () => {})
  await c.connect()
  try {
    const ownText = `SELECT $1::bigint - ${n} AS v, 'client ${n}'::text AS who`
    for (let i = 0; i < PREPARED_ROUNDS; i++) {
      const value = n * 1000 + i
      const label = `c${n}-${i}`
      const inTransaction = i % 4 === 3
      if (inTransaction) await c.query('BEGIN')
      const a = await c.query({ name: 'shared', text: SHARED_TEXT, values: [value, label] })
      check(a.rows.length === 1 && a.rows[0].doubled === 2 * value && a.rows[0].label === label,
        `client ${n} round ${i}: shared statement gave ${JSON.stringify(a.rows)}`)
      // bigint comes back as a string.
      const b = await c.query({ name: 'own', text: ownText, values: [i] })
      check(b.rows.length === 1 && b.rows[0].v === String(i - n) && b.rows[0].who === `client ${n}`,
        `client ${n} round ${i}: own statement gave ${JSON.stringify(b.rows)}`)
      if (inTransaction) await c.query('COMMIT')
    }
  } finally {
    await c.end()
  }
}

async function preparedTx() {
  const results = await Promise.allSettled(Array.from({ length: PREPARED_CLIENTS }, (_, n) => preparedClient(n)))
  const failed = results.map((r, n) => [n, r]).filter(([, r]) => r.status === 'rejected')
  if (failed.length > 0) {
    const kinds = new Map()
    for (const [n, r] of failed) if (!kinds.has(describe(r.reason))) kinds.set(describe(r.reason), n)
    const shown = [...kinds].slice(0, 5).map(([what, n]) => `client ${n}: ${what}`).join('; ')
    throw new Error(`${failed.length} of ${PREPARED_CLIENTS} clients failed: ${shown}`)
  }
  console.log('ok prepared_tx')
}

// Every check runs, even after one failed; any failure makes the exit status non-zero.
;(async () => {
  let failures = 0
  const checks = {
    tls,
    types,
    transactions,
    errors,
    large,
    notice: notices,
    cancel,
    concurrent,
    session_prepared: sessionPrepared,
    prepared_tx: preparedTx,
  }
  for (const [name, step] of Object.entries(checks)) {
    try {
      await step()
    } catch (e) {
      failures++
      console.log(`FAIL ${name}: ${describe(e)}`)
      console.error(e)
    }
  }
  process.exit(failures > 0 ? 1 : 0)
})()
