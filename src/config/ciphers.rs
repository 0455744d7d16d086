//! Cipher suites and key-exchange groups by name, for `client_tls_ciphers`,
//! `client_tls13_ciphers`, `client_tls_ecdhcurve` and their `server_tls_*` twins.
//!
//! PgBouncer takes these as OpenSSL strings, and operators copy them from there; pgring's
//! TLS library is rustls, which implements only AEAD suites with ECDHE key exchange. So the
//! names are matched here against a table of what rustls (aws-lc-rs provider) has, and a name
//! OpenSSL knows but rustls lacks (`AES128-SHA`, any CBC suite) gets its own error rather
//! than "unknown", so the operator learns that the setting cannot be honoured instead of
//! hunting for a typo. Pure functions: the caller adds the key and the line.

/// A cipher suite rustls implements with the aws-lc-rs provider, named as OpenSSL names it
/// (the IANA name is accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherSuite {
    Tls13Aes256GcmSha384,
    Tls13Aes128GcmSha256,
    Tls13Chacha20Poly1305Sha256,
    EcdheEcdsaAes256GcmSha384,
    EcdheEcdsaAes128GcmSha256,
    EcdheEcdsaChacha20Poly1305,
    EcdheRsaAes256GcmSha384,
    EcdheRsaAes128GcmSha256,
    EcdheRsaChacha20Poly1305,
}

use CipherSuite as S;

