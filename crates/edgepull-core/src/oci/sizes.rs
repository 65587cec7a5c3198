//! The sizes a manifest claims for its blobs, checked before anything is planned or
//! downloaded.
//!
//! Owns: [`check_blob_sizes`], the one place descriptor sizes are judged and summed: every
//! size at most the configured per-blob limit, and the total summed with `checked_add`.
//! A manifest is registry input: without this, two layers of 2^63 bytes wrap the total in
//! a release build, the disk budget passes, and the download fills the disk.
//!
//! Must never: sum sizes unchecked, or show a media type unescaped (it is registry text).
//! Negative, fractional and out-of-range sizes never get here: they fail to parse as `u64`
//! in [`super::Document::parse`], and zero sizes are refused there too.

use super::digest::Digest;
use super::manifest::Descriptor;
use crate::text::{SHORT, sanitize};

/// Why a manifest's blob sizes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// One blob is larger than the limit.
    #[error(
        "blob {digest} (media type {media_type:?}) has a size of {size} bytes, over the limit of {limit} bytes per blob"
    )]
    OverLimit {
        digest: Digest,
        media_type: String,
        size: u64,
        limit: u64,
    },
    /// The sizes do not sum within `u64`.
    #[error(
        "blob {digest} (media type {media_type:?}) has a size of {size} bytes, which brings the image's total past {max} bytes (the blobs before it sum to {before}); no device stores that",
        max = u64::MAX
    )]
    TotalOverflow {
        digest: Digest,
        media_type: String,
        size: u64,
        before: u64,
    },
}

/// The total size of `blobs`, when each is at most `max_blob_bytes` and the total fits
/// in `u64`. The first descriptor that breaks a rule is named in the error.
pub fn check_blob_sizes<'a>(
    blobs: impl IntoIterator<Item = &'a Descriptor>,
    max_blob_bytes: u64,
) -> Result<u64, SizeError> {
    let mut total: u64 = 0;
    for d in blobs {
        let media_type = || sanitize(&d.media_type, SHORT);
        if d.size > max_blob_bytes {
            return Err(SizeError::OverLimit {
                digest: d.digest,
                media_type: media_type(),
                size: d.size,
                limit: max_blob_bytes,
            });
        }
        total = total
            .checked_add(d.size)
            .ok_or_else(|| SizeError::TotalOverflow {
                digest: d.digest,
                media_type: media_type(),
                size: d.size,
                before: total,
            })?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    const GIB: u64 = 1 << 30;

    fn d(n: u8, size: u64) -> Descriptor {
        Descriptor::new(LAYER, Digest::of(&[n]), size)
    }

    #[test]
    fn size_table() {
        const HALF: u64 = 1 << 63;
        // (sizes, limit, Ok(total) or Err(index of the named descriptor, overflow?))
        type Case = (&'static [u64], u64, Result<u64, (usize, bool)>);
        let cases: &[Case] = &[
            (&[], 64 * GIB, Ok(0)),
            (&[1, 2, 3], 64 * GIB, Ok(6)),
            (&[64 * GIB], 64 * GIB, Ok(64 * GIB)),
            (&[10, 64 * GIB + 1], 64 * GIB, Err((1, false))),
            // One layer of 2^63 against the default limit.
            (&[HALF], 64 * GIB, Err((0, false))),
            // Two layers of 2^63 each: under a limit that allows them, the sum overflows.
            (&[HALF, HALF], u64::MAX, Err((1, true))),
            (&[HALF, HALF], HALF, Err((1, true))),
            (&[100, u64::MAX], u64::MAX, Err((1, true))),
            (&[u64::MAX], u64::MAX, Ok(u64::MAX)),
            (&[HALF - 1, HALF], HALF, Ok(u64::MAX)),
            // The limit is judged before the sum.
            (&[HALF, HALF + 1], HALF, Err((1, false))),
        ];
        for (sizes, limit, want) in cases {
            let descs: Vec<Descriptor> = sizes.iter().enumerate().map(|(i, s)| d(i as u8, *s)).collect();
            let got = check_blob_sizes(&descs, *limit);
            match (want, &got) {
                (Ok(total), Ok(t)) => assert_eq!(t, total, "{sizes:?}"),
                (
                    Err((i, false)),
                    Err(SizeError::OverLimit {
                        digest,
                        size,
                        limit: l,
                        ..
                    }),
                ) => {
                    assert_eq!(
                        (*digest, *size, *l),
                        (descs[*i].digest, sizes[*i], *limit),
                        "{sizes:?}"
                    );
                }
                (
                    Err((i, true)),
                    Err(SizeError::TotalOverflow {
                        digest, size, before, ..
                    }),
                ) => {
                    assert_eq!((*digest, *size), (descs[*i].digest, sizes[*i]), "{sizes:?}");
                    assert_eq!(*before, sizes[..*i].iter().sum::<u64>(), "{sizes:?}");
                }
                _ => panic!("{sizes:?} limit {limit}: {got:?}"),
            }
        }
    }

    #[test]
    fn errors_name_the_descriptor_and_the_limit_and_escape_the_media_type() {
        let mut bad = d(1, 1 << 63);
        bad.media_type = format!("x\x1b[2J{}", "y".repeat(10_000));
        let e = check_blob_sizes([&bad], 64 * GIB).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&bad.digest.to_string()), "{msg}");
        assert!(msg.contains("9223372036854775808"), "{msg}");
        assert!(msg.contains("68719476736"), "{msg}");
        assert!(!msg.contains('\x1b'), "{msg}");
        assert!(msg.len() < 600, "{msg}");
        let e = check_blob_sizes([&d(1, 1 << 63), &d(2, 1 << 63)], u64::MAX).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("18446744073709551615") && msg.contains(LAYER),
            "{msg}"
        );
    }
}
