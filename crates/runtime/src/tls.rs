//! Mutual TLS for every gRPC endpoint (rustls), and the caller's identity from its client
//! certificate.
//!
//! The TLS handshake proves that the client holds the key of the certificate it presents;
//! whether that certificate is acceptable (issued by the henvis CA, within its validity,
//! not revoked by a current revocation list) is checked per request by the same rustls
//! verifier, so a refused certificate gets a gRPC `UNAUTHENTICATED` status that says why,
//! rather than a bare handshake failure. A connection that does not speak TLS is closed.
//!
//! The certificate, key, CA and revocation list are read from a PKI folder (see henvis-pki
//! for its layout) and read again when a file changes: a renewed certificate or a new
//! revocation list takes effect without a restart.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use henvis_domain::Principal;
use rustls::{
    DigitallySignedStruct, DistinguishedName, Error as TlsError, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime, pem::PemObject},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The PKI files a service reads.
#[derive(Debug, Clone)]
pub struct PkiFiles {
    /// The CA certificate(s) trusted for clients.
    pub ca: PathBuf,
    /// The CA's revocation list.
    pub crl: PathBuf,
    /// This service's certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl PkiFiles {
    /// The files of `principal` in a PKI folder.
    pub fn of(dir: &Path, principal: &Principal) -> Self {
        let base = dir.join(principal.path());
        Self {
            ca: dir.join("ca.pem"),
            crl: dir.join("crl.pem"),
            cert: base.with_extension("pem"),
            key: base.with_extension("key"),
        }
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        [&self.ca, &self.crl, &self.cert, &self.key]
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }
}

/// Accepts any client certificate during the handshake (the signature proving possession of
/// its key is still verified); the certificate itself is judged per request.
#[derive(Debug)]
struct Deferred(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Deferred {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false // a caller without a certificate is told so in a gRPC status
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

struct Material {
    verifier: Arc<dyn ClientCertVerifier>,
    server: Arc<ServerConfig>,
    /// Certificate chains this material verified lately (by their SHA-256), with the
    /// principal each names and when: a caller's every request is not one more signature
    /// check. Belongs to the material, so a reload (a new revocation list above all)
    /// starts empty and judges every caller afresh.
    verified: Mutex<lru::LruCache<[u8; 32], (Principal, Instant)>>,
}

/// How long a verified certificate chain is taken as verified again without checking
/// (its validity period is judged at most this late; a revocation takes effect when the
/// revocation list is reloaded).
const VERIFIED_FOR: Duration = Duration::from_secs(10);
/// Chains remembered as verified per material.
const VERIFIED_CHAINS: usize = 4096;

fn load(files: &PkiFiles) -> anyhow::Result<Material> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading `{}`", p.display()));
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read(&files.ca)?) {
        roots.add(c.context("CA certificate")?)?;
    }
    let crls = CertificateRevocationListDer::pem_slice_iter(&read(&files.crl)?)
        .collect::<Result<Vec<_>, _>>()
        .context("revocation list")?;
    if crls.is_empty() {
        anyhow::bail!("`{}`: no revocation list", files.crl.display());
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .with_crls(crls)
        // a revocation list past its next update is an error, not ignored
        .enforce_revocation_expiration()
        .build()?;
    let chain = CertificateDer::pem_slice_iter(&read(&files.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .context("certificate")?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).context("key")?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(Deferred(verifier.clone())))
        .with_single_cert(chain, key)?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Material {
        verifier,
        server: Arc::new(server),
        verified: Mutex::new(lru::LruCache::new(
            std::num::NonZeroUsize::new(VERIFIED_CHAINS).unwrap_or(std::num::NonZeroUsize::MIN),
        )),
    })
}

/// Why a caller was not authenticated; the text goes into the gRPC status (never the
/// certificate's content).
pub fn refusal(e: &TlsError) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        TlsError::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => "client certificate expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "client certificate not valid yet",
            C::Revoked => "client certificate revoked",
            C::UnknownIssuer => "client certificate not issued by the henvis CA",
            C::BadSignature => "client certificate signature invalid",
            C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => {
                "revocation list out of date: no certificate can be checked; the operator must publish a new one"
            }
            C::UnknownRevocationStatus => "client certificate revocation status unknown",
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => "certificate not issued for client authentication",
            _ => "client certificate not accepted",
        },
        _ => "client certificate not accepted",
    }
}