/// (suite, OpenSSL name, IANA name).
const SUITES: [(CipherSuite, &str, &str); 9] = [
    (
        S::Tls13Aes256GcmSha384,
        "TLS_AES_256_GCM_SHA384",
        "TLS_AES_256_GCM_SHA384",
    ),
    (
        S::Tls13Aes128GcmSha256,
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_128_GCM_SHA256",
    ),
    (
        S::Tls13Chacha20Poly1305Sha256,
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
    ),
    (
        S::EcdheEcdsaAes256GcmSha384,
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        S::EcdheEcdsaAes128GcmSha256,
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        S::EcdheEcdsaChacha20Poly1305,
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        S::EcdheRsaAes256GcmSha384,
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        S::EcdheRsaAes128GcmSha256,
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        S::EcdheRsaChacha20Poly1305,
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// OpenSSL suite names that rustls does not implement (CBC, CCM, static RSA or DHE key
/// exchange, PSK, 3DES, RC4, ...): the common ones, so that the error can say so.
const NOT_IN_RUSTLS: &[&str] = &[
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-CCM",
    "ECDHE-ECDSA-AES128-CCM",
    "ECDHE-ECDSA-AES256-CCM8",
    "ECDHE-ECDSA-AES128-CCM8",
    "ECDHE-ECDSA-ARIA256-GCM-SHA384",
    "ECDHE-ECDSA-ARIA128-GCM-SHA256",
    "ECDHE-ECDSA-CAMELLIA256-SHA384",
    "ECDHE-ECDSA-CAMELLIA128-SHA256",
    "ECDHE-ECDSA-DES-CBC3-SHA",
    "ECDHE-ECDSA-RC4-SHA",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ARIA256-GCM-SHA384",
    "ECDHE-ARIA128-GCM-SHA256",
    "ECDHE-RSA-CAMELLIA256-SHA384",
    "ECDHE-RSA-CAMELLIA128-SHA256",
    "ECDHE-RSA-DES-CBC3-SHA",
    "ECDHE-RSA-RC4-SHA",
    "DHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES256-CCM",
    "DHE-RSA-AES128-CCM",
    "DHE-RSA-AES256-SHA256",
    "DHE-RSA-AES128-SHA256",
    "DHE-RSA-AES256-SHA",
    "DHE-RSA-AES128-SHA",
    "DHE-DSS-AES256-GCM-SHA384",
    "DHE-DSS-AES128-GCM-SHA256",
    "DHE-DSS-AES256-SHA256",
    "DHE-DSS-AES128-SHA256",
    "DHE-DSS-AES256-SHA",
    "DHE-DSS-AES128-SHA",
    "EDH-RSA-DES-CBC3-SHA",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
    "AES256-CCM",
    "AES128-CCM",
    "AES256-SHA256",
    "AES128-SHA256",
    "AES256-SHA",
    "AES128-SHA",
    "CAMELLIA256-SHA",
    "CAMELLIA128-SHA",
    "DES-CBC3-SHA",
    "RC4-SHA",
    "RC4-MD5",
    "SEED-SHA",
    "IDEA-CBC-SHA",
    "PSK-AES256-GCM-SHA384",
    "PSK-AES128-GCM-SHA256",
    "PSK-CHACHA20-POLY1305",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "DHE-PSK-CHACHA20-POLY1305",
    "RSA-PSK-CHACHA20-POLY1305",
];

impl CipherSuite {
    /// Every suite, in rustls's default order (TLS 1.3 first).
    pub const ALL: [CipherSuite; 9] = [
        S::Tls13Aes256GcmSha384,
        S::Tls13Aes128GcmSha256,
        S::Tls13Chacha20Poly1305Sha256,
        S::EcdheEcdsaAes256GcmSha384,
        S::EcdheEcdsaAes128GcmSha256,
        S::EcdheEcdsaChacha20Poly1305,
        S::EcdheRsaAes256GcmSha384,
        S::EcdheRsaAes128GcmSha256,
        S::EcdheRsaChacha20Poly1305,
    ];

    /// OpenSSL's name: `ECDHE-ECDSA-AES256-GCM-SHA384`, `TLS_AES_128_GCM_SHA256`.
    pub fn name(self) -> &'static str {
        SUITES
            .iter()
            .find(|(s, ..)| *s == self)
            .map_or("?", |e| e.1)
    }

    pub fn is_tls13(self) -> bool {
        matches!(
            self,
            S::Tls13Aes256GcmSha384 | S::Tls13Aes128GcmSha256 | S::Tls13Chacha20Poly1305Sha256
        )
    }

    /// The suite's identifier in rustls.
    pub fn rustls(self) -> rustls::CipherSuite {
        use rustls::CipherSuite as R;
        match self {
            S::Tls13Aes256GcmSha384 => R::TLS13_AES_256_GCM_SHA384,
            S::Tls13Aes128GcmSha256 => R::TLS13_AES_128_GCM_SHA256,
            S::Tls13Chacha20Poly1305Sha256 => R::TLS13_CHACHA20_POLY1305_SHA256,
            S::EcdheEcdsaAes256GcmSha384 => R::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            S::EcdheEcdsaAes128GcmSha256 => R::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            S::EcdheEcdsaChacha20Poly1305 => R::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            S::EcdheRsaAes256GcmSha384 => R::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            S::EcdheRsaAes128GcmSha256 => R::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            S::EcdheRsaChacha20Poly1305 => R::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        }
    }

    fn parse(name: &str) -> Result<CipherSuite, String> {
        if let Some((suite, ..)) = SUITES
            .iter()
            .find(|(_, o, i)| o.eq_ignore_ascii_case(name) || i.eq_ignore_ascii_case(name))
        {
            return Ok(*suite);
        }
        if NOT_IN_RUSTLS.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            return Err(format!(
                "cipher suite {name:?} is not implemented by rustls, pgring's TLS library \
                 (it has only AES-GCM and ChaCha20-Poly1305 suites with ECDHE key exchange)"
            ));
        }
        if is_openssl_expression(name) {
            return Err(format!(
                "{name:?} is an OpenSSL cipher-string expression; pgring takes a keyword \
                 (default, secure, fast, normal, compat, legacy, insecure, all) or suite names \
                 separated by \":\""
            ));
        }
        Err(format!(
            "unknown cipher suite {name:?}; expected a keyword (default, secure, fast, normal, \
             compat, legacy, insecure, all) or names from: {}",
            all_names()
        ))
    }
}

fn all_names() -> String {
    SUITES.iter().map(|e| e.1).collect::<Vec<_>>().join(", ")
}

/// `HIGH`, `!aNULL`, `+3DES`, `EECDH+AESGCM`, `@STRENGTH`: OpenSSL's selection language.
fn is_openssl_expression(item: &str) -> bool {
    const ALIASES: &[&str] = &[
        "HIGH",
        "MEDIUM",
        "LOW",
        "EXPORT",
        "COMPLEMENTOFDEFAULT",
        "COMPLEMENTOFALL",
        "aNULL",
        "eNULL",
        "NULL",
        "EECDH",
        "ECDHE",
        "kEECDH",
        "kECDHE",
        "AESGCM",
        "CHACHA20",
        "AES",
        "AES128",
        "AES256",
        "aRSA",
        "aECDSA",
        "ECDSA",
        "RSA",
        "SHA256",
        "SHA384",
        "3DES",
    ];
    item.starts_with(['!', '-', '+', '@'])
        || item.contains('+')
        || ALIASES.iter().any(|a| a.eq_ignore_ascii_case(item))
}

