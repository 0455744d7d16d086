//! Session parameters: what a server reports of its own, what pgring set on it, and the
//! `options` startup parameter that clients use to ask for settings.
//!
//! PostgreSQL reports every setting flagged `GUC_REPORT` in ParameterStatus messages, at
//! login and whenever one changes. Which settings those are depends on the version
//! (PostgreSQL 14 added `default_transaction_read_only` and `in_hot_standby`, 16
//! `scram_iterations`, 18 `search_path`) and on the extensions loaded, so pgring tracks
//! whatever a server reports rather than a fixed list, and lets the server tell it which
//! parameters exist. A pooled client must keep seeing the values it chose as it is handed
//! different server connections, so pgring compares the client's values with the
//! server's at every attach. That comparison runs once per transaction in transaction
//! pooling, so both sides keep the settable reported values packed the same way
//! ([`PackedParams`]: `name\0value\0…`, sorted by name): when the server shows exactly the
//! client's values, as it usually does, the check is one comparison of two short byte
//! strings, with no lookups and no allocation.
//!
//! Some reported parameters are information, not settings ([`READ_ONLY_REPORTED`]); they
//! are kept in the server's full list (clients are shown them) but never compared and never
//! set.
//!
//! Settings a server does not report (a client's `-c statement_timeout=5s`) cannot be
//! compared with anything the server says. [`AppliedSettings`] is the server side of how
//! pgring deals with them: a record of which of them pgring itself set on the connection
//! and for which client (see `client::params` for the reasoning).
//!
//! Nothing here does I/O; [`static_name`] keeps a small per-thread table of names.

use std::cell::{Cell, Ref, RefCell};

/// The reported parameters PgBouncer tracks, in PostgreSQL's spelling; the positions of
/// [`ClientParams::from_array`](crate::client::params::ClientParams::from_array).
pub const TRACKED: [&str; 6] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "standard_conforming_strings",
    "application_name",
];

/// The settable parameters that PostgreSQL 14 to 18 report, in PostgreSQL's spelling: the
/// ones a client may give as startup parameters (others are refused unless listed in
/// `ignore_startup_parameters`, as PgBouncer refuses them). `search_path` is reported from
/// PostgreSQL 18 on; given to an older server it is applied like an unreported setting.
pub const KNOWN_REPORTED: [&str; 8] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "standard_conforming_strings",
    "application_name",
    "default_transaction_read_only",
    "search_path",
];

/// Reported parameters pgring never puts in a `SET`, never compares and never lets a
/// client ask for. From the `GUC_REPORT` entries of PostgreSQL's
/// `src/backend/utils/misc/guc_tables.c` (14 to 18): those of context `PGC_INTERNAL`
/// (`server_version`, `server_encoding`, `integer_datetimes`, `in_hot_standby`,
/// `is_superuser`, which follow the server and the current role), plus
/// `session_authorization` (changed only by `SET SESSION AUTHORIZATION`, superuser-only:
/// restoring it would hand one client's identity to the next) and `scram_iterations`
/// (reported so that libpq can hash passwords locally; the server's own value stands).
pub const READ_ONLY_REPORTED: [&str; 7] = [
    "server_version",
    "server_encoding",
    "integer_datetimes",
    "in_hot_standby",
    "is_superuser",
    "session_authorization",
    "scram_iterations",
];

/// True for a parameter pgring must never set ([`READ_ONLY_REPORTED`]). Parameter names
/// are case-insensitive, as in PostgreSQL.
pub fn is_read_only(name: &str) -> bool {
    READ_ONLY_REPORTED
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}

/// PostgreSQL's spelling of a known reported parameter, whatever the case of `name`.
pub fn known_reported(name: &str) -> Option<&'static str> {
    KNOWN_REPORTED
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .copied()
}

/// How many parameters one packed set holds at most. PostgreSQL 18 reports 15; a server
/// reporting more than this is not believed, so that it cannot grow every client without
/// limit (the names past the limit are still shown to clients, just not restored).
pub const MAX_PACKED: usize = 64;

/// How many names outside the lists above [`static_name`] keeps per thread.
const MAX_INTERNED: usize = 256;

/// A `'static` copy of a parameter name. PostgreSQL's own names come from the lists above;
/// others (an extension's reported settings) are copied once per thread and kept, up to
/// [`MAX_INTERNED`] of them: a server reporting ever new names could otherwise make pgring
/// keep memory without limit. `None` past that limit.
pub fn static_name(name: &str) -> Option<&'static str> {
    if let Some(known) = KNOWN_REPORTED
        .iter()
        .chain(READ_ONLY_REPORTED.iter())
        .find(|k| **k == name)
    {
        return Some(known);
    }
    thread_local! {
        static NAMES: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
    }
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(found) = names.iter().find(|n| **n == name) {
            return Some(*found);
        }
        if names.len() >= MAX_INTERNED {
            return None;
        }
        let kept: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.push(kept);
        Some(kept)
    })
}

