//! A self-signed `localhost` certificate for the demo and for tests.

use std::path::Path;

/// The certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The PEM files could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A PEM certificate and its private key.
pub struct SelfSigned {
    /// `-----BEGIN CERTIFICATE-----`.
    pub cert_pem: String,
    /// `-----BEGIN PRIVATE KEY-----`.
    pub key_pem: String,
}

/// A certificate valid for `localhost`, `127.0.0.1` and `::1`.
pub fn localhost() -> Result<SelfSigned, CertError> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)?;
    Ok(SelfSigned {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    })
}

/// Writes a fresh `localhost` certificate and key to these paths (creating folders).
pub fn write_localhost(cert: &Path, key: &Path) -> Result<(), CertError> {
    let pair = localhost()?;
    for (path, pem) in [(cert, &pair.cert_pem), (key, &pair.key_pem)] {
        let write_error = |source| CertError::Write {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write_error)?;
        }
        std::fs::write(path, pem).map_err(write_error)?;
    }
    Ok(())
}
