//! PostgreSQL MD5 password authentication (`AuthenticationMD5Password`).
//!
//! Owns: computing the stored MD5 secret (`"md5" + hex(md5(password ++ user))`),
//! computing the salted response a client sends in `PasswordMessage`, and
//! verifying such a response in constant time.
//!
//! Must not: perform I/O, read clocks or draw randomness (the 4-byte salt is
//! always passed in), or log/print secrets.
//!
//! The response is computed from the *stored secret*, not the plaintext
//! password, so pgring can log in to a server using only an md5 secret from
//! the userlist (the same pass-through trick PgBouncer uses).

use ::md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// Prefix of every PostgreSQL MD5 secret and MD5 password response.
pub const MD5_PREFIX: &str = "md5";

/// Length of a full MD5 secret or response: `"md5"` + 32 hex characters.
pub const MD5_SECRET_LEN: usize = 35;

fn hex_md5(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(MD5_SECRET_LEN);
    out.push_str(MD5_PREFIX);
    for byte in digest.iter() {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// Returns true if `s` looks like a PostgreSQL MD5 secret: `md5` followed by
/// exactly 32 hexadecimal digits.
pub fn is_md5_secret(s: &str) -> bool {
    match s.strip_prefix(MD5_PREFIX) {
        Some(hex) => hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// The secret PostgreSQL stores for MD5 auth (and a userlist may hold):
/// `"md5" + hex(md5(password ++ user))`.
pub fn md5_secret(user: &str, password: &str) -> String {
    hex_md5(&[password.as_bytes(), user.as_bytes()])
}

/// The response a client sends in `PasswordMessage` for MD5 auth:
/// `"md5" + hex(md5(hex_part_of_secret ++ salt))`.
///
/// `secret_md5` is the stored secret (see [`md5_secret`]); the leading `md5`
/// is stripped if present. A secret that does not have the expected shape
/// simply produces a response the server will reject.
pub fn md5_response(secret_md5: &str, salt: [u8; 4]) -> String {
    let hex = secret_md5.strip_prefix(MD5_PREFIX).unwrap_or(secret_md5);
    hex_md5(&[hex.as_bytes(), &salt])
}

/// Verifies a client's MD5 `PasswordMessage` payload (without the trailing
/// NUL terminator) against the stored secret, in constant time with respect
/// to the contents.
pub fn verify_md5_response(secret_md5: &str, salt: [u8; 4], client_response: &[u8]) -> bool {
    let expected = md5_response(secret_md5, salt);
    bool::from(expected.as_bytes().ct_eq(client_response))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed independently with Python's hashlib:
    //   s = 'md5' + hashlib.md5(b'secret' + b'alice').hexdigest()
    //   'md5' + hashlib.md5(s[3:].encode() + bytes([1, 2, 3, 4])).hexdigest()
    const ALICE_SECRET: &str = "md54a0a68b43b6cd5cf266fa02f196e2371";
    const ALICE_RESPONSE_1234: &str = "md598a0412b9c31436fc53776e863350083";
    //   s = 'md5' + hashlib.md5(b'pencil' + b'user').hexdigest()
    //   'md5' + hashlib.md5(s[3:].encode() + bytes([0xde,0xad,0xbe,0xef])).hexdigest()
    const USER_SECRET: &str = "md520c46e3762c864548e296b33c3406aa9";
    const USER_RESPONSE_DEADBEEF: &str = "md50f5b636d891e9860623ac8ca91fc9dfc";

    #[test]
    fn secret_known_vectors() {
        assert_eq!(md5_secret("alice", "secret"), ALICE_SECRET);
        assert_eq!(md5_secret("user", "pencil"), USER_SECRET);
    }

    #[test]
    fn response_known_vectors() {
        assert_eq!(
            md5_response(ALICE_SECRET, [1, 2, 3, 4]),
            ALICE_RESPONSE_1234
        );
        assert_eq!(
            md5_response(USER_SECRET, [0xde, 0xad, 0xbe, 0xef]),
            USER_RESPONSE_DEADBEEF
        );
    }

    #[test]
    fn verify_accepts_correct_and_rejects_wrong() {
        let salt = [1, 2, 3, 4];
        assert!(verify_md5_response(
            ALICE_SECRET,
            salt,
            ALICE_RESPONSE_1234.as_bytes()
        ));
        // Wrong salt.
        assert!(!verify_md5_response(
            ALICE_SECRET,
            [1, 2, 3, 5],
            ALICE_RESPONSE_1234.as_bytes()
        ));
        // Wrong password.
        let other = md5_secret("alice", "Secret");
        assert!(!verify_md5_response(
            &other,
            salt,
            ALICE_RESPONSE_1234.as_bytes()
        ));
        // Truncated, empty, extended, and garbage responses.
        assert!(!verify_md5_response(
            ALICE_SECRET,
            salt,
            &ALICE_RESPONSE_1234.as_bytes()[..34]
        ));
        assert!(!verify_md5_response(ALICE_SECRET, salt, b""));
        let mut long = ALICE_RESPONSE_1234.as_bytes().to_vec();
        long.push(0);
        assert!(!verify_md5_response(ALICE_SECRET, salt, &long));
        assert!(!verify_md5_response(ALICE_SECRET, salt, &[0xff; 35]));
    }

    #[test]
    fn is_md5_secret_classifies() {
        assert!(is_md5_secret(ALICE_SECRET));
        assert!(is_md5_secret("md5ABCDEF0123456789abcdef0123456789"));
        assert!(!is_md5_secret("md5"));
        assert!(!is_md5_secret("md54a0a68b43b6cd5cf266fa02f196e237"));
        assert!(!is_md5_secret("md54a0a68b43b6cd5cf266fa02f196e2371a"));
        assert!(!is_md5_secret("md5za0a68b43b6cd5cf266fa02f196e2371"));
        assert!(!is_md5_secret("MD54a0a68b43b6cd5cf266fa02f196e2371"));
    }
}
