//! TLS: the rustls server configuration for clients (`client_tls_*` keys) and the rustls
//! client configuration for servers (`server_tls_*` keys, see [`client_config`]).
//!
//! Each side gets its own aws-lc-rs `CryptoProvider`: the default one with its cipher
//! suites and key-exchange groups cut down and reordered as `*_tls_ciphers`, `*_tls13_ciphers` and
//! `client_tls_ecdhcurve` say (the names were checked by [`crate::config`]).
//!
//! Revocation: `client_tls_crl_file` and `server_tls_crl_file` hand PEM CRLs to rustls's
//! WebPKI verifiers, with their defaults: every certificate on the chain below the root is
//! checked, and one whose issuer has no CRL in the file is refused, as OpenSSL does with
//! PostgreSQL's `ssl_crl_file`.
//!
//! Built once at startup and again on every reload (from the main thread, never on a
//! shard); [`crate::shard::Shared`] holds the current one and each handshake takes it with
//! a lock-free load, so a new certificate is used by the next handshake and connections
//! already encrypted keep theirs. A file that cannot be read or parsed is an error naming
//! the key and the file; on reload it keeps the running configuration.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::{ParsedCertificate, VerifierBuilderError, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};

use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::SupportedCipherSuite;

use crate::config::{CipherSuite, KxGroup, PoolerConfig, TlsMode, TlsProtocols};

/// The ALPN protocol name of PostgreSQL (libpq 17 sends it with direct and classic TLS).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// A TLS file that could not be used: `client_tls_key_file /x/y.pem: no private key found
/// in PEM`.
#[derive(Debug, thiserror::Error)]
#[error("{key} {}: {message}", path.display())]
pub struct TlsError {
    pub key: &'static str,
    pub path: PathBuf,
    pub message: String,
}

fn tls_error(key: &'static str, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError {
        key,
        path: path.to_owned(),
        message: message.into(),
    }
}

/// What pgring needs to accept TLS from clients: the rustls configuration and what
/// SCRAM channel binding needs of the certificate it presents.
#[derive(Debug)]
pub struct ClientTls {
    pub config: Arc<ServerConfig>,
    /// `tls-server-end-point` data of pgring's certificate; `None` when its signature
    /// algorithm has no single hash (Ed25519), and then SCRAM-SHA-256-PLUS is not offered.
    pub end_point: Option<Vec<u8>>,
}

