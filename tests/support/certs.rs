//! Certificates for the TLS tests, made at test time with rcgen (ECDSA P-256): a CA, the
//! server and client certificates it signs, and its certificate revocation lists.
//!
//! Include it next to `mod support;` as `#[path = "support/certs.rs"] mod certs;` (it is
//! not part of `support` itself, which other packages' tests include without rcgen).
#![allow(dead_code)]

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SerialNumber,
};

/// A CA and its key, for signing leaf certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate and its key, PEM, with subjectAltName `sans` (none when empty)
    /// and subject CN `cn`.
    pub fn leaf(&self, sans: &[&str], cn: &str, server: bool) -> (String, String) {
        self.leaf_with_serial(sans, cn, server, None)
    }

    /// [`leaf`](Self::leaf) with the given serial number (for revoking it in a CRL).
    pub fn leaf_with_serial(
        &self,
        sans: &[&str],
        cn: &str,
        server: bool,
        serial: Option<u64>,
    ) -> (String, String) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = serial.map(SerialNumber::from);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A PEM CRL signed by this CA that revokes the certificates with `serials` (none
    /// when empty), valid from 2024 to 2099.
    pub fn crl(&self, serials: &[u64]) -> String {
        let revoked_certs = serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: date_time_ymd(2024, 6, 1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect();
        CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .unwrap()
        .pem()
        .unwrap()
    }
}
