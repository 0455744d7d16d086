//! Host-based authentication rules in PostgreSQL's `pg_hba.conf` format.
//!
//! Owns: turning an hba file (and the `@file` name lists it refers to) into
//! [`HbaRules`], and finding the rule that applies to a connection
//! ([`HbaRules::find`]): the first rule, in file order, whose connection type,
//! database, user and address all match.
//!
//! Must not: run an authentication exchange, inspect certificates or sockets,
//! resolve host names, or panic on any input. Only [`HbaRules::load`] touches
//! the file system; [`HbaRules::parse`] gets included files from its caller.
//!
//! The lexical rules (comments, quotes, comma lists, backslash continuation)
//! are those of the private `conf_tokens` module. Each rule line reads
//!
//! ```text
//! local      DATABASE USER                 METHOD [OPTION=VALUE ...]
//! host       DATABASE USER ADDRESS         METHOD [OPTION=VALUE ...]
//! host       DATABASE USER ADDRESS NETMASK METHOD [OPTION=VALUE ...]
//! ```
//!
//! with `hostssl` or `hostnossl` in place of `host`. What pgring accepts, and
//! where it parts from PostgreSQL:
//!
//! - Connection types: `local` matches Unix-socket clients; `host` any TCP
//!   client; `hostssl` TCP clients on TLS; `hostnossl` TCP clients in the
//!   clear. `hostgssenc` and `hostnogssenc` are errors: pgring has no GSSAPI
//!   encryption, so the first could never match (a `reject` written there
//!   would silently do nothing) and the second would only be `host` under
//!   another name; an error tells the operator instead. `include`,
//!   `include_if_exists` and `include_dir` directives are errors too.
//! - Database: `all`, `sameuser` (the database named like the user),
//!   `replication`, names, `@file`. pgring never serves replication
//!   connections, so `replication` matches nothing (and `all` matches every
//!   database, as it does for non-replication connections in PostgreSQL).
//!   `samerole`/`samegroup` are errors: pgring does not know role membership.
//! - User: `all`, names, `@file`. `+group` is an error, for the same reason.
//! - Keywords count only unquoted: `"all"` is the database or user named
//!   `all`. Names compare exactly, case included. An unquoted name starting
//!   with `/` is an error (PostgreSQL reads it as a regular expression, which
//!   pgring does not support here); quote it to mean the name.
//! - `@file` (unquoted `@`, the file name may be quoted after it) reads a
//!   file of names separated by blanks, commas or newlines, with `#`
//!   comments; a relative name is resolved against the folder of the file
//!   that names it. Included files may include others, up to
//!   [`MAX_INCLUDE_DEPTH`] levels; the limits [`MAX_INCLUDE_READS`] and
//!   [`MAX_LIST_ITEMS`] keep nested lists from growing without bound. An
//!   empty file gives an empty list, which matches nothing.
//! - Address (host lines only): `all`; `ADDR/LEN` (host bits are ignored, as
//!   PostgreSQL does: `10.1.2.3/8` is `10.0.0.0/8`); `ADDR NETMASK` in two
//!   fields, the mask contiguous and of the same family; or a bare `ADDR`,
//!   which pgring reads as that one host (`/32` or `/128`) where PostgreSQL
//!   would want a mask. An IPv4 rule also matches a client whose address is
//!   IPv4-mapped IPv6 (`::ffff:10.1.2.3`); an IPv6 rule never matches an
//!   IPv4 client. `samehost`, `samenet` and host names are errors; an IPv6
//!   zone (`%eth0`) is an invalid address. A TCP request without an address
//!   matches only `all`.
//! - Methods: `trust`, `reject`, `password`, `md5`, `scram-sha-256`, `cert`
//!   (`hostssl` only; implies `clientcert=verify-full`), `peer` (`local`
//!   only). Any other method is an error naming it.
//! - Options: `map=NAME` (with `cert` and `peer` only) and
//!   `clientcert=verify-ca|verify-full` (`hostssl` only; `cert` allows only
//!   `verify-full`). `clientcert=no-verify`, any other value, any other
//!   option, an option without `=` and an option given twice are errors.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::conf_tokens::{single, tokenize, Field, Line, Token};

