//! The client side of TLS: the rustls configuration for a [`Target`]'s sslmode, with
//! libpq's file defaults, and the `tls-server-end-point` channel-binding data.
//!
//! The certificate checks are pgring's own (`pgring::tls::client_config`, built for its
//! server connections): any certificate for `allow`/`prefer`/`require`, the chain for
//! `verify-ca`, the chain and libpq's host name rules (subjectAltName, else the common
//! name) for `verify-full`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use pgring::config::{KxGroup, PoolerConfig, TlsCurves, TlsMode};
use rustls::client::Resumption;
use rustls::ClientConfig;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::conninfo::Target;

/// `~/.postgresql/<name>`, libpq's default location of the TLS files.
fn default_file(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(Path::new(&home).join(".postgresql").join(name))
}

/// The files a target's TLS uses, resolved as libpq does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Checks the chain (and for `verify-full` the name) when set.
    pub root: Option<PathBuf>,
    pub cert: Option<(PathBuf, PathBuf)>,
    /// The mode the certificate check follows: `require` with a root file is `verify-ca`.
    pub verify: TlsMode,
}

/// Resolves libpq's rules: `verify-ca`/`verify-full` need a root file (`sslrootcert`, else
/// `~/.postgresql/root.crt`); `require` verifies the chain when such a file exists; a
/// client certificate is sent when its file exists (`sslcert`, else
/// `~/.postgresql/postgresql.crt`, with `sslkey`, else `~/.postgresql/postgresql.key`).
pub fn resolve_files(target: &Target) -> Result<TlsFiles> {
    if target
        .sslrootcert
        .as_deref()
        .is_some_and(|p| p == Path::new("system"))
    {
        bail!("sslrootcert=system is not supported by loadgen; give a CA file");
    }
    let root = target
        .sslrootcert
        .clone()
        .or_else(|| default_file("root.crt"));
    let root_exists = root.as_deref().is_some_and(Path::is_file);
    let (root, verify) = match target.sslmode {
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            if !root_exists {
                bail!(
                    "sslmode={} needs a root certificate file, and {} does not exist; \
                     set sslrootcert (or PGSSLROOTCERT) or use a weaker sslmode",
                    target.sslmode.keyword(),
                    root.map(|p| p.display().to_string())
                        .unwrap_or_else(|| "~/.postgresql/root.crt".into())
                );
            }
            (root, target.sslmode)
        }
        TlsMode::Require if root_exists => (root, TlsMode::VerifyCa),
        mode => (None, mode),
    };
    let cert = target
        .sslcert
        .clone()
        .or_else(|| default_file("postgresql.crt"));
    let cert = match cert {
        Some(cert) if cert.is_file() => {
            let key = target
                .sslkey
                .clone()
                .or_else(|| default_file("postgresql.key"))
                .ok_or_else(|| anyhow!("sslcert {} has no sslkey", cert.display()))?;
            Some((cert, key))
        }
        Some(cert) if target.sslcert.is_some() => {
            eprintln!(
                "loadgen: sslcert {} does not exist; no client certificate is sent",
                cert.display()
            );
            None
        }
        _ => None,
    };
    Ok(TlsFiles { root, cert, verify })
}

/// The rustls configuration for `target`, or `None` for `sslmode=disable`. With `resume`,
/// the configuration keeps rustls's in-memory session cache, so connections made with the
/// same configuration resume earlier sessions (tickets or session ids); without, every
/// handshake is a full one.
pub fn client_config(target: &Target, resume: bool) -> Result<Option<Arc<ClientConfig>>> {
    if target.sslmode == TlsMode::Disable {
        return Ok(None);
    }
    let files = resolve_files(target)?;
    let pooler = PoolerConfig {
        server_tls_sslmode: files.verify,
        server_tls_ca_file: files.root.clone(),
        server_tls_cert_file: files.cert.as_ref().map(|(c, _)| c.clone()),
        server_tls_key_file: files.cert.as_ref().map(|(_, k)| k.clone()),
        // What libpq on OpenSSL 3 offers: an X25519 key share first (pgring's own
        // server-side default, P-256 first, is tuned for PostgreSQL servers instead).
        server_tls_ecdhcurve: TlsCurves::List(vec![
            KxGroup::X25519,
            KxGroup::Secp256r1,
            KxGroup::Secp384r1,
        ]),
        ..PoolerConfig::default()
    };
    let config = pgring::tls::client_config(&pooler)
        .map_err(|e| {
            let key = match e.key {
                "server_tls_ca_file" => "sslrootcert",
                "server_tls_cert_file" => "sslcert",
                "server_tls_key_file" => "sslkey",
                other => other,
            };
            anyhow!("{key} {}: {}", e.path.display(), e.message)
        })?
        .ok_or_else(|| anyhow!("no TLS configuration for sslmode {:?}", files.verify))?;
    if resume {
        return Ok(Some(config));
    }
    let mut config = (*config).clone();
    config.resumption = Resumption::disabled();
    Ok(Some(Arc::new(config)))
}

/// A thread's own copy of `base`: with `resume`, a session cache of its own (sessions are
/// resumed by connections of the same thread); without, `base` as it is (resumption off).
pub fn per_thread(base: &Arc<ClientConfig>, resume: bool) -> Arc<ClientConfig> {
    let mut config = (**base).clone();
    if resume {
        config.resumption = Resumption::in_memory_sessions(256);
    }
    Arc::new(config)
}

/// Why a server certificate was refused, in libpq's terms, if that was the failure.
pub fn verification_failure(e: &std::io::Error) -> Option<String> {
    pgring::tls::verification_failure(e).map(|m| m.replace("server_tls_ca_file", "sslrootcert"))
}

