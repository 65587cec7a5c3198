//! How many blobs of one image download at once: the `concurrency` setting counts slots
//! for large blobs, and small blobs share a slot. Pure: no IO.
//!
//! A small blob's time goes to round trips (the login server's redirect, the data
//! endpoint's reply, two fsyncs), not to bytes, so a slot per small blob leaves the link
//! idle between them; a large blob's time goes to bytes, where more streams only divide
//! the same link. So a blob of at most [`SMALL_BLOB_BYTES`] takes one of
//! [`SHARES_PER_SLOT`] shares of a slot, and a larger one takes a whole slot: at most
//! `concurrency` large blobs, or `concurrency × SHARES_PER_SLOT` small ones, are in flight; `concurrency` 1 stays strictly
//! serial.
//!
//! Must never let more than `concurrency` large blobs run at once (the setting is the
//! operator's cap on streams that carry the bulk of the bytes), nor return 0 permits.

/// The largest blob that counts as small: one resume checkpoint's worth (see
/// [`crate::resume::DEFAULT_CHECKPOINT_BYTES`]), so a small blob never checkpoints.
pub const SMALL_BLOB_BYTES: u64 = crate::resume::DEFAULT_CHECKPOINT_BYTES;

/// Small blobs that share one slot.
pub const SHARES_PER_SLOT: u32 = 4;

/// The permits of the pool for `concurrency` slots. `concurrency` 1 (or 0) is one blob at
/// a time, whatever its size: an operator who asks for one stream gets one.
pub fn permits(concurrency: usize) -> u32 {
    if concurrency <= 1 {
        return 1;
    }
    u32::try_from(concurrency)
        .unwrap_or(u32::MAX / SHARES_PER_SLOT)
        .min(u32::MAX / SHARES_PER_SLOT)
        * SHARES_PER_SLOT
}

/// The permits a blob of `size` bytes holds while it downloads, out of
/// [`permits`]`(concurrency)`.
pub fn weight(size: u64, concurrency: usize) -> u32 {
    if concurrency <= 1 || size <= SMALL_BLOB_BYTES {
        1
    } else {
        SHARES_PER_SLOT
    }
}

/// The most blobs in flight at once (all of them small).
pub fn max_in_flight(concurrency: usize) -> usize {
    permits(concurrency) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn weights_and_permits() {
        // (size, weight with concurrency 3)
        let weights = [
            (0, 1),
            (64 * 1024, 1),
            (SMALL_BLOB_BYTES, 1),
            (SMALL_BLOB_BYTES + 1, SHARES_PER_SLOT),
            (1024 * MIB, SHARES_PER_SLOT),
            (u64::MAX, SHARES_PER_SLOT),
        ];
        for (size, want) in weights {
            assert_eq!(weight(size, 3), want, "weight({size}, 3)");
            assert_eq!(weight(size, 1), 1, "weight({size}, 1): serial");
        }
        // (concurrency, permits, large blobs at once, small blobs at once)
        let pools = [
            (0, 1, 1, 1),
            (1, 1, 1, 1),
            (2, 8, 2, 8),
            (3, 12, 3, 12),
            (16, 64, 16, 64),
            (
                usize::MAX,
                u32::MAX / 4 * 4,
                (u32::MAX / 4) as usize,
                (u32::MAX / 4 * 4) as usize,
            ),
        ];
        for (concurrency, want, large, small) in pools {
            let p = permits(concurrency);
            assert_eq!(p, want, "permits({concurrency})");
            assert_eq!(
                (p / weight(u64::MAX, concurrency)) as usize,
                large,
                "large blobs at {concurrency}"
            );
            assert_eq!(
                (p / weight(1, concurrency)) as usize,
                small,
                "small blobs at {concurrency}"
            );
            assert_eq!(max_in_flight(concurrency), small);
        }
        assert_eq!(
            SMALL_BLOB_BYTES,
            4 * MIB,
            "a small blob never reaches a checkpoint"
        );
    }
}
