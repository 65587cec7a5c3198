//! `HostPort`: a lower-cased host name (or IP literal) with an explicit port.
//!
//! Owns: parsing `host[:port]` from config and URLs, and the one equality that the egress
//! policy uses (ASCII case-insensitive host, port compared, 443 when absent). Must never
//! accept userinfo, paths, wildcards or empty hosts.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// Why a `host[:port]` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPortError {
    /// Empty value.
    #[error("host is empty; expected host[:port], e.g. contoso.azurecr.io")]
    Empty,
    /// Contains a scheme, path, userinfo, wildcard, whitespace or other stray characters.
    #[error(
        "{value:?} is not a plain host[:port]: it must not contain a scheme, path, userinfo, '*' or spaces (e.g. contoso.eastus.data.azurecr.io)"
    )]
    NotPlain { value: String },
    /// The port is not a number in 1..=65535.
    #[error("{value:?} has an invalid port; expected a number from 1 to 65535")]
    BadPort { value: String },
}

/// A host (lower-cased) and port (443 when not given).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// Build from parts; the host is lower-cased.
    pub fn new(host: &str, port: u16) -> Result<Self, HostPortError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(HostPortError::Empty);
        }
        let ok = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
        if !ok || host.starts_with('.') || host.starts_with('-') || port == 0 {
            return Err(HostPortError::NotPlain {
                value: host.to_string(),
            });
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Parse `host[:port]` (IPv6 literals in brackets).
    pub fn parse(value: &str) -> Result<Self, HostPortError> {
        let v = value.trim();
        if v.is_empty() {
            return Err(HostPortError::Empty);
        }
        if v.contains("://") || v.contains('/') || v.contains('@') || v.contains('*') || v.contains(' ') {
            return Err(HostPortError::NotPlain {
                value: value.to_string(),
            });
        }
        let (host, port) = if let Some(rest) = v.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| HostPortError::NotPlain {
                value: value.to_string(),
            })?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => {
                    return Err(HostPortError::NotPlain {
                        value: value.to_string(),
                    });
                }
            }
        } else {
            match v.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                Some(_) => {
                    return Err(HostPortError::NotPlain {
                        value: value.to_string(),
                    });
                }
                None => (v, None),
            }
        };
        let port = match port {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| HostPortError::BadPort {
                    value: value.to_string(),
                })?,
        };
        Self::new(host, port).map_err(|e| match e {
            HostPortError::NotPlain { .. } => HostPortError::NotPlain {
                value: value.to_string(),
            },
            other => other,
        })
    }

    /// From an `https` URL's authority (port defaulted to 443). `None` when the URL has no host.
    pub fn from_url(url: &url::Url) -> Option<Self> {
        let host = url.host_str()?;
        let port = url.port_or_known_default().unwrap_or(443);
        Self::new(host, port).ok()
    }

    /// The lower-cased host, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://host[:port]` with the port left out when it is 443.
    pub fn https_base(&self) -> String {
        format!("https://{}", self.authority())
    }

    /// `host[:port]` as it goes in a URL (port left out when 443, IPv6 bracketed).
    pub fn authority(&self) -> String {
        if self.port == 443 {
            self.bracketed().into_owned()
        } else {
            self.with_port()
        }
    }

    /// `host:port` with the port always written (IPv6 bracketed): firewall rules and
    /// error messages, where a defaulted port would hide what is allowed.
    pub fn with_port(&self) -> String {
        format!("{}:{}", self.bracketed(), self.port)
    }

    /// The host as it goes before `:port`: IPv6 literals in brackets.
    fn bracketed(&self) -> Cow<'_, str> {
        if self.host.contains(':') {
            Cow::Owned(format!("[{}]", self.host))
        } else {
            Cow::Borrowed(&self.host)
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.authority())
    }
}

impl fmt::Debug for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostPort({}:{})", self.host, self.port)
    }
}

impl FromStr for HostPort {
    type Err = HostPortError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok = [
            ("contoso.azurecr.io", "contoso.azurecr.io", 443),
            ("Contoso.AzureCR.io:443", "contoso.azurecr.io", 443),
            ("contoso.azurecr.test:8443", "contoso.azurecr.test", 8443),
            ("127.0.0.1:5000", "127.0.0.1", 5000),
            ("[::1]:5000", "::1", 5000),
        ];
        for (input, host, port) in ok {
            let hp = HostPort::parse(input).unwrap();
            assert_eq!((hp.host(), hp.port()), (host, port), "{input}");
        }
        for bad in [
            "",
            "https://x.io",
            "x.io/path",
            "user@x.io",
            "*.blob.core.windows.net",
            "x.io:0",
            "x.io:99999",
            "x.io:abc",
            "a b",
        ] {
            assert!(HostPort::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn equality_is_case_insensitive_and_port_aware() {
        assert_eq!(
            HostPort::parse("A.io").unwrap(),
            HostPort::parse("a.io:443").unwrap()
        );
        assert_ne!(
            HostPort::parse("a.io:444").unwrap(),
            HostPort::parse("a.io").unwrap()
        );
    }

    #[test]
    fn from_url_defaults_port() {
        let u = url::Url::parse("https://X.data.azurecr.io/?sig=1").unwrap();
        assert_eq!(
            HostPort::from_url(&u).unwrap(),
            HostPort::parse("x.data.azurecr.io").unwrap()
        );
        assert_eq!(
            HostPort::parse("x.io:8443").unwrap().https_base(),
            "https://x.io:8443"
        );
    }

    #[test]
    fn authority_and_with_port() {
        let cases = [
            ("x.io", "x.io", "x.io:443"),
            ("x.io:8443", "x.io:8443", "x.io:8443"),
            ("[fd00::1]", "[fd00::1]", "[fd00::1]:443"),
            ("[fd00::1]:80", "[fd00::1]:80", "[fd00::1]:80"),
        ];
        for (input, authority, with_port) in cases {
            let hp = HostPort::parse(input).unwrap();
            assert_eq!(hp.authority(), authority, "{input}");
            assert_eq!(hp.with_port(), with_port, "{input}");
        }
    }
}
