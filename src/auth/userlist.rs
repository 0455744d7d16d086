//! PgBouncer's `auth_file` (`userlist.txt`) format.
//!
//! Owns: parsing the file's text into [`UserEntry`] values and classifying
//! each password field as plaintext, MD5 secret or SCRAM verifier
//! ([`Secret`]).
//!
//! Must not: read files (the caller passes the text), derive keys (PBKDF2 is
//! done once by [`crate::auth::table`]), or print secrets (`Debug` redacts).
//!
//! Format: each non-empty line is `"username" "password"`; further fields are
//! ignored. A `"` inside a quoted string is written doubled (`""`); no other
//! escapes exist (a backslash is literal). Lines whose first non-blank
//! character is `;` or `#` are comments; blank lines are ignored. Both `\n`
//! and `\r\n` line endings are accepted. Duplicate user names are returned
//! as-is (in file order).

use std::fmt;

use super::md5::is_md5_secret;
use super::scram::ScramSecret;

/// A password field, classified.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Plaintext password (anything that is neither of the below).
    Plain(String),
    /// PostgreSQL MD5 secret: `md5` followed by 32 hex digits.
    Md5(String),
    /// SCRAM-SHA-256 verifier (`SCRAM-SHA-256$...`).
    Scram(ScramSecret),
}

impl Secret {
    /// Classifies a password field. A field with the `SCRAM-SHA-256$` prefix
    /// that does not parse is an error (returned as a human message).
    pub fn classify(field: &str) -> Result<Self, String> {
        if field.starts_with("SCRAM-SHA-256$") {
            ScramSecret::parse(field)
                .map(Secret::Scram)
                .map_err(|e| format!("malformed SCRAM secret: {e}"))
        } else if is_md5_secret(field) {
            Ok(Secret::Md5(field.to_owned()))
        } else {
            Ok(Secret::Plain(field.to_owned()))
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain(_) => f.write_str("Plain(<redacted>)"),
            Self::Md5(_) => f.write_str("Md5(<redacted>)"),
            Self::Scram(s) => f.debug_tuple("Scram").field(s).finish(),
        }
    }
}

/// One user line of the auth file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// User name, unquoted.
    pub name: String,
    /// Classified password field.
    pub secret: Secret,
}

/// A parse error, with the 1-based line number it occurred on. The message
/// never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct UserlistError {
    /// 1-based line number.
    pub line: usize,
    /// Human-readable description.
    pub message: String,
}

/// Parses a `"..."` string at the start of `s` (which must begin with `"`).
/// Returns the unquoted content and the remainder after the closing quote.
fn parse_quoted(s: &str) -> Result<(String, &str), &'static str> {
    let mut rest = s
        .strip_prefix('"')
        .ok_or("expected '\"' to start a quoted string")?;
    let mut out = String::new();
    loop {
        let Some(pos) = rest.find('"') else {
            return Err("unterminated quoted string");
        };
        out.push_str(&rest[..pos]);
        rest = &rest[pos + 1..];
        if let Some(after) = rest.strip_prefix('"') {
            out.push('"');
            rest = after;
        } else {
            return Ok((out, rest));
        }
    }
}

fn parse_line(line: &str) -> Result<Option<UserEntry>, String> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
        return Ok(None);
    }
    if !line.starts_with('"') {
        return Err("expected a quoted user name".to_owned());
    }
    let (name, rest) = parse_quoted(line).map_err(|m| format!("user name: {m}"))?;
    if name.is_empty() {
        return Err("empty user name".to_owned());
    }
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Err("missing password".to_owned());
    }
    if !rest.starts_with('"') {
        return Err("expected a quoted password after the user name".to_owned());
    }
    let (password, _ignored) = parse_quoted(rest).map_err(|m| format!("password: {m}"))?;
    let secret = Secret::classify(&password)?;
    Ok(Some(UserEntry { name, secret }))
}

