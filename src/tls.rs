//! Client-side TLS: the rustls server configuration built from the `client_tls_*` keys.
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

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};

use crate::config::{PoolerConfig, TlsMode, TlsProtocols};

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

/// The server configuration for client handshakes, or `None` when
/// `client_tls_sslmode = "disable"`.
pub fn server_config(p: &PoolerConfig) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    if p.client_tls_sslmode == TlsMode::Disable {
        return Ok(None);
    }
    let empty = PathBuf::new();
    let cert_path = p.client_tls_cert_file.as_ref().unwrap_or(&empty);
    let key_path = p.client_tls_key_file.as_ref().unwrap_or(&empty);
    let certs = read_certs("client_tls_cert_file", cert_path)?;
    let key = read_key(key_path)?;
    warn_if_key_readable(key_path);

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static SupportedProtocolVersion] = match p.client_tls_protocols {
        TlsProtocols::Secure | TlsProtocols::All => {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        }
        TlsProtocols::Tls12 => &[&rustls::version::TLS12],
        TlsProtocols::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| tls_error("client_tls_protocols", Path::new(""), e.to_string()))?;
    let builder = if p.client_tls_sslmode.verifies_client() {
        let ca_path = p.client_tls_ca_file.as_ref().unwrap_or(&empty);
        let mut roots = RootCertStore::empty();
        for cert in read_certs("client_tls_ca_file", ca_path)? {
            roots
                .add(cert)
                .map_err(|e| tls_error("client_tls_ca_file", ca_path, e.to_string()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| tls_error("client_tls_ca_file", ca_path, e.to_string()))?;
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
    Ok(Some(Arc::new(config)))
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

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    const KEY: &str = "client_tls_key_file";
    rustls_pemfile::private_key(&mut open(KEY, path)?)
        .map_err(|e| tls_error(KEY, path, format!("invalid PEM: {e}")))?
        .ok_or_else(|| tls_error(KEY, path, "no private key found in PEM"))
}

fn warn_if_key_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            log::warn!(
                "client_tls_key_file {}: readable by group or others (mode {mode:03o}); \
                 chmod 600 it",
                path.display()
            );
        }
    }
}
