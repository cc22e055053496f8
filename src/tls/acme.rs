//! Certificates over ACME (RFC 8555), kept for as long as the server runs: the stored one
//! is served at once (the CA need not be reachable for a restart), a new one is ordered when
//! there is none, when it does not cover the names, or once `renew_at` of its lifetime has
//! passed, and it is swapped in for the next handshake without a restart. The CA's checks
//! are answered on the server's own listeners: tls-alpn-01 (RFC 8737) on the TLS listener,
//! http-01 on the plain redirect listener when there is one.
//!
//! Of the processes serving the same state directory only the one holding its lock orders;
//! every process picks up what is stored. A failed order keeps the last good certificate and
//! is tried again after a wait that doubles, each failure logged once with the CA's problem.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType,
    Error as AcmeError, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::Certificates;
use super::state::StateDir;

/// How the server gets its certificate over ACME.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeSettings {
    /// The names the certificate is for; the first names it in the state directory.
    pub names: Vec<String>,
    pub directory: String,
    /// Roots to trust for the CA's own HTTPS, instead of the system's.
    pub ca: Option<std::path::PathBuf>,
    pub email: Option<String>,
    /// The share of a certificate's lifetime after which it is renewed.
    pub renew_at: f64,
    /// An http-01 check can be answered (there is a plain redirect listener).
    pub http_listener: bool,
}

/// How often the stored certificate is looked at for one another process wrote.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// The wait after a first failed order; it doubles with each failure, up to `RETRY_MAX`.
const RETRY_START: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(3600);
/// The least time between two orders that succeeded.
const ORDER_GAP: Duration = Duration::from_secs(60);

/// The certificate being served: when it stops being good enough.
struct Serving {
    written: SystemTime,
    renew_after: SystemTime,
    covers: bool,
}