/// The server configuration for client handshakes, or `None` when
/// `client_tls_sslmode = "disable"`.
pub fn server_config(p: &PoolerConfig) -> Result<Option<ClientTls>, TlsError> {
    if p.client_tls_sslmode == TlsMode::Disable {
        return Ok(None);
    }
    let empty = PathBuf::new();
    let cert_path = p.client_tls_cert_file.as_ref().unwrap_or(&empty);
    let key_path = p.client_tls_key_file.as_ref().unwrap_or(&empty);
    let certs = read_certs("client_tls_cert_file", cert_path)?;
    let key = read_key("client_tls_key_file", key_path)?;
    warn_if_key_readable("client_tls_key_file", key_path);
    let end_point = certs
        .first()
        .and_then(|c| crate::x509::tls_server_end_point(c));

    let provider = Arc::new(provider(
        &p.client_tls_ciphers
            .effective(p.client_tls13_ciphers.as_deref()),
        &p.client_tls_ecdhcurve.groups(),
    ));
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(p.client_tls_protocols))
        .map_err(|e| tls_error("client_tls_protocols", Path::new(""), e.to_string()))?;
    // With a CA file, certificates are asked for in every mode, as PostgreSQL does with
    // ssl_ca_file: verify-ca and verify-full require one, the other modes take one when
    // offered (and verify it), so that hba rules can demand it per login (`cert`,
    // `clientcert=`).
    let builder = if p.client_tls_sslmode.verifies_client() || p.client_tls_ca_file.is_some() {
        let ca_path = p.client_tls_ca_file.as_ref().unwrap_or(&empty);
        let mut roots = RootCertStore::empty();
        for cert in read_certs("client_tls_ca_file", ca_path)? {
            roots
                .add(cert)
                .map_err(|e| tls_error("client_tls_ca_file", ca_path, e.to_string()))?;
        }
        let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        if let Some(crl_path) = &p.client_tls_crl_file {
            verifier = verifier.with_crls(read_crls("client_tls_crl_file", crl_path)?);
        }
        if !p.client_tls_sslmode.verifies_client() {
            verifier = verifier.allow_unauthenticated();
        }
        let verifier = verifier
            .build()
            .map_err(|e| match (e, &p.client_tls_crl_file) {
                (VerifierBuilderError::InvalidCrl(e), Some(crl_path)) => tls_error(
                    "client_tls_crl_file",
                    crl_path,
                    format!("invalid CRL: {e:?}"),
                ),
                (e, _) => tls_error("client_tls_ca_file", ca_path, e.to_string()),
            })?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        tls_error(
            "client_tls_key_file",
            key_path,
            format!("does not go with client_tls_cert_file: {e}"),
        )
    })?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    // pgring's order of the suites decides (what `fast` and `normal` are about), as
    // PostgreSQL's ssl_prefer_server_ciphers does by default.
    config.ignore_client_order = true;
    // Resumption by stateless tickets (encrypted with a key rotated every few hours)
    // rather than rustls's default session cache: the cache holds 256 sessions behind a
    // mutex shared by every shard, far fewer than a pooler's clients, while a ticket is
    // good on whichever shard the kernel gives the reconnecting client.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| {
        tls_error(
            "client_tls_cert_file",
            cert_path,
            format!("cannot set up session tickets: {e}"),
        )
    })?;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    // One ticket per handshake instead of rustls's two: each costs a key derivation and an
    // encryption, and most PostgreSQL clients (libpq among them) never resume; a resumed
    // session gets a fresh ticket for the next time.
    config.send_tls13_tickets = 1;
    Ok(Some(ClientTls {
        config: Arc::new(config),
        end_point,
    }))
}

/// aws-lc-rs's provider with only `suites` and `groups`, in that order.
fn provider(suites: &[CipherSuite], groups: &[KxGroup]) -> CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    let available: Vec<SupportedCipherSuite> = provider.cipher_suites.clone();
    provider.cipher_suites = suites
        .iter()
        .filter_map(|s| available.iter().find(|a| a.suite() == s.rustls()).copied())
        .collect();
    provider.kx_groups = groups.iter().map(|g| kx_group(*g)).collect();
    provider
}

fn kx_group(group: KxGroup) -> &'static dyn SupportedKxGroup {
    match group {
        KxGroup::X25519 => rustls::crypto::aws_lc_rs::kx_group::X25519,
        KxGroup::Secp256r1 => rustls::crypto::aws_lc_rs::kx_group::SECP256R1,
        KxGroup::Secp384r1 => rustls::crypto::aws_lc_rs::kx_group::SECP384R1,
    }
}

