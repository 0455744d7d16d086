//! The session parameters pgring keeps for a client across the server connections it is
//! given, and the SQL that puts them on a server.
//!
//! A client's parameters come in two kinds, kept and restored differently:
//!
//! - **Reported** ones: every settable parameter the server reports with ParameterStatus
//!   (`GUC_REPORT`: `client_encoding`, `DateStyle`, `TimeZone`, `application_name`, …, and
//!   from PostgreSQL 18 `search_path`), whatever their number. The client's value comes
//!   from its startup packet or `options`, from a ParameterStatus its own `SET` produced,
//!   and otherwise is the value it was shown at login. The server says what its own values
//!   are, so pgring compares both at every attach and sets the ones that differ. Both sides
//!   keep them packed alike ([`PackedParams`]), so the usual attach, a server already
//!   showing the client's values, is one comparison of two byte strings, no allocation.
//!   Read-only reported parameters (`server_version`, `is_superuser`, …, see
//!   [`READ_ONLY_REPORTED`](crate::protocol::params::READ_ONLY_REPORTED)) are never
//!   compared or set.
//! - **Unreported** ones: settings a client asked for in `options` (`-c
//!   statement_timeout=5s`), or a known reported name the server does not report (
//!   `search_path` before PostgreSQL 18). The server never says their value, so pgring
//!   cannot compare; it remembers instead what it set itself, on the server connection
//!   ([`AppliedSettings`] inside the server's [`ReportedParams`]): the parameters it set
//!   there and the client it set them for. The record is trusted only by that client, and
//!   only while nobody else has been given the connection: any other client may have run
//!   its own `SET`, and every attach of another client marks the connection as nobody's
//!   (one store, in [`ClientParams::matches`]). So a client with such settings pays nothing
//!   when it gets back the server it had last, which is what a client working alone gets
//!   from the pool's LIFO order, and one `SET` round trip (a `SELECT set_config(…)` of all
//!   of them, prebuilt at login) when it gets a server someone else used since. The other
//!   way, sending the settings at every attach, would cost that round trip on every
//!   transaction, and is what happens when `server_reset_query_always` resets servers
//!   after each transaction (the record is then never trusted). A client without such
//!   settings that is given a server where pgring set some for another client has them
//!   `RESET` first (to the server's defaults), in the same batch as anything else, so one
//!   client's `options` never reach another; a server nobody set anything on costs it
//!   nothing.
//!
//! What pgring sets is applied with `pg_catalog.set_config(name, value, false)`, which
//! reads the value as the startup packet and `-c` do (a `SET x = 'a, b'` would make a
//! list setting such as `search_path` one quoted element).
//!
//! A client's own plain `SET` of an unreported parameter is not seen, and lasts only as
//! long as its server connection stays with it: it is lost when the client gets another
//! server, and reaches whoever gets this one next (the README says what carries over).

use crate::protocol::frontend::{quote_ident, quote_literal};
use crate::protocol::params::{
    is_read_only, known_reported, static_name, AppliedSettings, PackedParams, ReportedParams,
    TRACKED,
};

/// A client's parameters: the reported values it expects, and its unreported settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientParams {
    /// Laid out exactly as a server's settable reported values, for the comparison at
    /// every attach.
    reported: PackedParams,
    /// `None` for almost every client (8 bytes).
    unreported: Option<Box<Unreported>>,
}

/// Settings of parameters the server does not report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unreported {
    /// Each name once (compared case-insensitively), as the client spelled it, in order.
    settings: Vec<(String, String)>,
    /// `pg_catalog.set_config(…), …` for all of them, built once.
    calls: Box<str>,
    /// Who this client is in a server's [`AppliedSettings`]; never
    /// [`AppliedSettings::NOBODY`] when `keep` is set.
    owner: u64,
    /// False when servers are reset after every transaction, so that what pgring set on
    /// one does not last until the client's next transaction.
    keep: bool,
}

impl Unreported {
    fn new(settings: Vec<(String, String)>, owner: u64, keep: bool) -> Option<Box<Unreported>> {
        if settings.is_empty() {
            return None;
        }
        let mut calls = String::new();
        for (name, value) in &settings {
            push_set_config(&mut calls, name, value);
        }
        Some(Box::new(Unreported {
            settings,
            calls: calls.into_boxed_str(),
            owner,
            keep: keep && owner != AppliedSettings::NOBODY,
        }))
    }

