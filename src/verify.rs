//! Signed updates: a pull's plan is accepted only when a cosign signature by one of the
//! configured keys covers the digest the tag resolved to (the index) or the chosen
//! platform manifest.
//!
//! Owns: the IO of verification — the `sha256-<hex>.sig` manifest from the login server,
//! each payload blob through the usual blob path (login server, then the data endpoint),
//! both through the same [`RegistryClient`] (allowlist, size caps, digest checks) and
//! retried like manifests, and charged to the link (cap, quota, windows) like every
//! download — and which identity each image is checked against. Every
//! decision is the core's ([`edgepull_core::signature`]). Must never accept a plan when a
//! fetch failed, never read a key file (the config did), never log a payload it has not
//! verified.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::config::{ImageConfig, SignaturesConfig};
use crate::fetch::retry::Retrier;
use crate::link::{Link, Paused, Stop};
use crate::registry::client::{RegistryClient, RegistryError};
use edgepull_core::oci::{Digest, Reference};
use edgepull_core::retry::RetryPolicy;
use edgepull_core::signature::{
    Identity, PublicKey, SignatureError, signature_layers, signature_tag, verify_payload,
};

/// The keys images must be signed with, and each configured image's identity.
#[derive(Debug, Clone)]
pub(crate) struct Signatures {
    keys: Vec<PublicKey>,
    files: Vec<PathBuf>,
    identities: Vec<(Reference, Identity)>,
}

impl Signatures {
    /// From the validated `signatures` section and the `images` list (their `identity`).
    pub(crate) fn new(cfg: &SignaturesConfig, images: &[ImageConfig]) -> Self {
        Self {
            keys: cfg.keys.iter().map(|(_, k)| k.clone()).collect(),
            files: cfg.keys.iter().map(|(p, _)| p.clone()).collect(),
            identities: images
                .iter()
                .map(|i| (i.reference.clone(), i.identity.clone()))
                .collect(),
        }
    }

    /// The identity `reference`'s signatures must name: its `images[].identity`, else its
    /// own registry and repository.
    fn identity(&self, reference: &Reference) -> Identity {
        self.identities
            .iter()
            .find(|(r, _)| r == reference)
            .map_or_else(|| Identity::of(reference), |(_, i)| i.clone())
    }
}

/// A signature that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    /// The digest it signs (the index or the platform manifest).
    pub(crate) digest: Digest,
    /// The key file whose key verified it.
    pub(crate) key: PathBuf,
}

/// Why verification did not accept the image.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VerifyError {
    /// No valid signature: the strongest refusal among the candidates.
    #[error(transparent)]
    Refused(SignatureError),
    /// A signature manifest or payload could not be fetched (after retries).
    #[error(transparent)]
    Registry(RegistryError),
    /// Shutdown.
    #[error("stopped for shutdown")]
    Cancelled,
    /// The link closed (a window ended, the daily quota ran out).
    #[error("{0}")]
    Paused(Paused),
}

/// What verification fetches with.
pub(crate) struct Fetch<'a> {
    pub(crate) registry: &'a RegistryClient,
    pub(crate) retry: &'a RetryPolicy,
    pub(crate) cancel: &'a CancellationToken,
    /// Every byte fetched here is charged to it.
    pub(crate) link: &'a Link,
}

impl Fetch<'_> {
    /// `op` until it succeeds, fails for good, or shutdown; `size` of its result is
    /// charged to the link (waiting for the cap; a closed link stops verification).
    async fn retried<T, F, Fut>(
        &self,
        what: &str,
        op: F,
        size: impl Fn(&T) -> usize,
    ) -> Result<T, VerifyError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let got = self.retried_inner(what, op).await?;
        match self.link.admit(size(&got) as u64, self.cancel).await {
            Ok(()) => Ok(got),
            Err(Stop::Paused(p)) => Err(VerifyError::Paused(p)),
            Err(Stop::Cancelled) => Err(VerifyError::Cancelled),
        }
    }

    async fn retried_inner<T, F, Fut>(&self, what: &str, op: F) -> Result<T, VerifyError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        self.link.check().map_err(VerifyError::Paused)?;
        let mut retry = Retrier::new(self.retry, self.cancel);
        loop {
            let got = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(VerifyError::Cancelled),
                got = op() => got,
            };
            let e = match got {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let Some(delay) = retry.on_failure(&e.failure(), false) else {
                return Err(VerifyError::Registry(e));
            };
            tracing::warn!(what, error = %crate::error_chain(&e), retry_in = ?delay, "signature request failed; retrying");
            retry.wait(delay).await;
        }
    }
}

/// Accept `reference` when one of `candidates` (the index first, then the platform
/// manifest) carries a valid signature by one of `sigs`' keys naming its identity.
pub(crate) async fn verify(
    fetch: &Fetch<'_>,
    sigs: &Signatures,
    reference: &Reference,
    candidates: &[Digest],
) -> Result<Verified, VerifyError> {
    let identity = sigs.identity(reference);
    let mut refusal: Option<SignatureError> = None;
    for signed in candidates {
        match check(fetch, sigs, &identity, reference.repository(), signed).await? {
            Ok(v) => {
                tracing::info!(image_ref = %reference, digest = %v.digest, key = %v.key.display(), "signature verified");
                return Ok(v);
            }
            Err(e) => refusal = Some(stronger(refusal, e)),
        }
    }
    let first = candidates.first().copied().unwrap_or_else(|| Digest::of(b""));
    Err(VerifyError::Refused(
        refusal.unwrap_or(SignatureError::Missing { signed: first }),
    ))
}

fn stronger(so_far: Option<SignatureError>, e: SignatureError) -> SignatureError {
    match so_far {
        Some(s) => s.stronger(e),
        None => e,
    }
}

/// The signatures stored for `signed`: `Ok(Err(_))` is a refusal, `Err(_)` a failed fetch.
async fn check(
    fetch: &Fetch<'_>,
    sigs: &Signatures,
    identity: &Identity,
    repo: &str,
    signed: &Digest,
) -> Result<Result<Verified, SignatureError>, VerifyError> {
    let tag = signature_tag(signed);
    let what = format!("{repo}:{tag}");
    let manifest = match fetch
        .retried(
            &what,
            || fetch.registry.get_manifest(repo, &tag, None),
            |m| m.bytes.len(),
        )
        .await
    {
        Ok(m) => m,
        Err(VerifyError::Registry(RegistryError::NotFound { .. })) => {
            return Ok(Err(SignatureError::Missing { signed: *signed }));
        }
        Err(e) => return Err(e),
    };
    let layers = match signature_layers(&manifest.bytes, signed) {
        Ok(l) => l,
        Err(e) => return Ok(Err(e)),
    };
    let mut refusal = None;
    for layer in layers {
        let layer = match layer {
            Ok(l) => l,
            Err(e) => {
                refusal = Some(stronger(refusal, e));
                continue;
            }
        };
        let what = format!("signature payload {}", layer.payload.digest);
        let payload = fetch
            .retried(
                &what,
                || fetch.registry.get_small_blob(repo, &layer.payload),
                |p| p.len(),
            )
            .await?;
        match verify_payload(&sigs.keys, identity, signed, &layer, &payload) {
            Ok(i) => {
                return Ok(Ok(Verified {
                    digest: *signed,
                    key: sigs.files.get(i).cloned().unwrap_or_default(),
                }));
            }
            Err(e) => {
                tracing::debug!(digest = %signed, error = %e, "signature not accepted");
                refusal = Some(stronger(refusal, e));
            }
        }
    }
    Ok(Err(refusal.unwrap_or(SignatureError::Missing { signed: *signed })))
}
