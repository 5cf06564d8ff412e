//! TLS with rustls (the `ring` provider): the client side for `rediss://` upstreams
//! ([`UpstreamTls`]) and the server side for `tls_listen` ([`ServerTls`]).
//!
//! Certificates and keys are read when a config is validated, so a missing or bad file is
//! refused like any bad config and the previous config keeps serving. The handshake runs on
//! tokio-rustls (with its timeout); the finished connection is then taken apart into its
//! socket and its rustls state, which [`TlsConn`] drives directly (see `crate::transport`),
//! so the code above sees a [`Transport`] like any other. Handshake failures carry a short, bounded `reason`
//! (`unknown_ca`, `name_mismatch`, `expired`, `protocol`, …) for metrics, and the detail for
//! logs.

use crate::transport::{TlsConn, Transport};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use serde::Deserialize;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// `[tls.upstream]`: how rekey connects to `rediss://` upstreams.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM CA certificates to trust; default: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The name sent as SNI and verified in the server's certificate, instead of the host of
    /// the URL (needed when connecting by IP address; cluster nodes and Sentinel-announced
    /// primaries are verified against it too).
    pub server_name: Option<String>,
    /// Client certificate chain (PEM) for mutual TLS, with `key_file`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. For tests only: logged as a warning at every start.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// With `rediss-sentinel://`: whether the sentinels too are reached over TLS (default
    /// true, as managed Sentinel setups run it); `false`: only the data nodes are.
    pub sentinels: Option<bool>,
}

/// `[tls.server]`: the certificate `tls_listen` listeners present to clients.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate issued by one of these CAs.
    pub client_ca_file: Option<PathBuf>,
    /// A client that has not finished its handshake within this many ms is closed.
    pub handshake_timeout_ms: Option<u64>,
}

/// Why TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} {path} holds no certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("{what} {path}: {source}")]
    Rejected {
        what: &'static str,
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A failed TLS handshake: a bounded reason (for metrics) and what happened.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail} ({reason})")]
pub struct HandshakeError {
    pub reason: &'static str,
    pub detail: String,
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The TLS client side of upstream connections. Two are equal when they were made from the
/// same settings and the same file contents (a reload with new certificates gets new pools).
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    server_name: Option<String>,
    fingerprint: u64,
    insecure: bool,
    sentinels: bool,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &UpstreamTls) -> bool {
        self.fingerprint == other.fingerprint
            && self.server_name == other.server_name
            && self.insecure == other.insecure
            && self.sentinels == other.sentinels
    }
}

impl Eq for UpstreamTls {}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl UpstreamTls {
    /// System roots, no client certificate: what `rediss://` means without `[tls.upstream]`.
    pub fn system() -> UpstreamTls {
        static SYSTEM: OnceLock<UpstreamTls> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                UpstreamTls::load(&UpstreamTlsConfig::default())
                    .expect("TLS with system roots and default settings always builds")
            })
            .clone()
    }

    /// Reads the files `cfg` names and builds the client configuration.
    pub fn load(cfg: &UpstreamTlsConfig) -> Result<UpstreamTls, TlsError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = if cfg.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider())))
        } else {
            let roots = match &cfg.ca_file {
                Some(path) => {
                    let certs = read_certs("ca_file", path, &mut hasher)?;
                    roots_from("ca_file", path, certs)?
                }
                None => system_roots(),
            };
            builder.with_root_certificates(roots)
        };
        let config = match (&cfg.cert_file, &cfg.key_file) {
            (Some(cert), Some(key)) => {
                let chain = read_certs("cert_file", cert, &mut hasher)?;
                let key_der = read_key(key, &mut hasher)?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|source| TlsError::Rejected {
                        what: "key_file",
                        path: key.clone(),
                        source,
                    })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Invalid(
                    "[tls.upstream] cert_file and key_file go together".into(),
                ))
            }
        };
        if let Some(name) = &cfg.server_name {
            ServerName::try_from(name.as_str()).map_err(|_| {
                TlsError::Invalid(format!("[tls.upstream] server_name {name:?} is not valid"))
            })?;
        }
        cfg.insecure_skip_verify.hash(&mut hasher);
        Ok(UpstreamTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: cfg.server_name.clone(),
            fingerprint: hasher.finish(),
            insecure: cfg.insecure_skip_verify,
            sentinels: cfg.sentinels.unwrap_or(true),
        })
    }

    /// With `rediss-sentinel://`, whether the sentinels are reached over TLS too.
    pub fn for_sentinels(&self) -> bool {
        self.sentinels
    }

    /// True when certificates are not verified.
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// The name verified for a connection to `host`.
    pub fn name_for<'a>(&'a self, host: &'a str) -> &'a str {
        self.server_name.as_deref().unwrap_or(host)
    }

    /// The same settings, verifying every server as `name` unless a `server_name` is set:
    /// for nodes announced by IP address (cluster nodes, Sentinel-named primaries), verified
    /// against the host name rekey was configured with. An IP address `name` changes nothing
    /// (each node is then verified against its own address).
    pub fn verifying_as(&self, name: &str) -> UpstreamTls {
        let mut out = self.clone();
        let dns = name.parse::<std::net::IpAddr>().is_err();
        if out.server_name.is_none() && dns && ServerName::try_from(name).is_ok() {
            out.server_name = Some(name.to_string());
        }
        out
    }

    /// Runs the client handshake on `tcp` (to `host`) within `timeout`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        host: &str,
        timeout: Duration,
    ) -> Result<Transport, HandshakeError> {
        let name = self.name_for(host);
        let server_name = ServerName::try_from(name.to_string()).map_err(|_| HandshakeError {
            reason: "bad_server_name",
            detail: format!("{name:?} is not a valid TLS server name"),
        })?;
        let stream =
            match tokio::time::timeout(timeout, self.connector.connect(server_name, tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(classify(&e, &format!("as {name:?}"))),
                Err(_) => return Err(timed_out(timeout)),
            };
        let (tcp, conn) = stream.into_inner();
        Ok(TlsConn::transport(tcp, rustls::Connection::Client(conn)))
    }
}