/// The keywords of `client_tls_ciphers`, PgBouncer's shortcuts. rustls has no weak suites
/// to add, so every keyword is the full set; `default` (= `fast`, as in PgBouncer) and
/// `normal` differ from the others in order only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherKeyword {
    Default,
    Secure,
    /// AES-128-GCM first (cheapest with AES instructions), ChaCha20-Poly1305 last.
    Fast,
    /// ChaCha20-Poly1305 first (fast without AES instructions), then AES-256-GCM.
    Normal,
    Compat,
    Legacy,
    Insecure,
    All,
}

const KEYWORDS: [(&str, CipherKeyword); 8] = [
    ("default", CipherKeyword::Default),
    ("secure", CipherKeyword::Secure),
    ("fast", CipherKeyword::Fast),
    ("normal", CipherKeyword::Normal),
    ("compat", CipherKeyword::Compat),
    ("legacy", CipherKeyword::Legacy),
    ("insecure", CipherKeyword::Insecure),
    ("all", CipherKeyword::All),
];

impl CipherKeyword {
    pub fn name(self) -> &'static str {
        KEYWORDS
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |e| e.0)
    }

    /// The suites, in order of preference.
    pub fn suites(self) -> &'static [CipherSuite] {
        const FAST: [CipherSuite; 9] = [
            S::Tls13Aes128GcmSha256,
            S::Tls13Aes256GcmSha384,
            S::Tls13Chacha20Poly1305Sha256,
            S::EcdheEcdsaAes128GcmSha256,
            S::EcdheRsaAes128GcmSha256,
            S::EcdheEcdsaAes256GcmSha384,
            S::EcdheRsaAes256GcmSha384,
            S::EcdheEcdsaChacha20Poly1305,
            S::EcdheRsaChacha20Poly1305,
        ];
        const NORMAL: [CipherSuite; 9] = [
            S::Tls13Chacha20Poly1305Sha256,
            S::Tls13Aes256GcmSha384,
            S::Tls13Aes128GcmSha256,
            S::EcdheEcdsaChacha20Poly1305,
            S::EcdheRsaChacha20Poly1305,
            S::EcdheEcdsaAes256GcmSha384,
            S::EcdheRsaAes256GcmSha384,
            S::EcdheEcdsaAes128GcmSha256,
            S::EcdheRsaAes128GcmSha256,
        ];
        match self {
            // PgBouncer's `default` is its `fast` list; AES-128-GCM's SHA-256 key schedule
            // also makes the cheapest handshake (the TLS handshake profile showed SHA-512
            // blocks at 7% of a login's CPU with AES-256-GCM first).
            CipherKeyword::Default | CipherKeyword::Fast => &FAST,
            CipherKeyword::Normal => &NORMAL,
            _ => &CipherSuite::ALL,
        }
    }
}

/// `client_tls_ciphers` / `server_tls_ciphers` as written: a keyword, or suite names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsCiphers {
    Keyword(CipherKeyword),
    /// In order of preference, without duplicates; never empty.
    List(Vec<CipherSuite>),
}

impl Default for TlsCiphers {
    fn default() -> Self {
        TlsCiphers::Keyword(CipherKeyword::Default)
    }
}

impl TlsCiphers {
    /// Parses a keyword or a `:`-separated list of names (OpenSSL's or IANA's).
    pub fn parse(value: &str) -> Result<TlsCiphers, String> {
        let value = value.trim();
        if let Some((_, k)) = KEYWORDS.iter().find(|(n, _)| n.eq_ignore_ascii_case(value)) {
            return Ok(TlsCiphers::Keyword(*k));
        }
        Ok(TlsCiphers::List(parse_suites(value)?))
    }

    /// The value as the file would spell it.
    pub fn render(&self) -> String {
        match self {
            TlsCiphers::Keyword(k) => k.name().to_owned(),
            TlsCiphers::List(l) => join(l),
        }
    }

    /// The suites for both versions, in order of preference. A list without TLS 1.3
    /// names leaves TLS 1.3 at its default, as OpenSSL's cipher list does; `tls13`, when
    /// set (`client_tls13_ciphers`), replaces the TLS 1.3 part.
    pub fn effective(&self, tls13: Option<&[CipherSuite]>) -> Vec<CipherSuite> {
        let all: &[CipherSuite] = match self {
            TlsCiphers::Keyword(k) => k.suites(),
            TlsCiphers::List(l) => l,
        };
        let listed13: Vec<CipherSuite> = all.iter().copied().filter(|s| s.is_tls13()).collect();
        let mut out: Vec<CipherSuite> = match tls13 {
            Some(t) => t.to_vec(),
            None if listed13.is_empty() => CipherSuite::ALL
                .iter()
                .copied()
                .filter(|s| s.is_tls13())
                .collect(),
            None => listed13,
        };
        out.extend(all.iter().copied().filter(|s| !s.is_tls13()));
        out
    }
}

