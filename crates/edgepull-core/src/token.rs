//! The token endpoint's reply (Docker token flow / OAuth2), parsed into a typed value.
//!
//! Owns: reading `token` / `access_token`, `expires_in` and `issued_at` from the JSON reply,
//! the lifetime assumed when `expires_in` is absent or unusable, the bounds every lifetime is
//! clamped to ([`DEFAULT_TOKEN_LIFETIME`], [`MAX_TOKEN_LIFETIME`]), and how long before its
//! expiry a token is replaced ([`refresh_margin`]). Lifetimes are `Duration`s: the shell
//! anchors them on its own monotonic clock when the reply arrives (with checked arithmetic).
//!
//! `expires_in`, decided here once:
//! - absent, not a number, `0`, negative: [`DEFAULT_TOKEN_LIFETIME`] (60 s). The spec
//!   defaults to 60 s when it is omitted and says servers never issue less than 60 s, so 0 and
//!   negatives are non-compliant; if such a token really is dead, the registry answers `401
//!   invalid_token` and the client fetches a new one once (the normal path);
//! - positive: that many seconds (a fraction rounds down, but to no less than 1 s), at most
//!   [`MAX_TOKEN_LIFETIME`] (24 h): a reply of `9223372036854775807` is a day, not an
//!   overflow;
//! - a number JSON cannot hold (`1e400`) makes the reply unusable ([`TokenReplyError::NotJson`]).
//!
//! `issued_at` is informational: a device clock may be wrong, so the lifetime counts from
//! receipt and an `issued_at` far in the future or the past changes nothing.
//!
//! Must never: read a clock, print a token (`Debug` shows `[REDACTED]`), accept a token that
//! could not travel in an `Authorization` header, or hand out a lifetime outside
//! 1 s..=[`MAX_TOKEN_LIFETIME`].

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// Lifetime assumed when the token server sends no usable `expires_in` (distribution spec).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// The longest lifetime believed, whatever the server says (a day; ACR's tokens live hours).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Why a token reply is not usable.
#[derive(Debug, thiserror::Error)]
pub enum TokenReplyError {
    /// The body is not the expected JSON object.
    #[error("not JSON")]
    NotJson(#[source] serde_json::Error),
    /// Neither field carries a token.
    #[error("neither \"token\" nor \"access_token\" is present")]
    NoToken,
    /// The token holds control characters (it would corrupt the `Authorization` header).
    #[error("the token contains characters not allowed in a header")]
    NotHeaderSafe,
}

/// A parsed token reply.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenReply {
    token: String,
    lifetime: Duration,
    issued_at: Option<SystemTime>,
}

impl fmt::Debug for TokenReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReply")
            .field("token", &"[REDACTED]")
            .field("lifetime", &self.lifetime)
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

/// The reply as sent: unknown fields are ignored, and so are an `expires_in` that is not a
/// number and an `issued_at` that is not a string (`lifetime` and [`TokenReply::parse`]).
#[derive(Deserialize)]
struct Wire {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    issued_at: Option<serde_json::Value>,
}

impl TokenReply {
    /// Parse a reply body: the first non-empty of `token` and `access_token`; the lifetime
    /// from `expires_in` as the module docs say; `issued_at` is kept when it
    /// is an RFC 3339 time (informational: expiry counts from receipt, since a device clock
    /// may be wrong).
    pub fn parse(body: &[u8]) -> Result<Self, TokenReplyError> {
        let wire: Wire = serde_json::from_slice(body).map_err(TokenReplyError::NotJson)?;
        let token = match (wire.token, wire.access_token) {
            (Some(t), _) if !t.is_empty() => t,
            (_, Some(t)) if !t.is_empty() => t,
            _ => return Err(TokenReplyError::NoToken),
        };
        if !header_safe(&token) {
            return Err(TokenReplyError::NotHeaderSafe);
        }
        let lifetime = lifetime(wire.expires_in.as_ref());
        let issued_at = match wire.issued_at {
            Some(serde_json::Value::String(s)) => parse_rfc3339(&s),
            _ => None,
        };
        Ok(Self {
            token,
            lifetime,
            issued_at,
        })
    }

    /// The token, for the `Authorization: Bearer` header. Never log it.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// How long the token is valid from receipt: 1 s..=[`MAX_TOKEN_LIFETIME`].
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// When the server says it issued the token, if it said so in RFC 3339.
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.issued_at
    }

    /// How long after receipt the token is replaced: its lifetime less [`refresh_margin`].
    pub fn renew_after(&self) -> Duration {
        self.lifetime.saturating_sub(refresh_margin(self.lifetime))
    }
}

