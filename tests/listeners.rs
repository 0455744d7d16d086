//! The listeners pgring opens: every shard's TCP listener and the Unix socket, with the
//! configured backlog.

mod support;

use support::Pgring;

#[test]
fn listen_backlog_sizes_every_listener() {
    // No PostgreSQL needed: nothing logs in.
    let port = support::free_port();
    let pgring = Pgring::start(
        &format!(
            "[pooler]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\n\
             unix_socket_dir = \"{{dir}}\"\nauth_type = \"trust\"\nlisten_backlog = 77\n\
             [databases]\napp = {{ host = \"127.0.0.1\", port = 1 }}\n"
        ),
        &[],
    );
    // `ss -l` shows a listening socket's backlog in its Send-Q column.
    let out = std::process::Command::new("ss")
        .args(["-lnx", "-t", "-a"])
        .output()
        .expect("run ss (iproute2)");
    let listing = String::from_utf8_lossy(&out.stdout);
    let tcp = format!("127.0.0.1:{port}");
    let unix = format!(".s.PGSQL.{port}");
    for needle in [&tcp, &unix] {
        let lines: Vec<&str> = listing
            .lines()
            .filter(|l| l.contains("LISTEN") && l.contains(needle.as_str()))
            .collect();
        assert!(
            !lines.is_empty(),
            "{needle} not listening:\n{listing}\n{}",
            pgring.log()
        );
        for line in lines {
            let send_q = line.split_whitespace().nth(3);
            assert_eq!(send_q, Some("77"), "{line}");
        }
    }
}