/// Parameter values by name, in one allocation: `name\0value\0` for each, sorted by name
/// (bytes), each name once. Names and values never contain NUL (they travel as C strings),
/// so the layout cannot be ambiguous, and two sets with the same contents have the same
/// bytes: equality is one comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedParams {
    text: Box<str>,
}

impl PackedParams {
    /// Packs `pairs`; a later pair for the same name wins. Pairs with an empty name or a
    /// NUL anywhere are dropped, and so is any name past [`MAX_PACKED`].
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> PackedParams {
        let mut sorted: Vec<(&str, &str)> = Vec::new();
        for (name, value) in pairs {
            if name.is_empty() || name.contains('\0') || value.contains('\0') {
                continue;
            }
            match sorted.binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes())) {
                Ok(i) => sorted[i].1 = value,
                Err(_) if sorted.len() >= MAX_PACKED => {}
                Err(i) => sorted.insert(i, (name, value)),
            }
        }
        let mut text =
            String::with_capacity(sorted.iter().map(|(n, v)| n.len() + v.len() + 2).sum());
        for (name, value) in sorted {
            text.push_str(name);
            text.push('\0');
            text.push_str(value);
            text.push('\0');
        }
        PackedParams {
            text: text.into_boxed_str(),
        }
    }

    /// Every (name, value), sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut parts = self.text.split_terminator('\0');
        std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
    }

    /// The value of `name`, spelled exactly so.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The entry for `name` spelled exactly so, else in any case.
    pub fn find(&self, name: &str) -> Option<(&str, &str)> {
        self.iter()
            .find(|(n, _)| *n == name)
            .or_else(|| self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)))
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Sets `name` to `value` (rebuilds the whole: values change rarely). Returns false
    /// when the pair cannot be kept (see [`PackedParams::from_pairs`]).
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        if self.get(name) == Some(value) {
            return true;
        }
        let rebuilt = PackedParams::from_pairs(self.iter().chain([(name, value)]));
        let kept = rebuilt.get(name) == Some(value);
        *self = rebuilt;
        kept
    }

    /// Removes `name` (exact spelling).
    pub fn remove(&mut self, name: &str) {
        if self.get(name).is_some() {
            *self = PackedParams::from_pairs(self.iter().filter(|(n, _)| *n != name));
        }
    }
}

/// What pgring knows of a server connection's unreported settings: which parameters it
/// set on it for some client, and whether the connection has been lent to anyone else
/// since (see `client::params` for how it is used).
///
/// Interior mutability, because the record changes when a client looks at the server
/// (every attach of another client makes the record untrustworthy, since that client may
/// run `SET` itself) and that look happens through a shared reference.
#[derive(Debug, Clone, Default)]
pub struct AppliedSettings {
    /// The client whose unreported settings pgring applied, when no other client has been
    /// given the connection since; [`AppliedSettings::NOBODY`] otherwise.
    owner: Cell<u64>,
    /// The unreported parameters pgring has set on this connection and not reset since
    /// (names as the client spelled them).
    names: RefCell<Vec<Box<str>>>,
}

impl AppliedSettings {
    /// No client: nobody may trust the connection's unreported settings.
    pub const NOBODY: u64 = 0;

    pub fn owner(&self) -> u64 {
        self.owner.get()
    }

    /// Gives the connection to `owner`, or to [`AppliedSettings::NOBODY`].
    pub fn lend(&self, owner: u64) {
        self.owner.set(owner);
    }

    /// True when pgring has set nothing unreported on the connection (or reset it all).
    pub fn is_clean(&self) -> bool {
        self.names.borrow().is_empty()
    }

    /// The unreported parameters pgring has set on the connection.
    pub fn names(&self) -> Ref<'_, [Box<str>]> {
        Ref::map(self.names.borrow(), |n| n.as_slice())
    }

    /// After pgring set `names` on the connection and reset every other one it had set:
    /// `owner`'s settings are in place.
    pub fn record<'a>(&self, names: impl Iterator<Item = &'a str>, owner: u64) {
        let mut kept = self.names.borrow_mut();
        kept.clear();
        kept.extend(names.map(Box::from));
        self.owner.set(if kept.is_empty() {
            AppliedSettings::NOBODY
        } else {
            owner
        });
    }
}

