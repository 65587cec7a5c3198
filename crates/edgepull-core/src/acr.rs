//! Azure Container Registry host names and `az acr show-endpoints` output.
//!
//! Owns: telling login servers, regional endpoints, dedicated data endpoints and Azure
//! Storage hosts apart, for every cloud suffix we know (public, China, US Government), and
//! the data endpoint name a login server implies for a region
//! (`<registry>.<region>.data.<suffix>`). The config and the egress policy both ask here;
//! neither keeps its own copy of these shapes. Pure; no IO.

use serde::Deserialize;

/// Registry suffixes of the Azure clouds: public, China, US Government.
pub const ACR_SUFFIXES: [&str; 3] = ["azurecr.io", "azurecr.cn", "azurecr.us"];

/// What an ACR host name is, by its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcrHost<'a> {
    /// `<registry>.<suffix>`: the global login server.
    Global { registry: &'a str, suffix: &'static str },
    /// `<registry>.<region>.geo.<suffix>`: a login server pinned to one replica.
    Regional {
        registry: &'a str,
        region: &'a str,
        suffix: &'static str,
    },
    /// `<registry>.<region>.data.<suffix>`: a dedicated data endpoint.
    Data {
        registry: &'a str,
        region: &'a str,
        suffix: &'static str,
    },
}

impl<'a> AcrHost<'a> {
    /// Classify a lower-case host name; `None` when it is not one of the ACR shapes.
    pub fn parse(host: &'a str) -> Option<Self> {
        ACR_SUFFIXES.iter().find_map(|suffix| {
            let prefix = host.strip_suffix(suffix)?.strip_suffix('.')?;
            let labels: Vec<&str> = prefix.split('.').collect();
            if labels.iter().any(|l| l.is_empty()) {
                return None;
            }
            match labels[..] {
                [registry] => Some(Self::Global { registry, suffix }),
                [registry, region, "geo"] => Some(Self::Regional {
                    registry,
                    region,
                    suffix,
                }),
                [registry, region, "data"] => Some(Self::Data {
                    registry,
                    region,
                    suffix,
                }),
                _ => None,
            }
        })
    }

    /// The registry name (first label).
    pub fn registry(&self) -> &'a str {
        match *self {
            Self::Global { registry, .. } | Self::Regional { registry, .. } | Self::Data { registry, .. } => {
                registry
            }
        }
    }

    /// The cloud suffix, e.g. `azurecr.cn`.
    pub fn suffix(&self) -> &'static str {
        match *self {
            Self::Global { suffix, .. } | Self::Regional { suffix, .. } | Self::Data { suffix, .. } => suffix,
        }
    }

    /// The dedicated data endpoint of `region` for this login server; `None` for a data
    /// endpoint.
    pub fn data_endpoint(&self, region: &str) -> Option<String> {
        match self {
            Self::Global { .. } | Self::Regional { .. } => {
                Some(format!("{}.{region}.data.{}", self.registry(), self.suffix()))
            }
            Self::Data { .. } => None,
        }
    }
}

/// Whether `host` is an Azure Storage blob host: `[<account>.]blob.core.<cloud>`, e.g.
/// `acct.blob.core.windows.net` (public), `.blob.core.chinacloudapi.cn` (China),
/// `.blob.core.usgovcloudapi.net` (US Government), and any other cloud of the same shape.
/// A data endpoint there means the registry has dedicated data endpoints disabled.
/// ASCII case and a trailing dot are ignored.
pub(crate) fn is_storage_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    format!(".{host}").contains(".blob.core.")
}

/// Why `value` (a `host[:port]` as written) can never be a dedicated data endpoint:
/// a wildcard, or an Azure Storage host (`is_storage_host`). `None` when it is neither.
pub fn storage_or_wildcard(value: &str) -> Option<&'static str> {
    if value.contains('*') {
        return Some("is a wildcard");
    }
    let v = value.trim();
    let host = v.split(':').next().unwrap_or_default();
    is_storage_host(host).then_some("is an Azure Storage host")
}