fn versions(protocols: TlsProtocols) -> &'static [&'static SupportedProtocolVersion] {
    static BOTH: [&SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static TLS12: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    static TLS13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match protocols {
        TlsProtocols::Secure | TlsProtocols::All => &BOTH,
        TlsProtocols::Tls12 => &TLS12,
        TlsProtocols::Tls13 => &TLS13,
    }
}

/// The client configuration for handshakes with servers, or `None` when
/// `server_tls_sslmode = "disable"`. `require`, `prefer` and `allow` accept any
/// certificate ([`DangerAcceptAnyServerCert`]); `verify-ca` and `verify-full` use
/// [`ServerCertCheck`].
pub fn client_config(p: &PoolerConfig) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let mode = p.server_tls_sslmode;
    if mode == TlsMode::Disable {
        return Ok(None);
    }
    let provider = provider(
        &p.server_tls_ciphers
            .effective(p.server_tls13_ciphers.as_deref()),
        &p.server_tls_ecdhcurve.server_groups(),
    );
    let algs = provider.signature_verification_algorithms;
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(p.server_tls_protocols))
        .map_err(|e| tls_error("server_tls_protocols", Path::new(""), e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if mode.verifies_server() {
        let empty = PathBuf::new();
        let ca_path = p.server_tls_ca_file.as_ref().unwrap_or(&empty);
        let mut roots = RootCertStore::empty();
        for cert in read_certs("server_tls_ca_file", ca_path)? {
            roots
                .add(cert)
                .map_err(|e| tls_error("server_tls_ca_file", ca_path, e.to_string()))?;
        }
        let mut webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider);
        if let Some(crl_path) = &p.server_tls_crl_file {
            webpki = webpki.with_crls(read_crls("server_tls_crl_file", crl_path)?);
        }
        let webpki = webpki
            .build()
            .map_err(|e| match (e, &p.server_tls_crl_file) {
                (VerifierBuilderError::InvalidCrl(e), Some(crl_path)) => tls_error(
                    "server_tls_crl_file",
                    crl_path,
                    format!("invalid CRL: {e:?}"),
                ),
                (e, _) => tls_error("server_tls_ca_file", ca_path, e.to_string()),
            })?;
        Arc::new(ServerCertCheck {
            webpki,
            check_name: mode == TlsMode::VerifyFull,
            algs,
        })
    } else {
        Arc::new(DangerAcceptAnyServerCert { algs })
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&p.server_tls_cert_file, &p.server_tls_key_file) {
        (Some(cert_path), Some(key_path)) => {
            let certs = read_certs("server_tls_cert_file", cert_path)?;
            let key = read_key("server_tls_key_file", key_path)?;
            warn_if_key_readable("server_tls_key_file", key_path);
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                tls_error(
                    "server_tls_key_file",
                    key_path,
                    format!("does not go with server_tls_cert_file: {e}"),
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The server name to hand rustls for `host`: an IP address when it parses as one.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("host \"{host}\" is not a valid TLS server name: {e}"))
}

/// For `require`, `prefer` and `allow`: any certificate is accepted, as libpq does in these
/// modes, but the handshake signatures are still checked (the peer must hold the key of
/// the certificate it sent).
#[derive(Debug)]
struct DangerAcceptAnyServerCert {
    algs: WebPkiSupportedAlgorithms,
}

/// For `verify-ca` (chain and revocation only) and `verify-full` (and the host name, by
/// libpq's rules). rustls's verifier checks the chain and the CRLs before the name, so a
/// name error from it means the rest passed; the name is then judged here.
#[derive(Debug)]
struct ServerCertCheck {
    webpki: Arc<WebPkiServerVerifier>,
    check_name: bool,
    algs: WebPkiSupportedAlgorithms,
}

macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    };
}

impl ServerCertVerifier for DangerAcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

impl ServerCertVerifier for ServerCertCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                if self.check_name {
                    let cert = ParsedCertificate::try_from(end_entity)?;
                    check_host_name(&cert, end_entity, server_name)?;
                }
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    handshake_signatures!();
}