/// A service's TLS: its certificate for the handshake, and the judge of client
/// certificates. Reloads its files when they change.
pub struct TlsServer {
    files: PkiFiles,
    current: RwLock<(Arc<Material>, Vec<Option<SystemTime>>)>,
}

impl TlsServer {
    /// Loads the files; fails when any is missing or invalid.
    pub fn load(files: PkiFiles) -> anyhow::Result<Arc<Self>> {
        let stamps = files.stamps();
        let material = load(&files)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new((Arc::new(material), stamps)),
        }))
    }

    fn material(&self) -> Arc<Material> {
        match self.current.read() {
            Ok(g) => g.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    /// Reads the files again if any changed. A file that does not load keeps the previous
    /// material (and is reported); a revocation list that has expired still refuses every
    /// caller.
    pub fn reload_if_changed(&self) -> bool {
        let stamps = self.files.stamps();
        let unchanged = self.current.read().map(|g| g.1 == stamps).unwrap_or(false);
        if unchanged {
            return false;
        }
        match load(&self.files) {
            Ok(m) => {
                if let Ok(mut g) = self.current.write() {
                    *g = (Arc::new(m), stamps);
                }
                tracing::info!("TLS certificate, CA or revocation list reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS files changed but do not load; keeping the previous ones");
                if let Ok(mut g) = self.current.write() {
                    g.1 = stamps;
                }
                false
            }
        }
    }

    /// Checks a caller's certificate chain and returns the principal it names.
    pub fn authenticate(&self, chain: Option<&[CertificateDer<'static>]>) -> Result<Principal, &'static str> {
        let (end_entity, intermediates) = chain
            .and_then(<[_]>::split_first)
            .ok_or("no client certificate: henvis requires mutual TLS")?;
        let material = self.material();
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for c in std::iter::once(end_entity).chain(intermediates) {
            digest.update(&(c.len() as u64).to_be_bytes());
            digest.update(c.as_ref());
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(digest.finish().as_ref());
        let remembered = material.verified.lock().ok().and_then(|mut v| {
            v.get(&id)
                .filter(|(_, at)| at.elapsed() < VERIFIED_FOR)
                .map(|(p, _)| p.clone())
        });
        if let Some(p) = remembered {
            return Ok(p);
        }
        material
            .verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .map_err(|e| refusal(&e))?;
        let principal = principal_of(end_entity).ok_or("client certificate names no henvis principal")?;
        if let Ok(mut v) = material.verified.lock() {
            v.put(id, (principal.clone(), Instant::now()));
        }
        Ok(principal)
    }

    /// Accepts TCP connections on `listener` and completes their TLS handshakes; a
    /// connection that fails its handshake (plaintext, no common protocol) is closed.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> impl futures::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = tx.closed() => break,
                    a = listener.accept() => a,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                // small gRPC frames (an inbox delivery, an acknowledgement's confirmation)
                // go out at once: with Nagle's algorithm each waited for the peer's delayed
                // ACK, ~40 ms, capping an inbox stream at ~180 deliveries/s
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::warn!(%peer, error = %e, "TCP_NODELAY not set");
                }
                let acceptor = TlsAcceptor::from(self.material().server.clone());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send(Ok(s)).await;
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    /// Checks the files every `every` until `shutdown`.
    pub async fn watch(self: Arc<Self>, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = tick.tick() => { self.reload_if_changed(); }
            }
        }
    }
}

/// The henvis principal named in a certificate's URI subject alternative name.
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<Principal> {
    use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
    let (_, x509) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let san = x509.subject_alternative_name().ok()??;
    let mut found = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) if u.starts_with(henvis_domain::PRINCIPAL_SCHEME) => Principal::from_uri(u).ok(),
        _ => None,
    });
    let first = found.next()?;
    // a certificate naming two principals names none
    found.next().is_none().then_some(first)
}

/// A client's TLS settings for calling henvis services: the CA to trust and, unless
/// anonymous, the certificate and key to present.
pub fn client_tls(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> tonic::transport::ClientTlsConfig {
    let mut c = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        c = c.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    c
}

/// A channel to `addr` (host:port) as `principal`, with the files of a PKI folder.
pub async fn connect_as(addr: &str, pki: &Path, principal: &Principal) -> anyhow::Result<tonic::transport::Channel> {
    let files = PkiFiles::of(pki, principal);
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading `{}`", p.display()));
    let tls = client_tls(&read(&files.ca)?, Some((&read(&files.cert)?, &read(&files.key)?)));
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?;
    Ok(endpoint.connect().await?)
}
