//! Certificates for TLS tests, generated with rcgen: certificate authorities, server
//! certificates for `127.0.0.1` and `localhost`, and client certificates, written as PEM
//! files.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A certificate authority that signs the others.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Its certificate, as a PEM file.
    pub pem: PathBuf,
}

/// A certificate and its key, as PEM files.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// A new self-signed CA named `name`, written to `dir/name.pem`.
    pub fn new(dir: &Path, name: &str) -> Result<Ca> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, key)?;
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, issuer.pem())?;
        Ok(Ca { issuer, pem })
    }

    /// A server certificate for `127.0.0.1` and `localhost`: `dir/name.pem`, `name.key`.
    pub fn server(&self, dir: &Path, name: &str) -> Result<Issued> {
        self.issue(
            dir,
            name,
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate named `name`: `dir/name.pem`, `name.key`.
    pub fn client(&self, dir: &Path, name: &str) -> Result<Issued> {
        self.issue(dir, name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        dir: &Path,
        name: &str,
        sans: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer)?;
        let issued = Issued {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem())?;
        std::fs::write(&issued.key, key.serialize_pem())?;
        Ok(issued)
    }
}

/// A reqwest client that trusts only `ca` and presents `identity` when given.
pub fn client(ca: &Path, identity: Option<&Issued>) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?)
        .timeout(std::time::Duration::from_secs(10));
    if let Some(id) = identity {
        let mut pem = std::fs::read(&id.cert)?;
        pem.push(b'\n');
        pem.extend_from_slice(&std::fs::read(&id.key)?);
        b = b.identity(reqwest::Identity::from_pem(&pem)?);
    }
    Ok(b.build()?)
}