/// How deep `@file` lists may include each other.
pub const MAX_INCLUDE_DEPTH: usize = 10;

/// How many `@file` reads one hba file may cause, nesting included.
pub const MAX_INCLUDE_READS: usize = 10_000;

/// How many names one database or user field may expand to.
pub const MAX_LIST_ITEMS: usize = 100_000;

/// The connection type: the first field of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// `local`: Unix-socket connections.
    Local,
    /// `host`: TCP connections, with or without TLS.
    Host,
    /// `hostssl`: TCP connections on TLS.
    HostSsl,
    /// `hostnossl`: TCP connections without TLS.
    HostNoSsl,
}

impl ConnKind {
    /// The keyword as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnKind::Local => "local",
            ConnKind::Host => "host",
            ConnKind::HostSsl => "hostssl",
            ConnKind::HostNoSsl => "hostnossl",
        }
    }

    fn matches(self, unix: bool, tls: bool) -> bool {
        match self {
            ConnKind::Local => unix,
            ConnKind::Host => !unix,
            ConnKind::HostSsl => !unix && tls,
            ConnKind::HostNoSsl => !unix && !tls,
        }
    }
}

impl fmt::Display for ConnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authentication method of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaMethod {
    /// `trust`: no proof asked.
    Trust,
    /// `reject`: refused.
    Reject,
    /// `password`: cleartext password.
    Password,
    /// `md5`: MD5 challenge (SCRAM for users with only a SCRAM secret).
    Md5,
    /// `scram-sha-256`.
    ScramSha256,
    /// `cert`: a verified client certificate whose CN names the user.
    Cert,
    /// `peer`: the operating-system user of a Unix-socket peer.
    Peer,
}

impl HbaMethod {
    /// The keyword as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            HbaMethod::Trust => "trust",
            HbaMethod::Reject => "reject",
            HbaMethod::Password => "password",
            HbaMethod::Md5 => "md5",
            HbaMethod::ScramSha256 => "scram-sha-256",
            HbaMethod::Cert => "cert",
            HbaMethod::Peer => "peer",
        }
    }

    fn from_keyword(word: &str) -> Option<Self> {
        Some(match word {
            "trust" => HbaMethod::Trust,
            "reject" => HbaMethod::Reject,
            "password" => HbaMethod::Password,
            "md5" => HbaMethod::Md5,
            "scram-sha-256" => HbaMethod::ScramSha256,
            "cert" => HbaMethod::Cert,
            "peer" => HbaMethod::Peer,
            _ => return None,
        })
    }
}