    fn has(&self, name: &str) -> bool {
        self.settings
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// True when `server`'s unreported settings are this client's, set by pgring and
    /// untouched by anyone else since.
    fn in_place(&self, server: &ReportedParams) -> bool {
        self.keep && server.applied().owner() == self.owner
    }
}

/// Appends `pg_catalog.set_config('name', 'value', false)` to a select list.
fn push_set_config(list: &mut String, name: &str, value: &str) {
    if !list.is_empty() {
        list.push_str(", ");
    }
    list.push_str("pg_catalog.set_config(");
    list.push_str(&quote_literal(name));
    list.push_str(", ");
    list.push_str(&quote_literal(value));
    list.push_str(", false)");
}

impl ClientParams {
    /// The client's value of a reported parameter (any case of `name`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.reported.find(name).map(|(_, v)| v)
    }

    /// The values of the parameters of [`TRACKED`], by position, all at once.
    pub fn from_array(values: [Option<&str>; TRACKED.len()]) -> ClientParams {
        ClientParams {
            reported: PackedParams::from_pairs(
                TRACKED
                    .iter()
                    .zip(values)
                    .filter_map(|(name, value)| Some((*name, value?))),
            ),
            unreported: None,
        }
    }

    /// The parameters a client asked for at login: `settings` in the order they apply
    /// (those of `options` first, then the startup packet's own, as PostgreSQL applies
    /// them; a later one for the same name wins), sorted by what the server reports.
    /// `reported` is the list the client is shown (the welcome): a setting of a parameter
    /// in it becomes a reported value, spelled as the server spells it; any other is an
    /// unreported setting. `owner` identifies the client to the servers' records (unique for
    /// as long as any server connection of its shard lives); `servers_keep_settings` is
    /// false when a reset query runs after every transaction.
    ///
    /// Read-only parameters
    /// ([`READ_ONLY_REPORTED`](crate::protocol::params::READ_ONLY_REPORTED)) are skipped:
    /// the login refuses them before this.
    pub fn from_startup<'a>(
        settings: impl IntoIterator<Item = (&'a str, &'a str)>,
        reported: &[(String, String)],
        owner: u64,
        servers_keep_settings: bool,
    ) -> ClientParams {
        let mut values: Vec<(&str, &str)> = Vec::new();
        let mut unreported: Vec<(String, String)> = Vec::new();
        for (name, value) in settings {
            if is_read_only(name) {
                continue;
            }
            values.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            unreported.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            match reported.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                Some((spelled, _)) => values.push((spelled, value)),
                None => unreported.push((name.to_owned(), value.to_owned())),
            }
        }
        ClientParams {
            reported: PackedParams::from_pairs(values),
            unreported: Unreported::new(unreported, owner, servers_keep_settings),
        }
    }

    /// True when the client has settings of parameters the server does not report.
    pub fn has_unreported(&self) -> bool {
        self.unreported.is_some()
    }

    /// The client's settings of parameters the server does not report, in order.
    pub fn unreported(&self) -> impl Iterator<Item = (&str, &str)> {
        self.unreported
            .iter()
            .flat_map(|u| u.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }

    /// Takes the server's value of every settable reported parameter the client has
    /// none for.
    pub fn fill_missing_from<'a>(&mut self, reported: impl Iterator<Item = (&'a str, &'a str)>) {
        let missing: Vec<(&str, &str)> = reported
            .filter(|(name, _)| {
                !is_read_only(name)
                    && self.reported.get(name).is_none()
                    && !self.unreported.as_ref().is_some_and(|u| u.has(name))
            })
            .collect();
        if !missing.is_empty() {
            self.reported = PackedParams::from_pairs(self.reported.iter().chain(missing));
        }
    }

    /// Records the client's value of a reported parameter (from a ParameterStatus its own
    /// `SET` produced); returns false for a parameter that is never restored (read-only,
    /// or one that cannot be kept).
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        if is_read_only(name) {
            return false;
        }
        // The server's spelling; for callers with another, PostgreSQL's, or the one the
        // client already has.
        let spelled: std::borrow::Cow<'_, str> = if self.reported.get(name).is_some() {
            name.into()
        } else if let Some(known) = known_reported(name) {
            known.into()
        } else if let Some((existing, _)) = self.reported.find(name) {
            existing.to_owned().into()
        } else {
            name.into()
        };
        // Reported now: no longer one to set blindly.
        if let Some(u) = &self.unreported {
            if u.has(name) {
                let rest = u
                    .settings
                    .iter()
                    .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
                    .cloned()
                    .collect();
                self.unreported = Unreported::new(rest, u.owner, u.keep);
            }
        }
        self.reported.set(&spelled, value)
    }

    /// The reported parameters the client has values for, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.reported
            .iter()
            .filter_map(|(name, value)| Some((static_name(name)?, value)))
    }

    /// True when `server` already shows every value this client expects and holds its
    /// unreported settings. Called for the server being attached (once per transaction in
    /// transaction pooling), it also marks the server as lent to someone who is not the
    /// owner of its record, unless this client is that owner: a spurious call only costs
    /// the owner a `SET` later.
    pub fn matches(&self, server: &ReportedParams) -> bool {
        let unreported_in_place = match &self.unreported {
            None => {
                let applied = server.applied();
                if applied.owner() != AppliedSettings::NOBODY {
                    applied.lend(AppliedSettings::NOBODY);
                }
                applied.is_clean()
            }
            Some(u) if u.in_place(server) => true,
            Some(_) => {
                server.applied().lend(AppliedSettings::NOBODY);
                false
            }
        };
        unreported_in_place
            && (self.reported == *server.settable()
                || self
                    .reported
                    .iter()
                    .all(|(name, value)| server.settable().get(name) == Some(value)))
    }

    /// The statements that make `server` match this client, or `None` when it does: one
    /// `SELECT pg_catalog.set_config(…), …` for what differs (and for every unreported
    /// setting unless they are in place), then a `RESET` of each unreported parameter
    /// pgring set there for someone else that this client has no setting for. Run as one
    /// simple query, they apply together or not at all.
    pub fn alignment_sql(&self, server: &ReportedParams) -> Option<String> {
        if self.matches(server) {
            return None;
        }
        let mut calls = String::new();
        for (name, value) in self.reported.iter() {
            if server.settable().get(name) != Some(value) {
                push_set_config(&mut calls, name, value);
            }
        }
        let mut resets = String::new();
        if !self.unreported.as_ref().is_some_and(|u| u.in_place(server)) {
            if let Some(u) = &self.unreported {
                if !calls.is_empty() {
                    calls.push_str(", ");
                }
                calls.push_str(&u.calls);
            }
            for name in server.applied().names().iter() {
                if !self.unreported.as_ref().is_some_and(|u| u.has(name)) {
                    resets.push_str("RESET ");
                    resets.push_str(&quote_ident(name));
                    resets.push(';');
                }
            }
        }
        let mut sql = String::new();
        if !calls.is_empty() {
            sql.push_str("SELECT ");
            sql.push_str(&calls);
            sql.push(';');
        }
        sql.push_str(&resets);
        (!sql.is_empty()).then_some(sql)
    }

    /// After the alignment statements ran on `server`: adopt its spelling of each reported
    /// value (`iso` comes back as `ISO, MDY`), so that the next comparison is exact, and
    /// record on the server what pgring's statements left there (this client's unreported
    /// settings, and nothing else). Call it only after [`ClientParams::alignment_sql`]'s
    /// statements for this server succeeded.
    pub fn adopt_server_spelling(&mut self, server: &ReportedParams) {
        if self.reported != *server.settable() {
            let adopted = PackedParams::from_pairs(
                self.reported
                    .iter()
                    .map(|(name, value)| (name, server.settable().get(name).unwrap_or(value))),
            );
            self.reported = adopted;
        }
        match &self.unreported {
            None => server
                .applied()
                .record(std::iter::empty(), AppliedSettings::NOBODY),
            Some(u) => server.applied().record(
                u.settings.iter().map(|(n, _)| n.as_str()),
                if u.keep {
                    u.owner
                } else {
                    AppliedSettings::NOBODY
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::params::READ_ONLY_REPORTED;

    /// A PostgreSQL 15 server's welcome.
    fn welcome() -> Vec<(String, String)> {
        [
            ("application_name", ""),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("default_transaction_read_only", "off"),
            ("in_hot_standby", "off"),
            ("integer_datetimes", "on"),
            ("IntervalStyle", "postgres"),
            ("is_superuser", "off"),
            ("server_encoding", "UTF8"),
            ("server_version", "15.4"),
            ("session_authorization", "app"),
            ("standard_conforming_strings", "on"),
            ("TimeZone", "UTC"),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
    }

    fn server_from(params: &[(String, String)]) -> ReportedParams {
        let mut server = ReportedParams::default();
        for (n, v) in params {
            server.set(n, v);
        }
        server
    }

    /// A client logged in with `settings` in front of a server showing `welcome()`.
    fn client(settings: &[(&str, &str)], owner: u64) -> ClientParams {
        let mut c = ClientParams::from_startup(settings.iter().copied(), &welcome(), owner, true);
        c.fill_missing_from(welcome().iter().map(|(n, v)| (n.as_str(), v.as_str())));
        c
    }

    /// Runs what `alignment_sql` asks for on `server`, as PostgreSQL would for the
    /// reported values (set_config('name', 'value', false) becomes a ParameterStatus).
    fn align(client: &mut ClientParams, server: &mut ReportedParams) -> Option<String> {
        let sql = client.alignment_sql(server)?;
        for (name, value) in client.reported.iter() {
            if sql.contains(&format!(
                "set_config({}, {}, false)",
                quote_literal(name),
                quote_literal(value)
            )) {
                server.set(name, value);
            }
        }
        client.adopt_server_spelling(server);
        Some(sql)
    }

    #[test]
    fn a_client_s_parameters_stay_small_in_its_session() {
        // Kept for as long as the client is connected, idle or not.
        assert_eq!(std::mem::size_of::<ClientParams>(), 24);
    }

    #[test]
    fn missing_values_are_filled_from_the_server_and_the_client_s_own_kept() {
        let mut client = ClientParams::from_array([Some("UTF8"), None, None, None, None, None]);
        client.fill_missing_from(
            [
                ("client_encoding", "SQL_ASCII"),
                ("TimeZone", "UTC"),
                ("server_version", "15.4"),
                ("is_superuser", "on"),
                ("search_path", "public"),
            ]
            .into_iter(),
        );
        assert_eq!(client.get("client_encoding"), Some("UTF8"));
        assert_eq!(client.get("TimeZone"), Some("UTC"));
        assert_eq!(client.get("search_path"), Some("public"));
        assert_eq!(
            client.get("server_version"),
            None,
            "read-only: not restored"
        );
        assert_eq!(client.iter().count(), 3);
    }

    #[test]
    fn a_client_filled_from_the_welcome_matches_its_servers_with_one_comparison() {
        let c = client(&[], 1);
        let server = server_from(&welcome());
        // The packed sets are equal: the comparison needs no lookup.
        assert_eq!(c.reported, *server.settable());
        assert!(c.matches(&server));
        assert_eq!(c.alignment_sql(&server), None);
        // Read-only values may differ (another role, a standby): still a match.
        let mut other = server_from(&welcome());
        other.set("is_superuser", "on");
        other.set("in_hot_standby", "on");
        assert!(c.matches(&other));
    }

    #[test]
    fn alignment_sets_only_what_differs() {
        let mut client = ClientParams::default();
        client.set("timezone", "UTC");
        client.set("application_name", "it's");
        let mut server = ReportedParams::default();
        server.set("TimeZone", "UTC");
        server.set("application_name", "psql");
        server.set("DateStyle", "ISO, MDY");
        assert!(!client.matches(&server));
        assert_eq!(
            client.alignment_sql(&server).as_deref(),
            Some("SELECT pg_catalog.set_config('application_name', 'it''s', false);")
        );
        server.set("application_name", "it's");
        assert!(client.matches(&server));
        assert_eq!(client.alignment_sql(&server), None);
        // Backslashes travel in an E'' literal whatever standard_conforming_strings is.
        client.set("search_path", r"a\b");
        assert_eq!(
            client.alignment_sql(&server).as_deref(),
            Some(r"SELECT pg_catalog.set_config('search_path', E'a\\b', false);")
        );
    }

    #[test]
    fn every_reported_parameter_is_tracked_not_a_fixed_list() {
        let mut c = client(&[], 1);
        let mut server = server_from(&welcome());
        // PostgreSQL 18 reports search_path; a SET by the client comes back as a
        // ParameterStatus, which the session hands to both sides.
        server.set("search_path", "\"$user\", public");
        c.fill_missing_from(
            server
                .to_vec()
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
        );
        assert!(c.matches(&server));
        assert!(c.set("search_path", "app, public"));
        server.set("search_path", "app, public");
        assert!(c.matches(&server));
        // Another server still on the default is set back to the client's value.
        let mut other = server_from(&welcome());
        other.set("search_path", "\"$user\", public");
        assert_eq!(
            align(&mut c, &mut other).as_deref(),
            Some("SELECT pg_catalog.set_config('search_path', 'app, public', false);")
        );
        assert!(c.matches(&other));
        // An extension's reported setting is just as tracked.
        assert!(c.set("citus.setting", "x"));
        assert_eq!(c.get("citus.setting"), Some("x"));
        assert!(c.iter().any(|(n, v)| n == "citus.setting" && v == "x"));
    }

    #[test]
    fn changing_one_value_keeps_the_others() {
        let mut p = ClientParams::default();
        p.set("client_encoding", "UTF8");
        p.set("TimeZone", "UTC");
        p.set("application_name", "app");
        p.set("timezone", "Europe/Paris");
        assert_eq!(p.get("client_encoding"), Some("UTF8"));
        assert_eq!(p.get("TimeZone"), Some("Europe/Paris"));
        assert_eq!(p.get("application_name"), Some("app"));
        assert_eq!(p.get("DateStyle"), None);
        p.set("application_name", "");
        assert_eq!(p.get("application_name"), Some(""));
        assert_eq!(p.get("TimeZone"), Some("Europe/Paris"));
        let names: Vec<_> = p.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["TimeZone", "application_name", "client_encoding"]);
    }

    #[test]
    fn the_server_spelling_is_adopted_for_the_values_the_client_has() {
        let mut client = ClientParams::default();
        client.set("DateStyle", "iso");
        client.set("application_name", "app");
        let mut server = ReportedParams::default();
        server.set("DateStyle", "ISO, MDY");
        server.set("application_name", "app");
        server.set("TimeZone", "UTC");
        client.adopt_server_spelling(&server);
        assert_eq!(client.get("DateStyle"), Some("ISO, MDY"));
        assert_eq!(client.get("application_name"), Some("app"));
        assert_eq!(client.get("TimeZone"), None);
        assert!(client.matches(&server));
    }

    #[test]
    fn read_only_parameters_are_never_set() {
        let mut p = ClientParams::default();
        assert!(p.set("timezone", "UTC"));
        for name in READ_ONLY_REPORTED {
            assert!(!p.set(name, "x"), "{name}");
        }
        assert!(!p.set("IS_SUPERUSER", "on"));
        assert_eq!(p.iter().count(), 1);
        // Not even when asked for at startup (the login refuses them first).
        let c = ClientParams::from_startup(
            [("server_version", "1"), ("is_superuser", "on")],
            &welcome(),
            1,
            true,
        );
        assert_eq!(c, ClientParams::default());
        let mut server = server_from(&welcome());
        server.set("session_authorization", "postgres");
        let mut c = client(&[], 1);
        c.fill_missing_from([("session_authorization", "app")].into_iter());
        let sql = c.alignment_sql(&server);
        assert_eq!(sql, None, "{sql:?}");
    }

    #[test]
    fn startup_settings_are_sorted_by_what_the_server_reports() {
        let c = ClientParams::from_startup(
            [
                ("statement_timeout", "1s"),
                ("datestyle", "German"),
                ("Statement_Timeout", "5s"),
                ("search_path", "app"),
                ("DateStyle", "ISO"),
            ],
            &welcome(),
            3,
            true,
        );
        // Reported on PostgreSQL 15: spelled as the server spells it, the later value won.
        assert_eq!(c.get("DateStyle"), Some("ISO"));
        assert_eq!(c.iter().collect::<Vec<_>>(), [("DateStyle", "ISO")]);
        // Not reported (search_path before 18): kept as settings, each name once.
        assert_eq!(
            c.unreported().collect::<Vec<_>>(),
            [("Statement_Timeout", "5s"), ("search_path", "app")]
        );
        assert!(c.has_unreported());
        assert!(
            !ClientParams::from_startup([("TimeZone", "UTC")], &welcome(), 3, true)
                .has_unreported()
        );
    }

    #[test]
    fn unreported_settings_are_set_once_per_server_while_it_stays_with_the_client() {
        let mut a = client(&[("statement_timeout", "1234")], 1);
        let mut s = server_from(&welcome());
        // A fresh server: the settings are set, in one statement.
        assert!(!a.matches(&s));
        assert_eq!(
            align(&mut a, &mut s).as_deref(),
            Some("SELECT pg_catalog.set_config('statement_timeout', '1234', false);")
        );
        // The same server back with nobody in between: nothing to do.
        assert!(a.matches(&s));
        assert!(a.matches(&s));
        assert_eq!(a.alignment_sql(&s), None);
        assert_eq!(s.applied().owner(), 1);
    }

    #[test]
    fn another_client_in_between_makes_the_settings_be_set_again() {
        let mut a = client(&[("statement_timeout", "1234")], 1);
        let mut b = client(&[], 2);
        let mut s = server_from(&welcome());
        align(&mut a, &mut s).unwrap();
        // B has no settings: what pgring set for A is reset before B runs anything.
        assert!(!b.matches(&s));
        assert_eq!(
            align(&mut b, &mut s).as_deref(),
            Some("RESET \"statement_timeout\";")
        );
        assert!(s.applied().is_clean());
        // From then on B costs nothing on this server…
        assert!(b.matches(&s));
        // …and A gets its setting again.
        assert_eq!(
            align(&mut a, &mut s).as_deref(),
            Some("SELECT pg_catalog.set_config('statement_timeout', '1234', false);")
        );
        // B looking at the server (the fast path, say) is enough to make A distrust it,
        // even if nothing was to be reset.
        let mut clean = server_from(&welcome());
        let mut c = client(&[("work_mem", "8MB")], 3);
        align(&mut c, &mut clean).unwrap();
        assert!(c.matches(&clean));
        let mut d = client(&[("work_mem", "8MB")], 4);
        // Same values, another client: D cannot know whether C changed work_mem itself.
        assert!(!d.matches(&clean));
        align(&mut d, &mut clean).unwrap();
        assert!(!c.matches(&clean));
    }

    #[test]
    fn settings_of_two_clients_replace_each_other() {
        let mut a = client(&[("statement_timeout", "1234"), ("work_mem", "8MB")], 1);
        let mut b = client(&[("statement_timeout", "4321"), ("DateStyle", "German")], 2);
        let mut s = server_from(&welcome());
        align(&mut a, &mut s).unwrap();
        assert_eq!(
            align(&mut b, &mut s).as_deref(),
            Some(
                "SELECT pg_catalog.set_config('DateStyle', 'German', false), \
                 pg_catalog.set_config('statement_timeout', '4321', false);RESET \"work_mem\";"
            )
        );
        assert_eq!(&*s.applied().names(), [Box::from("statement_timeout")]);
        // A gets its own back, and B's DateStyle is undone as a reported value.
        assert_eq!(
            align(&mut a, &mut s).as_deref(),
            Some(
                "SELECT pg_catalog.set_config('DateStyle', 'ISO, MDY', false), \
                 pg_catalog.set_config('statement_timeout', '1234', false), \
                 pg_catalog.set_config('work_mem', '8MB', false);"
            )
        );
    }

    #[test]
    fn a_reported_difference_on_an_owned_server_sets_only_that() {
        let mut a = client(&[("statement_timeout", "1234")], 1);
        let mut s = server_from(&welcome());
        align(&mut a, &mut s).unwrap();
        // A's own SET TimeZone, seen on another server, is restored here.
        a.set("TimeZone", "Asia/Tokyo");
        assert_eq!(
            align(&mut a, &mut s).as_deref(),
            Some("SELECT pg_catalog.set_config('TimeZone', 'Asia/Tokyo', false);")
        );
        assert!(a.matches(&s));
    }

    #[test]
    fn servers_reset_after_each_transaction_are_never_trusted() {
        let mut a =
            ClientParams::from_startup([("statement_timeout", "1234")], &welcome(), 1, false);
        a.fill_missing_from(welcome().iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let mut s = server_from(&welcome());
        align(&mut a, &mut s).unwrap();
        assert!(!a.matches(&s));
        assert!(align(&mut a, &mut s).is_some());
        // NOBODY as an owner is never trusted either.
        let mut z = client(&[("statement_timeout", "1")], AppliedSettings::NOBODY);
        align(&mut z, &mut s).unwrap();
        assert!(!z.matches(&s));
    }

    #[test]
    fn a_setting_the_server_starts_reporting_becomes_a_reported_value() {
        let mut a = client(&[("search_path", "app"), ("work_mem", "8MB")], 1);
        assert!(a.set("search_path", "app"));
        assert_eq!(a.unreported().collect::<Vec<_>>(), [("work_mem", "8MB")]);
        assert_eq!(a.get("search_path"), Some("app"));
        assert!(a.set("work_mem", "8MB"));
        assert!(!a.has_unreported());
    }
}
