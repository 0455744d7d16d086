//! The read-mostly auth table shared by all shards.
//!
//! Owns: turning parsed [`UserEntry`] values into per-user [`UserAuth`]
//! records holding everything a login needs, with all expensive work
//! (PBKDF2 for plaintext passwords) done once at build time; producing
//! stable mock SCRAM verifiers for unknown users so that they fail exactly
//! like a wrong password; and carrying, in the same snapshot, the hba rules,
//! the ident maps and the console roles, so that a login decides everything
//! against one consistent version. Shards read it through an `ArcSwap`; a
//! reload builds a whole new table and swaps it in one store.
//!
//! Must not: do I/O, read clocks, or use a global RNG (salts and the mock key
//! come from the caller's `salt_source`), run PBKDF2 per lookup, or print
//! secrets (`Debug` redacts).

use std::collections::{HashMap, HashSet};
use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::hba::HbaRules;
use super::ident::IdentMaps;
use super::md5::md5_secret;
use super::scram::ScramSecret;
use super::userlist::{Secret, UserEntry};

/// What logins for one user need, precomputed.
#[derive(Clone, PartialEq, Eq)]
pub struct UserAuth {
    md5_secret: Option<String>,
    scram_secret: Option<ScramSecret>,
    password: Option<String>,
}

impl UserAuth {
    fn build(
        user: &str,
        secret: Secret,
        scram_iterations: u32,
        salt_source: &mut impl FnMut() -> [u8; 16],
    ) -> Self {
        match secret {
            Secret::Plain(password) => Self {
                md5_secret: Some(md5_secret(user, &password)),
                scram_secret: Some(ScramSecret::from_password(
                    &password,
                    &salt_source(),
                    scram_iterations,
                )),
                password: Some(password),
            },
            Secret::Md5(md5) => Self {
                md5_secret: Some(md5),
                scram_secret: None,
                password: None,
            },
            Secret::Scram(scram) => Self {
                md5_secret: None,
                scram_secret: Some(scram),
                password: None,
            },
        }
    }

    /// Builds the record for a secret fetched at run time (`auth_query`), in the form
    /// PostgreSQL stores it: a SCRAM verifier, an md5 secret or a cleartext password
    /// (whose SCRAM verifier is derived here, once, with a salt from `salt_source`).
    /// An empty secret means the user has no password: `Ok(None)`, which a login treats
    /// like an unknown user. A malformed SCRAM verifier is an error (a message without
    /// the secret).
    pub fn from_stored(
        user: &str,
        stored: &str,
        scram_iterations: u32,
        mut salt_source: impl FnMut() -> [u8; 16],
    ) -> Result<Option<Self>, String> {
        if stored.is_empty() {
            return Ok(None);
        }
        let secret = Secret::classify(stored)?;
        Ok(Some(Self::build(
            user,
            secret,
            scram_iterations.max(1),
            &mut salt_source,
        )))
    }

    /// The MD5 secret (`md5...`), when derivable: from a plaintext password or
    /// an MD5 entry; `None` for SCRAM-only users.
    pub fn md5_secret(&self) -> Option<&str> {
        self.md5_secret.as_deref()
    }

    /// The SCRAM verifier: from a SCRAM entry, or derived once from a
    /// plaintext password; `None` for MD5-only users.
    pub fn scram_secret(&self) -> Option<&ScramSecret> {
        self.scram_secret.as_ref()
    }

