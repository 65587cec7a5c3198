//! A throwaway PKI: a CA (`CA:TRUE`) and one leaf (`CA:FALSE`, serverAuth) for every host
//! name of the fake, generated at start. rustls refuses a CA certificate used as a server
//! certificate, hence the two levels.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::state::CertMode;

/// The generated CA and a server config presenting the leaf.
pub(crate) struct Pki {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// A test CA (`CA:TRUE`, path length 0) named `common_name`.
pub fn test_ca(common_name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.remove(DnType::CommonName);
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
}

/// A server leaf (`CA:FALSE`, serverAuth) for `names` (DNS names or IP literals), signed by
/// `ca`; the common name is the first name. Returns the certificate and its key.
pub fn server_leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[String],
) -> Result<(Certificate, KeyPair), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.remove(DnType::CommonName);
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map(String::as_str).unwrap_or("localhost"),
    );
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    Ok((params.signed_by(&key, ca)?, key))
}

/// A rustls server config (ring provider, HTTP/1.1) presenting `leaf` then the CA.
pub fn server_config(
    ca: &CertifiedIssuer<'static, KeyPair>,
    leaf: &Certificate,
    leaf_key: &KeyPair,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let chain = vec![leaf.der().clone(), ca.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A leaf like [`server_leaf`] that expired on 2001-01-01 (valid from 2000-01-01).
pub fn expired_server_leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[String],
) -> Result<(Certificate, KeyPair), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    Ok((params.signed_by(&key, ca)?, key))
}

/// Generate a CA and a leaf: valid for `names` (DNS names or IP literals), or, as `cert`
/// asks, for another name only or expired.
pub(crate) fn generate(
    names: &[String],
    cert: CertMode,
) -> Result<Pki, Box<dyn std::error::Error + Send + Sync>> {
    let ca = test_ca("edgepull testkit CA")?;
    let (leaf, leaf_key) = match cert {
        CertMode::Valid => server_leaf(&ca, names)?,
        CertMode::WrongName => server_leaf(&ca, &["wrong-name.invalid".to_string()])?,
        CertMode::Expired => expired_server_leaf(&ca, names)?,
    };
    Ok(Pki {
        server_config: server_config(&ca, &leaf, &leaf_key)?,
        ca_pem: ca.pem(),
    })
}
