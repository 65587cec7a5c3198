//! Where blobs come from: the region's dedicated data endpoint(s).
//!
//! Owns: deciding `registry.data_endpoints` from, in order, the config's list, the
//! region's entry in `registry.endpoints_file` (the output of `az acr show-endpoints`, read
//! here), or the ACR pattern `<registry>.<region>.data.<suffix>`; and checking each one
//! against the login server and the region. ACR host shapes come from
//! [`edgepull_core::acr`]. Must never accept a wildcard or an Azure Storage host (they mean
//! dedicated data endpoints are disabled) or the login server itself.

use std::fmt;
use std::path::{Path, PathBuf};

use edgepull_core::acr::{self, AcrHost, ShowEndpoints};
use edgepull_core::egress::BlobSource;
use edgepull_core::hostport::HostPort;

use super::ctx::{Ctx, q};
use super::error::{ConfigError, ConfigNote, show_field};
use super::path::{FieldPath, Located, parse as parse_json};
use super::read_limited;

/// Which source gave the data endpoint(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataEndpointSource {
    /// `registry.data_endpoints`.
    Config,
    /// The region's entry in `registry.endpoints_file` (this file).
    EndpointsFile(PathBuf),
    /// `<registry>.<region>.data.<suffix>` from the login server and region.
    Derived,
}

impl fmt::Display for DataEndpointSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config => f.write_str("registry.data_endpoints"),
            Self::EndpointsFile(p) => write!(f, "registry.endpoints_file ({})", p.display()),
            Self::Derived => f.write_str("derived from registry.login_server and registry.region"),
        }
    }
}

/// Data endpoints and where they came from.
type Endpoints = (Vec<HostPort>, Option<DataEndpointSource>);

impl Ctx {
    /// The data endpoints and where they came from: `registry.data_endpoints`, else the
    /// region's entry in `registry.endpoints_file`, else derived from an ACR login server.
    pub(super) fn data_endpoints(
        &self,
        ctx: &EndpointCtx<'_>,
        configured: Vec<String>,
        endpoints_file: Option<String>,
        blob_source: BlobSource,
        notes: &mut Vec<ConfigNote>,
    ) -> Result<Endpoints, ConfigError> {
        let list_field = ctx.at.key("data_endpoints");
        let file_field = ctx.at.key("endpoints_file");
        let region_field = ctx.at.key("region");

        // 1. Listed in the config.
        if !configured.is_empty() {
            let mut out = Vec::new();
            for (i, v) in configured.iter().enumerate() {
                let field = list_field.index(i);
                let hp = self.data_endpoint(ctx, &field, v, "")?;
                if out.contains(&hp) {
                    return Err(self.invalid(&field, q(v), "listed twice; remove the duplicate"));
                }
                out.push(hp);
            }
            if endpoints_file.is_some() {
                notes.push(ConfigNote {
                    field: file_field.to_string(),
                    message:
                        "ignored: registry.data_endpoints is set and takes precedence; remove one of them"
                            .to_string(),
                });
            }
            return Ok((out, Some(DataEndpointSource::Config)));
        }

        // 2. The region's entry in `az acr show-endpoints` output.
        if let Some(file) = endpoints_file {
            let path = self.abs_path(&file_field, &file)?;
            let Some(region) = ctx.region else {
                return Err(self.missing(
                    &region_field,
                    format!(
                        "registry.endpoints_file lists one data endpoint per region; set region to the \
                         device's region as it appears there, e.g. \"eastus\" ({})",
                        path.display()
                    ),
                ));
            };
            let out = self.endpoints_from_file(ctx, &file_field, &path, region)?;
            return Ok((out, Some(DataEndpointSource::EndpointsFile(path))));
        }

        // 3. Derived from an ACR login server and the region.
        if let Some(acr) = ctx.login_acr {
            if let Some(region) = ctx.region {
                let derived = acr.data_endpoint(region).unwrap_or_default();
                let hp = HostPort::new(&derived, 443)
                    .map_err(|e| self.invalid(&region_field, q(region), e.to_string()))?;
                return Ok((vec![hp], Some(DataEndpointSource::Derived)));
            }
            if blob_source == BlobSource::DataEndpoint {
                return Err(self.missing(
                    &region_field,
                    format!(
                        "blobs are downloaded only from the device region's dedicated data endpoint \
                         ({}.<region>.data.{}); set region (e.g. \"eastus\"), or list the endpoint in \
                         registry.data_endpoints, or name `az acr show-endpoints` output in \
                         registry.endpoints_file",
                        acr.registry(),
                        acr.suffix()
                    ),
                ));
            }
            return Ok((Vec::new(), None));
        }

        if blob_source == BlobSource::Registry {
            return Ok((Vec::new(), None));
        }
        Err(self.missing(
            &list_field,
            format!(
                "blobs are downloaded only from a dedicated data endpoint, and none can be found for \
                 {}: list it in registry.data_endpoints (e.g. [\"contoso.eastus.data.azurecr.io\"]), \
                 or set registry.endpoints_file to the output of `az acr show-endpoints` and \
                 registry.region, or use an ACR login server (*.azurecr.io, *.azurecr.cn, \
                 *.azurecr.us) with registry.region so the name can be derived; for a registry \
                 without data endpoints set registry.blob_source to \"registry\"",
                ctx.login
            ),
        ))
    }

