//! `Reference`: `registry[:port]/repository[:tag][@digest]`, validated at the boundary.
//!
//! Owns: the distribution-spec grammar for repository names and tags. A `Reference`
//! always names its registry; short names are completed by the caller (the CLI adds the
//! configured login server). Never does IO.

use std::fmt;
use std::str::FromStr;

use super::digest::{Digest, DigestError};
use crate::hostport::{HostPort, HostPortError};

/// Why a reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// No registry host in front of the repository.
    #[error(
        "reference {value:?} names no registry; write it as <login-server>/<repository>[:tag], e.g. contoso.azurecr.io/app:1.2"
    )]
    NoRegistry { value: String },
    /// Bad registry part.
    #[error("reference {value:?} has a bad registry part")]
    Registry {
        value: String,
        #[source]
        source: HostPortError,
    },
    /// Repository name outside the distribution-spec grammar.
    #[error(
        "repository {repository:?} in reference {value:?} is invalid: use lowercase letters, digits and separators (. _ __ -) in /-separated components"
    )]
    Repository { value: String, repository: String },
    /// Tag outside `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
    #[error(
        "tag {tag:?} in reference {value:?} is invalid: at most 128 of [A-Za-z0-9._-], not starting with . or -"
    )]
    Tag { value: String, tag: String },
    /// Bad digest part.
    #[error("reference {value:?} has a bad digest")]
    Digest {
        value: String,
        #[source]
        source: DigestError,
    },
    /// The name (`registry/repository`) is longer than 255 characters, or the whole
    /// reference longer than any valid one can be.
    #[error(
        "reference {value:?} is too long: the name (registry/repository) may have at most 255 characters"
    )]
    TooLong { value: String },
}