impl fmt::Display for HbaMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `clientcert` option: a client certificate is required and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertOption {
    /// The certificate must chain to a trusted CA.
    VerifyCa,
    /// As `VerifyCa`, and its CN must be the user name (or map to it).
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DatabaseMatch {
    All,
    SameUser,
    Replication,
    Name(String),
}

impl DatabaseMatch {
    fn matches(&self, database: &str, user: &str) -> bool {
        match self {
            DatabaseMatch::All => true,
            DatabaseMatch::SameUser => database == user,
            DatabaseMatch::Replication => false,
            DatabaseMatch::Name(name) => name == database,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum UserMatch {
    All,
    Name(String),
}

impl UserMatch {
    fn matches(&self, user: &str) -> bool {
        match self {
            UserMatch::All => true,
            UserMatch::Name(name) => name == user,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressMatch {
    /// `local` lines, and `all`.
    Any,
    V4 {
        net: u32,
        mask: u32,
    },
    V6 {
        net: u128,
        mask: u128,
    },
}

impl AddressMatch {
    /// The range of `prefix` leading bits of `addr`; `prefix` is in range.
    fn range(addr: IpAddr, prefix: u32) -> Self {
        match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
                AddressMatch::V4 {
                    net: u32::from(a) & mask,
                    mask,
                }
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                AddressMatch::V6 {
                    net: u128::from(a) & mask,
                    mask,
                }
            }
        }
    }

    fn matches(self, addr: Option<IpAddr>) -> bool {
        match self {
            AddressMatch::Any => true,
            AddressMatch::V4 { net, mask } => {
                let v4 = match addr {
                    Some(IpAddr::V4(a)) => Some(a),
                    Some(IpAddr::V6(a)) => a.to_ipv4_mapped(),
                    None => None,
                };
                v4.is_some_and(|a| u32::from(a) & mask == net)
            }
            AddressMatch::V6 { net, mask } => {
                matches!(addr, Some(IpAddr::V6(a)) if u128::from(a) & mask == net)
            }
        }
    }
}

/// One rule line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaRule {
    /// The file the rule was read from.
    pub file: PathBuf,
    /// Its 1-based line number (the first line, when continued).
    pub line: usize,
    /// The connection type.
    pub kind: ConnKind,
    /// The authentication method.
    pub method: HbaMethod,
    /// The `map` option: the ident map for `cert` and `peer`.
    pub map: Option<String>,
    /// The `clientcert` option; `cert` rules always have `VerifyFull`.
    pub clientcert: Option<ClientCertOption>,
    databases: Vec<DatabaseMatch>,
    users: Vec<UserMatch>,
    address: AddressMatch,
}

impl HbaRule {
    /// Whether this rule applies to `req`.
    pub fn matches(&self, req: &HbaRequest<'_>) -> bool {
        self.kind.matches(req.unix, req.tls)
            && self.address.matches(req.addr)
            && self
                .databases
                .iter()
                .any(|d| d.matches(req.database, req.user))
            && self.users.iter().any(|u| u.matches(req.user))
    }
}

/// What is known about a connection when its rule is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HbaRequest<'a> {
    /// The client came through the Unix socket.
    pub unix: bool,
    /// The client is on TLS.
    pub tls: bool,
    /// The client's address (TCP only).
    pub addr: Option<IpAddr>,
    /// The database asked for in the startup packet.
    pub database: &'a str,
    /// The user asked for in the startup packet.
    pub user: &'a str,
}

/// The rules of one hba file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HbaRules {
    rules: Vec<HbaRule>,
}

/// Why an hba file could not be loaded. The messages name the file (and
/// the line, for everything but an unreadable top-level file).
#[derive(Debug, thiserror::Error)]
pub enum HbaError {
    /// The hba file itself could not be read.
    #[error("auth_hba_file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file named by `@file` could not be read.
    #[error("auth_hba_file {}:{line}: cannot read @file {}: {source}", path.display(), included.display())]
    Include {
        /// The file whose line names it.
        path: PathBuf,
        line: usize,
        /// The resolved path of the included file.
        included: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A line is wrong.
    #[error("auth_hba_file {}:{line}: {message}", path.display())]
    Parse {
        /// The file the line is in (an included file, for its own errors).
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl HbaError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            HbaError::Io { path, .. }
            | HbaError::Include { path, .. }
            | HbaError::Parse { path, .. } => path,
        }
    }

    /// The 1-based line the error points at, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            HbaError::Io { .. } => None,
            HbaError::Include { line, .. } | HbaError::Parse { line, .. } => Some(*line),
        }
    }
}

fn parse_error(path: &Path, line: usize, message: impl Into<String>) -> HbaError {
    HbaError::Parse {
        path: path.to_owned(),
        line,
        message: message.into(),
    }
}

/// Reads `@file` lists for one parse, within [`MAX_INCLUDE_READS`].
struct Includes<'r> {
    read: &'r mut dyn FnMut(&Path) -> io::Result<String>,
    reads_left: usize,
}

impl HbaRules {
    /// Reads the file; `@file` includes are resolved relative to the
    /// including file's folder.
    pub fn load(path: &Path) -> Result<HbaRules, HbaError> {
        let text = std::fs::read_to_string(path).map_err(|source| HbaError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, &mut |p| std::fs::read_to_string(p))
    }

    /// Parses text; `read_include` is called for `@name` includes, with the
    /// name resolved against the folder of `path` (or of the file naming it).
    pub fn parse(
        text: &str,
        path: &Path,
        read_include: &mut dyn FnMut(&Path) -> io::Result<String>,
    ) -> Result<HbaRules, HbaError> {
        let lines = tokenize(text).map_err(|e| parse_error(path, e.line, e.message))?;
        let mut includes = Includes {
            read: read_include,
            reads_left: MAX_INCLUDE_READS,
        };
        let rules = lines
            .into_iter()
            .map(|line| parse_rule(path, line, &mut includes))
            .collect::<Result<_, _>>()?;
        Ok(HbaRules { rules })
    }