/// The hash `tls-server-end-point` uses for a certificate (RFC 5929 §4.1): the one of its
/// signature algorithm, SHA-256 when that is MD5 or SHA-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndPointHash {
    Sha256,
    Sha384,
    Sha512,
}

/// Reads one DER element at the start of `der`: (tag, contents, rest).
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The hash for a DER certificate, from its outer `signatureAlgorithm` OID: SHA-384 and
/// SHA-512 for the ECDSA and RSA PKCS#1 variants with those hashes, SHA-256 for everything
/// else. RSA-PSS (whose hash sits in the parameters) and Ed25519 are treated as SHA-256,
/// which matches PostgreSQL only for PSS with SHA-256.
pub fn end_point_hash(cert_der: &[u8]) -> Option<EndPointHash> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (tag, cert, _) = der_element(cert_der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_tbs_tag, _tbs, rest) = der_element(cert)?;
    let (tag, alg, _) = der_element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, oid, _) = der_element(alg)?;
    if tag != OID {
        return None;
    }
    const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    const ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
    const RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    const RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    Some(match oid {
        ECDSA_SHA384 | RSA_SHA384 => EndPointHash::Sha384,
        ECDSA_SHA512 | RSA_SHA512 => EndPointHash::Sha512,
        _ => EndPointHash::Sha256,
    })
}

/// `tls-server-end-point` channel-binding data: the hash of the server's end-entity
/// certificate (DER).
pub fn server_end_point(cert_der: &[u8]) -> Vec<u8> {
    match end_point_hash(cert_der).unwrap_or(EndPointHash::Sha256) {
        EndPointHash::Sha256 => Sha256::digest(cert_der).to_vec(),
        EndPointHash::Sha384 => Sha384::digest(cert_der).to_vec(),
        EndPointHash::Sha512 => Sha512::digest(cert_der).to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate skeleton: SEQUENCE { tbs SEQUENCE {}, alg SEQUENCE { OID }, BIT STRING }.
    fn skeleton(oid: &[u8]) -> Vec<u8> {
        let mut alg = vec![0x06, oid.len() as u8];
        alg.extend_from_slice(oid);
        let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
        body.extend_from_slice(&alg);
        body.extend_from_slice(&[0x03, 0x01, 0x00]);
        let mut cert = vec![0x30, body.len() as u8];
        cert.extend_from_slice(&body);
        cert
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        // ecdsa-with-SHA256, sha256WithRSAEncryption, sha1WithRSAEncryption → SHA-256.
        for oid in [
            &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02][..],
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05],
        ] {
            assert_eq!(end_point_hash(&skeleton(oid)), Some(EndPointHash::Sha256));
        }
        let ecdsa384 = skeleton(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]);
        assert_eq!(end_point_hash(&ecdsa384), Some(EndPointHash::Sha384));
        assert_eq!(server_end_point(&ecdsa384).len(), 48);
        let rsa512 = skeleton(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]);
        assert_eq!(end_point_hash(&rsa512), Some(EndPointHash::Sha512));
        assert_eq!(end_point_hash(b"\x04\x00"), None);
        assert_eq!(end_point_hash(b""), None);
        assert_eq!(server_end_point(b"not der").len(), 32);
    }

    #[test]
    fn long_form_lengths() {
        let mut der = vec![0x04, 0x82, 0x01, 0x00];
        der.extend(std::iter::repeat_n(7u8, 256));
        der.push(0xff);
        let (tag, body, rest) = der_element(&der).unwrap();
        assert_eq!((tag, body.len(), rest), (0x04, 256, &[0xff][..]));
        assert!(der_element(&[0x04, 0x82, 0x01]).is_none());
        assert!(der_element(&[0x04, 0x05, 0x00]).is_none());
    }

    fn target(conninfo: &str) -> Target {
        crate::conninfo::parse_with_env(conninfo, |_| None).unwrap()
    }

    #[test]
    fn libpq_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let missing = dir.path().join("missing.pem");
        // verify-* need the root file.
        let t = target(&format!(
            "sslmode=verify-full sslrootcert={}",
            missing.display()
        ));
        assert!(resolve_files(&t).is_err());
        let t = target(&format!("sslmode=verify-ca sslrootcert={}", ca.display()));
        let f = resolve_files(&t).unwrap();
        assert_eq!(
            (f.root.as_deref(), f.verify),
            (Some(&*ca), TlsMode::VerifyCa)
        );
        // require with a root file verifies the chain, as libpq does.
        let t = target(&format!("sslmode=require sslrootcert={}", ca.display()));
        assert_eq!(resolve_files(&t).unwrap().verify, TlsMode::VerifyCa);
        let t = target(&format!(
            "sslmode=require sslrootcert={}",
            missing.display()
        ));
        let f = resolve_files(&t).unwrap();
        assert_eq!((f.root, f.verify), (None, TlsMode::Require));
        // prefer never verifies.
        let t = target(&format!("sslmode=prefer sslrootcert={}", ca.display()));
        assert_eq!(resolve_files(&t).unwrap().verify, TlsMode::Prefer);
        // A client certificate that exists is used with its key.
        let t = target(&format!(
            "sslmode=require sslrootcert={} sslcert={} sslkey=/k.pem",
            missing.display(),
            ca.display()
        ));
        assert_eq!(
            resolve_files(&t).unwrap().cert,
            Some((ca.clone(), PathBuf::from("/k.pem")))
        );
        let t = target("sslmode=verify-ca sslrootcert=system");
        assert!(resolve_files(&t).is_err());
    }
}
