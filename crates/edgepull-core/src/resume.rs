//! `Content-Range` parsing and the resume decision for a partial blob download.
//!
//! Owns: RFC 9110 §14.4 `Content-Range` (`bytes a-b/size`, `bytes a-b/*`, `bytes */size`)
//! and deciding, from the status and headers of a response to `Range: bytes=<offset>-`,
//! whether its body continues the partial file. Pure: no IO.
//!
//! Must never accept a body that does not start exactly at the offset, does not run to the
//! end of the blob, or claims a total other than the descriptor size: appending such bytes
//! would corrupt the partial file (the digest check would catch it, but only after the
//! whole download was wasted).
//!
//! A `Content-Length` *longer* than the bytes the blob still needs is not refused: the body
//! starts at the offset, so its first bytes are the ones wanted; the caller reads exactly
//! those, stops, verifies them and keeps them ([`announced_excess`] says how many more the
//! server announced). Refusing it would throw away a blob a server pads by one byte on
//! every retry.

use std::fmt;

/// Default bytes written between durable checkpoints of a partial download (the most a
/// crash can lose). The one copy: the config's default and the store's both use it.
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;

/// A parsed `Content-Range` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes first-last/complete` (`complete` is `None` for `*`). `first <= last`, and
    /// `last < complete` when it is known.
    Bytes {
        first: u64,
        last: u64,
        complete: Option<u64>,
    },
    /// `bytes */complete`, sent with 416.
    Unsatisfied { complete: u64 },
}

impl fmt::Display for ContentRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bytes {
                first,
                last,
                complete: Some(c),
            } => write!(f, "bytes {first}-{last}/{c}"),
            Self::Bytes {
                first,
                last,
                complete: None,
            } => write!(f, "bytes {first}-{last}/*"),
            Self::Unsatisfied { complete } => write!(f, "bytes */{complete}"),
        }
    }
}

/// Why a `Content-Range` or a resumed response was refused, or why a partial download must
/// start over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Not `bytes a-b/size`, `bytes a-b/*` or `bytes */size`.
    #[error(
        "Content-Range {value:?} is malformed; expected \"bytes <first>-<last>/<size>\" or \"bytes */<size>\""
    )]
    Malformed { value: String },
    /// A unit other than `bytes`.
    #[error("Content-Range unit {unit:?} is not supported; only \"bytes\" ranges can resume a download")]
    UnknownUnit { unit: String },
    /// `last < first`.
    #[error("Content-Range ends ({last}) before it starts ({first}); the server sent an invalid range")]
    LastBeforeFirst { first: u64, last: u64 },
    /// `last >= complete`.
    #[error("Content-Range ends at byte {last}, beyond the {complete}-byte total it states")]
    LastBeyondComplete { last: u64, complete: u64 },

    /// 206 without `Content-Range`.
    #[error("206 Partial Content without a Content-Range header; cannot tell where the bytes belong")]
    MissingContentRange,
    /// 206 carrying `bytes */size`.
    #[error("206 Partial Content with an unsatisfied range ({range}); the server contradicts itself")]
    NotARange { range: ContentRange },
    /// 206 not starting at the requested offset.
    #[error("206 starts at byte {got}, but byte {expected} was requested; refusing to append it")]
    WrongStart { expected: u64, got: u64 },
    /// 206 not ending at the last byte of the blob.
    #[error("206 ends at byte {got}, but the blob ends at byte {expected}; refusing a partial tail")]
    WrongEnd { expected: u64, got: u64 },
    /// 206 whose total differs from the descriptor size.
    #[error(
        "206 states a total of {} bytes, but the descriptor says {expected}; the server holds a \
         different blob",
        got.map_or_else(|| "unknown".to_string(), |g| g.to_string())
    )]
    WrongTotal { expected: u64, got: Option<u64> },
    /// `Content-Length` is below the bytes still expected.
    #[error(
        "Content-Length {got} is less than the {expected} bytes expected from this response; \
         refusing the body"
    )]
    ContentLengthMismatch { expected: u64, got: u64 },
    /// A status that carries no blob body (the caller should not ask).
    #[error("HTTP {status} is not a blob body (expected 200, 206 or 416)")]
    UnexpectedStatus { status: u16 },

    /// The partial file is longer than the blob: start over.
    #[error("partial file holds {offset} bytes but the blob has {size}; discarding it and starting over")]
    OffsetBeyondSize { offset: u64, size: u64 },
    /// 416 for an offset inside the blob: start over.
    #[error(
        "the server cannot serve bytes from {offset} of a {size}-byte blob (416, server total {}); \
         discarding the partial file and starting over",
        complete.map_or_else(|| "not given".to_string(), |c| c.to_string())
    )]
    NotSatisfiable {
        offset: u64,
        size: u64,
        complete: Option<u64>,
    },
}

