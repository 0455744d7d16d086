//! The connection target: a libpq-style conninfo string
//! (`host=127.0.0.1 port=6432 user=app password='s e c' dbname=app`) or a
//! `postgres://user:pass@host:port/db` URL, with PGHOST, PGPORT, PGUSER,
//! PGPASSWORD, PGDATABASE, PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY and
//! PGCHANNELBINDING as defaults.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use pgring::config::TlsMode;

/// libpq's `channel_binding`: whether SCRAM binds the login to the TLS channel
/// (`SCRAM-SHA-256-PLUS` with `tls-server-end-point`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelBinding {
    /// Never (gs2 flag `n`).
    Disable,
    /// When the connection is encrypted and the server offers SCRAM-SHA-256-PLUS (the default).
    Prefer,
    /// Always: a login without it (no TLS, another auth method, no PLUS offered) fails.
    Require,
}

impl ChannelBinding {
    pub fn keyword(self) -> &'static str {
        match self {
            ChannelBinding::Disable => "disable",
            ChannelBinding::Prefer => "prefer",
            ChannelBinding::Require => "require",
        }
    }
}

fn parse_sslmode(value: &str) -> Result<TlsMode> {
    Ok(match value {
        "disable" => TlsMode::Disable,
        "allow" => TlsMode::Allow,
        "prefer" => TlsMode::Prefer,
        "require" => TlsMode::Require,
        "verify-ca" => TlsMode::VerifyCa,
        "verify-full" => TlsMode::VerifyFull,
        other => bail!(
            "invalid sslmode {other:?} (disable, allow, prefer, require, verify-ca or verify-full)"
        ),
    })
}

fn parse_channel_binding(value: &str) -> Result<ChannelBinding> {
    Ok(match value {
        "disable" => ChannelBinding::Disable,
        "prefer" => ChannelBinding::Prefer,
        "require" => ChannelBinding::Require,
        other => bail!("invalid channel_binding {other:?} (disable, prefer or require)"),
    })
}

/// Where and as whom loadgen connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub application_name: String,
    /// libpq's sslmode; default `prefer`.
    pub sslmode: TlsMode,
    /// CA certificates for `verify-ca`/`verify-full` (and `require`, which then verifies
    /// the chain as libpq does); `None`: libpq's default `~/.postgresql/root.crt`.
    pub sslrootcert: Option<PathBuf>,
    /// Client certificate and key; `None`: `~/.postgresql/postgresql.{crt,key}` when present.
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub channel_binding: ChannelBinding,
}

/// Values given explicitly in the target string; the rest come from the environment.
#[derive(Default, Debug)]
struct Given {
    host: Option<String>,
    port: Option<String>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    application_name: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
    channel_binding: Option<String>,
}

impl Given {
    fn set(&mut self, key: &str, value: String) -> Result<()> {
        match key {
            "host" | "hostaddr" => self.host = Some(value),
            "port" => self.port = Some(value),
            "user" => self.user = Some(value),
            "password" => self.password = Some(value),
            "dbname" => self.dbname = Some(value),
            "application_name" => self.application_name = Some(value),
            "sslmode" => {
                parse_sslmode(&value)?;
                self.sslmode = Some(value);
            }
            "sslrootcert" => self.sslrootcert = Some(value),
            "sslcert" => self.sslcert = Some(value),
            "sslkey" => self.sslkey = Some(value),
            "channel_binding" => {
                parse_channel_binding(&value)?;
                self.channel_binding = Some(value);
            }
            // Accepted and ignored.
            "connect_timeout" | "client_encoding" | "options" => {}
            other => bail!("unknown connection option {other:?}"),
        }
        Ok(())
    }
}

/// Parses `s` (conninfo or URL; may be empty) with the process environment as defaults.
pub fn parse(s: &str) -> Result<Target> {
    parse_with_env(s, |name| std::env::var(name).ok())
}

