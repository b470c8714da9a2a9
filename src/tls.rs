//! TLS for the HTTPS listener and for HTTPS origins.
//!
//! One crypto provider (ring) everywhere: the server config here, the origin client in
//! [`crate::upstream`], and the test and demo certificates. The server advertises ALPN `h2`
//! then `http/1.1`; the listener serves each connection with the protocol that was chosen.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

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

/// Loads a certificate chain and its key, checking that they belong together.
pub fn certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let certs = load_certs(&files.cert, "certificate")?;
    let key = load_key(&files.key)?;
    Ok(CertifiedKey::from_der(certs, key, &provider())?)
}

/// The listener's certificate, replaceable while serving (certificate rotation on SIGHUP):
/// new handshakes get the new one, established connections are untouched.
#[derive(Debug)]
pub struct ReloadableCert {
    /// Where the certificate and key are read from.
    files: TlsFiles,
    /// The pair handed to each new handshake.
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Loads the pair for the first time.
    pub fn load(files: &TlsFiles) -> Result<Arc<ReloadableCert>, TlsError> {
        Ok(Arc::new(ReloadableCert {
            current: RwLock::new(Arc::new(certified_key(files)?)),
            files: files.clone(),
        }))
    }

    /// Reads the files again; on any problem the old pair stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(certified_key(&self.files)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The server config for the HTTPS listener: ALPN h2 and http/1.1, session tickets on so
/// reconnecting `EventSource` clients resume cheaply.
pub fn server_config(cert: Arc<ReloadableCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
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