    /// One data endpoint as written (`from` says where, for messages): not a wildcard or
    /// storage host, a plain `host[:port]`, not the login server, and consistent with the
    /// login server's registry and the region when both are ACR names.
    fn data_endpoint(
        &self,
        ctx: &EndpointCtx<'_>,
        field: &FieldPath,
        value: &str,
        from: &str,
    ) -> Result<HostPort, ConfigError> {
        if let Some(what) = acr::storage_or_wildcard(value) {
            return Err(self.invalid(field, q(value), format!("{what}{from}; {}", ctx.enable_hint())));
        }
        let hp = self.host_port(field, value, "contoso.eastus.data.azurecr.io")?;
        if hp == *ctx.login {
            return Err(self.invalid(
                field,
                q(value),
                format!(
                    "this is the login server{from}; a data endpoint is a separate host such as \
                     {}; to download blobs from the login server set registry.blob_source to \"registry\"",
                    ctx.example()
                ),
            ));
        }
        let Some(login) = ctx.login_acr else {
            return Ok(hp);
        };
        match AcrHost::parse(hp.host()) {
            Some(AcrHost::Data {
                registry,
                region,
                suffix,
            }) => {
                if registry != login.registry() || suffix != login.suffix() {
                    return Err(self.invalid(
                        field,
                        q(value),
                        format!(
                            "this data endpoint belongs to registry {registry}.{suffix}{from}, but \
                             registry.login_server is {}; the login server only redirects to its own \
                             data endpoints, e.g. {}",
                            ctx.login,
                            ctx.example()
                        ),
                    ));
                }
                if let Some(want) = ctx.region
                    && region != want
                {
                    return Err(self.invalid(
                        field,
                        q(value),
                        format!(
                            "this is the data endpoint of region {region}{from}, but registry.region is \
                             {want}; use {} (or correct registry.region)",
                            ctx.example()
                        ),
                    ));
                }
            }
            Some(AcrHost::Global { .. } | AcrHost::Regional { .. }) => {
                return Err(self.invalid(
                    field,
                    q(value),
                    format!(
                        "this is a login server name{from}, not a data endpoint; a data endpoint \
                         looks like {}",
                        ctx.example()
                    ),
                ));
            }
            None => {}
        }
        Ok(hp)
    }

