//! `WWW-Authenticate` challenges (RFC 7235 §2.1, RFC 6750 §3).
//!
//! Owns: turning the raw header values of a `401` into structured challenges, and picking
//! the one edgepull answers (`Bearer` before `Basic`). Must never panic, allocate without
//! bound or guess: a malformed parameter or challenge is dropped, never half-read. It must
//! never decide whether a realm may be trusted; that is `registry::policy::check_realm`.
//!
//! Grammar handled: several headers, several challenges per header, case-insensitive scheme
//! and parameter names, `token` or `quoted-string` values (backslash escapes, commas inside
//! quotes), `token68`, optional whitespace around `=`, empty list elements. When a parameter
//! name repeats within one challenge (RFC 7235 forbids it), the first value wins.
//!
//! There is no error type: parsing is total (bad input yields fewer challenges, never an
//! error), and the caller reports "no usable challenge" in its own terms.

use std::collections::BTreeMap;

/// An authentication scheme, compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `Bearer`: Docker token authentication (RFC 6750 syntax).
    Bearer,
    /// `Basic` (RFC 7617).
    Basic,
    /// Any other scheme, lower-cased.
    Other(String),
}

impl Scheme {
    fn from_token(token: &str) -> Self {
        let lower = token.to_ascii_lowercase();
        match lower.as_str() {
            "bearer" => Self::Bearer,
            "basic" => Self::Basic,
            _ => Self::Other(lower),
        }
    }

    /// The lower-cased scheme name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Bearer => "bearer",
            Self::Basic => "basic",
            Self::Other(s) => s,
        }
    }
}

/// One challenge: a scheme and its parameters (names lower-cased, values unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme.
    pub scheme: Scheme,
    /// `auth-param`s by lower-cased name.
    pub params: BTreeMap<String, String>,
    /// The `token68` form (`Negotiate abc==`), when the challenge used it instead of params.
    pub token68: Option<String>,
}

impl Challenge {
    fn new(scheme: Scheme) -> Self {
        Self {
            scheme,
            params: BTreeMap::new(),
            token68: None,
        }
    }

    /// A parameter by name (any case).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// `realm`: for Bearer, the token-server URL (validate it before use).
    pub fn realm(&self) -> Option<&str> {
        self.param("realm")
    }

    /// `service`: the value to send back to the token server.
    pub fn service(&self) -> Option<&str> {
        self.param("service")
    }

    /// `scope`: space-separated resource scopes.
    pub fn scope(&self) -> Option<&str> {
        self.param("scope")
    }

    /// `error`, e.g. `invalid_token` or `insufficient_scope`.
    pub fn error(&self) -> Option<&str> {
        self.param("error")
    }
}

/// Parse every challenge in every `WWW-Authenticate` value, in order. Malformed parts are
/// skipped; the rest is kept.
pub fn parse_challenges<'a>(headers: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out = Vec::new();
    for value in headers {
        parse_header(value, &mut out);
    }
    out
}

/// The challenge edgepull should answer: the first `Bearer`, else the first `Basic`. Other
/// schemes are never chosen.
pub fn preferred(challenges: &[Challenge]) -> Option<&Challenge> {
    challenges
        .iter()
        .find(|c| c.scheme == Scheme::Bearer)
        .or_else(|| challenges.iter().find(|c| c.scheme == Scheme::Basic))
}

