//! Just enough X.509 reading for libpq's host name rules (the subject's common name and
//! the subjectAltName dNSName and iPAddress entries of a DER certificate), for `cert`
//! authentication (the client certificate's common name), and for SCRAM channel binding
//! (the hash algorithm of the certificate's signature, which decides the
//! `tls-server-end-point` digest).
//!
//! rustls (through webpki) checks chains and subjectAltName but never looks at the
//! subject CN, and it exposes no list of the names; a full X.509 parser (x509-parser and
//! its nom/der-parser stack) would be a large dependency for two fields, so this module
//! walks the few DER elements it needs. It is only called after the chain has been
//! verified (the certificate is signed by a trusted CA), and any malformed input gives
//! `None`, which the caller treats as "no names".

use std::net::IpAddr;

/// The names a certificate carries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CertNames {
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[3] EXPLICIT Extensions` in TBSCertificate.
const EXTENSIONS: u8 = 0xa3;
/// GeneralName `[2] dNSName` and `[7] iPAddress` (implicit, primitive).
const GN_DNS: u8 = 0x82;
const GN_IP: u8 = 0x87;
/// id-at-commonName 2.5.4.3 and id-ce-subjectAltName 2.5.29.17.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// One DER element: (tag, contents, rest). Single-byte tags only (all X.509 needs here).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The contents of the element with `tag` at the start of `input`, and what follows.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, body, rest) = tlv(input)?;
    (t == tag).then_some((body, rest))
}

/// OIDs of the signature algorithms whose hash `tls-server-end-point` uses (RFC 5929
/// section 4.1: MD5 and SHA-1 are replaced by SHA-256).
const OID_SIG_SHA256: &[&[u8]] = &[
    // md5WithRSAEncryption, sha1WithRSAEncryption, sha256WithRSAEncryption
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04],
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05],
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
    // ecdsa-with-SHA1, ecdsa-with-SHA256
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01],
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
];
const OID_SIG_SHA384: &[&[u8]] = &[
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
];
const OID_SIG_SHA512: &[&[u8]] = &[
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
];

/// The `tls-server-end-point` channel-binding data of a DER certificate (RFC 5929): the
/// certificate hashed with its signature's hash function, SHA-256 standing in for MD5
/// and SHA-1. `None` for signatures without a single hash function (Ed25519, RSA-PSS),
/// where PostgreSQL offers no channel binding either, and for unreadable input.
pub fn tls_server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    let (cert, _) = expect(der, SEQUENCE)?;
    let (_, _, rest) = tlv(cert)?;
    let (algorithm, _) = expect(rest, SEQUENCE)?;
    let (oid, _) = expect(algorithm, OID)?;
    if OID_SIG_SHA256.contains(&oid) {
        Some(sha2::Sha256::digest(der).to_vec())
    } else if OID_SIG_SHA384.contains(&oid) {
        Some(sha2::Sha384::digest(der).to_vec())
    } else if OID_SIG_SHA512.contains(&oid) {
        Some(sha2::Sha512::digest(der).to_vec())
    } else {
        None
    }
}

/// The names of a DER certificate; `None` when it cannot be read.
pub fn names(der: &[u8]) -> Option<CertNames> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    // version [0] (optional), serialNumber, signature, issuer, validity, subject.
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (subject, mut rest) = expect(rest, SEQUENCE)?;
    let mut out = CertNames {
        common_name: common_name(subject),
        ..CertNames::default()
    };
    // subjectPublicKeyInfo, then the optional unique IDs and extensions.
    rest = tlv(rest)?.2;
    while let Some((tag, body, after)) = tlv(rest) {
        if tag == EXTENSIONS {
            read_extensions(body, &mut out)?;
        }
        rest = after;
    }
    Some(out)
}

/// The first commonName of a Name (libpq uses the first one too).
fn common_name(mut name: &[u8]) -> Option<String> {
    while let Some((tag, rdn, rest)) = tlv(name) {
        name = rest;
        if tag != SET {
            continue;
        }
        let mut attrs = rdn;
        while let Some((body, rest)) = expect(attrs, SEQUENCE) {
            attrs = rest;
            let (oid, value) = expect(body, OID)?;
            if oid == OID_CN {
                let (_, text, _) = tlv(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

fn read_extensions(body: &[u8], out: &mut CertNames) -> Option<()> {
    let (mut exts, _) = expect(body, SEQUENCE)?;
    while let Some((ext, rest)) = expect(exts, SEQUENCE) {
        exts = rest;
        let (oid, mut ext) = expect(ext, OID)?;
        if oid != OID_SAN {
            continue;
        }
        if let Some((_, rest)) = expect(ext, BOOLEAN) {
            ext = rest;
        }
        let (value, _) = expect(ext, OCTET_STRING)?;
        let (mut general_names, _) = expect(value, SEQUENCE)?;
        while let Some((tag, gn, rest)) = tlv(general_names) {
            general_names = rest;
            match tag {
                GN_DNS => {
                    if let Ok(s) = std::str::from_utf8(gn) {
                        out.dns_names.push(s.to_owned());
                    }
                }
                GN_IP => match gn.len() {
                    4 => out
                        .ip_addresses
                        .push(IpAddr::from(<[u8; 4]>::try_from(gn).ok()?)),
                    16 => out
                        .ip_addresses
                        .push(IpAddr::from(<[u8; 16]>::try_from(gn).ok()?)),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Some(())
}

/// libpq's match of a certificate name against the host: case-insensitive, and a leading
/// `*.` matches exactly one label that is not empty.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    if !suffix.starts_with('.') || host.len() <= suffix.len() {
        return false;
    }
    let (label, host_suffix) = host.split_at(host.len() - suffix.len());
    host_suffix.eq_ignore_ascii_case(suffix) && !label.contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(params: rcgen::CertificateParams) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_cn_and_sans() {
        let mut p =
            rcgen::CertificateParams::new(vec!["db.example.com".into(), "127.0.0.1".into()])
                .unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "db-cn.example.com");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "pgring");
        let n = names(&cert(p)).unwrap();
        assert_eq!(n.common_name.as_deref(), Some("db-cn.example.com"));
        assert_eq!(n.dns_names, vec!["db.example.com".to_owned()]);
        assert_eq!(n.ip_addresses, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn no_san() {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let n = names(&cert(p)).unwrap();
        assert_eq!(n.common_name.as_deref(), Some("localhost"));
        assert!(n.dns_names.is_empty() && n.ip_addresses.is_empty());
    }

    #[test]
    fn end_point_hash_follows_the_signature() {
        use sha2::Digest;
        let mut params = rcgen::CertificateParams::new(vec!["db.example".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (alg, len) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, 32),
            (&rcgen::PKCS_ECDSA_P384_SHA384, 48),
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let der = params.clone().self_signed(&key).unwrap().der().to_vec();
            let hash = tls_server_end_point(&der).unwrap();
            assert_eq!(hash.len(), len);
            if len == 32 {
                assert_eq!(hash, sha2::Sha256::digest(&der).to_vec());
            }
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(tls_server_end_point(&der), None);
        assert_eq!(tls_server_end_point(b"\x30\x03\x02\x01\x00"), None);
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(names(&[0x30, 0x03, 0x02]), None);
        assert_eq!(names(&[]), None);
    }

    #[test]
    fn wildcards() {
        assert!(host_matches("LocalHost", "localhost"));
        assert!(host_matches("*.example.com", "db.EXAMPLE.com"));
        assert!(!host_matches("*.example.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", ".example.com"));
        assert!(!host_matches("db.example.com", "db2.example.com"));
    }
}
