//! User-name maps in PostgreSQL's `pg_ident.conf` format.
//!
//! Owns: turning an ident file into [`IdentMaps`], and answering whether a
//! map lets a system user (the CN of a client certificate, or the
//! operating-system user of a Unix-socket peer) log in as a database user
//! ([`IdentMaps::permits`]).
//!
//! Must not: find out who the system user is (the caller passes it), run an
//! authentication exchange, or panic on any input. Only [`IdentMaps::load`]
//! touches the file system.
//!
//! The lexical rules (comments, quotes, backslash continuation) are those of
//! the private `conf_tokens` module. Each line reads `MAPNAME SYSTEM-USERNAME
//! PG-USERNAME`: exactly three fields, none of them a comma list. What pgring
//! accepts:
//!
//! - A map may span many lines, anywhere in the file; a pair is permitted
//!   when any line of the map permits it. Names compare exactly, case
//!   included.
//! - A SYSTEM-USERNAME starting with `/` (quoted or not: quotes are how a
//!   pattern holds blanks, commas or `#`) is a regular expression in the
//!   syntax of the `regex` crate (close to PostgreSQL's for everyday
//!   patterns; no back-references or look-around). It is searched for, not
//!   anchored: write `^...$` to match the whole name. A pattern that does not
//!   compile is an error naming the file, the line and the reason; so is one
//!   that compiles too big (over [`REGEX_SIZE_LIMIT`] bytes).
//! - With a pattern, every `\1` in PG-USERNAME is replaced by what the first
//!   capture group matched. `\1` without a first group is an error; a first
//!   group that took no part in the match permits nothing. Without a
//!   pattern, `\1` is just two characters of a name.
//! - PG-USERNAME `all` (unquoted) is any database user. `+group` is an error
//!   (pgring does not know role membership), and so is an unquoted name
//!   starting with `/` (a pattern there is not supported); quote either to
//!   mean the name.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use regex::{Regex, RegexBuilder};

use super::conf_tokens::{single, tokenize, Line};

/// The most memory one compiled SYSTEM-USERNAME pattern may take.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone)]
enum SystemUser {
    Name(String),
    Pattern(Regex),
}

#[derive(Debug, Clone)]
enum DatabaseUser {
    All,
    /// `substitute`: `\1` is replaced by the first capture group.
    Name {
        name: String,
        substitute: bool,
    },
}

#[derive(Debug, Clone)]
struct Mapping {
    system: SystemUser,
    database: DatabaseUser,
}

impl Mapping {
    fn permits(&self, system_user: &str, db_user: &str) -> bool {
        match (&self.system, &self.database) {
            (SystemUser::Name(name), DatabaseUser::All) => name == system_user,
            (SystemUser::Name(name), DatabaseUser::Name { name: db, .. }) => {
                name == system_user && db == db_user
            }
            (SystemUser::Pattern(re), DatabaseUser::All) => re.is_match(system_user),
            (SystemUser::Pattern(re), DatabaseUser::Name { name, substitute }) => {
                let Some(captures) = re.captures(system_user) else {
                    return false;
                };
                if !substitute {
                    return name == db_user;
                }
                match captures.get(1) {
                    Some(group) => name.replace(r"\1", group.as_str()) == db_user,
                    None => false,
                }
            }
        }
    }
}

/// The maps of one ident file, by map name.
#[derive(Debug, Clone, Default)]
pub struct IdentMaps {
    maps: HashMap<String, Vec<Mapping>>,
}

/// Why an ident file could not be loaded. The messages name the file (and
/// the line, for parse errors).
#[derive(Debug, thiserror::Error)]
pub enum IdentError {
    /// The file could not be read.
    #[error("auth_ident_file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A line is wrong.
    #[error("auth_ident_file {}:{line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl IdentError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            IdentError::Io { path, .. } | IdentError::Parse { path, .. } => path,
        }
    }

    /// The 1-based line the error points at, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            IdentError::Io { .. } => None,
            IdentError::Parse { line, .. } => Some(*line),
        }
    }
}

impl IdentMaps {
    /// Reads and parses the file.
    pub fn load(path: &Path) -> Result<IdentMaps, IdentError> {
        let text = std::fs::read_to_string(path).map_err(|source| IdentError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<IdentMaps, IdentError> {
        let parse_error = |line: usize, message: String| IdentError::Parse {
            path: path.to_owned(),
            line,
            message,
        };
        let lines = tokenize(text).map_err(|e| parse_error(e.line, e.message))?;
        let mut maps: HashMap<String, Vec<Mapping>> = HashMap::new();
        for line in lines {
            let number = line.number;
            let (map, mapping) = parse_line(line).map_err(|m| parse_error(number, m))?;
            maps.entry(map).or_default().push(mapping);
        }
        Ok(IdentMaps { maps })
    }

    /// True when map `map` lets the system (certificate CN or OS) user
    /// `system_user` log in as `db_user`.
    pub fn permits(&self, map: &str, system_user: &str, db_user: &str) -> bool {
        self.maps
            .get(map)
            .is_some_and(|lines| lines.iter().any(|m| m.permits(system_user, db_user)))
    }

    /// True when the file has at least one line for `map`.
    pub fn has_map(&self, map: &str) -> bool {
        self.maps.contains_key(map)
    }

    /// How many maps the file defines.
    pub fn len(&self) -> usize {
        self.maps.len()
    }

    /// True when the file defines no map.
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }
}

fn parse_line(line: Line) -> Result<(String, Mapping), String> {
    let count = line.fields.len();
    if count > 3 {
        return Err(format!(
            "{count} fields where MAPNAME SYSTEM-USERNAME PG-USERNAME are expected \
             (quote names that hold blanks)"
        ));
    }
    let mut fields = line.fields.into_iter();
    let mut next = |what: &str| match fields.next() {
        Some(field) => single(field, what),
        None => Err(format!("end of line before the {what}")),
    };
    let map = next("map name")?;
    let system = next("system user name")?;
    let database = next("database user name")?;

    let system = match system.text.strip_prefix('/') {
        Some(pattern) => SystemUser::Pattern(
            RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    format!(
                        "invalid regular expression \"{pattern}\": {}",
                        one_line(&e.to_string())
                    )
                })?,
        ),
        None => SystemUser::Name(system.text),
    };

    let database = if database.is_keyword("all") {
        DatabaseUser::All
    } else if !database.quoted && database.text.starts_with('+') {
        return Err(format!(
            "\"{}\": group membership (+group) is not supported by pgring",
            database.text
        ));
    } else if !database.quoted && database.text.starts_with('/') {
        return Err(format!(
            "\"{}\": regular expressions are not supported in PG-USERNAME \
             (quote the name if it starts with \"/\")",
            database.text
        ));
    } else {
        let substitute = match &system {
            SystemUser::Pattern(re) => {
                database.text.contains(r"\1") && {
                    if re.captures_len() < 2 {
                        return Err(format!(
                            "\"{}\" uses \\1 but the regular expression has no capture group",
                            database.text
                        ));
                    }
                    true
                }
            }
            SystemUser::Name(_) => false,
        };
        DatabaseUser::Name {
            name: database.text,
            substitute,
        }
    };

    Ok((map.text, Mapping { system, database }))
}

/// The regex crate's messages span lines (the pattern, carets under the
/// culprit, the reason); a log line wants one, without the carets.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| l.chars().any(|c| !matches!(c, '^' | '~' | ' ')))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
