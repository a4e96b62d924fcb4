//! A development certificate authority: certificates for every henvis service, agency
//! system, contact person and administrator, and a certificate revocation list. For the
//! local deployment and the tests; production certificates come from the agencies' PKI.
//!
//! Layout of a PKI folder (what services and clients read, see henvis-runtime's `tls`):
//!
//! ```text
//! ca.pem  ca.key (0600)  crl.pem  serials.toml
//! <kind>/<id>.pem  <kind>/<id>.key (0600)     kind: service, agency, person, admin
//! ```
//!
//! Each certificate names its principal in a URI subject alternative name
//! (`henvis://agency/kommune-101`); service certificates also carry `localhost` and
//! 127.0.0.1, for the local deployment.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use henvis_domain::{Directory, Principal};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// The services of a henvis deployment, each with a server certificate (`nats` is the
/// nats-server's).
pub const SERVICES: [&str; 7] = ["router", "admin", "police", "health", "social", "ngo", "nats"];

/// A certificate's validity period.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Not valid before.
    pub not_before: OffsetDateTime,
    /// Not valid after.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago for `days` days.
    pub fn days(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// Its serial number.
    pub serial: u64,
}

/// A certificate authority that can issue certificates and revocation lists.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

fn client_or_server(principal: &Principal) -> Vec<ExtendedKeyUsagePurpose> {
    match principal {
        // services serve gRPC and are clients of NATS and of each other
        Principal::Service(_) => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
    }
}

