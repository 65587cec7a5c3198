//! A throwaway PKI for one test world, made with rcgen:
//! - a CA (`CA:TRUE`, path length 0) that every client trusts (edgepull's `ca_file`,
//!   skopeo's `--*-cert-dir`) and that distribution uses as `rootcertbundle` for tokens;
//! - one TLS leaf (serverAuth) for every name and address the servers answer as;
//! - one token-signing leaf (digitalSignature) whose P-256 key signs the JWTs (ES256) and
//!   whose certificate travels in the JWT's `x5c` header.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgepull_testkit::tls;
use rcgen::{CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

/// Names in the TLS certificate: the login server, both data endpoints, and the loopback
/// addresses skopeo and the token realm are reached by.
pub(crate) const TLS_NAMES: [&str; 7] = [
    "contoso.azurecr.test",
    "contoso.eastus.data.azurecr.test",
    "contoso.westus.data.azurecr.test",
    "localhost",
    "127.0.0.1",
    "127.0.0.2",
    "127.0.0.3",
];

/// The generated keys and certificates.
pub(crate) struct Pki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: Vec<u8>,
    /// TLS leaf followed by the CA, PEM (nginx and distribution send the chain).
    pub tls_chain_pem: String,
    /// The TLS leaf's PKCS#8 key, PEM.
    pub tls_key_pem: String,
    /// rustls config presenting the TLS leaf (the token server).
    pub tls_server: Arc<rustls::ServerConfig>,
    /// The token-signing certificate, DER (first `x5c` entry).
    pub signing_cert_der: Vec<u8>,
    /// The token-signing key.
    pub signing_key: EcdsaKeyPair,
}

/// Where [`Pki::write`] put the files.
#[derive(Debug, Clone)]
pub(crate) struct PkiFiles {
    /// CA certificate (PEM): edgepull's `registry.ca_file`, distribution's `rootcertbundle`.
    pub ca: PathBuf,
    /// TLS chain (PEM).
    pub cert: PathBuf,
    /// TLS key (PEM).
    pub key: PathBuf,
    /// A directory holding only `ca.crt`, for skopeo's `--src-cert-dir`/`--dest-cert-dir`.
    pub cert_dir: PathBuf,
}

impl Pki {
    /// Generate everything.
    pub(crate) fn generate() -> Self {
        let ca = tls::test_ca("edgepull real-registry test CA").expect("ca");
        // TLS leaf (common name: the first name, the login server).
        let names: Vec<String> = TLS_NAMES.iter().map(|s| s.to_string()).collect();
        let (tls_cert, tls_key) = tls::server_leaf(&ca, &names).expect("tls leaf");

        // Token-signing leaf.
        let signing_kp = KeyPair::generate().expect("signing key");
        let mut signer = CertificateParams::new(Vec::<String>::new()).expect("signer params");
        signer.distinguished_name.remove(DnType::CommonName);
        signer
            .distinguished_name
            .push(DnType::CommonName, "edgepull test token signer");
        signer.is_ca = IsCa::ExplicitNoCa;
        signer.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        signer.use_authority_key_identifier_extension = true;
        let signing_cert = signer.signed_by(&signing_kp, &ca).expect("signing leaf");
        let signing_key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &signing_kp.serialize_der(),
            &SystemRandom::new(),
        )
        .expect("ring accepts rcgen's P-256 PKCS#8 key");

        let server = tls::server_config(&ca, &tls_cert, &tls_key).expect("server config");

        Self {
            ca_pem: ca.pem(),
            ca_der: ca.der().to_vec(),
            tls_chain_pem: format!("{}{}", tls_cert.pem(), ca.pem()),
            tls_key_pem: tls_key.serialize_pem(),
            tls_server: server,
            signing_cert_der: signing_cert.der().to_vec(),
            signing_key,
        }
    }

    /// Write the PEM files under `dir`.
    pub(crate) fn write(&self, dir: &Path) -> PkiFiles {
        let files = PkiFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            cert_dir: dir.join("skopeo-certs"),
        };
        std::fs::create_dir_all(&files.cert_dir).expect("cert dir");
        std::fs::write(&files.ca, &self.ca_pem).expect("write ca");
        std::fs::write(files.cert_dir.join("ca.crt"), &self.ca_pem).expect("write ca.crt");
        std::fs::write(&files.cert, &self.tls_chain_pem).expect("write cert");
        std::fs::write(&files.key, &self.tls_key_pem).expect("write key");
        files
    }
}