    /// The region's data endpoints in `az acr show-endpoints` output at `path` (read here).
    fn endpoints_from_file(
        &self,
        ctx: &EndpointCtx<'_>,
        field: &FieldPath,
        path: &Path,
        region: &str,
    ) -> Result<Vec<HostPort>, ConfigError> {
        let shown = q(&path.display().to_string());
        let text = read_limited(path).map_err(|e| {
            self.invalid(
                field,
                shown.clone(),
                format!(
                    "cannot read it ({e}); write the output of `az acr show-endpoints --name <registry>` \
                     there, or list the endpoint in registry.data_endpoints"
                ),
            )
        })?;
        let doc: ShowEndpoints = parse_json(&text).map_err(
            |Located {
                 error: e,
                 field: inner,
             }| {
                self.invalid(
                    field,
                    shown.clone(),
                    format!(
                        "not `az acr show-endpoints` output: line {}, column {}, at {}: {e}; expected \
                     {{\"loginServer\": ..., \"dataEndpoints\": [{{\"region\": ..., \"endpoint\": ...}}]}}",
                        e.line(),
                        e.column(),
                        show_field(inner.as_str())
                    ),
                )
            },
        )?;

        if let Some(ls) = &doc.login_server {
            let matches = |s: &str| HostPort::parse(s).is_ok_and(|hp| hp == *ctx.login);
            if !matches(ls) && !doc.regional_endpoints.iter().any(|r| matches(&r.endpoint)) {
                return Err(self.invalid(
                    field,
                    shown,
                    format!(
                        "this file is for registry {ls}, but registry.login_server is {}; run \
                         `az acr show-endpoints` for the right registry",
                        ctx.login
                    ),
                ));
            }
        }

        let mut out = Vec::new();
        for (i, entry) in doc.data_endpoints.iter().enumerate() {
            if !entry.region.eq_ignore_ascii_case(region) {
                continue;
            }
            let from = format!(
                " (dataEndpoints[{i}].endpoint for region {} in {})",
                entry.region,
                path.display()
            );
            let hp = self.data_endpoint(ctx, field, &entry.endpoint, &from)?;
            if !out.contains(&hp) {
                out.push(hp);
            }
        }
        if out.is_empty() {
            let regions: Vec<&str> = doc.data_endpoints.iter().map(|e| e.region.as_str()).collect();
            return Err(self.invalid(
                field,
                shown,
                format!(
                    "it has no data endpoint for registry.region {region} (regions listed: {}); the \
                     registry has no replica there, or the region is misspelled; set registry.region to \
                     one of the listed regions, or add a replica in {region} and run \
                     `az acr show-endpoints` again",
                    if regions.is_empty() {
                        "none".to_string()
                    } else {
                        regions.join(", ")
                    }
                ),
            ));
        }
        Ok(out)
    }
}

/// What data-endpoint checks need to know about the registry section.
pub(super) struct EndpointCtx<'a> {
    pub(super) at: &'a FieldPath,
    pub(super) login: &'a HostPort,
    pub(super) login_acr: Option<AcrHost<'a>>,
    pub(super) region: Option<&'a str>,
}

impl EndpointCtx<'_> {
    /// The data endpoint to suggest: derived when possible, else a placeholder.
    fn example(&self) -> String {
        match (self.login_acr, self.region) {
            (Some(acr), Some(region)) => acr.data_endpoint(region).unwrap_or_default(),
            (Some(acr), None) => format!("{}.<region>.data.{}", acr.registry(), acr.suffix()),
            _ => "<registry>.<region>.data.azurecr.io".to_string(),
        }
    }

    /// How to get a dedicated data endpoint instead of Azure Storage.
    fn enable_hint(&self) -> String {
        let name = self.login_acr.map_or("<registry>", |a| a.registry());
        format!(
            "this means the registry has dedicated data endpoints disabled (az acr show-endpoints \
             then prints *.blob.core.windows.net) and downloads would go to Azure Storage, but \
             edgepull downloads only from the region's dedicated data endpoint. Enable them \
             (Premium tier) with `az acr update --name {name} --data-endpoint-enabled true` and \
             use {}",
            self.example()
        )
    }
}
