//! Field paths for JSON errors: `registry.data_endpoints[1]`, `images[0].ref`.
//!
//! serde_json reports where it stopped (line and column) but not which field it was in.
//! [`path_at`] walks the text up to that point and names the innermost key or array index
//! open there. [`FieldPath`] builds the same notation for our own (semantic) errors, so
//! both kinds of error read alike. Pure; no IO.

use std::fmt;

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
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

enum Frame {
    Object { key: Option<String>, expect_key: bool },
    Array { index: usize, started: bool },
}

/// The path of the innermost field open at `line`/`column` (1-based, as serde_json reports
/// them: the column counts bytes and points just past the token that failed). Best effort:
/// on text that is not JSON it returns the path open where scanning stopped.
pub(super) fn path_at(text: &str, line: usize, column: usize) -> FieldPath {
    let bytes = text.as_bytes();
    let line_start = if line <= 1 {
        0
    } else {
        bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(line - 2)
            .map_or(bytes.len(), |(i, _)| i + 1)
    };
    let stop = line_start.saturating_add(column).min(bytes.len());

    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < stop {
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\r' | b'\n' | b':' => i += 1,
            b'{' | b'[' => {
                value_started(&mut stack);
                stack.push(if b == b'{' {
                    Frame::Object {
                        key: None,
                        expect_key: true,
                    }
                } else {
                    Frame::Array {
                        index: 0,
                        started: false,
                    }
                });
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                i += 1;
            }
            b',' => {
                match stack.last_mut() {
                    Some(Frame::Object { key, expect_key }) => {
                        *key = None;
                        *expect_key = true;
                    }
                    Some(Frame::Array { index, .. }) => *index += 1,
                    None => {}
                }
                i += 1;
            }
            b'"' => {
                let end = string_end(bytes, i);
                match stack.last_mut() {
                    Some(Frame::Object { key, expect_key }) if *expect_key => {
                        let raw = &text[i..end.min(text.len())];
                        *key = Some(
                            serde_json::from_str::<String>(raw)
                                .unwrap_or_else(|_| raw.trim_matches('"').to_string()),
                        );
                        *expect_key = false;
                    }
                    _ => value_started(&mut stack),
                }
                i = end;
            }
            _ => {
                value_started(&mut stack);
                while i < bytes.len()
                    && !matches!(bytes[i], b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n' | b':')
                {
                    i += 1;
                }
            }
        }
    }

    let mut path = FieldPath::root();
    for frame in &stack {
        path = match frame {
            Frame::Object { key: Some(k), .. } => path.key(k),
            Frame::Object { key: None, .. } => path,
            Frame::Array { index, started } if *started => path.index(*index),
            Frame::Array { .. } => path,
        };
    }
    path
}

/// Marks the innermost array as holding the element at its current index.
fn value_started(stack: &mut [Frame]) {
    if let Some(Frame::Array { started, .. }) = stack.last_mut() {
        *started = true;
    }
}

/// Index just past the string that starts (with `"`) at `start`.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
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

    /// The path that `path_at` names for serde_json's error on `text`.
    fn located(text: &str) -> String {
        let err = serde_json::from_str::<Top>(text).expect_err(text);
        path_at(text, err.line(), err.column()).to_string()
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
            (r#"{"n": 1, "n": 2}"#, "n"),
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
            (r#"{"registry": {"login_server": "a"} "#, "registry"),
            (r#"[1]"#, "[0]"),
        ];
        for (text, want) in cases {
            assert_eq!(located(text), want, "{text}");
        }
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
    fn tolerates_garbage_and_out_of_range_positions() {
        for text in ["", "{", "\"", "{\"a", "{\"a\": [", "}}}]]", "{\"a\\"] {
            let _ = path_at(text, 1, 1000);
            let _ = path_at(text, 50, 3);
            let _ = path_at(text, 0, 0);
        }
    }
}
