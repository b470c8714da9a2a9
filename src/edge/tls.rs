//! TLS for the HTTPS listener: the certificate (reloadable on SIGHUP), ALPN, and the stream
//! each connection is served over ([`stream`]).
//!
//! The server advertises ALPN `h2` then `http/1.1`; the edge serves each connection with the
//! protocol that was chosen. The crypto provider and PEM loading live in
//! [`crate::origin::tls`], so one provider serves both sides.

mod stream;

pub use stream::{TlsStream, accept};

use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsFiles;
use crate::origin::tls::{TlsError, load_certs, load_key, provider};

/// Loads a certificate chain and its key, checking that they belong together.
pub fn certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    for (what, path) in [("[tls] cert", &files.cert), ("[tls] key", &files.key)] {
        if !path.exists() {
            return Err(TlsError::File {
                what,
                path: path.clone(),
                reason: MAKE_ONE.to_owned(),
            });
        }
    }
    let certs = load_certs(&files.cert, "certificate")?;
    let key = load_key(&files.key)?;
    Ok(CertifiedKey::from_der(certs, key, &provider())?)
}

/// What to do when `[tls]` points at nothing: the first thing a new user meets.
const MAKE_ONE: &str = "no such file. For a local test, `sse-edge demo` writes a self-signed \
localhost pair there; or make one with `openssl req -x509 -newkey ec -pkeyopt \
ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=localhost -addext \
subjectAltName=DNS:localhost -keyout KEY.pem -out CERT.pem`; in production point [tls] cert \
at the full chain and [tls] key at its private key (or remove `https` from [listen] to serve \
plaintext behind a TLS-terminating load balancer)";

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