fn parse_header(value: &str, out: &mut Vec<Challenge>) {
    let mut c = Cursor {
        s: value.as_bytes(),
        i: 0,
    };
    loop {
        c.skip_separators();
        if c.at_end() {
            return;
        }
        let Some(scheme) = c.token() else {
            c.skip_element();
            continue;
        };
        let mut challenge = Challenge::new(Scheme::from_token(scheme));
        let spaced = c.skip_ws();
        if c.at_end() || c.peek() == Some(b',') {
            out.push(challenge);
            continue;
        }
        if !spaced {
            // Something glued to the scheme (`Bearer"x"`): not a challenge we can read.
            c.skip_element();
            continue;
        }
        if let Some(t) = c.token68() {
            challenge.token68 = Some(t.to_string());
            out.push(challenge);
            continue;
        }
        loop {
            let start = c.i;
            match c.param() {
                Some((name, value)) => {
                    challenge.params.entry(name).or_insert(value);
                }
                None => {
                    c.i = start;
                    c.skip_element();
                }
            }
            // Now at a top-level ',' or the end.
            let before_comma = c.i;
            c.skip_separators();
            if c.at_end() {
                break;
            }
            if !c.param_follows() {
                // The next element starts a new challenge.
                c.i = before_comma;
                break;
            }
        }
        out.push(challenge);
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

impl<'a> Cursor<'a> {
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Skip spaces and tabs; true when any were skipped.
    fn skip_ws(&mut self) -> bool {
        let start = self.i;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
        self.i > start
    }

    /// Skip whitespace and commas (empty list elements are allowed).
    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    /// Advance to the next ',' outside a quoted string, or to the end.
    fn skip_element(&mut self) {
        let mut quoted = false;
        while let Some(b) = self.peek() {
            match b {
                b'"' => quoted = !quoted,
                b'\\' if quoted => self.i += 1,
                b',' if !quoted => return,
                _ => {}
            }
            self.i += 1;
        }
        self.i = self.s.len();
    }

    /// A non-empty `token`. Only ASCII bytes are consumed, so the slice is valid UTF-8.
    fn token(&mut self) -> Option<&'a str> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        if self.i == start {
            return None;
        }
        std::str::from_utf8(&self.s[start..self.i]).ok()
    }

    /// `token68` followed by the end of the element; restores the position otherwise.
    fn token68(&mut self) -> Option<&'a str> {
        let start = self.i;
        while self.peek().is_some_and(is_token68_char) {
            self.i += 1;
        }
        if self.i == start {
            return None;
        }
        while self.peek() == Some(b'=') {
            self.i += 1;
        }
        let end = self.i;
        self.skip_ws();
        if self.at_end() || self.peek() == Some(b',') {
            return std::str::from_utf8(&self.s[start..end]).ok();
        }
        self.i = start;
        None
    }

    /// `token BWS "=" BWS ( token / quoted-string ) OWS`, ending at ',' or the end.
    fn param(&mut self) -> Option<(String, String)> {
        let name = self.token()?.to_ascii_lowercase();
        self.skip_ws();
        if self.peek() != Some(b'=') {
            return None;
        }
        self.i += 1;
        self.skip_ws();
        let value = if self.peek() == Some(b'"') {
            self.quoted_string()?
        } else {
            self.token()?.to_string()
        };
        self.skip_ws();
        if self.at_end() || self.peek() == Some(b',') {
            Some((name, value))
        } else {
            None
        }
    }

    /// Whether the cursor is at `token BWS "="` (a parameter, not a new challenge).
    fn param_follows(&mut self) -> bool {
        let start = self.i;
        let is_param = self.token().is_some() && {
            self.skip_ws();
            self.peek() == Some(b'=')
        };
        self.i = start;
        is_param
    }

    /// A quoted string with backslash escapes, unescaped. `None` when unterminated or when
    /// it holds a control character.
    fn quoted_string(&mut self) -> Option<String> {
        debug_assert_eq!(self.peek(), Some(b'"'));
        self.i += 1;
        let mut buf = Vec::new();
        loop {
            let b = self.peek()?;
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let escaped = self.peek()?;
                    if is_ctl(escaped) {
                        return None;
                    }
                    buf.push(escaped);
                    self.i += 1;
                }
                b if is_ctl(b) => return None,
                b => buf.push(b),
            }
        }
        // Removing ASCII bytes ('"', '\\') from valid UTF-8 leaves valid UTF-8.
        Some(String::from_utf8_lossy(&buf).into_owned())
    }
}

fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ch(scheme: Scheme, pairs: &[(&str, &str)]) -> Challenge {
        Challenge {
            scheme,
            params: params(pairs),
            token68: None,
        }
    }

    fn other(name: &str) -> Scheme {
        Scheme::Other(name.to_string())
    }

    #[test]
    fn parse_table() {
        let acr = r#"Bearer realm="https://contoso.azurecr.io/oauth2/token",service="contoso.azurecr.io",scope="repository:app:pull""#;
        let cases: Vec<(Vec<&str>, Vec<Challenge>)> = vec![
            (
                vec![acr],
                vec![ch(
                    Scheme::Bearer,
                    &[
                        ("realm", "https://contoso.azurecr.io/oauth2/token"),
                        ("service", "contoso.azurecr.io"),
                        ("scope", "repository:app:pull"),
                    ],
                )],
            ),
            // Case-insensitive scheme and names, BWS around '=', token values.
            (
                vec!["bEaReR  REALM = \"https://a/t\" ,  Service=reg.io"],
                vec![ch(
                    Scheme::Bearer,
                    &[("realm", "https://a/t"), ("service", "reg.io")],
                )],
            ),
            // Commas and escapes inside quoted strings; two actions in one scope.
            (
                vec![r#"Bearer scope="repository:samalba/my-app:pull,push",realm="a\"b\\c""#],
                vec![ch(
                    Scheme::Bearer,
                    &[
                        ("scope", "repository:samalba/my-app:pull,push"),
                        ("realm", r#"a"b\c"#),
                    ],
                )],
            ),
            // RFC 7235 §4.1 example: several challenges in one header.
            (
                vec![r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple""#],
                vec![
                    ch(
                        other("newauth"),
                        &[("realm", "apps"), ("type", "1"), ("title", r#"Login to "apps""#)],
                    ),
                    ch(Scheme::Basic, &[("realm", "simple")]),
                ],
            ),
            // Several headers, empty list elements, a scheme with no params.
            (
                vec![
                    ",, Basic realm=\"Azure Container Registry\" ,",
                    "Negotiate",
                    "Bearer realm=r",
                ],
                vec![
                    ch(Scheme::Basic, &[("realm", "Azure Container Registry")]),
                    ch(other("negotiate"), &[]),
                    ch(Scheme::Bearer, &[("realm", "r")]),
                ],
            ),
            // token68, then another challenge.
            (
                vec!["Negotiate a87421+/=, Basic realm=x"],
                vec![
                    Challenge {
                        scheme: other("negotiate"),
                        params: BTreeMap::new(),
                        token68: Some("a87421+/=".into()),
                    },
                    ch(Scheme::Basic, &[("realm", "x")]),
                ],
            ),
            // error parameter (distribution registry) and a repeated name: first wins.
            (
                vec![r#"Bearer realm="r1",error="invalid_token",realm="r2""#],
                vec![ch(Scheme::Bearer, &[("realm", "r1"), ("error", "invalid_token")])],
            ),
            // Malformed parameters are dropped, the rest is kept.
            (
                vec![r#"Bearer realm="unterminated, service=x"#],
                vec![ch(Scheme::Bearer, &[])],
            ),
            (
                vec![r#"Bearer realm="a"junk, service=s, =v, scope="#],
                vec![ch(Scheme::Bearer, &[("service", "s")])],
            ),
            (
                vec!["Bearer realm=\"a\u{1}b\", service=s"],
                vec![ch(Scheme::Bearer, &[("service", "s")])],
            ),
            // Garbage before a valid challenge; a scheme glued to a quote.
            (
                vec![r#"="x", Bearer"y", Basic realm=z"#],
                vec![ch(Scheme::Basic, &[("realm", "z")])],
            ),
            // Non-ASCII inside a quoted string is kept.
            (
                vec!["Basic realm=\"Zürich\""],
                vec![ch(Scheme::Basic, &[("realm", "Zürich")])],
            ),
            (vec![""], vec![]),
            (vec![], vec![]),
        ];
        for (headers, want) in cases {
            assert_eq!(parse_challenges(headers.iter().copied()), want, "{headers:?}");
        }
    }

    #[test]
    fn accessors() {
        let c =
            &parse_challenges([r#"Bearer realm="r",service="s",scope="a b",error="insufficient_scope""#])[0];
        assert_eq!(c.realm(), Some("r"));
        assert_eq!(c.service(), Some("s"));
        assert_eq!(c.scope(), Some("a b"));
        assert_eq!(c.error(), Some("insufficient_scope"));
        assert_eq!(c.param("SERVICE"), Some("s"));
        assert_eq!(c.param("missing"), None);
        assert_eq!(c.scheme.as_str(), "bearer");
    }

    #[test]
    fn preferred_table() {
        let cases: &[(&[&str], Option<Scheme>)] = &[
            (&["Basic realm=a", "Bearer realm=b"], Some(Scheme::Bearer)),
            (&["Negotiate, Basic realm=a"], Some(Scheme::Basic)),
            (&["Negotiate", "Digest realm=x"], None),
            (&[], None),
        ];
        for (headers, want) in cases {
            let all = parse_challenges(headers.iter().copied());
            assert_eq!(preferred(&all).map(|c| c.scheme.clone()), *want, "{headers:?}");
        }
        let two = parse_challenges(["Bearer realm=first, Bearer realm=second"]);
        assert_eq!(preferred(&two).and_then(Challenge::realm), Some("first"));
    }

    /// Deterministic xorshift, so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_input_never_panics_and_names_are_clean() {
        const PIECES: &[&str] = &[
            "Bearer",
            "basic",
            "realm",
            "scope",
            "=",
            "==",
            "\"",
            "\\",
            ",",
            " ",
            "\t",
            "abc",
            "x:y:pull",
            "é",
            "\u{0}",
            "\r\n",
            "\u{7f}",
            "/",
            "+",
            "~",
            "ü\"",
            "\\\"",
            "https://a/t",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..rng.below(24) {
                s.push_str(PIECES[rng.below(PIECES.len())]);
            }
            let raw: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
            let noise = String::from_utf8_lossy(&raw);
            for c in parse_challenges([s.as_str(), &noise]) {
                assert!(!c.scheme.as_str().is_empty(), "{s:?}");
                assert!(
                    c.scheme
                        .as_str()
                        .bytes()
                        .all(|b| is_tchar(b) && !b.is_ascii_uppercase())
                );
                for (k, v) in &c.params {
                    assert!(!k.is_empty() && k.bytes().all(|b| is_tchar(b) && !b.is_ascii_uppercase()));
                    assert!(!v.bytes().any(is_ctl), "{s:?} gave control character in {v:?}");
                }
            }
        }
    }

    #[test]
    fn random_well_formed_headers_round_trip() {
        const VALUE_CHARS: &[char] = &['a', 'Z', '0', ' ', ',', '=', '"', '\\', ':', '/', 'é', ';'];
        let mut rng = Rng(42);
        for _ in 0..5_000 {
            let mut header = Vec::new();
            let mut want = Vec::new();
            for ci in 0..1 + rng.below(3) {
                let scheme = ["Bearer", "BASIC", "Custom"][rng.below(3)];
                let mut c = Challenge::new(Scheme::from_token(scheme));
                let mut parts = Vec::new();
                for pi in 0..rng.below(4) {
                    let name = format!("P{ci}x{pi}");
                    let value: String = (0..rng.below(10)).map(|_| VALUE_CHARS[rng.below(12)]).collect();
                    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
                    let ws = [" ", "", "\t "][rng.below(3)];
                    parts.push(format!("{name}{ws}={ws}\"{escaped}\""));
                    c.params.insert(name.to_ascii_lowercase(), value);
                }
                header.push(format!("{scheme} {}", parts.join(" , ")));
                want.push(c);
            }
            let header = header.join(", ");
            assert_eq!(parse_challenges([header.as_str()]), want, "{header}");
        }
    }
}
