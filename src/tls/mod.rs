//! HTTPS on a listener: rustls with a certificate that may change while the server runs,
//! read from PEM files (again on `reload`) or obtained and renewed over ACME (`acme`), and
//! the protocols offered by ALPN: h2 and http/1.1, and `acme-tls/1` for a CA's
//! tls-alpn-01 check (RFC 8737) when certificates come over ACME.

pub mod acme;
pub mod state;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
pub use tokio_rustls::TlsAcceptor;

use crate::error::StartError;
use crate::sync::Recover;

/// The ALPN protocol of a tls-alpn-01 check: such a handshake gets the challenge's
/// certificate, and its connection carries no request.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate chain and its key, as rustls serves them.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("is not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("cannot be read as a PEM private key: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| format!("does not match the key: {e}"))
}

/// The certificate every handshake gets, swapped whole when a new one arrives, and, with
/// ACME, the state directory a tls-alpn-01 check's certificate is read from.
pub struct Certificates {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    challenges: Option<Arc<state::StateDir>>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certificates")
    }
}

impl Certificates {
    pub fn new(challenges: Option<Arc<state::StateDir>>) -> Certificates {
        Certificates {
            current: RwLock::new(None),
            challenges,
        }
    }

    /// Serves `key` from the next handshake on; connections already open keep theirs.
    pub fn swap(&self, key: CertifiedKey) {
        *self.current.write().recover() = Some(Arc::new(key));
    }

    /// Reads the PEM files (again) and serves what they hold.
    pub fn load_files(&self, files: &TlsFiles) -> Result<(), StartError> {
        let read = |option: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| StartError::Tls {
                option,
                path: path.clone(),
                problem: format!("cannot be read: {e}"),
            })
        };
        let chain = read("certfile", &files.cert)?;
        let key = read("keyfile", &files.key)?;
        let key = certified_key(&chain, &key).map_err(|problem| StartError::Tls {
            option: "certfile",
            path: files.cert.clone(),
            problem,
        })?;
        self.swap(key);
        Ok(())
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let checking = hello
            .alpn()
            .into_iter()
            .flatten()
            .any(|p| p == ACME_TLS_ALPN);
        if checking {
            let dir = self.challenges.as_ref()?;
            return dir.tls_alpn_challenge(hello.server_name()?).map(Arc::new);
        }
        // None fails the handshake at once: there is no certificate to serve yet.
        self.current.read().recover().clone()
    }
}

/// The acceptor of every TLS listener of a server.
pub fn acceptor(certs: Arc<Certificates>, acme: bool) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if acme {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    TlsAcceptor::from(Arc::new(config))
}