/// The lifetime an `expires_in` value gives (see the module docs): positive numbers of
/// seconds clamped to 1 s..=[`MAX_TOKEN_LIFETIME`], anything else [`DEFAULT_TOKEN_LIFETIME`].
fn lifetime(expires_in: Option<&serde_json::Value>) -> Duration {
    let Some(serde_json::Value::Number(n)) = expires_in else {
        return DEFAULT_TOKEN_LIFETIME;
    };
    let max = MAX_TOKEN_LIFETIME.as_secs();
    let secs = match (n.as_u64(), n.as_f64()) {
        (Some(whole), _) => whole.min(max),
        // Negative integers, fractions and integers past u64: as f64, NaN-free (JSON has none).
        (None, Some(f)) if f > 0.0 => (f.min(max as f64) as u64).max(1),
        _ => 0,
    };
    if secs == 0 {
        DEFAULT_TOKEN_LIFETIME
    } else {
        Duration::from_secs(secs)
    }
}

/// How long before expiry a token is replaced: a tenth of its life, 1–30 s, but never more
/// than half of it (a 1 s token is still good for the request it was fetched for).
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10)
        .clamp(Duration::from_secs(1), Duration::from_secs(30))
        .min(lifetime / 2)
}

/// What an HTTP header value may hold (visible ASCII, space, tab and non-ASCII bytes; no
/// other control characters), as `Bearer <token>`.
fn header_safe(token: &str) -> bool {
    token.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` (RFC 3339 `date-time`); `None` otherwise.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let field = |from: usize, len: usize| s.get(from..from + len).and_then(digits);
    let sep = |at: usize, ok: &[u8]| s.as_bytes().get(at).is_some_and(|c| ok.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (field(0, 4)?, field(5, 2)?, field(8, 2)?);
    let (hour, minute, second) = (field(11, 2)?, field(14, 2)?, field(17, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let len = frac.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        nanos = digits(&format!("{:0<9}", &frac[..len.min(9)]))?;
        rest = &frac[len..];
    }
    let offset_minutes = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (digits(&rest[1..3])?, digits(&rest[4..6])?);
            if oh > 23 || om > 59 {
                return None;
            }
            if *sign == b'+' {
                oh * 60 + om
            } else {
                -(oh * 60 + om)
            }
        }
        _ => return None,
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    let whole = Duration::from_secs(secs.unsigned_abs());
    let at = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(whole)?
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(whole)?
    };
    at.checked_add(Duration::from_nanos(nanos.unsigned_abs()))
}

/// ASCII digits only (no sign), as a number.
fn digits(s: &str) -> Option<i64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.bytes().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn token_reply_table() {
        let t = TokenReply::parse(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(t.token(), "abc");
        assert_eq!(t.lifetime(), S(300));
        assert_eq!(t.renew_after(), S(300) - S(30));
        let t = TokenReply::parse(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.token(), "xyz");
        assert_eq!(t.lifetime(), S(60), "default 60 s life");
        assert_eq!(t.renew_after(), S(60) - S(6));
        let t = TokenReply::parse(br#"{"token":"","access_token":"y","expires_in":-3}"#).unwrap();
        assert_eq!(t.token(), "y");
        assert_eq!(t.lifetime(), DEFAULT_TOKEN_LIFETIME);
        for (bad, want) in [
            (&br#"{}"#[..], "NoToken"),
            (b"not json", "NotJson"),
            (br#"{"token":"a\nb"}"#, "NotHeaderSafe"),
            (br#"{"token":5}"#, "NotJson"),
        ] {
            let got = format!("{:?}", TokenReply::parse(bad).unwrap_err());
            assert!(got.starts_with(want), "{bad:?}: {got}");
        }
    }

    /// Weakness 1 (issue 9): every `expires_in` a server can send gives a lifetime in
    /// 1 s..=24 h, so anchoring it on a clock cannot overflow.
    #[test]
    fn expires_in_table() {
        let day = MAX_TOKEN_LIFETIME;
        let cases: &[(&str, Duration)] = &[
            ("300", S(300)),
            ("1", S(1)),
            ("86400", day),
            ("86401", day),
            ("9223372036854775807", day),
            ("18446744073709551615", day),
            ("18446744073709551616", day),
            ("1e30", day),
            ("99999999999999999999999", day),
            ("300.9", S(300)),
            ("0.25", S(1)),
            // Missing, zero, negative or not a number: the spec's 60 s default.
            ("null", DEFAULT_TOKEN_LIFETIME),
            ("0", DEFAULT_TOKEN_LIFETIME),
            ("-0", DEFAULT_TOKEN_LIFETIME),
            ("0.0", DEFAULT_TOKEN_LIFETIME),
            ("-1", DEFAULT_TOKEN_LIFETIME),
            ("-9223372036854775808", DEFAULT_TOKEN_LIFETIME),
            ("-1e30", DEFAULT_TOKEN_LIFETIME),
            ("\"300\"", DEFAULT_TOKEN_LIFETIME),
            ("true", DEFAULT_TOKEN_LIFETIME),
            ("[300]", DEFAULT_TOKEN_LIFETIME),
            ("{\"s\":300}", DEFAULT_TOKEN_LIFETIME),
        ];
        for (raw, want) in cases {
            let body = format!(r#"{{"token":"t","expires_in":{raw}}}"#);
            let t = TokenReply::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(t.lifetime(), *want, "expires_in {raw}");
            assert!(t.renew_after() < t.lifetime(), "expires_in {raw}");
            assert!(
                t.renew_after() >= t.lifetime() / 2,
                "usable at once: expires_in {raw}"
            );
            assert!(t.renew_after() <= MAX_TOKEN_LIFETIME, "expires_in {raw}");
        }
        let t = TokenReply::parse(br#"{"token":"t"}"#).unwrap();
        assert_eq!(t.lifetime(), DEFAULT_TOKEN_LIFETIME, "missing");
        // A number no JSON reader holds: the reply is unusable (a named error, not a panic).
        assert!(matches!(
            TokenReply::parse(br#"{"token":"t","expires_in":1e400}"#),
            Err(TokenReplyError::NotJson(_))
        ));
    }

    /// `issued_at` in the far future or past does not move the lifetime (it counts from
    /// receipt).
    #[test]
    fn issued_at_never_moves_the_lifetime() {
        for issued_at in [
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "2262-04-11T23:47:16.854775807Z",
            "not a time",
        ] {
            let body = format!(r#"{{"token":"t","expires_in":300,"issued_at":"{issued_at}"}}"#);
            let t = TokenReply::parse(body.as_bytes()).unwrap();
            assert_eq!(t.lifetime(), S(300), "{issued_at}");
            assert_eq!(t.renew_after(), S(270), "{issued_at}");
        }
    }

    #[test]
    fn issued_at_table() {
        let at = |secs: u64| Some(SystemTime::UNIX_EPOCH + S(secs));
        let cases = [
            ("2009-02-13T23:31:30Z", at(1_234_567_890)),
            ("2009-02-13t23:31:30z", at(1_234_567_890)),
            ("2009-02-14T01:31:30+02:00", at(1_234_567_890)),
            ("2009-02-13T20:01:30-03:30", at(1_234_567_890)),
            (
                "2009-02-13T23:31:30.25Z",
                Some(SystemTime::UNIX_EPOCH + S(1_234_567_890) + Duration::from_millis(250)),
            ),
            ("1970-01-01T00:00:00Z", at(0)),
            ("2024-02-29T00:00:00Z", at(1_709_164_800)),
            ("2023-02-29T00:00:00Z", None),
            ("2009-02-13T23:31:30", None),
            ("2009-02-13T24:00:00Z", None),
            ("2009-02-13T23:31:30.Z", None),
            ("2009-13-01T00:00:00Z", None),
            ("2009-02-13T23:31:30+0200", None),
            ("yesterday", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_rfc3339(text), want, "{text:?}");
        }
        let body = br#"{"token":"t","issued_at":"2009-02-13T23:31:30Z"}"#;
        assert_eq!(TokenReply::parse(body).unwrap().issued_at(), at(1_234_567_890));
        // Not a string, or not a time: ignored, as the reply is still usable.
        for body in [
            &br#"{"token":"t","issued_at":5}"#[..],
            br#"{"token":"t","issued_at":"soon"}"#,
        ] {
            assert_eq!(TokenReply::parse(body).unwrap().issued_at(), None);
        }
    }

    #[test]
    fn margins() {
        assert_eq!(refresh_margin(S(1)), Duration::from_millis(500));
        assert_eq!(refresh_margin(S(2)), S(1));
        assert_eq!(refresh_margin(S(10)), S(1));
        assert_eq!(refresh_margin(S(120)), S(12));
        assert_eq!(refresh_margin(S(3 * 3600)), S(30));
    }

    #[test]
    fn debug_never_prints_the_token() {
        let t = TokenReply::parse(br#"{"token":"tok-secret"}"#).unwrap();
        assert!(!format!("{t:?}").contains("tok-secret"));
    }
}
