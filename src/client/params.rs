//! The session parameters pgring keeps consistent for a client across the server
//! connections it is given.
//!
//! A client is shown one value of each tracked parameter (PgBouncer tracks the same set).
//! When it is handed a server whose value differs, pgring first sends `SET` statements so
//! that the server matches the client; when the client itself changes one (`SET TimeZone`),
//! the server's ParameterStatus tells pgring, which records it as the client's value.

use crate::protocol::frontend::{quote_ident, quote_literal};
use crate::server::ServerConn;

/// The parameters kept consistent, in PostgreSQL's spelling.
pub const TRACKED: [&str; 6] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "standard_conforming_strings",
    "application_name",
];

/// The canonical spelling of a tracked parameter (startup names are case-insensitive).
pub fn tracked_name(name: &str) -> Option<&'static str> {
    TRACKED
        .iter()
        .copied()
        .find(|t| t.eq_ignore_ascii_case(name))
}

/// The values a client expects, one per tracked parameter it has a value for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientParams {
    values: Vec<(&'static str, String)>,
}

impl ClientParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Records a value; returns false when `name` is not tracked.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        let Some(name) = tracked_name(name) else {
            return false;
        };
        match self.values.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                if v != value {
                    v.clear();
                    v.push_str(value);
                }
            }
            None => self.values.push((name, value.to_owned())),
        }
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.values.iter().map(|(n, v)| (*n, v.as_str()))
    }

    /// The `SET` statements that make `server` match this client, or `None` when it does.
    pub fn alignment_sql(&self, server: &ServerConn) -> Option<String> {
        let mut sql = String::new();
        for (name, value) in self.iter() {
            if server.param(name) != Some(value) {
                sql.push_str("SET ");
                sql.push_str(&quote_ident(name));
                sql.push_str(" = ");
                sql.push_str(&quote_literal(value));
                sql.push(';');
            }
        }
        (!sql.is_empty()).then_some(sql)
    }

    /// After alignment, adopt the server's spelling of each value (`iso` comes back as
    /// `ISO, MDY`), so that the next comparison is exact.
    pub fn adopt_server_spelling(&mut self, server: &ServerConn) {
        for (name, value) in self.values.iter_mut() {
            if let Some(v) = server.param(name) {
                if v != value {
                    *value = v.to_owned();
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
    fn set_ignores_untracked_names() {
        let mut p = ClientParams::default();
        assert!(p.set("timezone", "UTC"));
        assert!(!p.set("work_mem", "1MB"));
        assert_eq!(p.get("TimeZone"), Some("UTC"));
        p.set("TimeZone", "Europe/Paris");
        assert_eq!(p.iter().count(), 1);
    }
}