    /// First matching rule, or None (the caller refuses with PostgreSQL's
    /// "no pg_hba.conf entry" message).
    pub fn find(&self, req: &HbaRequest<'_>) -> Option<&HbaRule> {
        self.rules.iter().find(|rule| rule.matches(req))
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[HbaRule] {
        &self.rules
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when the file has no rules (every connection is refused).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// A database or user item, with where it was written.
struct Item {
    token: Token,
    file: PathBuf,
    line: usize,
}

fn parse_rule(path: &Path, line: Line, includes: &mut Includes<'_>) -> Result<HbaRule, HbaError> {
    let number = line.number;
    let err = |message: String| parse_error(path, number, message);
    let mut fields = line.fields.into_iter().peekable();

    let kind = match fields.next() {
        Some(field) => single(field, "connection type").map_err(err)?,
        None => return Err(err("empty line".to_owned())),
    };
    let kind = parse_kind(&kind.text).map_err(err)?;

    let field = fields
        .next()
        .ok_or_else(|| err("end of line before the database field".to_owned()))?;
    let mut items = Vec::new();
    expand(field, path, number, 0, includes, &mut items)?;
    let databases = items
        .into_iter()
        .map(database_item)
        .collect::<Result<Vec<_>, _>>()?;

    let field = fields
        .next()
        .ok_or_else(|| err("end of line before the user field".to_owned()))?;
    let mut items = Vec::new();
    expand(field, path, number, 0, includes, &mut items)?;
    let users = items
        .into_iter()
        .map(user_item)
        .collect::<Result<Vec<_>, _>>()?;

    let address = if kind == ConnKind::Local {
        AddressMatch::Any
    } else {
        let field = fields
            .next()
            .ok_or_else(|| err("end of line before the address field".to_owned()))?;
        let address = single(field, "address").map_err(err)?;
        let (address, mask_follows) = parse_address(&address).map_err(err)?;
        match fields.next_if(|f| mask_follows && looks_like_netmask(f)) {
            Some(mask) => {
                let mask = single(mask, "netmask").map_err(err)?;
                apply_netmask(address, &mask.text).map_err(err)?
            }
            None => address,
        }
    };

    let method = fields
        .next()
        .ok_or_else(|| err("end of line before the auth method".to_owned()))?;
    let method = single(method, "auth method").map_err(err)?;
    let method = HbaMethod::from_keyword(&method.text).ok_or_else(|| {
        err(format!(
            "unknown auth method \"{}\" (pgring knows trust, reject, password, md5, \
             scram-sha-256, cert and peer)",
            method.text
        ))
    })?;

    let mut map = None;
    let mut clientcert = None;
    for option in fields.flatten() {
        parse_option(&option.text, &mut map, &mut clientcert).map_err(err)?;
    }

    if method == HbaMethod::Peer && kind != ConnKind::Local {
        return Err(err(
            "peer authentication is only supported on local lines".to_owned()
        ));
    }
    if method == HbaMethod::Cert && kind != ConnKind::HostSsl {
        return Err(err(
            "cert authentication is only supported on hostssl lines".to_owned(),
        ));
    }
    if clientcert.is_some() && kind != ConnKind::HostSsl {
        return Err(err(
            "clientcert is only supported on hostssl lines".to_owned()
        ));
    }
    if method == HbaMethod::Cert {
        if clientcert == Some(ClientCertOption::VerifyCa) {
            return Err(err(
                "clientcert=verify-ca cannot be used with cert authentication, which always \
                 checks the whole certificate (verify-full)"
                    .to_owned(),
            ));
        }
        clientcert = Some(ClientCertOption::VerifyFull);
    }
    if map.is_some() && !matches!(method, HbaMethod::Cert | HbaMethod::Peer) {
        return Err(err(format!(
            "the map option is only supported with the cert and peer auth methods, not {method}"
        )));
    }

    Ok(HbaRule {
        file: path.to_owned(),
        line: number,
        kind,
        method,
        map,
        clientcert,
        databases,
        users,
        address,
    })
}

fn parse_kind(word: &str) -> Result<ConnKind, String> {
    Ok(match word {
        "local" => ConnKind::Local,
        "host" => ConnKind::Host,
        "hostssl" => ConnKind::HostSsl,
        "hostnossl" => ConnKind::HostNoSsl,
        "hostgssenc" | "hostnogssenc" => {
            return Err(format!(
                "\"{word}\" lines are not supported: pgring has no GSSAPI encryption \
                 (use host, hostssl or hostnossl)"
            ))
        }
        "include" | "include_if_exists" | "include_dir" => {
            return Err(format!(
                "\"{word}\" directives are not supported (@file works in the database and \
                 user fields)"
            ))
        }
        _ => {
            return Err(format!(
                "unknown connection type \"{word}\" (expected local, host, hostssl or hostnossl)"
            ))
        }
    })
}

/// Appends the items of `field`, reading `@file` lists in place.
fn expand(
    field: Field,
    file: &Path,
    line: usize,
    depth: usize,
    includes: &mut Includes<'_>,
    out: &mut Vec<Item>,
) -> Result<(), HbaError> {
    for token in field {
        let name = match token.text.strip_prefix('@') {
            Some(name) if !token.starts_quoted => name,
            _ => {
                if out.len() >= MAX_LIST_ITEMS {
                    return Err(parse_error(
                        file,
                        line,
                        format!("a field names more than {MAX_LIST_ITEMS} databases or users"),
                    ));
                }
                out.push(Item {
                    token,
                    file: file.to_owned(),
                    line,
                });
                continue;
            }
        };
        if name.is_empty() {
            return Err(parse_error(
                file,
                line,
                "\"@\" must be followed by a file name",
            ));
        }
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(parse_error(
                file,
                line,
                format!(
                    "@{name}: @file lists nested more than {MAX_INCLUDE_DEPTH} deep \
                     (does a file include itself?)"
                ),
            ));
        }
        if includes.reads_left == 0 {
            return Err(parse_error(
                file,
                line,
                format!("@{name}: more than {MAX_INCLUDE_READS} @file reads for one hba file"),
            ));
        }
        includes.reads_left -= 1;
        let included = file.parent().unwrap_or(Path::new("")).join(name);
        let text = (includes.read)(&included).map_err(|source| HbaError::Include {
            path: file.to_owned(),
            line,
            included: included.clone(),
            source,
        })?;
        let lines = tokenize(&text).map_err(|e| parse_error(&included, e.line, e.message))?;
        for inner in lines {
            for field in inner.fields {
                expand(field, &included, inner.number, depth + 1, includes, out)?;
            }
        }
    }
    Ok(())
}

fn regex_error(item: &Item, field: &str) -> HbaError {
    parse_error(
        &item.file,
        item.line,
        format!(
            "\"{}\": regular expressions are not supported in the {field} field \
             (quote the name if it starts with \"/\")",
            item.token.text
        ),
    )
}

fn database_item(item: Item) -> Result<DatabaseMatch, HbaError> {
    if item.token.quoted {
        return Ok(DatabaseMatch::Name(item.token.text));
    }
    Ok(match item.token.text.as_str() {
        "all" => DatabaseMatch::All,
        "sameuser" => DatabaseMatch::SameUser,
        "replication" => DatabaseMatch::Replication,
        word @ ("samerole" | "samegroup") => {
            return Err(parse_error(
                &item.file,
                item.line,
                format!("\"{word}\" is not supported: pgring does not know role membership"),
            ))
        }
        text if text.starts_with('/') => return Err(regex_error(&item, "database")),
        _ => DatabaseMatch::Name(item.token.text),
    })
}

fn user_item(item: Item) -> Result<UserMatch, HbaError> {
    if item.token.quoted {
        return Ok(UserMatch::Name(item.token.text));
    }
    let text = item.token.text.as_str();
    if text == "all" {
        Ok(UserMatch::All)
    } else if text.starts_with('+') {
        Err(parse_error(
            &item.file,
            item.line,
            format!(
                "\"{text}\": group membership (+group) is not supported by pgring \
                 (list the users, or name a file of them with @file)"
            ),
        ))
    } else if text.starts_with('/') {
        Err(regex_error(&item, "user"))
    } else {
        Ok(UserMatch::Name(item.token.text))
    }
}

/// Parses the address field; the flag says a netmask field may follow (a
/// bare address).
fn parse_address(token: &Token) -> Result<(AddressMatch, bool), String> {
    let text = token.text.as_str();
    if !token.quoted {
        match text {
            "all" => return Ok((AddressMatch::Any, false)),
            "samehost" | "samenet" => {
                return Err(format!(
                    "\"{text}\" is not supported by pgring: write the address range"
                ))
            }
            _ => {}
        }
    }
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return Err(if looks_like_host_name(addr) {
            format!("host names are not supported in the address field (\"{text}\")")
        } else {
            format!("invalid IP address \"{text}\"")
        });
    };
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    match prefix {
        None => Ok((AddressMatch::range(ip, bits), true)),
        Some(prefix) => match prefix.parse::<u32>() {
            Ok(len) if len <= bits && !prefix.starts_with('+') => {
                Ok((AddressMatch::range(ip, len), false))
            }
            _ => Err(format!(
                "invalid CIDR mask length \"{prefix}\" in \"{text}\" (0 to {bits})"
            )),
        },
    }
}

fn looks_like_host_name(text: &str) -> bool {
    !text.contains(':') && text.chars().any(|c| c.is_alphabetic())
}

/// Whether the field after a bare address is meant as a netmask: an
/// address, or digits and dots, or anything with a colon (no auth method
/// looks like that).
fn looks_like_netmask(field: &Field) -> bool {
    field.iter().any(|t| {
        t.text.contains(':')
            || (!t.text.is_empty() && t.text.chars().all(|c| c.is_ascii_digit() || c == '.'))
    })
}

fn apply_netmask(address: AddressMatch, mask: &str) -> Result<AddressMatch, String> {
    let mask_ip: IpAddr = mask
        .parse()
        .map_err(|_| format!("invalid netmask \"{mask}\""))?;
    // The address, and the mask's bits left-aligned in 128 bits.
    let (ip, bits) = match (address, mask_ip) {
        (AddressMatch::V4 { net, .. }, IpAddr::V4(m)) => (
            IpAddr::from(net.to_be_bytes()),
            u128::from(u32::from(m)) << 96,
        ),
        (AddressMatch::V6 { net, .. }, IpAddr::V6(m)) => {
            (IpAddr::from(net.to_be_bytes()), u128::from(m))
        }
        _ => {
            return Err(format!(
                "netmask \"{mask}\" is not of the same address family as the address"
            ))
        }
    };
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) != 0 {
        return Err(format!(
            "invalid netmask \"{mask}\": its one bits must come first, without gaps"
        ));
    }
    Ok(AddressMatch::range(ip, ones))
}

fn parse_option(
    option: &str,
    map: &mut Option<String>,
    clientcert: &mut Option<ClientCertOption>,
) -> Result<(), String> {
    let Some((name, value)) = option.split_once('=') else {
        return Err(format!(
            "auth option \"{option}\" is not of the form name=value"
        ));
    };
    match name {
        "map" => {
            if map.is_some() {
                return Err("the map option is given twice".to_owned());
            }
            if value.is_empty() {
                return Err("the map option needs a map name (map=NAME)".to_owned());
            }
            *map = Some(value.to_owned());
        }
        "clientcert" => {
            if clientcert.is_some() {
                return Err("the clientcert option is given twice".to_owned());
            }
            *clientcert = Some(match value {
                "verify-ca" => ClientCertOption::VerifyCa,
                "verify-full" => ClientCertOption::VerifyFull,
                "no-verify" => {
                    return Err("clientcert=no-verify is not supported by pgring (leave \
                                clientcert out to not ask for a certificate)"
                        .to_owned())
                }
                _ => {
                    return Err(format!(
                        "invalid clientcert value \"{value}\" (expected verify-ca or verify-full)"
                    ))
                }
            });
        }
        _ => return Err(format!("unknown auth option \"{name}\"")),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
