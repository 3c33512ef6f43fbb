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

/// The SHA-256 digest of `data` as 64 lowercase hex digits, the way digests are usually
/// written into records.
///
/// ```
/// let hex = weir_sdk::digest::sha256_hex(b"abc");
/// assert_eq!(&hex[..8], "ba7816bf");
/// ```
pub fn sha256_hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // A fixed-size buffer rather than a push per digit: the compiler unrolls this loop, and
    // a wasm loop pays a time check per turn.
    let mut text = [0u8; 64];
    for (pair, b) in text.chunks_exact_mut(2).zip(sha256(data)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
    crate::json::utf8(&text)
        .expect("hex digits are ASCII")
        .to_owned()
}