/// The server side of `tls_listen`.
pub struct ServerTls {
    acceptor: TlsAcceptor,
    pub handshake_timeout: Duration,
    /// Clients must present a certificate.
    pub mutual: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("mutual", &self.mutual)
            .finish()
    }
}

/// Default for `[tls.server] handshake_timeout_ms`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl ServerTls {
    pub fn load(cfg: &ServerTlsConfig) -> Result<ServerTls, TlsError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let chain = read_certs("cert_file", &cfg.cert_file, &mut hasher)?;
        let key = read_key(&cfg.key_file, &mut hasher)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match &cfg.client_ca_file {
            Some(path) => {
                let certs = read_certs("client_ca_file", path, &mut hasher)?;
                let roots = roots_from("client_ca_file", path, certs)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| {
                            TlsError::Invalid(format!("client_ca_file {}: {e}", path.display()))
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|source| TlsError::Rejected {
                what: "key_file",
                path: cfg.key_file.clone(),
                source,
            })?;
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshake_timeout: cfg
                .handshake_timeout_ms
                .map(|ms| Duration::from_millis(ms.max(1)))
                .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
            mutual: cfg.client_ca_file.is_some(),
        })
    }

    /// Runs the server handshake on a client's `tcp` within the handshake timeout. Close the
    /// connection with [`TlsConn::close`] (`Transport::closer`) after the session, so the last
    /// replies and `close_notify` reach the client.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Transport, HandshakeError> {
        let stream =
            match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(classify(&e, "with client")),
                Err(_) => return Err(timed_out(self.handshake_timeout)),
            };
        let (tcp, conn) = stream.into_inner();
        Ok(TlsConn::transport(tcp, rustls::Connection::Server(conn)))
    }
}

fn timed_out(t: Duration) -> HandshakeError {
    HandshakeError {
        reason: "timeout",
        detail: format!("TLS handshake not finished within {} ms", t.as_millis()),
    }
}

/// Names the cause of a failed handshake.
fn classify(e: &io::Error, context: &str) -> HandshakeError {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<E>());
    let reason = match tls {
        Some(E::InvalidCertificate(c)) => match c {
            C::UnknownIssuer => "unknown_ca",
            C::NotValidForName | C::NotValidForNameContext { .. } => "name_mismatch",
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not_yet_valid",
            _ => "bad_certificate",
        },
        Some(E::NoCertificatesPresented) => "no_client_cert",
        Some(E::AlertReceived(a)) => match a {
            A::UnknownCA => "peer_unknown_ca",
            A::BadCertificate
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::CertificateRequired
            | A::UnsupportedCertificate
            | A::CertificateRevoked => "peer_rejected_certificate",
            A::ProtocolVersion => "protocol_version",
            _ => "peer_alert",
        },
        Some(E::PeerIncompatible(_)) => "incompatible",
        Some(
            E::InvalidMessage(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
            | E::PeerMisbehaved(_)
            | E::PeerSentOversizedRecord
            | E::DecryptError,
        ) => "protocol",
        Some(_) => "other",
        None if e.kind() == io::ErrorKind::UnexpectedEof => "eof",
        None => "io",
    };
    let what = match tls {
        Some(E::InvalidCertificate(C::UnknownIssuer)) => {
            "certificate signed by an unknown CA (set ca_file)".to_string()
        }
        Some(E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => {
            format!("certificate not valid for the name {context} (set server_name)")
        }
        Some(t) => t.to_string(),
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            "peer closed the connection during the handshake (not a TLS port?)".to_string()
        }
        None => e.to_string(),
    };
    HandshakeError {
        reason,
        detail: format!("TLS handshake failed: {what}"),
    }
}

/// The roots used when no `ca_file` is given: the Mozilla set (`webpki-roots`) and the
/// system bundle (`$SSL_CERT_FILE`, Debian's or Red Hat's), when there is one.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let candidates = [
        std::env::var_os("SSL_CERT_FILE").map(PathBuf::from),
        Some(PathBuf::from("/etc/ssl/certs/ca-certificates.crt")),
        Some(PathBuf::from("/etc/pki/tls/certs/ca-bundle.crt")),
    ];
    if let Some(path) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        if let Ok(iter) = CertificateDer::pem_file_iter(&path) {
            let certs: Vec<_> = iter.filter_map(Result::ok).collect();
            let _ = roots.add_parsable_certificates(certs);
        }
    }
    roots
}

fn roots_from(
    what: &'static str,
    path: &Path,
    certs: Vec<CertificateDer<'static>>,
) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|source| TlsError::Rejected {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

fn read_file(
    what: &'static str,
    path: &Path,
    hasher: &mut impl Hasher,
) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    bytes.hash(hasher);
    Ok(bytes)
}

fn read_certs(
    what: &'static str,
    path: &Path,
    hasher: &mut impl Hasher,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(what, path, hasher)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            what,
            path: path.to_path_buf(),
            reason: format!("not PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path, hasher: &mut impl Hasher) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file("key_file", path, hasher)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::File {
        what: "key_file",
        path: path.to_path_buf(),
        reason: format!("no PEM private key: {e}"),
    })
}

/// `insecure_skip_verify`: any certificate is accepted; handshake signatures are still
/// checked (the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