impl Ca {
    /// A new self-signed CA called `name`, valid ten years.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.distinguished_name.push(DnType::OrganizationName, "henvis");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let v = Validity::days(3650);
        params.not_before = v.not_before;
        params.not_after = v.not_after;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Self {
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a certificate for `principal` with serial number `serial`.
    pub fn issue(&self, principal: &Principal, validity: Validity, serial: u64) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        // the subject is the CN alone: nats-server maps it (RFC 2253) to the NATS user
        params.distinguished_name.push(DnType::CommonName, principal.uri());
        params.subject_alt_names = vec![SanType::URI(principal.uri().try_into()?)];
        if let Principal::Service(_) = principal {
            params.subject_alt_names.push(SanType::DnsName("localhost".try_into()?));
            params
                .subject_alt_names
                .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = client_or_server(principal);
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        })
    }

    /// A revocation list naming `revoked` serial numbers, valid until `next_update`.
    pub fn crl(
        &self,
        revoked: &[u64],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> anyhow::Result<String> {
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from_slice(&OffsetDateTime::now_utc().unix_timestamp().to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&s.to_be_bytes()),
                    revocation_time: this_update,
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// Every principal of `dir` that gets a certificate: the services, every agency, every
/// contact person, and the development administrators.
pub fn principals(dir: &Directory) -> anyhow::Result<Vec<Principal>> {
    let mut all: Vec<Principal> = SERVICES.iter().map(|s| Principal::Service((*s).to_owned())).collect();
    all.extend(dir.agencies().map(|a| Principal::Agency(a.id.clone())));
    all.extend(dir.contact_persons().map(|(p, _)| Principal::Person(p.clone())));
    all.extend(dir.administrators().map(|a| Principal::Admin(a.clone())));
    Ok(all)
}

/// A PKI folder on disk: the CA, issued certificates and the revocation list.
pub struct DevPki {
    dir: PathBuf,
    ca: Ca,
    /// principal URI → current serial; revoked serials
    index: Index,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Index {
    next_serial: u64,
    current: BTreeMap<String, u64>,
    revoked: Vec<u64>,
}

/// The audit signing key (Ed25519, PKCS#8 DER) the routers sign checkpoints with,
/// relative to the PKI folder.
pub const AUDIT_SIGNING_KEY: &str = "service/audit-signing.p8";
/// The matching public key (hex), which verifiers (the admin service, an auditor with a
/// copy) check checkpoints with.
pub const AUDIT_PUBLIC_KEY: &str = "audit-signing.pub";

/// Creates the audit signing key pair in `dir`.
pub fn create_audit_key(dir: &Path) -> anyhow::Result<()> {
    use ring::signature::KeyPair as _;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| anyhow::anyhow!("generating the audit signing key"))?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("reading the generated audit signing key"))?;
    let key = dir.join(AUDIT_SIGNING_KEY);
    if let Some(parent) = key.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&key, pkcs8.as_ref()).with_context(|| format!("writing `{}`", key.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::write(dir.join(AUDIT_PUBLIC_KEY), hex::encode(pair.public_key().as_ref()))?;
    Ok(())
}

/// The case master key (64 hex digits), which wraps every case's data key, relative to
/// the PKI folder; services read it from here unless configured elsewhere.
pub const CASE_MASTER_KEY: &str = "service/case-master.key";

/// Creates the case master key in `dir` (readable by its owner only).
pub fn create_case_master_key(dir: &Path) -> anyhow::Result<()> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("generating the case master key"))?;
    let path = dir.join(CASE_MASTER_KEY);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    write_private(&path, &hex::encode(bytes))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing `{}`", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Replaces `path` atomically (write to a temporary file, then rename), so a service that
/// reloads never reads half a file.
fn replace(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    if private {
        write_private(&tmp, text)?;
    } else {
        std::fs::write(&tmp, text)?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("replacing `{}`", path.display()))
}

impl DevPki {
    /// Creates a new PKI in `dir` with a certificate for every principal of `dir` (see
    /// [`principals`]), valid a year, and an empty revocation list valid 30 days.
    pub fn create(dir: &Path, directory: &Directory) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ca = Ca::new("henvis development CA")?;
        std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
        write_private(&dir.join("ca.key"), &ca.key_pem())?;
        let mut pki = Self {
            dir: dir.to_owned(),
            ca,
            index: Index {
                next_serial: 1,
                ..Default::default()
            },
        };
        for p in principals(directory)? {
            pki.issue(&p, Validity::days(365))?;
        }
        pki.publish_crl(Duration::days(30))?;
        create_audit_key(dir)?;
        create_case_master_key(dir)?;
        Ok(pki)
    }

    /// Opens an existing PKI folder.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).with_context(|| format!("reading `{}`", dir.join(name).display()))
        };
        Ok(Self {
            dir: dir.to_owned(),
            ca: Ca::from_pem(&read("ca.pem")?, &read("ca.key")?)?,
            index: toml::from_str(&read("serials.toml")?)?,
        })
    }

    /// The CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// Issues (or renews) the certificate of `principal` and writes it, replacing the old
    /// files atomically. The old certificate stays valid until it expires or is revoked.
    pub fn issue(&mut self, principal: &Principal, validity: Validity) -> anyhow::Result<Issued> {
        let serial = self.index.next_serial;
        self.index.next_serial += 1;
        let issued = self.ca.issue(principal, validity, serial)?;
        let (cert, key) = self.paths(principal);
        if let Some(parent) = cert.parent() {
            std::fs::create_dir_all(parent)?;
        }
        replace(&key, &issued.key_pem, true)?;
        replace(&cert, &issued.cert_pem, false)?;
        self.index.current.insert(principal.uri(), serial);
        self.save_index()?;
        Ok(issued)
    }

    /// Revokes the current certificate of `principal` and publishes a new revocation list.
    pub fn revoke(&mut self, principal: &Principal) -> anyhow::Result<u64> {
        let serial = *self
            .index
            .current
            .get(&principal.uri())
            .with_context(|| format!("no certificate issued to `{principal}`"))?;
        self.index.revoked.push(serial);
        self.save_index()?;
        self.publish_crl(Duration::days(30))?;
        Ok(serial)
    }

    /// Writes a fresh revocation list valid for `valid_for`.
    pub fn publish_crl(&self, valid_for: Duration) -> anyhow::Result<()> {
        let now = OffsetDateTime::now_utc();
        let crl = self
            .ca
            .crl(&self.index.revoked, now - Duration::minutes(5), now + valid_for)?;
        replace(&self.dir.join("crl.pem"), &crl, false)
    }

    /// The certificate and key files of `principal`.
    pub fn paths(&self, principal: &Principal) -> (PathBuf, PathBuf) {
        let base = self.dir.join(principal.path());
        (base.with_extension("pem"), base.with_extension("key"))
    }

    fn save_index(&self) -> anyhow::Result<()> {
        replace(&self.dir.join("serials.toml"), &toml::to_string(&self.index)?, false)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_dev_pki_has_a_certificate_for_every_principal_and_revokes_by_serial() {
        let dir = tempfile::tempdir().unwrap();
        let directory = Directory::denmark().unwrap();
        let mut pki = DevPki::create(dir.path(), &directory).unwrap();
        for p in principals(&directory).unwrap() {
            let (cert, key) = pki.paths(&p);
            assert!(cert.exists() && key.exists(), "{p}");
        }
        let p = Principal::Agency(henvis_domain::AgencyId::parse("kommune-101").unwrap());
        let serial = pki.revoke(&p).unwrap();
        let reopened = DevPki::open(dir.path()).unwrap();
        assert_eq!(reopened.index.revoked, vec![serial]);
        assert!(
            std::fs::read_to_string(dir.path().join("crl.pem"))
                .unwrap()
                .contains("X509 CRL")
        );
    }
}