/// `az acr show-endpoints` output. Not our format: extra keys are tolerated.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShowEndpoints {
    /// The registry's login server.
    pub login_server: Option<String>,
    /// One entry per replica region.
    #[serde(default)]
    pub data_endpoints: Vec<RegionEndpoint>,
    /// Regional login endpoints (preview), when enabled.
    #[serde(default)]
    pub regional_endpoints: Vec<RegionEndpoint>,
}

/// One `{region, endpoint}` entry of `az acr show-endpoints`.
#[derive(Debug, Deserialize)]
pub struct RegionEndpoint {
    /// Region name, e.g. `eastus`.
    pub region: String,
    /// Host name, or `*.blob.core.windows.net` when data endpoints are disabled.
    pub endpoint: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_hosts() {
        assert_eq!(
            AcrHost::parse("contoso.azurecr.io"),
            Some(AcrHost::Global {
                registry: "contoso",
                suffix: "azurecr.io"
            })
        );
        assert_eq!(
            AcrHost::parse("contoso.chinaeast2.geo.azurecr.cn"),
            Some(AcrHost::Regional {
                registry: "contoso",
                region: "chinaeast2",
                suffix: "azurecr.cn"
            })
        );
        assert_eq!(
            AcrHost::parse("contoso.usgovvirginia.data.azurecr.us"),
            Some(AcrHost::Data {
                registry: "contoso",
                region: "usgovvirginia",
                suffix: "azurecr.us"
            })
        );
        for other in [
            "azurecr.io",
            "contoso.azurecr.io.evil.test",
            "contosoazurecr.io",
            "a.b.azurecr.io",
            "a.b.c.data.azurecr.io",
            "contoso..data.azurecr.io",
            "registry.example.test",
        ] {
            assert_eq!(AcrHost::parse(other), None, "{other}");
        }
    }

    #[test]
    fn derives_data_endpoint_for_every_cloud() {
        let cases = [
            ("contoso.azurecr.io", "contoso.eastus.data.azurecr.io"),
            ("contoso.westus.geo.azurecr.io", "contoso.eastus.data.azurecr.io"),
            ("contoso.azurecr.cn", "contoso.eastus.data.azurecr.cn"),
            ("contoso.azurecr.us", "contoso.eastus.data.azurecr.us"),
        ];
        for (login, want) in cases {
            let host = AcrHost::parse(login).unwrap();
            assert_eq!(host.data_endpoint("eastus").as_deref(), Some(want), "{login}");
        }
        let data = AcrHost::parse("contoso.eastus.data.azurecr.io").unwrap();
        assert_eq!(data.data_endpoint("eastus"), None);
    }

    #[test]
    fn spots_storage_and_wildcards() {
        for bad in [
            "*.blob.core.windows.net",
            "*",
            "contoso.*.data.azurecr.io",
            "acct.blob.core.windows.net",
            "ACCT.Blob.Core.Windows.Net:443",
            "acct.blob.core.chinacloudapi.cn",
            "acct.blob.core.usgovcloudapi.net",
            "blob.core.windows.net",
        ] {
            assert!(storage_or_wildcard(bad).is_some(), "{bad}");
        }
        for ok in [
            "contoso.eastus.data.azurecr.io",
            "notblob.core.windows.net.example",
            "xblob.core.windows.net",
        ] {
            assert_eq!(storage_or_wildcard(ok), None, "{ok}");
        }
    }

    #[test]
    fn storage_hosts_by_shape() {
        for storage in [
            "acct.blob.core.windows.net",
            "ACCT.Blob.Core.Windows.Net.",
            "blob.core.windows.net",
            "acct.blob.core.chinacloudapi.cn",
            "acct.blob.core.usgovcloudapi.net",
            "acct.blob.core.cloudapi.de",
        ] {
            assert!(is_storage_host(storage), "{storage}");
        }
        for other in [
            "contoso.eastus.data.azurecr.io",
            "notblob.core.windows.net",
            "blob.core",
            "acct.blob.corex.windows.net",
        ] {
            assert!(!is_storage_host(other), "{other}");
        }
    }
}