/// Every parameter a server reported, in the order first seen, with the settable ones also
/// kept packed, and what pgring set on the connection that the server does not report.
#[derive(Debug, Clone, Default)]
pub struct ReportedParams {
    all: Vec<(String, String)>,
    /// The settable ones again (all but [`READ_ONLY_REPORTED`]), packed for the
    /// per-transaction comparison.
    settable: PackedParams,
    applied: AppliedSettings,
}

impl ReportedParams {
    /// Records a ParameterStatus. Servers report the canonical spelling.
    pub fn set(&mut self, name: &str, value: &str) {
        if !is_read_only(name) {
            self.settable.set(name, value);
        }
        if let Some(pos) = self.all.iter().position(|(n, _)| n == name) {
            let v = &mut self.all[pos].1;
            v.clear();
            v.push_str(value);
            return;
        }
        if self.all.len() < MAX_REPORTED {
            self.all.push((name.to_owned(), value.to_owned()));
        }
    }

    /// The reported value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.all
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The settable reported values, packed.
    pub fn settable(&self) -> &PackedParams {
        &self.settable
    }

    /// What pgring set on the connection that the server does not report.
    pub fn applied(&self) -> &AppliedSettings {
        &self.applied
    }

    /// Every reported parameter (name, value), in the order first seen.
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.all.clone()
    }
}

/// How many distinct parameters a server's list keeps (PostgreSQL 18 reports 15).
const MAX_REPORTED: usize = 256;

/// A malformed `options` startup parameter. The messages name the argument at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("invalid options startup parameter: -c at the end needs a setting (-c name=value)")]
    DanglingSwitch,
    #[error(
        "invalid options startup parameter: {switch}{arg} requires a value ({switch}name=value)"
    )]
    MissingValue { switch: &'static str, arg: String },
    #[error("invalid options startup parameter: {switch}{arg} has an empty parameter name")]
    EmptyName { switch: &'static str, arg: String },
    #[error("invalid options startup parameter: unsupported switch \"{0}\" (pgring accepts -c name=value and --name=value)")]
    UnsupportedSwitch(String),
    #[error("invalid options startup parameter: unexpected argument \"{0}\" (settings take the form -c name=value or --name=value)")]
    UnexpectedArgument(String),
}

impl OptionsError {
    /// What a client is told with it: invalid_parameter_value.
    pub const SQLSTATE: &'static str = "22023";
}

/// What a client asking for a read-only parameter is told: cant_change_runtime_param, as
/// PostgreSQL answers a `SET` of one.
pub const READ_ONLY_SQLSTATE: &str = "55P02";

/// Parses the `options` startup parameter (what libpq sends for `PGOPTIONS`) into
/// settings (name, value), in order, as PostgreSQL does:
///
/// - arguments are separated by white space, and a backslash makes the next character
///   part of the argument, space or backslash alike (`pg_split_opts` in
///   `src/backend/utils/init/postinit.c`);
/// - `-c name=value`, `-cname=value` and `--name=value` are settings, with `-` in the name
///   read as `_` (`ParseLongOption` in `src/backend/utils/misc/guc.c`); a lone `--` ends
///   the switches.
///
/// PostgreSQL's other switches (`-B`, `-d`, `-F`, …) set server options that have no place
/// behind a pooler and are refused, as is anything that is not a switch. Every argument is
/// looked at once: the parse cannot loop.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, OptionsError> {
    let args = split_options(options);
    let mut settings = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            return match args.next() {
                None => Ok(settings),
                Some(extra) => Err(OptionsError::UnexpectedArgument(extra)),
            };
        }
        let (switch, setting) = if let Some(long) = arg.strip_prefix("--") {
            ("--", long.to_owned())
        } else if let Some(attached) = arg.strip_prefix("-c") {
            if attached.is_empty() {
                ("-c ", args.next().ok_or(OptionsError::DanglingSwitch)?)
            } else {
                ("-c", attached.to_owned())
            }
        } else if arg.starts_with('-') && arg.len() > 1 {
            return Err(OptionsError::UnsupportedSwitch(arg));
        } else {
            return Err(OptionsError::UnexpectedArgument(arg));
        };
        let Some((name, value)) = setting.split_once('=') else {
            return Err(OptionsError::MissingValue {
                switch,
                arg: setting,
            });
        };
        if name.is_empty() {
            return Err(OptionsError::EmptyName {
                switch,
                arg: setting,
            });
        }
        settings.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(settings)
}