/// Parses the text of a PgBouncer `auth_file`.
pub fn parse_userlist(text: &str) -> Result<Vec<UserEntry>, UserlistError> {
    let mut entries = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => {}
            Err(message) => {
                return Err(UserlistError {
                    line: idx + 1,
                    message,
                })
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Verifier for password "pencil", RFC 7677 salt, 4096 iterations
    // (computed with Python hashlib.pbkdf2_hmac / hmac, see scram tests).
    const PENCIL_VERIFIER: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    fn plain(name: &str, pw: &str) -> UserEntry {
        UserEntry {
            name: name.into(),
            secret: Secret::Plain(pw.into()),
        }
    }

    #[test]
    fn basic_lines_comments_and_blanks() {
        let text = "; comment\n# another\n\n   \n\"alice\" \"secret\"\n  \"bob\"\t\"pw\" extra fields ignored\r\n";
        let got = parse_userlist(text).unwrap();
        assert_eq!(got, vec![plain("alice", "secret"), plain("bob", "pw")]);
    }

    #[test]
    fn doubled_quotes_and_backslashes() {
        let text = r#""we""ird\name" "pa""ss\""#;
        let got = parse_userlist(text).unwrap();
        assert_eq!(got, vec![plain("we\"ird\\name", "pa\"ss\\")]);
        // Empty password and a password made of a single quote.
        let got = parse_userlist("\"a\" \"\"\n\"b\" \"\"\"\"").unwrap();
        assert_eq!(got, vec![plain("a", ""), plain("b", "\"")]);
        // Without whitespace, a closing quote followed by an opening quote
        // reads as a doubled quote, so the password is missing.
        let err = parse_userlist("\"a\"\"x\"").unwrap_err();
        assert_eq!(err.to_string(), "line 1: missing password");
    }

    #[test]
    fn secret_kinds() {
        let text = format!(
            "\"p\" \"hunter2\"\n\"m\" \"md54a0a68b43b6cd5cf266fa02f196e2371\"\n\"s\" \"{PENCIL_VERIFIER}\"\n\"notmd5\" \"md5xyz\"\n"
        );
        let got = parse_userlist(&text).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].secret, Secret::Plain("hunter2".into()));
        assert_eq!(
            got[1].secret,
            Secret::Md5("md54a0a68b43b6cd5cf266fa02f196e2371".into())
        );
        match &got[2].secret {
            Secret::Scram(s) => {
                assert_eq!(s.iterations(), 4096);
                assert_eq!(s.to_string(), PENCIL_VERIFIER);
            }
            other => panic!("expected scram, got {other:?}"),
        }
        assert_eq!(got[3].secret, Secret::Plain("md5xyz".into()));
    }

    #[test]
    fn errors_carry_line_numbers() {
        let cases: &[(&str, usize, &str)] = &[
            ("\"ok\" \"x\"\n\n\"bad", 3, "line 3: user name: unterminated quoted string"),
            ("\"a\" \"unterminated", 1, "line 1: password: unterminated quoted string"),
            ("alice \"x\"", 1, "line 1: expected a quoted user name"),
            ("# c\n\"alice\"", 2, "line 2: missing password"),
            ("\"alice\"  bare", 1, "line 1: expected a quoted password after the user name"),
            ("\"\" \"x\"", 1, "line 1: empty user name"),
            (
                "\"s\" \"SCRAM-SHA-256$4096:abc\"",
                1,
                "line 1: malformed SCRAM secret: SCRAM secret is not of the form SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>",
            ),
        ];
        for (text, line, msg) in cases {
            let err = parse_userlist(text).unwrap_err();
            assert_eq!(err.line, *line, "{text:?}");
            assert_eq!(err.to_string(), *msg, "{text:?}");
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let text = format!(
            "\"p\" \"hunter2\"\n\"m\" \"md54a0a68b43b6cd5cf266fa02f196e2371\"\n\"s\" \"{PENCIL_VERIFIER}\"\n"
        );
        let dbg = format!("{:?}", parse_userlist(&text).unwrap());
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("4a0a68b4"), "{dbg}");
        assert!(!dbg.contains("WG5d8oPm"), "{dbg}");
        assert!(!dbg.contains("wfPLwcE6"), "{dbg}");
        assert!(dbg.contains("alice") || dbg.contains("\"p\""), "{dbg}");
    }

    #[test]
    fn unicode_is_fine() {
        let got = parse_userlist("\"ünï\" \"pässwörd\"").unwrap();
        assert_eq!(got, vec![plain("ünï", "pässwörd")]);
    }
}
