//! The session parameters pgring keeps consistent for a client across the server
//! connections it is given.
//!
//! A client is shown one value of each tracked parameter (PgBouncer tracks the same set).
//! When it is handed a server whose value differs, pgring first sends `SET` statements so
//! that the server matches the client; when the client itself changes one (`SET TimeZone`),
//! the server's ParameterStatus tells pgring, which records it as the client's value.

use crate::protocol::frontend::{quote_ident, quote_literal};
use crate::protocol::params::{tracked_index, ReportedParams, TRACKED};

/// The canonical spelling of a tracked parameter (startup names are case-insensitive).
pub fn tracked_name(name: &str) -> Option<&'static str> {
    tracked_index(name).map(|i| TRACKED[i])
}

/// The values a client expects, by position in [`TRACKED`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientParams {
    values: [Option<String>; TRACKED.len()],
}

impl ClientParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values[tracked_index(name)?].as_deref()
    }

    /// Records a value; returns false when `name` is not tracked.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        let Some(i) = tracked_index(name) else {
            return false;
        };
        match &mut self.values[i] {
            Some(v) => {
                if v != value {
                    v.clear();
                    v.push_str(value);
                }
            }
            slot => *slot = Some(value.to_owned()),
        }
        true
    }

    /// The tracked parameters the client has values for, in [`TRACKED`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        TRACKED
            .iter()
            .zip(&self.values)
            .filter_map(|(n, v)| Some((*n, v.as_deref()?)))
    }

    /// True when `server` already shows every value this client expects.
    pub fn matches(&self, server: &ReportedParams) -> bool {
        self.values
            .iter()
            .enumerate()
            .all(|(i, v)| v.is_none() || server.tracked(i) == v.as_deref())
    }

    /// The `SET` statements that make `server` match this client, or `None` when it does.
    pub fn alignment_sql(&self, server: &ReportedParams) -> Option<String> {
        if self.matches(server) {
            return None;
        }
        let mut sql = String::new();
        for (i, (name, value)) in TRACKED.iter().zip(&self.values).enumerate() {
            let Some(value) = value else { continue };
            if server.tracked(i) != Some(value.as_str()) {
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
        for (i, value) in self.values.iter_mut().enumerate() {
            if let (Some(value), Some(v)) = (value.as_mut(), server.tracked(i)) {
                if v != value {
                    v.clone_into(value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_matched_case_insensitively() {
        assert_eq!(tracked_name("datestyle"), Some("DateStyle"));
        assert_eq!(tracked_name("TIMEZONE"), Some("TimeZone"));
        assert_eq!(tracked_name("search_path"), None);
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
    fn set_ignores_untracked_names() {
        let mut p = ClientParams::default();
        assert!(p.set("timezone", "UTC"));
        assert!(!p.set("work_mem", "1MB"));
        assert_eq!(p.get("TimeZone"), Some("UTC"));
        p.set("TimeZone", "Europe/Paris");
        assert_eq!(p.iter().count(), 1);
    }
}