/// Like [`parse`] with `env` standing in for the environment (for tests).
pub fn parse_with_env(s: &str, env: impl Fn(&str) -> Option<String>) -> Result<Target> {
    let trimmed = s.trim();
    let given = if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        parse_url(trimmed)?
    } else {
        parse_conninfo(trimmed)?
    };
    let nonempty = |v: Option<String>| v.filter(|v| !v.is_empty());
    let host = nonempty(given.host)
        .or_else(|| nonempty(env("PGHOST")))
        .unwrap_or_else(|| "127.0.0.1".to_string());
    if host.starts_with('/') {
        bail!("Unix-socket host {host:?} is not supported yet; use a TCP address");
    }
    let port = match nonempty(given.port).or_else(|| nonempty(env("PGPORT"))) {
        Some(p) => p
            .parse::<u16>()
            .with_context(|| format!("invalid port {p:?}"))?,
        None => 5432,
    };
    let user = nonempty(given.user)
        .or_else(|| nonempty(env("PGUSER")))
        .or_else(|| nonempty(env("USER")))
        .unwrap_or_else(|| "postgres".to_string());
    let password = given.password.or_else(|| env("PGPASSWORD"));
    let dbname = nonempty(given.dbname)
        .or_else(|| nonempty(env("PGDATABASE")))
        .unwrap_or_else(|| user.clone());
    let application_name = given
        .application_name
        .unwrap_or_else(|| "loadgen".to_string());
    let sslmode = match nonempty(given.sslmode).or_else(|| nonempty(env("PGSSLMODE"))) {
        Some(m) => parse_sslmode(&m).context("PGSSLMODE")?,
        None => TlsMode::Prefer,
    };
    let channel_binding =
        match nonempty(given.channel_binding).or_else(|| nonempty(env("PGCHANNELBINDING"))) {
            Some(c) => parse_channel_binding(&c).context("PGCHANNELBINDING")?,
            None => ChannelBinding::Prefer,
        };
    let path = |v: Option<String>, var: &str| {
        nonempty(v)
            .or_else(|| nonempty(env(var)))
            .map(PathBuf::from)
    };
    let sslrootcert = path(given.sslrootcert, "PGSSLROOTCERT");
    let sslcert = path(given.sslcert, "PGSSLCERT");
    let sslkey = path(given.sslkey, "PGSSLKEY");
    if sslmode == TlsMode::Disable && channel_binding == ChannelBinding::Require {
        bail!("channel_binding=require needs TLS, and sslmode=disable turns it off");
    }
    Ok(Target {
        host,
        port,
        user,
        password,
        dbname,
        application_name,
        sslmode,
        sslrootcert,
        sslcert,
        sslkey,
        channel_binding,
    })
}

/// `key = value` pairs separated by whitespace; a value is a bare word or a single-quoted
/// string; backslash escapes the next character in both.
fn parse_conninfo(s: &str) -> Result<Given> {
    let mut given = Given::default();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            bail!("missing \"=\" after {key:?} in connection info string");
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => bail!("unterminated quoted string in connection info string"),
                    Some('\'') => break,
                    Some('\\') => value.push(
                        chars
                            .next()
                            .ok_or_else(|| anyhow!("unterminated quoted string"))?,
                    ),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        given.set(&key, value)?;
    }
    Ok(given)
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| anyhow!("invalid percent-encoding in URL: {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| anyhow!("percent-decoded URL part is not UTF-8: {s:?}"))
}

