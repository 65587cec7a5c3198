//! Which TLS bulk cipher edgepull asks for first, from what the CPU can do. Pure: the caller
//! detects the CPU's features and passes what it found.
//!
//! Every byte of a blob is decrypted once, so the bulk cipher is most of a pull's CPU on a
//! board. With AES and carry-less multiply instructions (x86-64 AES-NI + PCLMULQDQ, ARMv8
//! AES + PMULL) AES-GCM is the cheapest, and AES-128 does 10 rounds to AES-256's 14. Without
//! them (Raspberry Pi 4's Cortex-A72, and every 32-bit ARM build: ring uses no AES hardware
//! there) AES runs as constant-time software and GHASH as software multiplication, and
//! ChaCha20-Poly1305 costs less: the order BoringSSL and Go's crypto/tls use. The client's
//! order is a preference; a server that enforces its own keeps its choice.
//!
//! Must never drop a suite (the order changes, the set offered does not), nor prefer a
//! cipher because of a CPU it did not see: no information means no AES hardware.

/// The bulk ciphers TLS 1.2 and 1.3 offer edgepull (with ring as rustls' provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bulk {
    Aes128Gcm,
    Aes256Gcm,
    ChaCha20Poly1305,
}

/// The bulk ciphers, most preferred first, for a CPU with (`true`) or without AES-GCM
/// instructions.
pub fn preference(aes_gcm_hardware: bool) -> [Bulk; 3] {
    if aes_gcm_hardware {
        [Bulk::Aes128Gcm, Bulk::Aes256Gcm, Bulk::ChaCha20Poly1305]
    } else {
        [Bulk::ChaCha20Poly1305, Bulk::Aes128Gcm, Bulk::Aes256Gcm]
    }
}

/// Where `bulk` stands in [`preference`] (0 = first).
pub fn rank(bulk: Bulk, aes_gcm_hardware: bool) -> usize {
    preference(aes_gcm_hardware)
        .iter()
        .position(|b| *b == bulk)
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preference_by_cpu() {
        use Bulk::*;
        let cases = [
            (true, [Aes128Gcm, Aes256Gcm, ChaCha20Poly1305]),
            (false, [ChaCha20Poly1305, Aes128Gcm, Aes256Gcm]),
        ];
        for (hw, want) in cases {
            assert_eq!(preference(hw), want, "aes hardware {hw}");
            for (i, b) in want.iter().enumerate() {
                assert_eq!(rank(*b, hw), i);
            }
        }
    }

    #[test]
    fn every_order_offers_every_cipher() {
        for hw in [true, false] {
            let p = preference(hw);
            for b in [Bulk::Aes128Gcm, Bulk::Aes256Gcm, Bulk::ChaCha20Poly1305] {
                assert!(p.contains(&b), "{b:?} missing with aes hardware {hw}");
            }
        }
    }
}
