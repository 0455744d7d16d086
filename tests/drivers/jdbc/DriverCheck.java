// pgjdbc through pgring: run by tests/drivers.rs with
// `java -cp postgresql.jar DriverCheck.java` (single-file source launch).
//
// Settings come from the environment (see tests/drivers.rs); every check prints
// "ok <name>" when it passed, or "FAIL <name>: <error>", and the next check runs; any
// failure makes the exit status non-zero.

import java.io.StringReader;
import java.io.StringWriter;
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;
import org.postgresql.PGConnection;
import org.postgresql.PGStatement;
import org.postgresql.copy.CopyManager;

public class DriverCheck {
    static final Map<String, String> ENV = System.getenv();
    static final int CLIENTS = Integer.parseInt(ENV.getOrDefault("PGRING_CLIENTS", "16"));
    // The prepared-statement checks: a transaction-pooled database with a small pool, how
    // many connections share it, and how many times each runs each statement.
    static final int PREPARED_CLIENTS = Integer.parseInt(ENV.getOrDefault("PGRING_PREPARED_CLIENTS", "50"));
    static final int PREPARED_ROUNDS = 20;

    /** A connection to `db` trusting the CA in `ca`, with `properties` (name, value, ...). */
    static Connection open(String db, String ca, String... properties) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", ENV.get("PGRING_USER"));
        p.setProperty("password", ENV.get("PGRING_PASSWORD"));
        // verify-full: the chain to the test CA and the host name.
        p.setProperty("sslmode", "verify-full");
        p.setProperty("sslrootcert", ca);
        p.setProperty("connectTimeout", "10");
        // `properties` aside, pgjdbc's defaults, prepareThreshold=5 included: from its fifth
        // execution a PreparedStatement is a named server-side statement, which pgring keeps
        // track of in transaction pooling.
        for (int i = 0; i + 1 < properties.length; i += 2) p.setProperty(properties[i], properties[i + 1]);
        String url = "jdbc:postgresql://" + ENV.get("PGRING_HOST") + ":" + ENV.get("PGRING_PORT") + "/" + db;
        return DriverManager.getConnection(url, p);
    }

    static Connection connect(String db, String... properties) throws SQLException {
        return open(db, ENV.get("PGRING_CA"), properties);
    }

    static Connection connect() throws SQLException {
        return connect(ENV.get("PGRING_TX_DB"));
    }

    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    interface Body { void run() throws Exception; }

    static void expectState(String state, Body body) throws Exception {
        try {
            body.run();
        } catch (SQLException e) {
            check(state.equals(e.getSQLState()), "expected SQLSTATE " + state + ", got " + e.getSQLState() + ": " + e.getMessage());
            return;
        }
        throw new AssertionError("expected SQLSTATE " + state + ", the statement succeeded");
    }

    static long one(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            rs.next();
            return rs.getLong(1);
        }
    }

    static void tls() throws Exception {
        // sslmode=verify-full fails the connection rather than fall back to plaintext.
        try (Connection c = connect()) {
            check(one(c, "SELECT 1") == 1, "SELECT 1");
        }
        // The certificate is checked: trusting another CA fails.
        try (Connection c = open(ENV.get("PGRING_TX_DB"), ENV.get("PGRING_FOREIGN_CA"))) {
            throw new AssertionError("a certificate from an unknown CA was accepted");
        } catch (SQLException e) {
            check("08006".equals(e.getSQLState()) && e.getMessage().contains("SSL"), e.getSQLState() + ": " + e.getMessage());
        }
        System.out.println("ok tls");
    }

    static void types() throws Exception {
        String big = "é".repeat(500_000);
        try (Connection c = connect();
             PreparedStatement ps = c.prepareStatement(
                 "SELECT ?::int, ?::text, ?::text, ?::bytea, ?::float8, ?::timestamptz, length(?::text), ?::text")) {
            ps.setInt(1, 7);
            ps.setString(2, "pgring ✓");
            ps.setNull(3, Types.VARCHAR);
            ps.setBytes(4, new byte[] {0, (byte) 255});
            ps.setDouble(5, 1.5);
            ps.setTimestamp(6, Timestamp.from(java.time.Instant.parse("2024-02-29T12:00:00Z")));
            ps.setString(7, big);
            ps.setString(8, big);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                check(rs.getInt(1) == 7 && rs.getString(2).equals("pgring ✓") && rs.getString(3) == null, "scalars");
                check(Arrays.equals(rs.getBytes(4), new byte[] {0, (byte) 255}) && rs.getDouble(5) == 1.5, "bytea/float");
                check(rs.getTimestamp(6).toInstant().equals(java.time.Instant.parse("2024-02-29T12:00:00Z")), "timestamptz");
                check(rs.getInt(7) == 500_000, "length");
                check(rs.getString(8).equals(big), "the 1 MB parameter did not come back intact");
            }
        }
        System.out.println("ok types");
    }

    static void transactions() throws Exception {
        try (Connection c = connect(); Statement s = c.createStatement()) {
            s.execute("CREATE TABLE IF NOT EXISTS jdbc_items (id int PRIMARY KEY, note text)");
            s.execute("TRUNCATE jdbc_items");
            c.setAutoCommit(false);
            s.execute("INSERT INTO jdbc_items VALUES (1, 'kept')");
            c.commit();
            s.execute("INSERT INTO jdbc_items VALUES (2, 'rolled back')");
            c.rollback();
            check(one(c, "SELECT count(*) FROM jdbc_items") == 1, "rows after commit and rollback");
            check(one(c, "SELECT min(id) FROM jdbc_items") == 1, "the kept row");
            c.commit();
        }
        System.out.println("ok transactions");
    }

    static void errors() throws Exception {
        try (Connection c = connect(); Statement s = c.createStatement()) {
            expectState("22012", () -> s.execute("SELECT 1/0"));
            c.setAutoCommit(false);
            expectState("23505", () -> s.execute("INSERT INTO jdbc_items VALUES (1, 'duplicate')"));
            expectState("25P02", () -> s.execute("SELECT 1"));
            c.rollback();
            check(one(c, "SELECT 2") == 2, "after the errors");
            c.commit();
        }
        System.out.println("ok errors");
    }

    static void large() throws Exception {
        try (Connection c = connect(); Statement s = c.createStatement()) {
            // A fetch size needs a transaction: the rows come through a portal, 1000 at a time.
            c.setAutoCommit(false);
            s.setFetchSize(1000);
            long rows = 0, last = 0;
            try (ResultSet rs = s.executeQuery("SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g")) {
                while (rs.next()) {
                    rows++;
                    last = rs.getLong(1);
                }
            }
            c.commit();
            check(rows == 100_000 && last == 100_000, rows + " rows");
        }
        System.out.println("ok large");
    }

    static void copy() throws Exception {
        try (Connection c = connect(); Statement s = c.createStatement()) {
            s.execute("CREATE TABLE IF NOT EXISTS jdbc_copy (id int, note text)");
            s.execute("TRUNCATE jdbc_copy");
            StringBuilder in = new StringBuilder();
            for (int i = 0; i < 10_000; i++) in.append(i).append('\t').append("row ").append(i).append('\n');
            CopyManager copy = c.unwrap(PGConnection.class).getCopyAPI();
            long copied = copy.copyIn("COPY jdbc_copy (id, note) FROM STDIN", new StringReader(in.toString()));
            check(copied == 10_000, copied + " rows copied in");
            StringWriter out = new StringWriter();
            copy.copyOut("COPY (SELECT id FROM jdbc_copy ORDER BY id) TO STDOUT", out);
            String[] lines = out.toString().split("\n");
            check(lines.length == 10_000 && lines[9_999].equals("9999"), lines.length + " lines copied out");
        }
        System.out.println("ok copy");
    }

    static void notices() throws Exception {
        try (Connection c = connect(); Statement s = c.createStatement()) {
            s.execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$");
            SQLWarning w = s.getWarnings();
            check(w != null && w.getMessage().equals("hello from plpgsql"), "notice " + w);
        }
        System.out.println("ok notice");
    }

    static void batch() throws Exception {
        // A batch sends every Bind/Execute before one Sync.
        try (Connection c = connect(); Statement s = c.createStatement()) {
            s.execute("CREATE TABLE IF NOT EXISTS jdbc_batch (id int)");
            s.execute("TRUNCATE jdbc_batch");
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_batch VALUES (?)")) {
                for (int i = 0; i < 500; i++) {
                    ps.setInt(1, i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                check(counts.length == 500, counts.length + " batch results");
            }
            check(one(c, "SELECT sum(id) FROM jdbc_batch") == 124_750, "sum");
        }
        System.out.println("ok pipeline");
    }

    static void cancel() throws Exception {
        // The query timeout makes pgjdbc send a CancelRequest on a new connection, which may
        // land on another shard of pgring than the query's.
        try (Connection c = connect(); Statement s = c.createStatement()) {
            s.setQueryTimeout(1);
            long start = System.nanoTime();
            expectState("57014", () -> s.execute("SELECT pg_sleep(30)"));
            double elapsed = (System.nanoTime() - start) / 1e9;
            check(elapsed < 10, "the cancel took " + elapsed + " s");
            s.setQueryTimeout(0);
            check(one(c, "SELECT 3") == 3, "after the cancel");
        }
        System.out.println("ok cancel");
    }

    static void concurrent() throws Exception {
        // Each transaction marks its server session and checks that every statement of the
        // transaction saw that mark and the same backend, while other clients share the pool.
        ExecutorService pool = Executors.newFixedThreadPool(CLIENTS);
        List<Future<?>> done = new ArrayList<>();
        for (int n = 0; n < CLIENTS; n++) {
            final int client = n;
            done.add(pool.submit(() -> {
                try (Connection c = connect()) {
                    c.setAutoCommit(false);
                    for (int i = 0; i < 20; i++) {
                        String mark = client + "-" + i;
                        long pid;
                        try (PreparedStatement ps = c.prepareStatement(
                                "SELECT pg_backend_pid() FROM set_config('pgring.mark', ?, true)")) {
                            ps.setString(1, mark);
                            try (ResultSet rs = ps.executeQuery()) {
                                rs.next();
                                pid = rs.getLong(1);
                            }
                        }
                        try (Statement s = c.createStatement();
                             ResultSet rs = s.executeQuery("SELECT current_setting('pgring.mark'), pg_backend_pid()")) {
                            rs.next();
                            check(rs.getString(1).equals(mark) && rs.getLong(2) == pid,
                                "client " + client + " expected " + mark + ", saw " + rs.getString(1));
                        }
                        c.commit();
                    }
                }
                return null;
            }));
        }
        for (Future<?> f : done) f.get(120, TimeUnit.SECONDS);
        pool.shutdown();
        System.out.println("ok concurrent");
    }

    static void sessionPrepared() throws Exception {
        // Session pooling keeps one server per client: named statements from the first use.
        try (Connection c = connect(ENV.get("PGRING_SESSION_DB"), "prepareThreshold", "1");
             PreparedStatement ps = c.prepareStatement("SELECT ?::int + 1")) {
            for (int i = 0; i < 10; i++) {
                ps.setInt(1, i);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    check(rs.getInt(1) == i + 1, "prepared statement result");
                }
            }
            check(one(c, "SELECT count(*) FROM pg_prepared_statements") >= 1, "no server-side prepared statement");
        }
        System.out.println("ok session_prepared");
    }

    // Run by every connection of the prepared_tx checks, with different parameters each time.
    static final String SHARED_SQL = "SELECT ?::int * 2 AS doubled, ?::text AS label";

    static void preparedClient(int n, String... properties) throws Exception {
        // Many more connections than the pool's 5 server connections, each with one
        // statement text that every connection prepares and one of its own, each run
        // PREPARED_ROUNDS times (past the prepare threshold), alone or two in a transaction,
        // on whichever server connection the pool hands out.
        List<String> props = new ArrayList<>(List.of("connectTimeout", "60"));
        props.addAll(List.of(properties));
        try (Connection c = connect(ENV.get("PGRING_PREPARED_DB"), props.toArray(new String[0]));
             PreparedStatement shared = c.prepareStatement(SHARED_SQL);
             PreparedStatement own = c.prepareStatement(
                 "SELECT ?::bigint - " + n + " AS v, 'client " + n + "'::text AS who")) {
            for (int i = 0; i < PREPARED_ROUNDS; i++) {
                int value = n * 1000 + i;
                String label = "c" + n + "-" + i;
                boolean inTransaction = i % 4 == 3;
                if (inTransaction) c.setAutoCommit(false);
                shared.setInt(1, value);
                shared.setString(2, label);
                try (ResultSet rs = shared.executeQuery()) {
                    check(rs.next(), "client " + n + " round " + i + ": the shared statement returned no row");
                    int doubled = rs.getInt(1);
                    String got = rs.getString(2);
                    check(doubled == 2 * value && label.equals(got) && !rs.next(),
                        "client " + n + " round " + i + ": shared statement gave " + doubled + ", " + got);
                }
                own.setLong(1, i);
                try (ResultSet rs = own.executeQuery()) {
                    check(rs.next(), "client " + n + " round " + i + ": the own statement returned no row");
                    long v = rs.getLong(1);
                    String who = rs.getString(2);
                    check(v == i - n && who.equals("client " + n) && !rs.next(),
                        "client " + n + " round " + i + ": own statement gave " + v + ", " + who);
                }
                if (inTransaction) {
                    c.commit();
                    c.setAutoCommit(true);
                }
            }
            // Past the threshold pgjdbc runs both as named server-side statements.
            check(shared.unwrap(PGStatement.class).isUseServerPrepare()
                    && own.unwrap(PGStatement.class).isUseServerPrepare(),
                "client " + n + ": the statements are not server-prepared");
        }
    }

    static void preparedTx(String name, String... properties) throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(PREPARED_CLIENTS);
        List<Future<?>> done = new ArrayList<>();
        for (int n = 0; n < PREPARED_CLIENTS; n++) {
            final int client = n;
            done.add(pool.submit(() -> {
                preparedClient(client, properties);
                return null;
            }));
        }
        // Every client finishes; the failure names how many failed and the first errors.
        int failed = 0;
        Map<String, Integer> kinds = new LinkedHashMap<>();
        Throwable first = null;
        for (int n = 0; n < PREPARED_CLIENTS; n++) {
            try {
                done.get(n).get(300, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                failed++;
                Throwable cause = e.getCause();
                if (first == null) first = cause;
                kinds.putIfAbsent(describe(cause), n);
            }
        }
        pool.shutdown();
        if (failed > 0) {
            StringBuilder shown = new StringBuilder();
            kinds.entrySet().stream().limit(5).forEach(k ->
                shown.append(shown.length() > 0 ? "; " : "").append("client ").append(k.getValue()).append(": ").append(k.getKey()));
            throw new AssertionError(failed + " of " + PREPARED_CLIENTS + " clients failed: " + shown, first);
        }
        System.out.println("ok " + name);
    }

    static String describe(Throwable e) {
        String state = e instanceof SQLException ? ((SQLException) e).getSQLState() : null;
        return e.getClass().getSimpleName() + (state != null ? " (SQLSTATE " + state + ")" : "") + ": " + e.getMessage();
    }

    public static void main(String[] args) {
        // Every check runs, even after one failed; any failure makes the exit status non-zero.
        Map<String, Body> checks = new LinkedHashMap<>();
        checks.put("tls", DriverCheck::tls);
        checks.put("types", DriverCheck::types);
        checks.put("transactions", DriverCheck::transactions);
        checks.put("errors", DriverCheck::errors);
        checks.put("large", DriverCheck::large);
        checks.put("copy", DriverCheck::copy);
        checks.put("notice", DriverCheck::notices);
        checks.put("pipeline", DriverCheck::batch);
        checks.put("cancel", DriverCheck::cancel);
        checks.put("concurrent", DriverCheck::concurrent);
        checks.put("session_prepared", DriverCheck::sessionPrepared);
        // pgjdbc's default prepareThreshold (5), then named statements from the first use.
        checks.put("prepared_tx", () -> preparedTx("prepared_tx"));
        checks.put("prepared_tx_threshold1", () -> preparedTx("prepared_tx_threshold1", "prepareThreshold", "1"));
        int failures = 0;
        for (Map.Entry<String, Body> check : checks.entrySet()) {
            try {
                check.getValue().run();
            } catch (Throwable e) {
                failures++;
                System.out.println("FAIL " + check.getKey() + ": " + describe(e));
                e.printStackTrace();
            }
        }
        System.out.flush();
        System.exit(failures > 0 ? 1 : 0);
    }
}
