//! Field paths in the config: `registry.data_endpoints[1]`, `images[0].ref`.
//!
//! Owns: [`FieldPath`], the one notation every config error names its field in, and
//! [`parse`], which deserializes JSON text and, on failure, turns the path
//! `serde_path_to_error` tracked into a `FieldPath`, so serde's errors (unknown field,
//! wrong type) and our own read alike. Pure; must never read files.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

/// A JSON field path such as `registry.auth.username`, `images[2]` or
/// `registry.resolve["contoso.azurecr.io"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FieldPath(String);

impl FieldPath {
    /// The empty path (the top-level value).
    pub(super) fn root() -> Self {
        Self::default()
    }

    /// This path with an object key appended. Keys that are not plain identifiers are
    /// written as `["key"]`.
    pub(super) fn key(&self, key: &str) -> Self {
        let mut s = self.0.clone();
        let plain = !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !key.as_bytes()[0].is_ascii_digit();
        if plain {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(key);
        } else {
            s.push('[');
            s.push_str(&serde_json::Value::from(key).to_string());
            s.push(']');
        }
        Self(s)
    }

    /// This path with an array index appended.
    pub(super) fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// The path as text; empty for the top level.
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }

    /// The path `serde_path_to_error` tracked. A key that could not be read (a syntax
    /// error between two fields) is left out: the path names the object it is in.
    fn from_serde(path: &serde_path_to_error::Path) -> Self {
        path.iter().fold(Self::root(), |p, segment| match segment {
            Segment::Map { key } => p.key(key),
            Segment::Enum { variant } => p.key(variant),
            Segment::Seq { index } => p.index(*index),
            Segment::Unknown => p,
        })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A serde_json error and the field it happened in.
#[derive(Debug)]
pub(super) struct Located {
    /// serde_json's error (message, line, column).
    pub(super) error: serde_json::Error,
    /// Where in the document; empty for the top level.
    pub(super) field: FieldPath,
}

/// Deserialize `text` as `T` (exactly as `serde_json::from_str`: trailing characters are
/// refused), naming the field of the first error.
pub(super) fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Located> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = FieldPath::from_serde(e.path());
        Located {
            error: e.into_inner(),
            field,
        }
    })?;
    de.end().map_err(|error| Located {
        error,
        field: FieldPath::root(),
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only the errors matter here")]
    struct Top {
        registry: Option<Reg>,
        n: Option<u64>,
        images: Option<Vec<Img>>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only the errors matter here")]
    struct Reg {
        login_server: Option<String>,
        data_endpoints: Option<Vec<String>>,
        resolve: Option<std::collections::BTreeMap<String, String>>,
        auth: Option<Auth>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only the errors matter here")]
    struct Auth {
        username: Option<String>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only the errors matter here")]
    struct Img {
        r#ref: Option<String>,
    }

    /// The path named for serde_json's error on `text`.
    fn located(text: &str) -> String {
        parse::<Top>(text).expect_err(text).field.to_string()
    }

    #[test]
    fn names_the_field_serde_stopped_at() {
        let cases = [
            (
                r#"{"registry": {"login_server": "x", "bogus": 1}}"#,
                "registry.bogus",
            ),
            (r#"{"n": -1}"#, "n"),
            (r#"{"n": "abc"}"#, "n"),
            (
                r#"{"registry": {"data_endpoints": ["a", 5]}}"#,
                "registry.data_endpoints[1]",
            ),
            (r#"{"images": [{"ref": "a"}, {"ref": 5}]}"#, "images[1].ref"),
            (r#"{"images": [{"ref": "a"}, {"tag": "x"}]}"#, "images[1].tag"),
            (r#"{"images": [{"ref": "a"}, 7]}"#, "images[1]"),
            (
                r#"{"registry": {"resolve": {"a.b.io": 5}}}"#,
                r#"registry.resolve["a.b.io"]"#,
            ),
            (
                r#"{"registry": {"auth": {"user\"name": "é", "x": 1}}}"#,
                r#"registry.auth["user\"name"]"#,
            ),
            (
                "{\n  \"registry\": {\n    \"auth\": {\n      \"usrname\": \"a\"\n    }\n  }\n}",
                "registry.auth.usrname",
            ),
            (
                r#"{"registry": {"login_server": "a"}, "extra": {"x": [1, {"y": 2}]}}"#,
                "extra",
            ),
            (r#"[1]"#, "[0]"),
            // A syntax error where a key should be names the object it is in.
            (
                "{\n  \"registry\": {\n    \"login_server\": \"a\",\n  }\n}\n",
                "registry",
            ),
            (r#"{"registry": {"login_server": "a" "x": 1}}"#, "registry"),
            // A duplicate key, or the end of the text after a complete field, is found
            // by the object that holds it (the message names the key).
            (
                r#"{"registry": {"login_server": "a", "login_server": "b"}}"#,
                "registry",
            ),
            (r#"{"n": 1, "n": 2}"#, ""),
            (r#"{"registry": {"login_server": "a"} "#, ""),
            (r#"{} x"#, ""),
        ];
        for (text, want) in cases {
            assert_eq!(located(text), want, "{text}");
        }
    }

    #[test]
    fn keeps_serde_json_position_and_message() {
        let e = parse::<Top>("{\n  \"n\": \"abc\"\n}").unwrap_err();
        assert_eq!((e.error.line(), e.error.column()), (2, 12));
        assert!(
            e.error
                .to_string()
                .starts_with("invalid type: string \"abc\", expected u64")
        );
        let e = parse::<Top>(r#"{"n": 1, "n": 2}"#).unwrap_err();
        assert!(e.error.to_string().contains("duplicate field `n`"), "{}", e.error);
    }

    #[test]
    fn builds_paths() {
        let p = FieldPath::root().key("registry").key("data_endpoints").index(1);
        assert_eq!(p.as_str(), "registry.data_endpoints[1]");
        let p = FieldPath::root()
            .key("registry")
            .key("resolve")
            .key("contoso.azurecr.io");
        assert_eq!(p.as_str(), r#"registry.resolve["contoso.azurecr.io"]"#);
        assert_eq!(FieldPath::root().key("1x").as_str(), r#"["1x"]"#);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in ["", "{", "\"", "{\"a", "{\"a\": [", "}}}]]", "{\"a\\"] {
            assert!(parse::<serde_json::Value>(text).is_err(), "{text:?}");
            assert!(parse::<Top>(text).is_err(), "{text:?}");
        }
    }
}