/// Parses `client_tls13_ciphers`: TLS 1.3 names only; empty = `None`.
pub fn parse_tls13_ciphers(value: &str) -> Result<Option<Vec<CipherSuite>>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let suites = parse_suites(value)?;
    if let Some(s) = suites.iter().find(|s| !s.is_tls13()) {
        return Err(format!(
            "{:?} is a TLS 1.2 suite; TLS 1.2 suites go in the *_tls_ciphers key",
            s.name()
        ));
    }
    Ok(Some(suites))
}

/// `TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384`.
pub fn join(suites: &[CipherSuite]) -> String {
    suites
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_suites(value: &str) -> Result<Vec<CipherSuite>, String> {
    let mut out = Vec::new();
    for item in value.split([':', ',', ' ']).filter(|i| !i.is_empty()) {
        let suite = CipherSuite::parse(item)?;
        if !out.contains(&suite) {
            out.push(suite);
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no cipher suite given; expected a keyword (default, secure, fast, normal, compat, \
             legacy, insecure, all) or names from: {}",
            all_names()
        ));
    }
    Ok(out)
}

/// A key-exchange group rustls implements with the aws-lc-rs provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KxGroup {
    X25519,
    Secp256r1,
    Secp384r1,
}

impl KxGroup {
    /// The name pgring renders: OpenSSL's.
    pub fn name(self) -> &'static str {
        match self {
            KxGroup::X25519 => "x25519",
            KxGroup::Secp256r1 => "prime256v1",
            KxGroup::Secp384r1 => "secp384r1",
        }
    }

    fn parse(name: &str) -> Result<KxGroup, String> {
        let n = name.to_ascii_lowercase();
        match n.as_str() {
            "x25519" => Ok(KxGroup::X25519),
            "prime256v1" | "secp256r1" | "p-256" | "p256" => Ok(KxGroup::Secp256r1),
            "secp384r1" | "p-384" | "p384" => Ok(KxGroup::Secp384r1),
            "secp521r1" | "p-521" | "p521" | "x448" | "ffdhe2048" | "ffdhe3072" | "ffdhe4096"
            | "ffdhe6144" | "ffdhe8192" | "brainpoolp256r1" | "brainpoolp384r1"
            | "brainpoolp512r1" | "x25519mlkem768" | "secp256r1mlkem768" => Err(format!(
                "curve {name:?} is not implemented by rustls with pgring's crypto provider; \
                 expected auto, x25519, prime256v1 (P-256) or secp384r1 (P-384)"
            )),
            "none" => Err(
                "\"none\" would leave no key exchange: rustls has only ECDHE; use auto or a \
                 curve name"
                    .to_owned(),
            ),
            _ => Err(format!(
                "unknown curve {name:?}; expected auto, x25519, prime256v1 (also secp256r1, \
                 P-256) or secp384r1 (also P-384), several separated by \":\""
            )),
        }
    }
}

/// `client_tls_ecdhcurve`: `auto` (rustls's groups: X25519, P-256, P-384) or a list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TlsCurves {
    #[default]
    Auto,
    /// In order of preference, without duplicates; never empty.
    List(Vec<KxGroup>),
}

impl TlsCurves {
    pub fn parse(value: &str) -> Result<TlsCurves, String> {
        let value = value.trim();
        if value.eq_ignore_ascii_case("auto") {
            return Ok(TlsCurves::Auto);
        }
        let mut out = Vec::new();
        for item in value.split([':', ',', ' ']).filter(|i| !i.is_empty()) {
            let group = KxGroup::parse(item)?;
            if !out.contains(&group) {
                out.push(group);
            }
        }
        if out.is_empty() {
            return Err("no curve given; expected auto or curve names".to_owned());
        }
        Ok(TlsCurves::List(out))
    }

    pub fn render(&self) -> String {
        match self {
            TlsCurves::Auto => "auto".to_owned(),
            TlsCurves::List(l) => l.iter().map(|g| g.name()).collect::<Vec<_>>().join(":"),
        }
    }

    /// The groups for client handshakes, in order of preference.
    pub fn groups(&self) -> Vec<KxGroup> {
        match self {
            TlsCurves::Auto => vec![KxGroup::X25519, KxGroup::Secp256r1, KxGroup::Secp384r1],
            TlsCurves::List(l) => l.clone(),
        }
    }

