//! Digests of bytes, computed by the host in a component.
//!
//! SHA-256 compiled to wasm runs several times slower than the host's, which uses the CPU's SHA
//! instructions where it has them; the bytes are the same either way. Natively (in `cargo test`)
//! the SDK computes them itself.

/// The SHA-256 digest of `data`.
///
/// ```
/// let digest = weir_sdk::digest::sha256(b"abc");
/// assert_eq!(digest[..4], [0xba, 0x78, 0x16, 0xbf]);
/// ```
pub fn sha256(data: &[u8]) -> [u8; 32] {
    #[cfg(target_arch = "wasm32")]
    {
        crate::__rt::with_host(|h| h.sha256(data))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use sha2::Digest;
        sha2::Sha256::digest(data).into()
    }
}
