//! TLS for the HTTP API: the operator's certificate, or one made here.
//!
//! `--tls-self-signed` makes a small private CA and a server certificate
//! signed by it, and then throws the CA's key away: the CA can vouch for this
//! one certificate and can never sign another. Clients pin `ca.pem` (its
//! SHA-256 fingerprint is printed at start).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

use crate::config::TlsSetting;

/// A ready TLS setup.
pub struct TlsMaterial {
    pub server_config: Arc<rustls::ServerConfig>,
    /// For a self-signed setup: the CA certificate clients pin.
    pub ca_path: Option<PathBuf>,
    /// SHA-256 of the certificate clients pin (the CA for a self-signed setup,
    /// else the server certificate), as colon-separated hex.
    pub fingerprint: String,
}

pub fn prepare(
    setting: &TlsSetting,
    data_dir: &Path,
    hostnames: &[String],
) -> anyhow::Result<Option<TlsMaterial>> {
    let (cert_path, key_path, ca_path) = match setting {
        TlsSetting::Off => return Ok(None),
        TlsSetting::Files { cert, key } => (cert.clone(), key.clone(), None),
        TlsSetting::SelfSigned => {
            let dir = data_dir.join("tls");
            let paths = (
                dir.join("cert.pem"),
                dir.join("key.pem"),
                dir.join("ca.pem"),
            );
            if !(paths.0.exists() && paths.1.exists() && paths.2.exists()) {
                generate_self_signed(&dir, hostnames)?;
            }
            (paths.0, paths.1, Some(paths.2))
        }
    };
    let certs = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;
    let pinned = match &ca_path {
        Some(ca) => read_certs(ca)?
            .into_iter()
            .next()
            .context("ca.pem holds no certificate")?,
        None => certs
            .first()
            .cloned()
            .context("the certificate file holds no certificate")?,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsMaterial {
        server_config: Arc::new(config),
        ca_path,
        fingerprint: fingerprint(&pinned),
    }))
}

/// SHA-256 of a DER certificate as `AB:CD:…`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn generate_self_signed(dir: &Path, hostnames: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "sotto self-signed CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for h in hostnames {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(names)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "sotto server");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;
    // ca_key is dropped here and never written.
    write_private(&dir.join("key.pem"), leaf_key.serialize_pem().as_bytes())?;
    std::fs::write(dir.join("cert.pem"), leaf_cert.pem() + &ca_cert.pem())?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)?;
    Ok(())
}

pub fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file)).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))?
        .with_context(|| format!("{} holds no PEM private key", path.display()))
}
