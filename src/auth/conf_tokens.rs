//! The lexical layer shared by [`super::hba`] and [`super::ident`]: text in,
//! lines of fields of tokens out.
//!
//! Owns: joining continued lines, dropping comments and blank lines, splitting
//! a line into whitespace-separated fields, splitting a field into its
//! comma-separated items, and undoing double quotes.
//!
//! Must not: give any token a meaning (keywords, `@file`, `+group`, addresses
//! are for the callers, which see whether a token was quoted), read files, or
//! panic on any input.
//!
//! The rules:
//! - A physical line whose last character (after dropping a `\r`) is a
//!   backslash continues on the next one: the backslash goes and the next line
//!   is appended as it is, with nothing in between. So `db1,\` followed by
//!   `db2` reads as `db1,db2`. This is done before anything else, so a comment
//!   that ends with a backslash swallows the next line too.
//! - Outside double quotes, `#` starts a comment that runs to the end of the
//!   logical line, and spaces, tabs and the other ASCII blanks separate fields.
//! - A comma outside quotes ends an item and the field goes on with the next
//!   item, blanks after the comma allowed (`a, b` is one field of two items).
//!   An empty item (`a,,b`, a leading or trailing comma) is an error.
//! - A double quote starts or ends a quoted stretch anywhere in a token
//!   (`map="a b"` is the one token `map=a b`); inside quotes, blanks, commas
//!   and `#` are ordinary characters and `""` stands for one `"`. A token in
//!   which any quote appeared is marked quoted, so `"all"` is a name, not a
//!   keyword; whether it began with a quote is kept too. A quote left open at
//!   the end of the logical line is an error.
//! - Lines are numbered from 1; a logical line carries the number of its
//!   first physical line.

/// One item of a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// The text, quotes removed.
    pub text: String,
    /// Whether a double quote appeared in it (then it is never a keyword).
    pub quoted: bool,
    /// Whether it began with a double quote (`"@x"` is a name, `@"x y"` an
    /// include of the file `x y`).
    pub starts_quoted: bool,
}

impl Token {
    /// True when the token is the keyword `word`: unquoted and equal to it.
    pub fn is_keyword(&self, word: &str) -> bool {
        !self.quoted && self.text == word
    }
}

/// A whitespace-separated field: one or more comma-separated tokens.
pub(crate) type Field = Vec<Token>;

/// A logical line with at least one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// 1-based number of the line's first physical line.
    pub number: usize,
    /// The fields, in order; never empty.
    pub fields: Vec<Field>,
}

/// A lexical error on a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The one token of a field that must not be a list; `what` names the field
/// in the error.
pub(crate) fn single(mut field: Field, what: &str) -> Result<Token, String> {
    match (field.pop(), field.is_empty()) {
        (Some(token), true) => Ok(token),
        _ => Err(format!("the {what} must be a single value, not a list")),
    }
}

/// Splits `text` into logical lines of fields, skipping blank and comment-only
/// lines.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Line>, LexError> {
    let mut lines = Vec::new();
    let mut logical = String::new();
    let mut start = 0;
    let mut continuing = false;
    for (idx, physical) in text.lines().enumerate() {
        let physical = physical.strip_suffix('\r').unwrap_or(physical);
        if !continuing {
            start = idx + 1;
            logical.clear();
        }
        if let Some(head) = physical.strip_suffix('\\') {
            logical.push_str(head);
            continuing = true;
            continue;
        }
        logical.push_str(physical);
        continuing = false;
        push_line(&mut lines, &logical, start)?;
    }
    if continuing {
        // A backslash on the very last line continues onto nothing.
        push_line(&mut lines, &logical, start)?;
    }
    Ok(lines)
}

fn push_line(lines: &mut Vec<Line>, logical: &str, number: usize) -> Result<(), LexError> {
    let fields = split_fields(logical).map_err(|message| LexError {
        line: number,
        message: message.to_owned(),
    })?;
    if !fields.is_empty() {
        lines.push(Line { number, fields });
    }
    Ok(())
}

fn is_blank(c: char) -> bool {
    c.is_ascii_whitespace() || c == '\x0b'
}

/// Skips blanks; returns false at the end of the line or at a comment.
fn at_more(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    while chars.next_if(|&c| is_blank(c)).is_some() {}
    !matches!(chars.peek(), None | Some('#'))
}

fn split_fields(line: &str) -> Result<Vec<Field>, &'static str> {
    let mut chars = line.chars().peekable();
    let mut fields = Vec::new();
    while at_more(&mut chars) {
        let mut field = Vec::new();
        loop {
            let (token, comma) = read_token(&mut chars)?;
            if comma && token.text.is_empty() && !token.quoted {
                return Err("empty item in a comma-separated list");
            }
            field.push(token);
            if !comma {
                break;
            }
            if !at_more(&mut chars) {
                return Err("a comma-separated list ends with a comma");
            }
        }
        fields.push(field);
    }
    Ok(fields)
}