/// `postgres[ql]://[user[:password]@][host][:port][/dbname][?key=value&...]`.
fn parse_url(s: &str) -> Result<Given> {
    let rest = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
        .expect("caller checked the scheme");
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    let mut given = Given::default();
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                given.user = Some(percent_decode(user)?);
            }
            if let Some(p) = password {
                given.password = Some(percent_decode(p)?);
            }
            hostport
        }
        None => authority,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| anyhow!("unterminated [ in URL host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if !host.is_empty() {
        given.host = Some(percent_decode(host)?);
    }
    if let Some(p) = port.filter(|p| !p.is_empty()) {
        given.port = Some(p.to_string());
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        given.dbname = Some(percent_decode(db)?);
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("URL parameter {pair:?} has no \"=\""))?;
        given.set(&percent_decode(k)?, percent_decode(v)?)?;
    }
    Ok(given)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn conninfo_basic() {
        let t = parse_with_env(
            "host=10.0.0.1 port=6432 user=app password=secret dbname=appdb",
            no_env,
        )
        .unwrap();
        assert_eq!(t.host, "10.0.0.1");
        assert_eq!(t.port, 6432);
        assert_eq!(t.user, "app");
        assert_eq!(t.password.as_deref(), Some("secret"));
        assert_eq!(t.dbname, "appdb");
    }

    #[test]
    fn conninfo_quoting_and_escapes() {
        let t = parse_with_env(
            r"user = 'my user'  password='it\'s a \\ secret' dbname=a\ b",
            no_env,
        )
        .unwrap();
        assert_eq!(t.user, "my user");
        assert_eq!(t.password.as_deref(), Some(r"it's a \ secret"));
        assert_eq!(t.dbname, "a b");
        // An empty quoted value is an explicit empty password.
        let t = parse_with_env("password=''", no_env).unwrap();
        assert_eq!(t.password.as_deref(), Some(""));
    }

    #[test]
    fn conninfo_errors() {
        assert!(parse_with_env("host", no_env).is_err());
        assert!(parse_with_env("password='abc", no_env).is_err());
        assert!(parse_with_env("bogus=1", no_env).is_err());
        assert!(parse_with_env("port=notanumber", no_env).is_err());
        assert!(parse_with_env("sslmode=required", no_env).is_err());
        assert!(parse_with_env("channel_binding=maybe", no_env).is_err());
        assert!(parse_with_env("sslmode=disable channel_binding=require", no_env).is_err());
        assert!(parse_with_env("host=/var/run/postgresql", no_env).is_err());
    }

    #[test]
    fn url_basic_and_percent_decoding() {
        let t = parse_with_env(
            "postgres://app:p%40ss%3Aw0rd@db.example:6432/my%20db",
            no_env,
        )
        .unwrap();
        assert_eq!(t.host, "db.example");
        assert_eq!(t.port, 6432);
        assert_eq!(t.user, "app");
        assert_eq!(t.password.as_deref(), Some("p@ss:w0rd"));
        assert_eq!(t.dbname, "my db");

        let t = parse_with_env(
            "postgresql://[::1]:7000/db?application_name=x%20y&sslmode=disable",
            no_env,
        )
        .unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.port, 7000);
        assert_eq!(t.application_name, "x y");
        assert!(parse_with_env("postgres://u@h/db?x=%zz", no_env).is_err());
    }

    #[test]
    fn env_defaults() {
        let env = |name: &str| match name {
            "PGHOST" => Some("envhost".to_string()),
            "PGPORT" => Some("7777".to_string()),
            "PGUSER" => Some("envuser".to_string()),
            "PGPASSWORD" => Some("envpw".to_string()),
            "PGDATABASE" => Some("envdb".to_string()),
            _ => None,
        };
        let t = parse_with_env("", env).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str(), t.dbname.as_str()),
            ("envhost", 7777, "envuser", "envdb")
        );
        assert_eq!(t.password.as_deref(), Some("envpw"));
        // Explicit values win over the environment.
        let t = parse_with_env("postgres://u:p@h:1/d", env).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str(), t.dbname.as_str()),
            ("h", 1, "u", "d")
        );
        assert_eq!(t.password.as_deref(), Some("p"));
        // Built-in defaults: 127.0.0.1:5432, dbname = user.
        let t = parse_with_env("user=bob", no_env).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 5432));
        assert_eq!(t.dbname, "bob");
        assert_eq!(t.password, None);
        assert_eq!(t.sslmode, TlsMode::Prefer);
        assert_eq!(t.channel_binding, ChannelBinding::Prefer);
        assert_eq!((t.sslrootcert, t.sslcert, t.sslkey), (None, None, None));
    }

    #[test]
    fn tls_options() {
        let t = parse_with_env(
            "sslmode=verify-full sslrootcert=/ca.pem sslcert='/c c.pem' sslkey=/k.pem channel_binding=require",
            no_env,
        )
        .unwrap();
        assert_eq!(t.sslmode, TlsMode::VerifyFull);
        assert_eq!(t.sslrootcert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(t.sslcert, Some(PathBuf::from("/c c.pem")));
        assert_eq!(t.sslkey, Some(PathBuf::from("/k.pem")));
        assert_eq!(t.channel_binding, ChannelBinding::Require);
        for (mode, expected) in [
            ("disable", TlsMode::Disable),
            ("allow", TlsMode::Allow),
            ("prefer", TlsMode::Prefer),
            ("require", TlsMode::Require),
            ("verify-ca", TlsMode::VerifyCa),
        ] {
            let t = parse_with_env(&format!("postgres://u@h/d?sslmode={mode}"), no_env).unwrap();
            assert_eq!(t.sslmode, expected, "{mode}");
        }
        let env = |name: &str| match name {
            "PGSSLMODE" => Some("require".to_string()),
            "PGSSLROOTCERT" => Some("/env/ca.pem".to_string()),
            "PGSSLCERT" => Some("/env/c.pem".to_string()),
            "PGSSLKEY" => Some("/env/k.pem".to_string()),
            "PGCHANNELBINDING" => Some("disable".to_string()),
            _ => None,
        };
        let t = parse_with_env("", env).unwrap();
        assert_eq!(t.sslmode, TlsMode::Require);
        assert_eq!(t.sslrootcert, Some(PathBuf::from("/env/ca.pem")));
        assert_eq!(t.sslcert, Some(PathBuf::from("/env/c.pem")));
        assert_eq!(t.sslkey, Some(PathBuf::from("/env/k.pem")));
        assert_eq!(t.channel_binding, ChannelBinding::Disable);
        // The target wins over the environment.
        let t = parse_with_env("sslmode=disable sslrootcert=/mine.pem", env).unwrap();
        assert_eq!(t.sslmode, TlsMode::Disable);
        assert_eq!(t.sslrootcert, Some(PathBuf::from("/mine.pem")));
        let bad = |name: &str| (name == "PGSSLMODE").then(|| "sometimes".to_string());
        assert!(parse_with_env("", bad).is_err());
    }
}
