//! Tests for the SCRAM module (secret format, both state machines, interop).

use super::*;

// Verifier for password "pencil" with the RFC 7677 salt and 4096 iterations,
// computed independently with Python:
//   sp = hashlib.pbkdf2_hmac('sha256', b'pencil', b64decode(salt), 4096)
//   ck = hmac.new(sp, b'Client Key', 'sha256').digest()
//   sk = hmac.new(sp, b'Server Key', 'sha256').digest()
//   stored = hashlib.sha256(ck).digest()
const PENCIL_VERIFIER: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

#[test]
fn secret_parse_display_round_trip() {
    let s = ScramSecret::parse(PENCIL_VERIFIER).unwrap();
    assert_eq!(s.iterations(), 4096);
    assert_eq!(s.to_string(), PENCIL_VERIFIER);
}
