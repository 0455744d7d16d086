//! The session parameters pgring keeps consistent for a client across the server
//! connections it is given.
//!
//! A client is shown one value of each tracked parameter (PgBouncer tracks the same set).
//! When it is handed a server whose value differs, pgring first sends `SET` statements so
//! that the server matches the client; when the client itself changes one (`SET TimeZone`),
//! the server's ParameterStatus tells pgring, which records it as the client's value.

use crate::protocol::frontend::{quote_ident, quote_literal};
use crate::protocol::params::{tracked_index, ReportedParams, TrackedValues, TRACKED};

/// The values a client expects, by position in [`TRACKED`].
///
/// Kept in the same packed layout as a server's reported values ([`TrackedValues`]): a
/// client holds these for as long as it is connected, and they are compared with a
/// server's at every attach, which in the usual case (the server shows exactly the
/// client's values) is one comparison of two short byte strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientParams {
    values: TrackedValues,
}

impl ClientParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(tracked_index(name)?)
    }

    /// The values by position in [`TRACKED`], all at once (one allocation).
    pub fn from_array(values: [Option<&str>; TRACKED.len()]) -> ClientParams {
        ClientParams {
            values: TrackedValues::from_array(values),
        }
    }

    /// Takes the server's value of every tracked parameter the client has none for.
    pub fn fill_missing_from<'a>(&mut self, reported: impl Iterator<Item = (&'a str, &'a str)>) {
        let mut values = self.values.to_array();
        let mut changed = false;
        for (name, value) in reported {
            if let Some(i) = TRACKED.iter().position(|t| *t == name) {
                if values[i].is_none() {
                    values[i] = Some(value);
                    changed = true;
                }
            }
        }
        if changed {
            self.values = TrackedValues::from_array(values);
        }
    }

    /// Records a value; returns false when `name` is not tracked.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        let Some(i) = tracked_index(name) else {
            return false;
        };
        self.values.set(i, value);
        true
    }

    /// The tracked parameters the client has values for, in [`TRACKED`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        (0..TRACKED.len()).filter_map(|i| Some((TRACKED[i], self.values.get(i)?)))
    }

    /// True when `server` already shows every value this client expects.
    pub fn matches(&self, server: &ReportedParams) -> bool {
        self.values == *server.tracked_values()
            || (0..TRACKED.len()).all(|i| match self.values.get(i) {
                None => true,
                v => server.tracked(i) == v,
            })
    }

    /// The `SET` statements that make `server` match this client, or `None` when it does.
    pub fn alignment_sql(&self, server: &ReportedParams) -> Option<String> {
        if self.matches(server) {
            return None;
        }
        let mut sql = String::new();
        for (i, name) in TRACKED.iter().enumerate() {
            let Some(value) = self.values.get(i) else {
                continue;
            };
            if server.tracked(i) != Some(value) {
                sql.push_str("SET ");
                sql.push_str(&quote_ident(name));
                sql.push_str(" = ");
                sql.push_str(&quote_literal(value));
                sql.push(';');
            }
        }
        Some(sql)
    }

    /// After alignment, adopt the server's spelling of each value (`iso` comes back as
    /// `ISO, MDY`), so that the next comparison is exact.
    pub fn adopt_server_spelling(&mut self, server: &ReportedParams) {
        if self.values == *server.tracked_values() {
            return;
        }
        let mut values = self.values.to_array();
        for (i, value) in values.iter_mut().enumerate() {
            if value.is_some() {
                if let Some(v) = server.tracked(i) {
                    *value = Some(v);
                }
            }
        }
        self.values = TrackedValues::from_array(values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_values_are_filled_from_the_server_and_the_client_s_own_kept() {
        let mut client = ClientParams::from_array([Some("UTF8"), None, None, None, None, None]);
        client.fill_missing_from(
            [
                ("client_encoding", "SQL_ASCII"),
                ("TimeZone", "UTC"),
                ("server_version", "15.4"),
            ]
            .into_iter(),
        );
        assert_eq!(client.get("client_encoding"), Some("UTF8"));
        assert_eq!(client.get("TimeZone"), Some("UTC"));
        assert_eq!(client.iter().count(), 2);
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
            Some("SET \"application_name\" = 'it''s';")
        );
        server.set("application_name", "it's");
        assert!(client.matches(&server));
        assert_eq!(client.alignment_sql(&server), None);
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
        assert_eq!(names, ["client_encoding", "TimeZone", "application_name"]);
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
    fn set_ignores_untracked_names() {
        let mut p = ClientParams::default();
        assert!(p.set("timezone", "UTC"));
        assert!(!p.set("work_mem", "1MB"));
        assert_eq!(p.get("TimeZone"), Some("UTC"));
        p.set("TimeZone", "Europe/Paris");
        assert_eq!(p.iter().count(), 1);
    }
}