/// Splits `options` into arguments as `pg_split_opts` does: white space (C's `isspace`)
/// separates, a backslash takes the next character literally, and a final lone backslash
/// is dropped.
fn split_options(options: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = options.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| is_c_space(*c)) {
            chars.next();
        }
        if chars.peek().is_none() {
            return args;
        }
        let mut arg = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(escaped) = chars.next() {
                        arg.push(escaped);
                    }
                }
                c if is_c_space(c) => break,
                c => arg.push(c),
            }
        }
        args.push(arg);
    }
}

/// C's `isspace` in the C locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn known_names_are_matched_case_insensitively() {
        assert_eq!(known_reported("datestyle"), Some("DateStyle"));
        assert_eq!(known_reported("TIMEZONE"), Some("TimeZone"));
        assert_eq!(known_reported("search_path"), Some("search_path"));
        assert_eq!(known_reported("work_mem"), None);
        assert!(is_read_only("Server_Version"));
        assert!(is_read_only("is_superuser"));
        assert!(!is_read_only("application_name"));
    }

    #[test]
    fn packed_values_are_sorted_and_compare_by_content() {
        let a = PackedParams::from_pairs([("TimeZone", "UTC"), ("DateStyle", "ISO, MDY")]);
        let b = PackedParams::from_pairs([("DateStyle", "ISO, MDY"), ("TimeZone", "UTC")]);
        assert_eq!(a, b);
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [("DateStyle", "ISO, MDY"), ("TimeZone", "UTC")]
        );
        // A missing value is not an empty one; values that concatenate alike but split
        // differently differ.
        let mut c = a.clone();
        c.set("application_name", "");
        assert_ne!(a, c);
        assert_eq!(c.get("application_name"), Some(""));
        assert_eq!(c.len(), 3);
        let d = PackedParams::from_pairs([("a", "bc")]);
        let e = PackedParams::from_pairs([("ab", "c")]);
        assert_ne!(d, e);
        // A later value wins; a value is replaced in place.
        let mut f = PackedParams::from_pairs([("x", "1"), ("x", "2")]);
        assert_eq!(f.get("x"), Some("2"));
        assert!(f.set("x", "3"));
        assert_eq!(f.iter().collect::<Vec<_>>(), [("x", "3")]);
        f.remove("x");
        assert!(f.is_empty());
        assert_eq!(f, PackedParams::default());
    }

    #[test]
    fn packed_values_refuse_what_would_break_the_layout() {
        let mut p = PackedParams::default();
        assert!(!p.set("a\0b", "1"));
        assert!(!p.set("a", "1\0"));
        assert!(!p.set("", "1"));
        assert!(p.is_empty());
        for i in 0..MAX_PACKED + 5 {
            p.set(&format!("p{i:03}"), "v");
        }
        assert_eq!(p.len(), MAX_PACKED);
        assert!(!p.set("zzz", "v"), "past the limit");
        assert!(p.set("p000", "w"), "replacing is always possible");
        assert_eq!(p.find("P000"), Some(("p000", "w")));
    }

    #[test]
    fn the_server_s_settable_values_follow_updates() {
        let mut p = ReportedParams::default();
        p.set("server_version", "15.4");
        p.set("TimeZone", "UTC");
        p.set("is_superuser", "off");
        assert_eq!(
            p.settable().iter().collect::<Vec<_>>(),
            [("TimeZone", "UTC")]
        );
        p.set("TimeZone", "Europe/Paris");
        p.set("search_path", "\"$user\", public");
        assert_eq!(p.settable().get("TimeZone"), Some("Europe/Paris"));
        assert_eq!(p.settable().get("search_path"), Some("\"$user\", public"));
        assert_eq!(p.get("is_superuser"), Some("off"));
        let all = p.to_vec();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0], ("server_version".to_owned(), "15.4".to_owned()));
    }

    #[test]
    fn applied_settings_are_owned_only_when_something_was_set() {
        let a = AppliedSettings::default();
        assert!(a.is_clean());
        assert_eq!(a.owner(), AppliedSettings::NOBODY);
        a.record(["statement_timeout", "work_mem"].into_iter(), 7);
        assert_eq!(a.owner(), 7);
        assert_eq!(a.names().len(), 2);
        a.lend(AppliedSettings::NOBODY);
        assert_eq!(a.owner(), AppliedSettings::NOBODY);
        assert!(!a.is_clean());
        a.record(std::iter::empty(), 9);
        assert!(a.is_clean());
        assert_eq!(a.owner(), AppliedSettings::NOBODY);
    }

    #[test]
    fn static_names_are_shared_and_bounded() {
        assert_eq!(static_name("DateStyle"), Some("DateStyle"));
        let b = static_name("citus.custom").unwrap();
        let c = static_name("citus.custom").unwrap();
        assert!(std::ptr::eq(b, c));
        // The table fills up and then refuses (each test runs on its own thread).
        let taken = (0..MAX_INTERNED * 2)
            .filter(|i| static_name(&format!("x{i}")).is_some())
            .count();
        assert!(taken < MAX_INTERNED);
        assert_eq!(static_name("TimeZone"), Some("TimeZone"));
    }

    #[test]
    fn options_settings_in_every_form() {
        assert_eq!(
            parse_options("-c statement_timeout=5s").unwrap(),
            pairs(&[("statement_timeout", "5s")])
        );
        assert_eq!(
            parse_options("-cstatement_timeout=5s --work-mem=8MB -c a.b=").unwrap(),
            pairs(&[
                ("statement_timeout", "5s"),
                ("work_mem", "8MB"),
                ("a.b", "")
            ])
        );
        // Only the first `=` splits; white space of any kind separates; none at all is
        // no setting.
        assert_eq!(
            parse_options("\t-c\nx=a=b  \r\n").unwrap(),
            pairs(&[("x", "a=b")])
        );
        assert_eq!(parse_options("").unwrap(), []);
        assert_eq!(parse_options("   ").unwrap(), []);
        // The same name twice: both kept, in order (the later wins when applied).
        assert_eq!(
            parse_options("-c a=1 -c a=2").unwrap(),
            pairs(&[("a", "1"), ("a", "2")])
        );
        // A lone `--` ends the switches.
        assert_eq!(parse_options("-c a=1 --").unwrap(), pairs(&[("a", "1")]));
        // `-c` takes the next argument whatever it looks like.
        assert_eq!(parse_options("-c --x=y").unwrap(), pairs(&[("__x", "y")]));
    }

    #[test]
    fn options_backslash_escapes() {
        assert_eq!(
            parse_options(r"-c DateStyle=ISO,\ DMY").unwrap(),
            pairs(&[("DateStyle", "ISO, DMY")])
        );
        assert_eq!(
            parse_options(r"-c search_path=a\\b\,c").unwrap(),
            pairs(&[("search_path", r"a\b,c")])
        );
        // An escaped space inside the switch, an escaped separator between arguments.
        // (`-c` with ` x=1` attached: the name " x", which the server will refuse.)
        assert_eq!(parse_options(r"-c\ x=1").unwrap(), pairs(&[(" x", "1")]));
        assert_eq!(
            parse_options("-c x=a\\\tb").unwrap(),
            pairs(&[("x", "a\tb")])
        );
        // A final lone backslash is dropped.
        assert_eq!(parse_options("-c x=1\\").unwrap(), pairs(&[("x", "1")]));
    }

    #[test]
    fn malformed_options_are_refused_with_the_argument_named() {
        let err = |s: &str| parse_options(s).unwrap_err();
        assert_eq!(err("-c"), OptionsError::DanglingSwitch);
        assert_eq!(err("-c a=1 -c"), OptionsError::DanglingSwitch);
        assert_eq!(
            err("-c="),
            OptionsError::EmptyName {
                switch: "-c",
                arg: "=".into()
            }
        );
        assert_eq!(
            err("-c =x"),
            OptionsError::EmptyName {
                switch: "-c ",
                arg: "=x".into()
            }
        );
        assert_eq!(
            err("--=x"),
            OptionsError::EmptyName {
                switch: "--",
                arg: "=x".into()
            }
        );
        assert_eq!(
            err("-c statement_timeout"),
            OptionsError::MissingValue {
                switch: "-c ",
                arg: "statement_timeout".into()
            }
        );
        assert_eq!(
            err("--statement_timeout"),
            OptionsError::MissingValue {
                switch: "--",
                arg: "statement_timeout".into()
            }
        );
        assert_eq!(err("-B 100"), OptionsError::UnsupportedSwitch("-B".into()));
        assert_eq!(err("-"), OptionsError::UnexpectedArgument("-".into()));
        assert_eq!(
            err("statement_timeout=5"),
            OptionsError::UnexpectedArgument("statement_timeout=5".into())
        );
        assert_eq!(
            err("-- -c a=1"),
            OptionsError::UnexpectedArgument("-c".into())
        );
        // An argument made of a lone backslash is empty, and not a setting.
        assert_eq!(err("\\"), OptionsError::UnexpectedArgument(String::new()));
        // The messages say what is wrong.
        assert!(err("-c=").to_string().contains("empty parameter name"));
        assert!(err("-c x").to_string().contains("-c x requires a value"));
        assert!(err("-c").to_string().contains("-c at the end"));
    }
}
