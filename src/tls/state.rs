//! The state directory of HTTPS over ACME, shared by every process serving the same names
//! (workers, and a new set of them during a reload):
//!
//! ```text
//! STATE/lock                                held by the one process that orders
//! STATE/accounts/HOST/account.json          the ACME account's key, per directory
//! STATE/certificates/NAME/cert.pem, key.pem the certificate every process serves
//! STATE/challenges/tls-alpn-01/NAME.pem     a check's certificate and key, while it runs
//! STATE/challenges/http-01/TOKEN            a check's key authorization, while it runs
//! ```
//!
//! Files are written whole (a temporary file renamed over the old one) with mode 0600, in
//! directories of mode 0700: they hold private keys. A challenge is read from its file by
//! whichever process the CA's check reaches.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

#[derive(Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// A stored certificate: its chain and key as PEM, and when it was written.
pub struct Stored {
    pub chain: Vec<u8>,
    pub key: Vec<u8>,
    pub written: SystemTime,
}

impl StateDir {
    pub fn new(root: PathBuf) -> StateDir {
        StateDir { root }
    }

    /// The account of one ACME directory: accounts are per CA.
    pub fn account_path(&self, directory: &str) -> PathBuf {
        let host: String = directory
            .trim_start_matches("https://")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.root.join("accounts").join(host).join("account.json")
    }

    fn certificate_dir(&self, names: &[String]) -> PathBuf {
        self.root.join("certificates").join(&names[0])
    }

    /// The certificate stored for `names`, if there is one.
    pub fn stored(&self, names: &[String]) -> Option<Stored> {
        let dir = self.certificate_dir(names);
        let written = self.written(names)?;
        Some(Stored {
            chain: fs::read(dir.join("cert.pem")).ok()?,
            key: fs::read(dir.join("key.pem")).ok()?,
            written,
        })
    }

    /// When the stored certificate was last written, to notice one another process stored.
    pub fn written(&self, names: &[String]) -> Option<SystemTime> {
        let cert = self.certificate_dir(names).join("cert.pem");
        fs::metadata(cert).ok()?.modified().ok()
    }

    /// Stores a new certificate: the key first, so that a reader that sees the new chain
    /// finds its key beside it.
    pub fn store(&self, names: &[String], chain: &str, key: &str) -> io::Result<()> {
        let dir = self.certificate_dir(names);
        write_private(&dir.join("key.pem"), key.as_bytes())?;
        write_private(&dir.join("cert.pem"), chain.as_bytes())
    }

    /// The lock only the process that orders certificates holds; `None` while another
    /// does. Released when the file is dropped (or its process ends).
    pub fn lock(&self) -> Option<File> {
        make_dir(&self.root).ok()?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.root.join("lock"))
            .ok()?;
        // SAFETY: flock on a descriptor this function owns; it only takes or refuses a lock.
        let taken = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        (taken == 0).then_some(file)
    }

    fn tls_alpn_path(&self, name: &str) -> Option<PathBuf> {
        plain_name(name).then(|| {
            let file = format!("{}.pem", name.to_ascii_lowercase());
            self.root.join("challenges").join("tls-alpn-01").join(file)
        })
    }

    fn http_path(&self, token: &str) -> Option<PathBuf> {
        let plain = !token.is_empty()
            && token.len() <= 128
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        plain.then(|| self.root.join("challenges").join("http-01").join(token))
    }

    /// Puts up the certificate a tls-alpn-01 check of `name` is to get.
    pub fn put_tls_alpn(&self, name: &str, cert_and_key: &str) -> io::Result<()> {
        let path = self
            .tls_alpn_path(name)
            .ok_or(io::ErrorKind::InvalidInput)?;
        write_private(&path, cert_and_key.as_bytes())
    }

    /// The certificate for a tls-alpn-01 check of `name`, while one runs.
    pub fn tls_alpn_challenge(&self, name: &str) -> Option<CertifiedKey> {
        let pem = fs::read(self.tls_alpn_path(name)?).ok()?;
        // Not `certified_key`: the check's certificate carries a critical extension no
        // verifier knows (acmeIdentifier), which the key-match check would refuse.
        let cert = CertificateDer::from_pem_slice(&pem).ok()?;
        let key = PrivateKeyDer::from_pem_slice(&pem).ok()?;
        let key = rustls::crypto::ring::sign::any_supported_type(&key).ok()?;
        Some(CertifiedKey::new(vec![cert], key))
    }

    /// Puts up the answer to an http-01 check for `token`.
    pub fn put_http(&self, token: &str, key_authorization: &str) -> io::Result<()> {
        let path = self.http_path(token).ok_or(io::ErrorKind::InvalidInput)?;
        write_private(&path, key_authorization.as_bytes())
    }

    /// The answer to an http-01 check for `token`, while one runs.
    pub fn http_challenge(&self, token: &str) -> Option<Vec<u8>> {
        fs::read(self.http_path(token)?).ok()
    }

    /// Takes the answers of finished checks down.
    pub fn clear_challenges(&self, names: &[String], tokens: &[String]) {
        for path in names.iter().filter_map(|n| self.tls_alpn_path(n)) {
            let _ = fs::remove_file(path);
        }
        for path in tokens.iter().filter_map(|t| self.http_path(t)) {
            let _ = fs::remove_file(path);
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// A DNS name that can stand as a file name: letters, digits, dots and dashes.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

fn make_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Writes `bytes` to `path` whole, readable by this user only.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or(io::ErrorKind::InvalidInput)?;
    make_dir(dir)?;
    let name = path.file_name().ok_or(io::ErrorKind::InvalidInput)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tokens_never_leave_the_directory() {
        let dir = StateDir::new("/state".into());
        assert!(dir.tls_alpn_path("../etc").is_none());
        assert!(dir.tls_alpn_path("a/b").is_none());
        assert!(dir.http_path("../x").is_none());
        assert!(dir.http_path("a.b").is_none());
        assert_eq!(
            dir.http_path("Ab-9_z").unwrap(),
            Path::new("/state/challenges/http-01/Ab-9_z")
        );
    }

    #[test]
    fn files_are_private_and_whole() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("s"));
        let names = vec!["app.test".to_string()];
        dir.store(&names, "CHAIN", "KEY").unwrap();
        let stored = dir.stored(&names).unwrap();
        assert_eq!(
            (stored.chain.as_slice(), stored.key.as_slice()),
            (&b"CHAIN"[..], &b"KEY"[..])
        );
        let key = tmp.path().join("s/certificates/app.test/key.pem");
        assert_eq!(
            fs::metadata(key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let d = tmp.path().join("s/certificates");
        assert_eq!(fs::metadata(d).unwrap().permissions().mode() & 0o777, 0o700);
        let held = dir.lock().unwrap();
        assert!(
            dir.lock().is_none(),
            "a second holder while the first holds it"
        );
        drop(held);
        assert!(dir.lock().is_some());
    }
}