    /// The plaintext password, when the auth file holds it (needed to log in
    /// to servers asking for cleartext, or SCRAM with a different verifier).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

impl fmt::Debug for UserAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserAuth")
            .field(
                "md5_secret",
                &self.md5_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("scram_secret", &self.scram_secret)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What decides logins: per-user secrets from the auth file, the hba rules and ident
/// maps, and the console roles.
pub struct AuthTable {
    users: HashMap<String, UserAuth>,
    scram_iterations: u32,
    mock_key: [u8; 32],
    hba: Option<HbaRules>,
    ident: Option<IdentMaps>,
    admin_users: HashSet<String>,
    stats_users: HashSet<String>,
}

impl AuthTable {
    /// Builds the table. Plaintext passwords get their SCRAM verifier derived
    /// here (one PBKDF2 run of `scram_iterations` each, with a fresh salt from
    /// `salt_source`). `salt_source` is also drawn twice for the per-table
    /// key used by [`AuthTable::mock_scram_secret`]; pass a closure over
    /// [`crate::auth::scram::random_salt`] in production. If a user name
    /// appears more than once, the last entry wins.
    pub fn from_entries(
        entries: Vec<UserEntry>,
        scram_iterations: u32,
        mut salt_source: impl FnMut() -> [u8; 16],
    ) -> AuthTable {
        let mut mock_key = [0u8; 32];
        mock_key[..16].copy_from_slice(&salt_source());
        mock_key[16..].copy_from_slice(&salt_source());
        let scram_iterations = scram_iterations.max(1);
        let mut users = HashMap::with_capacity(entries.len());
        for entry in entries {
            let auth = UserAuth::build(
                &entry.name,
                entry.secret,
                scram_iterations,
                &mut salt_source,
            );
            users.insert(entry.name, auth);
        }
        AuthTable {
            users,
            scram_iterations,
            mock_key,
            hba: None,
            ident: None,
            admin_users: HashSet::new(),
            stats_users: HashSet::new(),
        }
    }

    /// Adds the hba rules (`auth_hba_file`) and ident maps (`auth_ident_file`).
    pub fn with_rules(mut self, hba: Option<HbaRules>, ident: Option<IdentMaps>) -> AuthTable {
        self.hba = hba;
        self.ident = ident;
        self
    }

    /// Adds the admin console's roles: `admin_users` may run every command,
    /// `stats_users` the read-only SHOW commands.
    pub fn with_roles(mut self, admin_users: &[String], stats_users: &[String]) -> AuthTable {
        self.admin_users = admin_users.iter().cloned().collect();
        self.stats_users = stats_users.iter().cloned().collect();
        self
    }

    /// The hba rules, when `auth_hba_file` is set.
    pub fn hba(&self) -> Option<&HbaRules> {
        self.hba.as_ref()
    }

    /// True when ident map `map` lets `system_user` (a certificate's common name or an
    /// OS user) log in as `db_user`; false when there are no maps or no such map.
    pub fn ident_permits(&self, map: &str, system_user: &str, db_user: &str) -> bool {
        self.ident
            .as_ref()
            .is_some_and(|m| m.permits(map, system_user, db_user))
    }

    /// True for users listed in `admin_users`.
    pub fn is_admin(&self, user: &str) -> bool {
        self.admin_users.contains(user)
    }

    /// True for users listed in `stats_users` or `admin_users`.
    pub fn may_read_stats(&self, user: &str) -> bool {
        self.stats_users.contains(user) || self.admin_users.contains(user)
    }

    /// Looks a user up.
    pub fn get(&self, user: &str) -> Option<&UserAuth> {
        self.users.get(user)
    }

    /// The PBKDF2 iteration count used for verifiers derived from cleartext passwords.
    pub fn scram_iterations(&self) -> u32 {
        self.scram_iterations
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True if the table has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// A fake verifier for a user that is not in the table (or has no SCRAM
    /// verifier), deterministic per (table, user name): same salt and
    /// iteration count on every attempt, keys nobody knows a password for.
    /// Running the normal SCRAM exchange with it fails at the proof check
    /// with [`crate::auth::ScramError::AuthFailed`], like a wrong password,
    /// so clients cannot probe which users exist. Cheap: no PBKDF2.
    pub fn mock_scram_secret(&self, user: &str) -> ScramSecret {
        let derive = |label: &[u8]| -> [u8; 32] {
            // Invariant: HMAC accepts keys of any length, so this never fails.
            let mut mac = Hmac::<Sha256>::new_from_slice(&self.mock_key)
                .expect("HMAC accepts any key length");
            mac.update(label);
            mac.update(&[0]);
            mac.update(user.as_bytes());
            mac.finalize().into_bytes().into()
        };
        let salt = derive(b"pgring mock salt");
        ScramSecret::from_parts(
            self.scram_iterations,
            salt[..16].to_vec(),
            derive(b"pgring mock stored key"),
            derive(b"pgring mock server key"),
        )
    }
}

impl fmt::Debug for AuthTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthTable")
            .field("users", &self.users)
            .field("scram_iterations", &self.scram_iterations)
            .field("mock_key", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::{ScramClient, ScramCredential, ScramError, ScramServer};
    use crate::auth::userlist::parse_userlist;

    const ITER: u32 = 16;

    fn counter_salts() -> impl FnMut() -> [u8; 16] {
        let mut n = 0u8;
        move || {
            n = n.wrapping_add(1);
            [n; 16]
        }
    }

    fn table() -> AuthTable {
        let text = "\"plain\" \"pw\"\n\"md5user\" \"md54a0a68b43b6cd5cf266fa02f196e2371\"\n\"scram\" \"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=\"\n";
        AuthTable::from_entries(parse_userlist(text).unwrap(), ITER, counter_salts())
    }

    #[test]
    fn plain_user_gets_everything_precomputed() {
        let t = table();
        let u = t.get("plain").unwrap();
        assert_eq!(u.password(), Some("pw"));
        assert_eq!(u.md5_secret(), Some(md5_secret("plain", "pw").as_str()));
        let s = u.scram_secret().unwrap();
        assert_eq!(s.iterations(), ITER);
        // Salts 1 and 2 went to the mock key; the first user gets salt 3.
        assert_eq!(s.salt(), &[3u8; 16]);
        assert_eq!(*s, ScramSecret::from_password("pw", &[3u8; 16], ITER));
    }

    #[test]
    fn md5_and_scram_users() {
        let t = table();
        let m = t.get("md5user").unwrap();
        assert_eq!(m.md5_secret(), Some("md54a0a68b43b6cd5cf266fa02f196e2371"));
        assert!(m.scram_secret().is_none());
        assert!(m.password().is_none());

        let s = t.get("scram").unwrap();
        assert!(s.md5_secret().is_none());
        assert!(s.password().is_none());
        assert_eq!(s.scram_secret().unwrap().iterations(), 4096);
        assert!(t.get("nobody").is_none());
        assert_eq!(t.len(), 3);
        assert!(!t.is_empty());
    }

    #[test]
    fn last_duplicate_wins() {
        let entries = parse_userlist("\"a\" \"one\"\n\"a\" \"two\"").unwrap();
        let t = AuthTable::from_entries(entries, ITER, counter_salts());
        assert_eq!(t.len(), 1);
        assert_eq!(t.get("a").unwrap().password(), Some("two"));
    }

    #[test]
    fn mock_secret_is_stable_per_user_and_table() {
        let t = table();
        let a1 = t.mock_scram_secret("ghost");
        let a2 = t.mock_scram_secret("ghost");
        let b = t.mock_scram_secret("ghost2");
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        assert_ne!(a1.salt(), b.salt());
        assert_eq!(a1.iterations(), ITER);
        assert_eq!(a1.salt().len(), 16);
        // A table with a different random key gives a different mock.
        let other = AuthTable::from_entries(Vec::new(), ITER, || [0xaa; 16]);
        assert_ne!(other.mock_scram_secret("ghost"), a1);
    }

    #[test]
    fn unknown_user_fails_like_wrong_password() {
        let t = table();
        let run = |secret: &ScramSecret, password: &str| -> ScramError {
            let (client, first) =
                ScramClient::new(ScramCredential::Password(password.into()), "cnonce").unwrap();
            let (server, server_first) = ScramServer::start(secret, "snonce", &first).unwrap();
            let (_client, client_final) = client.handle_server_first(&server_first).unwrap();
            server.finish(&client_final).unwrap_err()
        };
        let wrong = run(t.get("plain").unwrap().scram_secret().unwrap(), "nope");
        let unknown = run(&t.mock_scram_secret("ghost"), "pw");
        assert_eq!(wrong, ScramError::AuthFailed);
        assert_eq!(unknown, wrong);
        assert_eq!(unknown.to_string(), wrong.to_string());
    }

    #[test]
    fn plain_user_can_log_in_with_scram_and_md5() {
        let t = table();
        let u = t.get("plain").unwrap();
        let (client, first) =
            ScramClient::new(ScramCredential::Password("pw".into()), "cnonce").unwrap();
        let (server, server_first) =
            ScramServer::start(u.scram_secret().unwrap(), "snonce", &first).unwrap();
        let (client, client_final) = client.handle_server_first(&server_first).unwrap();
        let (server_final, _key) = server.finish(&client_final).unwrap();
        client.finish(&server_final).unwrap();

        let salt = [9, 8, 7, 6];
        let resp = crate::auth::md5::md5_response(&md5_secret("plain", "pw"), salt);
        assert!(crate::auth::md5::verify_md5_response(
            u.md5_secret().unwrap(),
            salt,
            resp.as_bytes()
        ));
    }

    #[test]
    fn stored_secrets_from_a_lookup() {
        let scram = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
        let s = UserAuth::from_stored("u", scram, ITER, counter_salts())
            .unwrap()
            .unwrap();
        assert_eq!(s.scram_secret().unwrap().to_string(), scram);
        assert!(s.md5_secret().is_none() && s.password().is_none());

        let md5 = "md54a0a68b43b6cd5cf266fa02f196e2371";
        let m = UserAuth::from_stored("u", md5, ITER, counter_salts())
            .unwrap()
            .unwrap();
        assert_eq!(m.md5_secret(), Some(md5));
        assert!(m.scram_secret().is_none());

        // Cleartext: the verifier is derived at once, with the given salt and count.
        let p = UserAuth::from_stored("u", "pw", ITER, || [7; 16])
            .unwrap()
            .unwrap();
        assert_eq!(
            p.scram_secret().unwrap(),
            &ScramSecret::from_password("pw", &[7; 16], ITER)
        );
        assert_eq!(p.md5_secret(), Some(md5_secret("u", "pw").as_str()));

        // No password at all.
        assert_eq!(
            UserAuth::from_stored("u", "", ITER, counter_salts()),
            Ok(None)
        );
        // A broken verifier is an error that does not quote it.
        let err = UserAuth::from_stored("u", "SCRAM-SHA-256$x:secretstuff", ITER, counter_salts())
            .unwrap_err();
        assert!(err.starts_with("malformed SCRAM secret"), "{err}");
        assert!(!err.contains("secretstuff"), "{err}");
    }

    #[test]
    fn debug_redacts() {
        let dbg = format!("{:?}", table());
        assert!(!dbg.contains("\"pw\""), "{dbg}");
        assert!(!dbg.contains("4a0a68b4"), "{dbg}");
        assert!(!dbg.contains("WG5d8oPm"), "{dbg}");
    }
}
