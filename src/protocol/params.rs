//! The reported parameters pgring keeps consistent for a client, and the server's
//! parameter list with an index for them.
//!
//! PostgreSQL reports a handful of settings in ParameterStatus messages. A pooled client
//! must keep seeing the values it chose even as it is handed different server
//! connections, so pgring compares the client's values with the server's at every
//! attach. That comparison runs once per transaction in transaction pooling, so both
//! sides keep the tracked values by position in [`TRACKED`]: a check is at most six
//! string comparisons, with no name lookups.

/// The parameters kept consistent, in PostgreSQL's spelling (PgBouncer tracks the same
/// set).
pub const TRACKED: [&str; 6] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "standard_conforming_strings",
    "application_name",
];

/// The position of a tracked parameter in [`TRACKED`]. Servers report the canonical
/// spelling; startup packets may use any case, which is accepted as PostgreSQL accepts it.
pub fn tracked_index(name: &str) -> Option<usize> {
    TRACKED
        .iter()
        .position(|t| *t == name)
        .or_else(|| TRACKED.iter().position(|t| t.eq_ignore_ascii_case(name)))
}

/// Every parameter a server reported, in the order first seen, with the tracked ones
/// indexed.
#[derive(Debug, Clone)]
pub struct ReportedParams {
    all: Vec<(String, String)>,
    /// Where each tracked parameter sits in `all`, [`NOT_REPORTED`] when it is not there.
    tracked: [u8; TRACKED.len()],
}

const NOT_REPORTED: u8 = u8::MAX;

impl Default for ReportedParams {
    fn default() -> Self {
        ReportedParams {
            all: Vec::new(),
            tracked: [NOT_REPORTED; TRACKED.len()],
        }
    }
}

impl ReportedParams {
    /// Records a ParameterStatus.
    pub fn set(&mut self, name: &str, value: &str) {
        if let Some(pos) = self.all.iter().position(|(n, _)| n == name) {
            let v = &mut self.all[pos].1;
            v.clear();
            v.push_str(value);
            return;
        }
        if let Some(i) = TRACKED.iter().position(|t| *t == name) {
            // A server reports a few dozen parameters at most; past 254 the value is
            // still kept, only not indexed (and then compared as missing).
            self.tracked[i] = u8::try_from(self.all.len()).unwrap_or(NOT_REPORTED);
        }
        self.all.push((name.to_owned(), value.to_owned()));
    }

    /// The value of the tracked parameter at `index` in [`TRACKED`].
    pub fn tracked(&self, index: usize) -> Option<&str> {
        let pos = *self.tracked.get(index)?;
        self.all.get(usize::from(pos)).map(|(_, v)| v.as_str())
    }

    /// Every reported parameter (name, value), in the order first seen.
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.all.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_matched_case_insensitively() {
        assert_eq!(tracked_index("datestyle"), Some(1));
        assert_eq!(tracked_index("TIMEZONE"), Some(2));
        assert_eq!(tracked_index("search_path"), None);
    }

    #[test]
    fn tracked_values_follow_updates() {
        let mut p = ReportedParams::default();
        p.set("server_version", "15.4");
        p.set("TimeZone", "UTC");
        assert_eq!(p.tracked(2), Some("UTC"));
        assert_eq!(p.tracked(1), None);
        p.set("TimeZone", "Europe/Paris");
        assert_eq!(p.tracked(2), Some("Europe/Paris"));
        let all = p.to_vec();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], ("server_version".to_owned(), "15.4".to_owned()));
        // Only the canonical spelling a server reports is indexed.
        p.set("timezone", "x");
        assert_eq!(p.tracked(2), Some("Europe/Paris"));
    }
}