/// A parsed image reference.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: HostPort,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parse a full reference. Without tag or digest, the tag is `latest`.
    pub fn parse(value: &str) -> Result<Self, ReferenceError> {
        let too_long = || ReferenceError::TooLong {
            value: value.chars().take(64).collect::<String>() + "…",
        };
        // A name of 255, a tag of 128 and a sha512 digest fit in this; anything longer is
        // refused before it is looked at.
        if value.len() > MAX_REFERENCE_LEN {
            return Err(too_long());
        }
        let (rest, digest) = match value.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Digest::parse(d).map_err(|source| ReferenceError::Digest {
                    value: value.to_string(),
                    source,
                })?),
            ),
            None => (value, None),
        };
        let Some((registry, path)) = rest.split_once('/') else {
            return Err(ReferenceError::NoRegistry {
                value: value.to_string(),
            });
        };
        if !looks_like_registry(registry) {
            return Err(ReferenceError::NoRegistry {
                value: value.to_string(),
            });
        }
        let registry = HostPort::parse(registry).map_err(|source| ReferenceError::Registry {
            value: value.to_string(),
            source,
        })?;
        // A tag follows the last ':' after the last '/'.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t)),
            _ => (path, None),
        };
        // The distribution reference grammar bounds the name, not the tag or digest after
        // it (so a printed reference, which adds ":latest", still parses).
        if registry_text_len(&registry) + 1 + repository.len() > MAX_NAME_LEN {
            return Err(too_long());
        }
        if !valid_repository(repository) {
            return Err(ReferenceError::Repository {
                value: value.to_string(),
                repository: repository.to_string(),
            });
        }
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(ReferenceError::Tag {
                value: value.to_string(),
                tag: t.to_string(),
            });
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(Self {
            registry,
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// Parse `value`, adding `default_registry` when it names none (`app:1.2`).
    pub fn parse_with_default(value: &str, default_registry: &HostPort) -> Result<Self, ReferenceError> {
        match Self::parse(value) {
            Err(ReferenceError::NoRegistry { .. }) => Self::parse(&format!("{default_registry}/{value}")),
            other => other,
        }
    }

    /// The registry (login server) host and port.
    pub fn registry(&self) -> &HostPort {
        &self.registry
    }
    /// The repository path, e.g. `app` or `team/app`.
    pub fn repository(&self) -> &str {
        &self.repository
    }
    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
    /// What goes after `/manifests/`: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }
    /// The same reference pinned to `digest` (tag kept for display).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    /// Prints text that [`Reference::parse`] reads back as the same reference: a registry
    /// whose name has no dot (`myregistry:443`) keeps its port even when it is the default,
    /// or the text would name a repository on no registry at all (found by fuzzing).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let registry = self.registry.to_string();
        if looks_like_registry(&registry) {
            write!(f, "{registry}/{}", self.repository)?;
        } else {
            write!(
                f,
                "{}:{}/{}",
                self.registry.host(),
                self.registry.port(),
                self.repository
            )?;
        }
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The longest `registry/repository` (distribution's `NameTotalLengthMax`).
const MAX_NAME_LEN: usize = 255;
/// The longest reference text looked at: a name, a 128-character tag and a sha512 digest.
const MAX_REFERENCE_LEN: usize = MAX_NAME_LEN + 1 + 128 + 1 + 7 + 128;

/// Length of the registry as [`Reference`]'s `Display` writes it.
fn registry_text_len(registry: &HostPort) -> usize {
    let text = registry.to_string();
    if looks_like_registry(&text) {
        text.len()
    } else {
        format!("{}:{}", registry.host(), registry.port()).len()
    }
}

/// Whether the first path component names a registry rather than a repository (the
/// distribution reference grammar: it has a dot or a port, or is `localhost`).
fn looks_like_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`
fn valid_repository(name: &str) -> bool {
    !name.is_empty() && name.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-+", followed by an alnum.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_alnum(b[i]) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = Reference::parse("contoso.azurecr.io/app:1.2").unwrap();
        assert_eq!(
            (r.registry().to_string().as_str(), r.repository(), r.tag()),
            ("contoso.azurecr.io", "app", Some("1.2"))
        );
        let r = Reference::parse("localhost:5000/team/app").unwrap();
        assert_eq!(
            (r.registry().port(), r.repository(), r.tag()),
            (5000, "team/app", Some("latest"))
        );
        let r = Reference::parse(&format!("c.azurecr.io/app@{d}")).unwrap();
        assert_eq!((r.tag(), r.manifest_ref()), (None, d.to_string()));
        let r = Reference::parse(&format!("c.azurecr.io/app:v1@{d}")).unwrap();
        assert_eq!(r.manifest_ref(), d);
        assert_eq!(r.to_string(), format!("c.azurecr.io/app:v1@{d}"));
    }

    /// Printing then parsing gives the same reference, also for a dotless registry on the
    /// default port (the fuzzer's `hPHHHHHHos:443/a/r/a/r/c` printed as `hphhhhhhos/…`,
    /// which names no registry).
    #[test]
    fn display_round_trips_table() {
        for (input, printed) in [
            ("contoso.azurecr.io/app:1.2", "contoso.azurecr.io/app:1.2"),
            ("contoso.azurecr.io:443/app", "contoso.azurecr.io/app:latest"),
            ("myregistry:443/a/b:v1", "myregistry:443/a/b:v1"),
            ("hPHHHHHHos:443/a/r/a/r/c", "hphhhhhhos:443/a/r/a/r/c:latest"),
            ("myregistry:5000/app", "myregistry:5000/app:latest"),
            ("localhost/app:1", "localhost/app:1"),
            ("[::1]:443/app:1", "[::1]/app:1"),
            ("127.0.0.1:8443/app:1", "127.0.0.1:8443/app:1"),
        ] {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), printed, "{input}");
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r, "{input}");
        }
    }

    /// The 255-character limit is on the name: a 251-character name without a tag prints
    /// with ":latest" (258 characters) and parses again (found by fuzzing); a 256-character
    /// name is refused.
    #[test]
    fn the_length_limit_is_on_the_name() {
        let name = |n: usize| format!("c.io/{}", "a".repeat(n - 5));
        let r = Reference::parse(&name(251)).unwrap();
        assert_eq!(r.to_string().len(), 258);
        assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
        assert!(Reference::parse(&name(255)).is_ok());
        assert!(matches!(
            Reference::parse(&name(256)),
            Err(ReferenceError::TooLong { .. })
        ));
        let tag = "t".repeat(128);
        assert!(Reference::parse(&format!("{}:{tag}", name(255))).is_ok());
        assert!(matches!(
            Reference::parse(&"a".repeat(MAX_REFERENCE_LEN + 1)),
            Err(ReferenceError::TooLong { .. })
        ));
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "app:1.2",
            "c.io/App",
            "c.io/app:-x",
            "c.io/a..b",
            "c.io/a/",
            "c.io/app@sha256:../../x",
            "c.io/app:",
            "https://c.io/app",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn default_registry_is_added_for_short_names() {
        let login = HostPort::parse("contoso.azurecr.io").unwrap();
        let r = Reference::parse_with_default("app:1.2", &login).unwrap();
        assert_eq!(r.to_string(), "contoso.azurecr.io/app:1.2");
    }
}
