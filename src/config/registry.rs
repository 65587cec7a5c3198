//! The `registry` section: where and how to reach the registry.
//!
//! Owns: [`RegistryConfig`] and checking the login server (not a data endpoint or storage
//! host), the region (consistent with a regional login server), `blob_source` and
//! `realm_hosts`; it assembles the section from the parts validated in
//! [`endpoints`](super::endpoints) (data endpoints), [`auth`](super::auth) and
//! [`network`](super::network) (resolve, proxy). Must never let a data endpoint or storage
//! host be a realm host: realm hosts receive credentials.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use edgepull_core::acr::{self, AcrHost};
use edgepull_core::egress::BlobSource;
use edgepull_core::hostport::HostPort;

use super::auth::AuthConfig;
use super::ctx::{Ctx, q};
use super::endpoints::{DataEndpointSource, EndpointCtx};
use super::error::{ConfigError, ConfigNote};
use super::path::FieldPath;
use super::raw::RawRegistry;

/// The `registry` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Login server: authentication and manifests.
    pub login_server: HostPort,
    /// The device's region (`[a-z0-9]+`), e.g. `eastus`.
    pub region: Option<String>,
    /// The region's dedicated data endpoint(s): the only hosts blobs come from. Empty only
    /// with [`BlobSource::Registry`] when no source gave one.
    pub data_endpoints: Vec<HostPort>,
    /// Where `data_endpoints` came from; `None` when it is empty.
    pub data_endpoint_source: Option<DataEndpointSource>,
    /// Credentials for the login server and token realm.
    pub(crate) auth: AuthConfig,
    /// PEM file of CA certificates to trust instead of the system roots.
    pub(crate) ca_file: Option<PathBuf>,
    /// Fixed addresses for allowed hosts (lower-case host → IP); the URL's port is kept.
    pub(crate) resolve: BTreeMap<String, IpAddr>,
    /// Extra hosts allowed as token realm (the login server always is).
    pub realm_hosts: Vec<HostPort>,
    /// Where blobs are downloaded from.
    pub blob_source: BlobSource,
    /// HTTP CONNECT proxy.
    pub proxy: Option<HostPort>,
}

impl Ctx {
    /// The `registry` section; notes go to `notes`.
    pub(super) fn registry(
        &self,
        raw: RawRegistry,
        notes: &mut Vec<ConfigNote>,
    ) -> Result<RegistryConfig, ConfigError> {
        let at = FieldPath::root().key("registry");

        let login_field = at.key("login_server");
        let login_raw = raw.login_server.ok_or_else(|| {
            self.missing(
                &login_field,
                "write the registry's login server as host[:port], e.g. contoso.azurecr.io",
            )
        })?;
        let login_server = self.host_port(&login_field, &login_raw, "contoso.azurecr.io")?;
        let login_acr = AcrHost::parse(login_server.host());
        if let Some(AcrHost::Data { registry, suffix, .. }) = login_acr {
            return Err(self.invalid(
                &login_field,
                q(&login_raw),
                format!(
                    "this is a data endpoint, which serves only blobs; the login server is \
                     {registry}.{suffix} (put data endpoints in registry.data_endpoints)"
                ),
            ));
        }
        if acr::storage_or_wildcard(&login_raw).is_some() {
            return Err(self.invalid(
                &login_field,
                q(&login_raw),
                "this is Azure Storage, not a registry; use the registry's login server, e.g. contoso.azurecr.io",
            ));
        }

        let region = match raw.region {
            None => None,
            Some(r) => {
                if r.is_empty() || !r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
                    return Err(self.invalid(
                        &at.key("region"),
                        q(&r),
                        "expected an Azure region name of lower-case letters and digits, as \
                         `az acr show-endpoints` prints it, e.g. eastus or westeurope",
                    ));
                }
                Some(r)
            }
        };
        if let (Some(AcrHost::Regional { region: pinned, .. }), Some(region)) = (login_acr, &region)
            && pinned != region
        {
            return Err(self.invalid(
                &at.key("region"),
                q(region),
                format!(
                    "registry.login_server {login_server} is the regional endpoint of {pinned}, \
                     which redirects downloads to {pinned}'s data endpoint; set region to {pinned} \
                     or use the regional endpoint of {region}"
                ),
            ));
        }

        let blob_source = match raw.blob_source.as_deref() {
            None => BlobSource::default(),
            Some(value) => BlobSource::parse(value).ok_or_else(|| {
                self.invalid(
                    &at.key("blob_source"),
                    q(value),
                    "allowed: \"data-endpoint\" (default: blobs only from the region's dedicated data \
                     endpoint) or \"registry\" (blobs from the login server)",
                )
            })?,
        };

        let proxy = match raw.proxy {
            None => None,
            Some(p) => Some(self.proxy(&at.key("proxy"), &p)?),
        };

        let mut realm_entries: Vec<(FieldPath, String, HostPort)> = Vec::new();
        for (i, v) in raw.realm_hosts.unwrap_or_default().into_iter().enumerate() {
            let field = at.key("realm_hosts").index(i);
            let hp = self.host_port(&field, &v, "login.contoso.example")?;
            realm_entries.push((field, v, hp));
        }

        let ctx = EndpointCtx {
            at: &at,
            login: &login_server,
            login_acr,
            region: region.as_deref(),
        };
        let (data_endpoints, data_endpoint_source) = self.data_endpoints(
            &ctx,
            raw.data_endpoints.unwrap_or_default(),
            raw.endpoints_file,
            blob_source,
            notes,
        )?;

        // Realm hosts receive credentials; data endpoints and storage never may.
        let mut realm_hosts: Vec<HostPort> = Vec::new();
        for (field, v, hp) in realm_entries {
            let is_data = data_endpoints.contains(&hp)
                || matches!(AcrHost::parse(hp.host()), Some(AcrHost::Data { .. }))
                || acr::storage_or_wildcard(&v).is_some();
            if is_data {
                return Err(self.invalid(
                    &field,
                    q(&v),
                    "this is a data endpoint or storage host, and those never receive credentials; \
                     realm_hosts lists only token servers other than the login server",
                ));
            }
            if !realm_hosts.contains(&hp) && hp != login_server {
                realm_hosts.push(hp);
            }
        }

        let auth = match raw.auth {
            None => AuthConfig::Anonymous,
            Some(a) => self.auth(&at.key("auth"), a, notes)?,
        };

        let ca_file = match raw.ca_file {
            None => None,
            Some(p) => Some(self.abs_path(&at.key("ca_file"), &p)?),
        };

        let mut config = RegistryConfig {
            login_server,
            region,
            data_endpoints,
            data_endpoint_source,
            auth,
            ca_file,
            resolve: BTreeMap::new(),
            realm_hosts,
            blob_source,
            proxy,
        };
        config.resolve = self.resolve(&at.key("resolve"), raw.resolve.unwrap_or_default(), &config)?;
        Ok(config)
    }
}