/// Parse a `Content-Range` value. The unit is case-insensitive; surrounding whitespace is
/// ignored.
pub fn parse_content_range(v: &str) -> Result<ContentRange, RangeError> {
    let malformed = || RangeError::Malformed {
        value: v.chars().take(100).collect(),
    };
    let s = v.trim();
    let (unit, rest) = s.split_once(' ').ok_or_else(malformed)?;
    if !unit.eq_ignore_ascii_case("bytes") {
        if unit.is_empty() || unit.contains(['=', '/', '-']) {
            return Err(malformed());
        }
        return Err(RangeError::UnknownUnit {
            unit: unit.chars().take(32).collect(),
        });
    }
    let (range, complete) = rest
        .trim_start_matches(' ')
        .split_once('/')
        .ok_or_else(malformed)?;
    if range == "*" {
        let complete = number(complete).ok_or_else(malformed)?;
        return Ok(ContentRange::Unsatisfied { complete });
    }
    let (first, last) = range.split_once('-').ok_or_else(malformed)?;
    let (first, last) = (
        number(first).ok_or_else(malformed)?,
        number(last).ok_or_else(malformed)?,
    );
    let complete = match complete {
        "*" => None,
        c => Some(number(c).ok_or_else(malformed)?),
    };
    if last < first {
        return Err(RangeError::LastBeforeFirst { first, last });
    }
    if let Some(complete) = complete
        && last >= complete
    {
        return Err(RangeError::LastBeyondComplete { last, complete });
    }
    Ok(ContentRange::Bytes {
        first,
        last,
        complete,
    })
}

/// Digits only (no sign, no spaces), within `u64`.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What a response means for a partial download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// Append the body at the requested offset (at 0: a fresh download).
    Continue,
    /// 200 to a range request: the body starts at byte 0. Either discard `offset` bytes
    /// of it and continue, or truncate the partial file and store it all; either way the
    /// hash must cover exactly the bytes stored.
    ServerIgnoredRange,
    /// 416 at `offset == size`: nothing left to fetch; verify the partial file (size and
    /// digest) and commit it, or start over if verification fails.
    AlreadyComplete,
    /// Truncate the partial file and start again from 0.
    Restart(RangeError),
    /// The response contradicts the request or the descriptor: store none of it, close the
    /// connection, and treat it as a failed attempt (a fresh redirect next time).
    Invalid(RangeError),
}

/// Decide whether a response to a blob GET continues the partial download.
///
/// `requested_offset` = bytes already stored (the request carried `Range: bytes=<offset>-`
/// when it is above 0), `size` = descriptor size, `status`, and the response's
/// `Content-Range` and `Content-Length`. Rules: a 206 must say `bytes <offset>-<size-1>/<size>`;
/// a 200 to a range request means the range was ignored; a 416 at `offset == size` means
/// complete, any other 416 means start over; an offset beyond the size means start over; a
/// `Content-Length` below the bytes this response should carry is invalid (one above is
/// read only as far as the blob goes: see [`announced_excess`]).
pub fn resume_check(
    requested_offset: u64,
    size: u64,
    status: u16,
    content_range: Option<&str>,
    content_length: Option<u64>,
) -> ResumeOutcome {
    let offset = requested_offset;
    if offset > size {
        return ResumeOutcome::Restart(RangeError::OffsetBeyondSize { offset, size });
    }
    let length_ok = |expected: u64| match content_length {
        Some(got) if got < expected => Err(RangeError::ContentLengthMismatch { expected, got }),
        _ => Ok(()),
    };
    let outcome = match status {
        200 => length_ok(size).map(|()| {
            if offset == 0 {
                ResumeOutcome::Continue
            } else {
                ResumeOutcome::ServerIgnoredRange
            }
        }),
        206 => check_partial(offset, size, content_range)
            .and_then(|()| length_ok(size - offset))
            .map(|()| ResumeOutcome::Continue),
        416 if offset == size => Ok(ResumeOutcome::AlreadyComplete),
        416 => {
            let complete = content_range.and_then(|v| match parse_content_range(v) {
                Ok(ContentRange::Unsatisfied { complete }) => Some(complete),
                Ok(ContentRange::Bytes { complete, .. }) => complete,
                Err(_) => None,
            });
            Ok(ResumeOutcome::Restart(RangeError::NotSatisfiable {
                offset,
                size,
                complete,
            }))
        }
        status => Err(RangeError::UnexpectedStatus { status }),
    };
    outcome.unwrap_or_else(ResumeOutcome::Invalid)
}

/// Bytes a response announces (`Content-Length`) beyond the `expected` ones the blob still
/// needs from it: the caller reads `expected` bytes and ignores the rest. 0 when the length
/// is unknown or not longer.
pub fn announced_excess(expected: u64, content_length: Option<u64>) -> u64 {
    content_length.map_or(0, |len| len.saturating_sub(expected))
}

/// A 206 must cover exactly `offset..size` of a `size`-byte blob.
fn check_partial(offset: u64, size: u64, content_range: Option<&str>) -> Result<(), RangeError> {
    let range = parse_content_range(content_range.ok_or(RangeError::MissingContentRange)?)?;
    let ContentRange::Bytes {
        first,
        last,
        complete,
    } = range
    else {
        return Err(RangeError::NotARange { range });
    };
    if first != offset {
        return Err(RangeError::WrongStart {
            expected: offset,
            got: first,
        });
    }
    if complete != Some(size) {
        return Err(RangeError::WrongTotal {
            expected: size,
            got: complete,
        });
    }
    // `last < complete == size` was checked by the parser, so `size >= 1` here.
    if last != size - 1 {
        return Err(RangeError::WrongEnd {
            expected: size - 1,
            got: last,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
