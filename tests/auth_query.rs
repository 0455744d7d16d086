//! auth_query against a real PostgreSQL: users that are only in PostgreSQL log in through
//! pgring with SCRAM (and md5 clients are switched to SCRAM), their server logins reuse the
//! keys from their proof, and every failure that is about the user (wrong password, no
//! such user, no password, a name made to look like SQL) reads exactly the same.

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use support::{free_port, psql_cmd, PgCluster, Pgring};

const AUTH_PASSWORD: &str = "authpass";
const LOOKUP_QUERY: &str = "SELECT usename, passwd FROM pgring_lookup($1)";

/// A cluster with database `app`, role `pgring_auth` allowed only to run the
/// SECURITY DEFINER function `pgring_lookup` (in `app`), user `alice` known only to
/// PostgreSQL, a role without a password, and a table `x` to show nothing was dropped.
fn cluster() -> PgCluster {
    let pg = PgCluster::start();
    pg.create_database("app", "postgres");
    pg.create_role("pgring_auth", AUTH_PASSWORD, "");
    pg.create_role("alice", "alicepass", "");
    pg.psql("CREATE ROLE nopassword LOGIN;");
    psql_as_superuser(
        &pg,
        "app",
        r#"
CREATE TABLE x (i int);
CREATE FUNCTION public.pgring_lookup(p_usename text)
    RETURNS TABLE (usename name, passwd text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.usename, s.passwd FROM pg_catalog.pg_shadow s WHERE s.usename = p_usename
$$;
REVOKE ALL ON FUNCTION public.pgring_lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.pgring_lookup(text) TO pgring_auth;
GRANT SELECT ON x TO alice;
"#,
    );
    pg
}

fn psql_as_superuser(pg: &PgCluster, db: &str, sql: &str) -> String {
    let out = psql_cmd(pg.port(), pg.superuser(), pg.superuser_password(), db)
        .args(["-c", sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// pgring in front of `pg` with auth_query on; `pooler` adds or overrides `[pooler]` keys
/// (`auth_type` must be among them), `databases` adds entries.
fn start_pgring(pg: &PgCluster, pooler: &str, userlist: &str, databases: &str) -> Pgring {
    let port = free_port();
    let config = format!(
        r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = ""
auth_file = "userlist.txt"
stats_period = 0
shards = 1
server_login_retry = 0
{pooler}

[databases]
app = {{ host = "127.0.0.1", port = {pgport}, dbname = "app" }}
{databases}
"#,
        pgport = pg.port()
    );
    Pgring::start(&config, &[("userlist.txt", userlist)])
}

fn lookup_pooler(auth_type: &str) -> String {
    format!(
        "auth_type = \"{auth_type}\"\nauth_user = \"pgring_auth\"\nauth_query = \"{LOOKUP_QUERY}\""
    )
}

fn userlist() -> String {
    format!("\"pgring_auth\" \"{AUTH_PASSWORD}\"\n")
}

fn run(pgring: &Pgring, user: &str, password: &str, sql: &str) -> Output {
    psql_cmd(pgring.port(), user, password, "app")
        .args(["-c", sql])
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The server's message in psql's stderr, from `FATAL:` on.
fn fatal(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a failure: {out:?}");
    match stderr.find("FATAL:") {
        Some(at) => stderr[at..].trim().to_owned(),
        None => panic!("no FATAL in {stderr}"),
    }
}

fn auth_failed(user: &str) -> String {
    format!("FATAL:  password authentication failed for user \"{user}\"")
}

#[test]
fn scram_login_through_auth_query_and_failures_that_all_look_alike() {
    let pg = cluster();
    let pgring = start_pgring(&pg, &lookup_pooler("scram-sha-256"), &userlist(), "");

    // alice is only in PostgreSQL. The query runs on a server connection logged in as
    // alice with the keys from her own SCRAM proof.
    let out = run(
        &pgring,
        "alice",
        "alicepass",
        "SELECT current_user || ' ' || count(*) FROM x",
    );
    assert!(out.status.success(), "{out:?}\n{}", pgring.log());
    assert_eq!(stdout(&out), "alice 0");

    // Wrong password, unknown user, a user without a password, a name that looks like
    // SQL: the same message, with only the name changed.
    assert_eq!(
        fatal(&run(&pgring, "alice", "wrong", "SELECT 1")),
        auth_failed("alice")
    );
    assert_eq!(
        fatal(&run(&pgring, "nobody", "alicepass", "SELECT 1")),
        auth_failed("nobody")
    );
    assert_eq!(
        fatal(&run(&pgring, "nopassword", "anything", "SELECT 1")),
        auth_failed("nopassword")
    );
    let sneaky = "x'; DROP TABLE x; --\"\\";
    assert_eq!(
        fatal(&run(&pgring, sneaky, "alicepass", "SELECT 1")),
        auth_failed(sneaky)
    );
    assert_eq!(
        psql_as_superuser(&pg, "app", "SELECT count(*) FROM x").trim(),
        "0"
    );
    // The user name reached PostgreSQL as a parameter: nothing failed to parse.
    assert!(
        !pg.log_contents().contains("syntax error"),
        "{}",
        pg.log_contents()
    );

    // alice still logs in (the failures above did not break anything).
    let out = run(&pgring, "alice", "alicepass", "SELECT 1");
    assert!(out.status.success(), "{out:?}\n{}", pgring.log());

    // An md5 client is switched to SCRAM for a user whose secret is a SCRAM verifier.
    let md5 = start_pgring(&pg, &lookup_pooler("md5"), &userlist(), "");
    let out = run(&md5, "alice", "alicepass", "SELECT current_user");
    assert!(out.status.success(), "{out:?}\n{}", md5.log());
    assert_eq!(stdout(&out), "alice");
    assert_eq!(
        fatal(&run(&md5, "alice", "wrong", "SELECT 1")),
        auth_failed("alice")
    );
}

#[test]
fn a_password_changed_in_postgresql_is_picked_up_after_one_failed_attempt() {
    let pg = cluster();
    let pgring = start_pgring(
        &pg,
        &format!(
            "{}\nauth_query_cache_ttl = 600\nserver_lifetime = 0",
            lookup_pooler("scram-sha-256")
        ),
        &userlist(),
        "",
    );
    let out = run(&pgring, "alice", "alicepass", "SELECT 1");
    assert!(out.status.success(), "{out:?}\n{}", pgring.log());

    pg.psql("ALTER ROLE alice PASSWORD 'newpass';");
    // New server logins must use the new keys: close alice's idle server connection.
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'alice';");
    // The cached verifier is the old one: this attempt fails, and drops it.
    assert_eq!(
        fatal(&run(&pgring, "alice", "newpass", "SELECT 1")),
        auth_failed("alice")
    );
    // The next one asks PostgreSQL again, and the server login uses the new keys.
    let out = run(
        &pgring,
        "alice",
        "newpass",
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'alice'",
    );
    assert!(out.status.success(), "{out:?}\n{}", pgring.log());
    assert_eq!(
        fatal(&run(&pgring, "alice", "alicepass", "SELECT 1")),
        auth_failed("alice")
    );

    // A reload empties the cache: a changed password works at the first attempt.
    pg.psql("ALTER ROLE alice PASSWORD 'thirdpass';");
    assert!(pgring.signal(libc::SIGHUP));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pgring.log().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "{}", pgring.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run(&pgring, "alice", "thirdpass", "SELECT 1");
    assert!(out.status.success(), "{out:?}\n{}", pgring.log());
}

#[test]
fn a_lookup_that_cannot_run_says_so() {
    let pg = cluster();
    let started = Instant::now();

    // auth_user's own password is wrong in the auth_file.
    let pgring = start_pgring(
        &pg,
        &lookup_pooler("scram-sha-256"),
        "\"pgring_auth\" \"not-the-password\"\n",
        "",
    );
    let message = fatal(&run(&pgring, "alice", "alicepass", "SELECT 1"));
    assert!(
        message.starts_with("FATAL:  auth_query failed: server login failed:")
            && message.contains("pgring_auth"),
        "{message}"
    );
    assert!(
        pgring.log().contains("auth_query for user \"alice\""),
        "{}",
        pgring.log()
    );

    // The lookup database is not reachable.
    let closed = free_port();
    let pgring = start_pgring(
        &pg,
        &format!(
            "{}\nauth_dbname = \"lookups\"\nserver_connect_timeout = 5",
            lookup_pooler("scram-sha-256")
        ),
        &userlist(),
        &format!("lookups = {{ host = \"127.0.0.1\", port = {closed}, dbname = \"app\" }}"),
    );
    let message = fatal(&run(&pgring, "alice", "alicepass", "SELECT 1"));
    assert!(
        message.starts_with("FATAL:  auth_query failed: could not connect to server"),
        "{message}"
    );
    // Users in the auth_file do not depend on lookups.
    let out = run(&pgring, "pgring_auth", AUTH_PASSWORD, "SELECT current_user");
    assert!(out.status.success(), "{out:?}\n{}", pgring.log());
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn the_default_auth_query_with_a_superuser_in_another_database() {
    let pg = cluster();
    // The superuser may read pg_shadow directly; lookups run in database `postgres`.
    let pgring = start_pgring(
        &pg,
        "auth_type = \"scram-sha-256\"\nauth_user = \"postgres\"\nauth_dbname = \"lookups\"",
        &format!("\"postgres\" \"{}\"\n", pg.superuser_password()),
        &format!(
            "lookups = {{ host = \"127.0.0.1\", port = {}, dbname = \"postgres\" }}",
            pg.port()
        ),
    );
    let out = run(&pgring, "alice", "alicepass", "SELECT current_database()");
    assert!(out.status.success(), "{out:?}\n{}", pgring.log());
    assert_eq!(stdout(&out), "app");
    assert_eq!(
        fatal(&run(&pgring, "nobody", "x", "SELECT 1")),
        auth_failed("nobody")
    );
}
