//! The reported parameters pgring keeps consistent for a client, and the server's
//! parameter list with those kept apart.
//!
//! PostgreSQL reports a handful of settings in ParameterStatus messages. A pooled client
//! must keep seeing the values it chose even as it is handed different server
//! connections, so pgring compares the client's values with the server's at every
//! attach. That comparison runs once per transaction in transaction pooling, so both
//! sides keep the tracked values packed the same way ([`TrackedValues`], by position in
//! [`TRACKED`]): when the server shows exactly the client's values, as it usually does,
//! the check is one comparison of two short byte strings, with no name lookups.

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

/// Values of the tracked parameters, by position in [`TRACKED`], in one allocation: the
/// values present, concatenated in order, cut apart by `ends`.
///
/// Both sides of the per-transaction check keep this layout (a client its expected values,
/// a server what it reported), so that the usual case, a server showing exactly what the
/// client expects, is one comparison of two short byte strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackedValues {
    text: Box<str>,
    /// Where value `i` ends in `text` (an absent value is empty).
    ends: [u32; TRACKED.len()],
    /// Bit `i` is set when `TRACKED[i]` has a value.
    present: u8,
}

impl TrackedValues {
    /// The value of `TRACKED[i]`.
    pub fn get(&self, i: usize) -> Option<&str> {
        if i >= TRACKED.len() || self.present & (1 << i) == 0 {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..self.ends[i] as usize)
    }

    /// Every value, by position.
    pub fn to_array(&self) -> [Option<&str>; TRACKED.len()] {
        std::array::from_fn(|i| self.get(i))
    }

    pub fn from_array(values: [Option<&str>; TRACKED.len()]) -> TrackedValues {
        let mut text = String::new();
        let mut packed = TrackedValues::default();
        for (i, value) in values.into_iter().enumerate() {
            if let Some(v) = value {
                text.push_str(v);
                packed.present |= 1 << i;
            }
            // Values come from protocol messages, far below 4 GiB in all.
            packed.ends[i] = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        packed.text = text.into_boxed_str();
        packed
    }

    /// Replaces the value of `TRACKED[i]` (rebuilds the whole: values change rarely).
    pub fn set(&mut self, i: usize, value: &str) {
        if i >= TRACKED.len() || self.get(i) == Some(value) {
            return;
        }
        let mut values = self.to_array();
        values[i] = Some(value);
        *self = TrackedValues::from_array(values);
    }
}

/// Every parameter a server reported, in the order first seen, with the tracked ones
/// also kept packed.
#[derive(Debug, Clone, Default)]
pub struct ReportedParams {
    all: Vec<(String, String)>,
    /// The tracked ones again, packed for the per-transaction comparison.
    tracked: TrackedValues,
}

impl ReportedParams {
    /// Records a ParameterStatus.
    pub fn set(&mut self, name: &str, value: &str) {
        // Servers report the canonical spelling: only that one is tracked.
        if let Some(i) = TRACKED.iter().position(|t| *t == name) {
            self.tracked.set(i, value);
        }
        if let Some(pos) = self.all.iter().position(|(n, _)| n == name) {
            let v = &mut self.all[pos].1;
            v.clear();
            v.push_str(value);
            return;
        }
        self.all.push((name.to_owned(), value.to_owned()));
    }

    /// The value of the tracked parameter at `index` in [`TRACKED`].
    pub fn tracked(&self, index: usize) -> Option<&str> {
        self.tracked.get(index)
    }

    /// All tracked values, packed.
    pub fn tracked_values(&self) -> &TrackedValues {
        &self.tracked
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
    fn packed_values_keep_each_value_apart_and_compare_by_content() {
        let mut a = TrackedValues::default();
        assert_eq!(a.get(0), None);
        a.set(2, "UTC");
        a.set(0, "UTF8");
        a.set(5, "");
        assert_eq!(
            a.to_array(),
            [Some("UTF8"), None, Some("UTC"), None, None, Some("")]
        );
        assert_eq!(a.get(6), None, "out of range");
        a.set(2, "Europe/Paris");
        assert_eq!(a.get(0), Some("UTF8"));
        assert_eq!(a.get(2), Some("Europe/Paris"));
        // The same values set in another order are equal; a missing value is not an
        // empty one.
        let b = TrackedValues::from_array([
            Some("UTF8"),
            None,
            Some("Europe/Paris"),
            None,
            None,
            Some(""),
        ]);
        assert_eq!(a, b);
        let c =
            TrackedValues::from_array([Some("UTF8"), None, Some("Europe/Paris"), None, None, None]);
        assert_ne!(a, c);
        // Values that concatenate alike but split differently differ.
        let d = TrackedValues::from_array([Some("ab"), Some("c"), None, None, None, None]);
        let e = TrackedValues::from_array([Some("a"), Some("bc"), None, None, None, None]);
        assert_ne!(d, e);
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
