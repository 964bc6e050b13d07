//! `layerlink certs`: a CA and a serving certificate for the webhook (rcgen, ring).

use std::path::Path;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::Error;

/// PEM texts of a fresh CA and a server certificate signed by it.
pub struct Bundle {
    pub ca_crt: String,
    pub tls_crt: String,
    pub tls_key: String,
}

impl Bundle {
    /// The CA as a webhook `caBundle` (base64 of the PEM).
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_crt)
    }
}

/// Makes a CA and a server certificate with `names` as SANs (IP addresses become IP SANs).
pub fn generate(names: &[String]) -> Result<Bundle, Error> {
    let tls = |e: rcgen::Error| Error::Tls(e.to_string());
    let ca_key = KeyPair::generate().map_err(tls)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca_params.distinguished_name.push(DnType::CommonName, "layerlink CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca_params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let ca = ca_params.self_signed(&ca_key).map_err(tls)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().map_err(tls)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    params.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_else(|| "layerlink".into()));
    for name in names {
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into().map_err(tls)?),
        };
        params.subject_alt_names.push(san);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.not_after = rcgen::date_time_ymd(2031, 1, 1);
    let cert = params.signed_by(&key, &issuer).map_err(tls)?;
    Ok(Bundle { ca_crt: ca.pem(), tls_crt: cert.pem(), tls_key: key.serialize_pem() })
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`.
pub fn write(bundle: &Bundle, dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.crt"), &bundle.ca_crt)?;
    // Replace atomically so a running server never reads half a file.
    let tmp = dir.join(".tls.crt.tmp");
    std::fs::write(&tmp, &bundle.tls_crt)?;
    std::fs::rename(&tmp, dir.join("tls.crt"))?;
    let tmp = dir.join(".tls.key.tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    std::io::Write::write_all(&mut file, bundle.tls_key.as_bytes())?;
    std::fs::rename(&tmp, dir.join("tls.key"))?;
    Ok(())
}

/// Where `layerlink certs --apply` writes in a cluster without cert-manager.
pub struct ApplyTarget {
    pub namespace: String,
    pub secret: String,
    pub webhook: String,
}

/// Writes the bundle as the `kubernetes.io/tls` Secret the Deployment mounts (server-side apply,
/// so re-running rotates in place) and sets the caBundle of every entry of the mutating webhook
/// configuration, and of a validating one with the same name if it exists (the pre-1.30 backstop).
pub async fn apply(client: kube::Client, bundle: &Bundle, target: &ApplyTarget) -> Result<Vec<String>, Error> {
    use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, Patch, PatchParams};

    let kube_error = |e: kube::Error| Error::kube("writing the certificate", e);
    let mut done = Vec::new();
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": target.secret, "namespace": target.namespace, "labels": { "app.kubernetes.io/name": "layerlink" } },
        "type": "kubernetes.io/tls",
        "stringData": { "tls.crt": bundle.tls_crt, "tls.key": bundle.tls_key, "ca.crt": bundle.ca_crt },
    });
    let params = PatchParams::apply("layerlink-certs").force();
    Api::<Secret>::namespaced(client.clone(), &target.namespace)
        .patch(&target.secret, &params, &Patch::Apply(&secret))
        .await
        .map_err(kube_error)?;
    done.push(format!("secret {}/{}", target.namespace, target.secret));

    let ca_bundle = serde_json::Value::String(bundle.ca_bundle());
    let ops = |count: usize| {
        let ops: Vec<json_patch::PatchOperation> = (0..count)
            .map(|i| crate::patch::add(&format!("/webhooks/{i}/clientConfig/caBundle"), ca_bundle.clone()))
            .collect();
        json_patch::Patch(ops)
    };
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let config = mutating.get(&target.webhook).await.map_err(kube_error)?;
    let count = config.webhooks.map_or(0, |w| w.len());
    mutating
        .patch(&target.webhook, &PatchParams::default(), &Patch::<()>::Json(ops(count)))
        .await
        .map_err(kube_error)?;
    done.push(format!("mutatingwebhookconfiguration {} ({count} entries)", target.webhook));

    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client);
    if let Some(config) = validating.get_opt(&target.webhook).await.map_err(kube_error)? {
        let count = config.webhooks.map_or(0, |w| w.len());
        validating
            .patch(&target.webhook, &PatchParams::default(), &Patch::<()>::Json(ops(count)))
            .await
            .map_err(kube_error)?;
        done.push(format!("validatingwebhookconfiguration {} ({count} entries)", target.webhook));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_certificate_chains_to_the_ca() {
        use rustls::client::danger::ServerCertVerifier;
        crate::install_crypto_provider();
        let bundle = generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut bundle.ca_crt.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let leaf = rustls_pemfile::certs(&mut bundle.tls_crt.as_bytes()).next().unwrap().unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder(std::sync::Arc::new(roots)).build().unwrap();
        for name in ["localhost", "127.0.0.1"] {
            let server_name = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&leaf, &[], &server_name, &[], rustls::pki_types::UnixTime::now())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = rustls::pki_types::ServerName::try_from("example.com").unwrap();
        assert!(verifier.verify_server_cert(&leaf, &[], &other, &[], rustls::pki_types::UnixTime::now()).is_err());
        assert!(!bundle.ca_bundle().is_empty());
    }
}
