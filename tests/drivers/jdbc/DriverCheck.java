// pgjdbc through pgring: run by tests/drivers.rs with
// `java -cp postgresql.jar DriverCheck.java` (single-file source launch).
//
// Settings come from the environment (see tests/drivers.rs); every check prints
// "ok <name>" when it passed, and any failure throws, so the exit status is non-zero.

import java.io.StringReader;
import java.io.StringWriter;
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public class DriverCheck {
    static final Map<String, String> ENV = System.getenv();
    static final int CLIENTS = Integer.parseInt(ENV.getOrDefault("PGRING_CLIENTS", "16"));

    static Connection connect(String db, int prepareThreshold) throws SQLException {
        return connect(db, prepareThreshold, ENV.get("PGRING_CA"));
    }

    static Connection connect(String db, int prepareThreshold, String ca) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", ENV.get("PGRING_USER"));
        p.setProperty("password", ENV.get("PGRING_PASSWORD"));
        // verify-full: the chain to the test CA and the host name.
        p.setProperty("sslmode", "verify-full");
        p.setProperty("sslrootcert", ca);
        p.setProperty("connectTimeout", "10");
        // Transaction pooling: 0 means no named server-side statements, as with any pooler
        // that does not track them.
        p.setProperty("prepareThreshold", Integer.toString(prepareThreshold));
        String url = "jdbc:postgresql://" + ENV.get("PGRING_HOST") + ":" + ENV.get("PGRING_PORT") + "/" + db;
        return DriverManager.getConnection(url, p);
    }

    static Connection connect() throws SQLException {
        return connect(ENV.get("PGRING_TX_DB"), 0);
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
        try (Connection c = connect(ENV.get("PGRING_TX_DB"), 0, ENV.get("PGRING_FOREIGN_CA"))) {
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
        try (Connection c = connect(ENV.get("PGRING_SESSION_DB"), 1);
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

    public static void main(String[] args) throws Exception {
        tls();
        types();
        transactions();
        errors();
        large();
        copy();
        notices();
        batch();
        cancel();
        concurrent();
        sessionPrepared();
    }
}