/// Keeps `certs` serving a good certificate for `settings.names`; runs until the server's
/// runtime stops.
pub async fn keep(settings: AcmeSettings, dir: Arc<StateDir>, certs: Arc<Certificates>) {
    let names = settings.names.join(", ");
    let mut serving = load_stored(&settings, &dir, &certs);
    if serving.is_none() {
        tracing::warn!(
            "no certificate for {names} yet: HTTPS handshakes fail until one is obtained from {}",
            settings.directory
        );
    }
    let mut lock = None;
    let mut next_order = Instant::now();
    let mut retry = RETRY_START;
    loop {
        if dir.written(&settings.names) != serving.as_ref().map(|s| s.written)
            && let Some(fresh) = load_stored(&settings, &dir, &certs)
        {
            serving = Some(fresh);
        }
        let due = serving
            .as_ref()
            .is_none_or(|s| !s.covers || SystemTime::now() >= s.renew_after);
        if due && Instant::now() >= next_order {
            if lock.is_none() {
                lock = dir.lock();
            }
            if lock.is_some() {
                match order(&settings, &dir).await {
                    Ok((chain, key)) => {
                        if let Err(e) = dir.store(&settings.names, &chain, &key) {
                            tracing::error!(
                                "cannot store the certificate for {names} in {}: {e}",
                                dir.root().display()
                            );
                        }
                        tracing::info!("obtained a certificate for {names}");
                        retry = RETRY_START;
                        next_order = Instant::now() + ORDER_GAP;
                        continue;
                    }
                    Err(e) => {
                        let kept = match serving {
                            Some(_) => "the last one is kept",
                            None => "HTTPS handshakes fail until one is obtained",
                        };
                        tracing::warn!(
                            "could not obtain a certificate for {names} from {}: {}; {kept}; \
                             trying again in {} s",
                            settings.directory,
                            said(&e),
                            retry.as_secs()
                        );
                        next_order = Instant::now() + retry;
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                }
            }
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// Serves the stored certificate, if there is a usable one.
fn load_stored(settings: &AcmeSettings, dir: &StateDir, certs: &Certificates) -> Option<Serving> {
    let stored = dir.stored(&settings.names)?;
    let key = match super::certified_key(&stored.chain, &stored.key) {
        Ok(key) => key,
        Err(problem) => {
            tracing::warn!("the stored certificate for {} {problem}", settings.names[0]);
            return None;
        }
    };
    let (lifetime, covers) = validity(&stored.chain, &settings.names)?;
    certs.swap(key);
    let (from, until) = lifetime;
    let renew_after =
        from + (until.duration_since(from).unwrap_or_default()).mul_f64(settings.renew_at);
    Some(Serving {
        written: stored.written,
        renew_after,
        covers,
    })
}

/// The leaf's validity, and whether it names every one of `names`.
fn validity(chain: &[u8], names: &[String]) -> Option<((SystemTime, SystemTime), bool)> {
    let leaf = CertificateDer::pem_slice_iter(chain).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).ok()?;
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    let validity = cert.validity();
    let lifetime = (
        at(validity.not_before.timestamp()),
        at(validity.not_after.timestamp()),
    );
    let named: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let covers = names
        .iter()
        .all(|n| named.contains(&n.to_ascii_lowercase()));
    Some((lifetime, covers))
}

/// An ACME failure as one line: the CA's problem document when it sent one.
fn said(e: &AcmeError) -> String {
    match e {
        AcmeError::Api(problem) => {
            let mut out = format!(
                "{} ({})",
                problem.detail.as_deref().unwrap_or("no detail"),
                problem.r#type.as_deref().unwrap_or("no type")
            );
            for sub in &problem.subproblems {
                let detail = sub.detail.as_deref().unwrap_or("");
                out.push_str(&format!("; {detail}"));
            }
            out
        }
        other => other.to_string(),
    }
}

fn is_problem(e: &AcmeError, kind: &str) -> bool {
    matches!(e, AcmeError::Api(p) if p.r#type.as_deref().is_some_and(|t| t.ends_with(kind)))
}

/// Orders a certificate for the names: its chain and its new key, as PEM.
async fn order(settings: &AcmeSettings, dir: &StateDir) -> Result<(String, String), AcmeError> {
    let account = account(settings, dir).await?;
    let ids: Vec<Identifier> = settings
        .names
        .iter()
        .cloned()
        .map(Identifier::Dns)
        .collect();
    let mut order = match account.new_order(&NewOrder::new(&ids)).await {
        // A CA that forgot the account (a test CA restarted): a new one, once.
        Err(e) if is_problem(&e, "accountDoesNotExist") => {
            let _ = std::fs::remove_file(dir.account_path(&settings.directory));
            let account = self::account(settings, dir).await?;
            account.new_order(&NewOrder::new(&ids)).await?
        }
        other => other?,
    };
    let mut names = Vec::new();
    let mut tokens = Vec::new();
    let checked = async {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                _ => {
                    return Err(AcmeError::Str(
                        "an authorization is neither pending nor valid",
                    ));
                }
            }
            let offers =
                |kind: ChallengeType| authorization.challenges.iter().any(|c| c.r#type == kind);
            // Port 80 is the one a CA's check reaches most surely (nothing in front of the
            // server terminates TLS on it): http-01 when there is a redirect listener.
            let kind = if settings.http_listener && offers(ChallengeType::Http01) {
                ChallengeType::Http01
            } else if offers(ChallengeType::TlsAlpn01) {
                ChallengeType::TlsAlpn01
            } else {
                return Err(AcmeError::Str(
                    "the CA offers no check this server can answer",
                ));
            };
            let mut challenge = authorization
                .challenge(kind.clone())
                .ok_or(AcmeError::Str("the challenge went away"))?;
            let name = challenge.identifier().to_string();
            let key_authorization = challenge.key_authorization();
            let put = match kind {
                ChallengeType::TlsAlpn01 => {
                    let pem = check_certificate(&name, key_authorization.digest().as_ref())?;
                    names.push(name.clone());
                    dir.put_tls_alpn(&name, &pem)
                }
                _ => {
                    tokens.push(challenge.token.clone());
                    dir.put_http(&challenge.token, key_authorization.as_str())
                }
            };
            put.map_err(|e| AcmeError::Other(Box::new(e)))?;
            challenge.set_ready().await?;
        }
        order
            .poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(90)))
            .await
    };
    let status = checked.await;
    dir.clear_challenges(&names, &tokens);
    if status? != OrderStatus::Ready {
        return Err(AcmeError::Str("the order did not become ready"));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Other(Box::new(e)))?;
    let mut params = rcgen::CertificateParams::new(settings.names.clone())
        .map_err(|e| AcmeError::Other(Box::new(e)))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| AcmeError::Other(Box::new(e)))?;
    order.finalize_csr(csr.der()).await?;
    let chain = order.poll_certificate(&RetryPolicy::new()).await?;
    Ok((chain, key.serialize_pem()))
}

/// The certificate a tls-alpn-01 check of `name` gets (RFC 8737 3), and its key, as PEM.
fn check_certificate(name: &str, digest: &[u8]) -> Result<String, AcmeError> {
    let fail = |e: rcgen::Error| AcmeError::Other(Box::new(e));
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(fail)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
}

/// The account with this CA, made on first use and kept in the state directory.
async fn account(settings: &AcmeSettings, dir: &StateDir) -> Result<Account, AcmeError> {
    let path = dir.account_path(&settings.directory);
    if let Ok(saved) = std::fs::read(&path)
        && let Ok(credentials) = serde_json::from_slice::<AccountCredentials>(&saved)
    {
        return builder(settings)?.from_credentials(credentials).await;
    }
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contacts,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder(settings)?
        .create(&new, settings.directory.clone(), None)
        .await?;
    let saved = serde_json::to_vec(&credentials)?;
    super::state::write_private(&path, &saved).map_err(|e| AcmeError::Other(Box::new(e)))?;
    Ok(account)
}

/// The HTTP client that speaks to the CA: trusting `--acme-ca`'s roots when given, else
/// the system's.
fn builder(settings: &AcmeSettings) -> Result<instant_acme::AccountBuilder, AcmeError> {
    let Some(ca) = &settings.ca else {
        return Account::builder();
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| AcmeError::Other(Box::new(e)))?;
    for cert in certs {
        let cert = cert.map_err(|e| AcmeError::Other(Box::new(e)))?;
        roots.add(cert).map_err(|e| AcmeError::Other(Box::new(e)))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AcmeError::Other(Box::new(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, BodyWrapper<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    Ok(Account::builder_with_http(Box::new(client)))
}
