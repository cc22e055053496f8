//! HTTPS on a listener: a rustls acceptor built from PEM files, so a site needs no other
//! front server for TLS.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use tokio_rustls::TlsAcceptor;

use crate::error::StartError;

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, StartError> {
    let cert_error = |problem: String| StartError::Tls {
        option: "certfile",
        path: files.cert.clone(),
        problem,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_error(format!("cannot be read: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(format!("is not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(cert_error("holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| StartError::Tls {
        option: "keyfile",
        path: files.key.clone(),
        problem: format!("cannot be read as a PEM private key: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| cert_error(format!("does not match the keyfile: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
