//! Smoke tests of the test support itself: a real PostgreSQL cluster starts, accepts SCRAM
//! logins, rejects bad passwords, runs side by side with another one and cleans up.

mod support;

use support::{pgbench_cmd, psql_cmd, PgCluster};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

#[test]
fn select_one_via_psql() {
    let pg = PgCluster::start();
    assert_eq!(pg.psql("SELECT 1").trim(), "1");
    // Several statements, one result line each.
    assert_eq!(pg.psql("SELECT 1; SELECT 'two';").trim(), "1\ntwo");
    assert_eq!(pg.psql("SHOW fsync").trim(), "off");
    assert_eq!(pg.psql("SHOW max_connections").trim(), "300");
    assert_eq!(pg.psql("SHOW password_encryption").trim(), "scram-sha-256");
    assert!(pg
        .socket_dir()
        .join(format!(".s.PGSQL.{}", pg.port()))
        .exists());

    // The standalone psql command reaches the same server.
    let out = psql_cmd(
        pg.port(),
        pg.superuser(),
        pg.superuser_password(),
        "postgres",
    )
    .args(["-c", "SELECT current_user"])
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "postgres");
}

#[tokio::test]
async fn role_database_and_scram_login() {
    let pg = PgCluster::start();
    pg.create_role("alice", "alice's pw", "");
    pg.create_database("alicedb", "alice");

    let (client, conn) =
        tokio_postgres::connect(&pg.conn_str("alice", "alice's pw", "alicedb"), NoTls)
            .await
            .expect("alice logs in");
    let conn = tokio::spawn(conn);
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "alice");
    assert_eq!(row.get::<_, String>(1), "alicedb");
    drop(client);
    conn.await.unwrap().unwrap();

    let secret = pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'alice'");
    assert!(secret.starts_with("SCRAM-SHA-256$"), "{secret}");

    let err = tokio_postgres::connect(&pg.conn_str("alice", "wrong", "alicedb"), NoTls)
        .await
        .err()
        .expect("a wrong password is refused");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err}");
}

#[test]
fn set_hba_switches_auth_method() {
    let pg = PgCluster::start();
    pg.create_role("bob", "bobpw", "");
    let select_as_bob = |password: &str| {
        psql_cmd(pg.port(), "bob", password, "postgres")
            .args(["-c", "SELECT 42"])
            .output()
            .unwrap()
    };
    assert!(!select_as_bob("").status.success());
    pg.set_hba(&[
        "host all postgres 127.0.0.1/32 scram-sha-256",
        "host all bob 127.0.0.1/32 trust",
    ]);
    let out = select_as_bob("");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    pg.set_hba(support::DEFAULT_HBA);
    assert!(!select_as_bob("").status.success());
}

#[test]
fn two_clusters_in_parallel_and_drop_cleans_up() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(PgCluster::start);
        let b = s.spawn(PgCluster::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.port(), b.port());
    a.psql("CREATE TABLE only_in_a (x int)");
    assert_eq!(
        a.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'")
            .trim(),
        "1"
    );
    assert_eq!(
        b.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'")
            .trim(),
        "0"
    );

    let data = a.data_dir().to_owned();
    let port = a.port();
    assert!(data.join("PG_VERSION").exists());
    drop(a);
    assert!(!data.exists(), "{} still exists", data.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts connections"
    );
    // The other one is unaffected.
    assert_eq!(b.psql("SELECT 2").trim(), "2");
}

#[test]
fn pgbench_runs_against_the_cluster() {
    let pg = PgCluster::start();
    pg.create_role("bench", "benchpw", "");
    pg.create_database("benchdb", "bench");
    let run = |args: &[&str]| {
        let out = pgbench_cmd(pg.port(), "bench", "benchpw", "benchdb")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "pgbench {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["-i", "-q", "-s", "1"]);
    let report = run(&["-n", "-c", "2", "-t", "20", "-S"]);
    assert!(
        report.contains("number of transactions actually processed: 40/40"),
        "{report}"
    );
}