    /// The groups offered to servers, in order of preference. `auto` puts P-256 first:
    /// PostgreSQL up to 17 sets `ssl_ecdh_curve = prime256v1`, so a first key share for
    /// any other group costs every server connection a HelloRetryRequest round trip.
    pub fn server_groups(&self) -> Vec<KxGroup> {
        match self {
            TlsCurves::Auto => vec![KxGroup::Secp256r1, KxGroup::X25519, KxGroup::Secp384r1],
            TlsCurves::List(l) => l.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keywords() {
        assert_eq!(
            TlsCiphers::parse("DEFAULT").unwrap(),
            TlsCiphers::Keyword(CipherKeyword::Default)
        );
        let list = TlsCiphers::parse(
            "ECDHE-ECDSA-AES256-GCM-SHA384:tls_ecdhe_rsa_with_chacha20_poly1305_sha256:\
             ECDHE-ECDSA-AES256-GCM-SHA384",
        )
        .unwrap();
        assert_eq!(
            list,
            TlsCiphers::List(vec![
                S::EcdheEcdsaAes256GcmSha384,
                S::EcdheRsaChacha20Poly1305
            ])
        );
        assert_eq!(
            list.render(),
            "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305"
        );
        assert_eq!(TlsCiphers::parse(&list.render()).unwrap(), list);
    }

    #[test]
    fn refusals_say_why() {
        let e = TlsCiphers::parse("ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA").unwrap_err();
        assert!(e.contains("\"AES128-SHA\"") && e.contains("not implemented by rustls"));
        let e = TlsCiphers::parse("FOO-BAR").unwrap_err();
        assert!(e.starts_with("unknown cipher suite \"FOO-BAR\""), "{e}");
        let e = TlsCiphers::parse("HIGH:!aNULL").unwrap_err();
        assert!(e.contains("OpenSSL cipher-string expression"), "{e}");
        assert!(TlsCiphers::parse("").is_err());
        assert!(TlsCiphers::parse(":").is_err());
        let e = parse_tls13_ciphers("ECDHE-RSA-AES128-GCM-SHA256").unwrap_err();
        assert!(e.contains("TLS 1.2 suite"), "{e}");
        let e = parse_tls13_ciphers("TLS_AES_128_CCM_SHA256").unwrap_err();
        assert!(e.contains("not implemented by rustls"), "{e}");
        assert_eq!(parse_tls13_ciphers(" ").unwrap(), None);
    }

    #[test]
    fn effective_suites() {
        let one12 = TlsCiphers::List(vec![S::EcdheRsaAes128GcmSha256]);
        // No TLS 1.3 name: TLS 1.3 stays at its default.
        assert_eq!(
            one12.effective(None),
            vec![
                S::Tls13Aes256GcmSha384,
                S::Tls13Aes128GcmSha256,
                S::Tls13Chacha20Poly1305Sha256,
                S::EcdheRsaAes128GcmSha256
            ]
        );
        assert_eq!(
            one12.effective(Some(&[S::Tls13Chacha20Poly1305Sha256])),
            vec![S::Tls13Chacha20Poly1305Sha256, S::EcdheRsaAes128GcmSha256]
        );
        let one13 = TlsCiphers::List(vec![S::Tls13Aes128GcmSha256]);
        assert_eq!(one13.effective(None), vec![S::Tls13Aes128GcmSha256]);
        let fast = TlsCiphers::Keyword(CipherKeyword::Fast).effective(None);
        assert_eq!(fast[0], S::Tls13Aes128GcmSha256);
        assert_eq!(fast.len(), 9);
        let default = TlsCiphers::default().effective(None);
        assert_eq!(default, fast);
        let secure = TlsCiphers::Keyword(CipherKeyword::Secure).effective(None);
        assert_eq!(secure, CipherSuite::ALL.to_vec());
    }

    #[test]
    fn curves() {
        assert_eq!(TlsCurves::parse("AUTO").unwrap(), TlsCurves::Auto);
        let l = TlsCurves::parse("P-256:x25519:secp256r1").unwrap();
        assert_eq!(
            l,
            TlsCurves::List(vec![KxGroup::Secp256r1, KxGroup::X25519])
        );
        assert_eq!(l.render(), "prime256v1:x25519");
        assert!(TlsCurves::parse("secp521r1")
            .unwrap_err()
            .contains("not implemented by rustls"));
        assert!(TlsCurves::parse("none")
            .unwrap_err()
            .contains("no key exchange"));
        assert!(TlsCurves::parse("brainpool")
            .unwrap_err()
            .starts_with("unknown curve \"brainpool\""));
    }
}