/// Reads one token; the flag tells whether a comma ended it (and was eaten).
fn read_token(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<(Token, bool), &'static str> {
    let mut text = String::new();
    let mut quoted = false;
    let mut in_quote = false;
    let mut comma = false;
    let starts_quoted = chars.peek() == Some(&'"');
    while let Some(&c) = chars.peek() {
        if in_quote {
            chars.next();
            if c == '"' {
                if chars.next_if_eq(&'"').is_some() {
                    text.push('"');
                } else {
                    in_quote = false;
                }
            } else {
                text.push(c);
            }
            continue;
        }
        if is_blank(c) || c == '#' {
            break;
        }
        chars.next();
        match c {
            ',' => {
                comma = true;
                break;
            }
            '"' => {
                in_quote = true;
                quoted = true;
            }
            c => text.push(c),
        }
    }
    if in_quote {
        return Err("unterminated quoted string");
    }
    Ok((
        Token {
            text,
            quoted,
            starts_quoted,
        },
        comma,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_quoted() {
        let line = &tokenize(r#""@a" @"b c" x"y""#).unwrap()[0];
        let flags: Vec<_> = line
            .fields
            .iter()
            .map(|f| (f[0].text.as_str(), f[0].quoted, f[0].starts_quoted))
            .collect();
        assert_eq!(
            flags,
            vec![
                ("@a", true, true),
                ("@b c", true, false),
                ("xy", true, false)
            ]
        );
    }

    /// A field as (text, quoted) pairs.
    type Words = Vec<(String, bool)>;

    fn words(text: &str) -> Vec<(usize, Vec<Words>)> {
        tokenize(text)
            .unwrap()
            .into_iter()
            .map(|l| {
                let fields = l
                    .fields
                    .into_iter()
                    .map(|f| f.into_iter().map(|t| (t.text, t.quoted)).collect())
                    .collect();
                (l.number, fields)
            })
            .collect()
    }

    fn plain(s: &str) -> (String, bool) {
        (s.to_owned(), false)
    }

    fn quoted(s: &str) -> (String, bool) {
        (s.to_owned(), true)
    }

    #[test]
    fn comments_blanks_and_fields() {
        let got = words("# c\n\n  \t\nlocal  all\tbob trust # tail\r\n  # indented\n");
        assert_eq!(
            got,
            vec![(
                4,
                vec![
                    vec![plain("local")],
                    vec![plain("all")],
                    vec![plain("bob")],
                    vec![plain("trust")],
                ]
            )]
        );
    }

    #[test]
    fn lists_with_and_without_blanks() {
        let got = words("a,b, c,\t d e");
        assert_eq!(
            got[0].1,
            vec![
                vec![plain("a"), plain("b"), plain("c"), plain("d")],
                vec![plain("e")],
            ]
        );
    }

    #[test]
    fn quotes() {
        let got = words(r#""all" "a b,c#d" "say ""hi""" map="x y" "" x"y"z"#);
        assert_eq!(
            got[0].1,
            vec![
                vec![quoted("all")],
                vec![quoted("a b,c#d")],
                vec![quoted("say \"hi\"")],
                vec![quoted("map=x y")],
                vec![quoted("")],
                vec![quoted("xyz")],
            ]
        );
        let got = words(r#""a","b",c"#);
        assert_eq!(got[0].1, vec![vec![quoted("a"), quoted("b"), plain("c")]]);
    }

    #[test]
    fn continuation_lines() {
        let got = words("host db1,\\\ndb2 \\\r\n  bob\\\n\nnext\nlast \\");
        assert_eq!(
            got,
            vec![
                (
                    1,
                    vec![
                        vec![plain("host")],
                        vec![plain("db1"), plain("db2")],
                        vec![plain("bob")],
                    ]
                ),
                (5, vec![vec![plain("next")]]),
                (6, vec![vec![plain("last")]]),
            ]
        );
        // A comment ending in a backslash swallows the next line.
        assert_eq!(
            words("# c \\\nhidden\nseen"),
            vec![(3, vec![vec![plain("seen")]])]
        );
    }

    #[test]
    fn errors() {
        let cases: &[(&str, usize, &str)] = &[
            ("ok\n\"open", 2, "unterminated quoted string"),
            ("a,,b", 1, "empty item in a comma-separated list"),
            (",a", 1, "empty item in a comma-separated list"),
            ("a,", 1, "a comma-separated list ends with a comma"),
            ("a, # c", 1, "a comma-separated list ends with a comma"),
            ("a ,b", 1, "empty item in a comma-separated list"),
            ("x\ny \\\n\"z", 2, "unterminated quoted string"),
        ];
        for (text, line, message) in cases {
            let err = tokenize(text).unwrap_err();
            assert_eq!(
                (err.line, err.message.as_str()),
                (*line, *message),
                "{text:?}"
            );
        }
    }
}
