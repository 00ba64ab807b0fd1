//! TLS for clients. With `--ca FILE` the server must present a certificate
//! that chains to that file's certificate and nothing else is trusted
//! (pinning); without it, the system's roots. There is no option that turns
//! verification off.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;

use crate::ClientError;

pub fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| ClientError::Tls(format!("cannot read {}: {e}", path.display())))?;
            let mut found = 0;
            for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
                let cert =
                    cert.map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
                found += 1;
            }
            if found == 0 {
                return Err(ClientError::Tls(format!(
                    "{} holds no PEM certificate",
                    path.display()
                )));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