/// libpq's host name check (`verify-full`): the subjectAltName entries of the host's kind
/// (dNSName, wildcards allowed, or iPAddress); when the certificate has none of that kind,
/// the subject's common name. rustls checks only subjectAltName, so the fallback is here.
fn check_host_name(
    cert: &ParsedCertificate<'_>,
    der: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
) -> Result<(), rustls::Error> {
    let names = crate::x509::names(der.as_ref()).unwrap_or_default();
    let (host, is_ip) = match server_name {
        ServerName::DnsName(d) => (d.as_ref().to_owned(), false),
        ServerName::IpAddress(ip) => (std::net::IpAddr::from(*ip).to_string(), true),
        _ => (String::new(), false),
    };
    let has_san_of_kind = if is_ip {
        !names.ip_addresses.is_empty()
    } else {
        !names.dns_names.is_empty()
    };
    if has_san_of_kind {
        if rustls::client::verify_server_name(cert, server_name).is_ok() {
            return Ok(());
        }
    } else if let Some(cn) = &names.common_name {
        if crate::x509::host_matches(cn, &host) {
            return Ok(());
        }
    }
    let mut presented: Vec<String> = names.dns_names.clone();
    presented.extend(names.ip_addresses.iter().map(|ip| ip.to_string()));
    if !has_san_of_kind {
        if let Some(cn) = &names.common_name {
            presented.push(format!("CN={cn}"));
        }
    }
    let presented = if presented.is_empty() {
        "no names".to_owned()
    } else {
        presented.join(", ")
    };
    Err(rustls::Error::InvalidCertificate(CertificateError::Other(
        rustls::OtherError(Arc::new(NameMismatch(format!(
            "name mismatch: expected \"{host}\", certificate names {presented}"
        )))),
    )))
}

#[derive(Debug)]
struct NameMismatch(String);

impl std::fmt::Display for NameMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NameMismatch {}

/// Why a server's certificate was refused, in words, when `e` is a verification failure
/// (the handshake's io::Error wraps the rustls error); `None` for other TLS failures.
pub fn verification_failure(e: &std::io::Error) -> Option<String> {
    let rustls::Error::InvalidCertificate(c) = e.get_ref()?.downcast_ref::<rustls::Error>()? else {
        return None;
    };
    Some(match c {
        CertificateError::UnknownIssuer => {
            "unknown CA: the certificate does not chain to server_tls_ca_file".to_owned()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("the certificate has expired ({c})")
        }
        CertificateError::Revoked => {
            "the certificate is revoked by a CRL in server_tls_crl_file".to_owned()
        }
        CertificateError::UnknownRevocationStatus => {
            "no CRL in server_tls_crl_file covers the certificate's issuer".to_owned()
        }
        CertificateError::Other(o) => o.to_string(),
        other => other.to_string(),
    })
}

fn open(key: &'static str, path: &Path) -> Result<BufReader<File>, TlsError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| tls_error(key, path, e.to_string()))
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut open(key, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(key, path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(key, path, "no certificate found in PEM"));
    }
    Ok(certs)
}

fn read_crls(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let crls = rustls_pemfile::crls(&mut open(key, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(key, path, format!("invalid PEM: {e}")))?;
    if crls.is_empty() {
        return Err(tls_error(key, path, "no CRL found in PEM"));
    }
    Ok(crls)
}

fn read_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut open(key, path)?)
        .map_err(|e| tls_error(key, path, format!("invalid PEM: {e}")))?
        .ok_or_else(|| tls_error(key, path, "no private key found in PEM"))
}

/// Warns when a private key file is more open than PostgreSQL allows its own key to be.
fn warn_if_key_readable(key: &str, path: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if key_too_open(mode, meta.uid()) {
            log::warn!(
                "{key} {}: readable by group or others (mode {mode:03o}); chmod 600 it \
                 (or 640 with owner root)",
                path.display()
            );
        }
    }
}

/// PostgreSQL's rule: no access for group or others, except that a key owned by root may
/// be readable by its group (0640), for keys shared through a group such as ssl-cert.
fn key_too_open(mode: u32, owner_uid: u32) -> bool {
    let allowed = if owner_uid == 0 { 0o040 } else { 0 };
    mode & 0o077 & !allowed != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_permissions_follow_postgresql() {
        assert!(!key_too_open(0o600, 1000));
        assert!(!key_too_open(0o400, 1000));
        assert!(key_too_open(0o640, 1000));
        assert!(key_too_open(0o604, 1000));
        assert!(!key_too_open(0o640, 0));
        assert!(key_too_open(0o660, 0));
        assert!(key_too_open(0o644, 0));
    }
}
