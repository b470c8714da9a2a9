//! TLS material shared by both sides: the one crypto provider (ring), PEM files, and the
//! roots an HTTPS origin's certificate is checked against. The edge's server config, the
//! origin client, and the tools all take their provider here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file is missing or unreadable, or holds no PEM item of the right kind.
    #[error("{what} {path}: {reason}")]
    File {
        /// "certificate", "private key" or "CA bundle".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// rustls refused the combination (for example a key that does not match the certificate).
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The process-wide crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate in a PEM file.
pub fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        what,
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| file_error(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error("holds no CERTIFICATE block".to_owned()));
    }
    Ok(certs)
}

/// Reads the first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        what: "private key",
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| file_error(e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| file_error(format!("holds no usable PRIVATE KEY block ({e})")))
}

/// Roots for HTTPS origins: the web PKI plus an optional private CA.
pub fn origin_roots(extra_ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca {
        for cert in load_certs(path, "CA bundle")? {
            roots.add(cert).map_err(|e| TlsError::File {
                what: "CA bundle",
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        }
    }
    Ok(roots)
}
