//! `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp` for plugins, in place of the standard
//! library's.
//!
//! With wasm's bulk-memory instructions, LLVM turns every copy of a length it does not know
//! into `memory.copy`, and wasmtime runs that as a call out to the host: a fixed cost of a
//! few dozen nanoseconds, more than the copy itself for the field-sized copies a plugin mostly
//! makes. `weir build` therefore compiles plugins without bulk memory, so LLVM calls these
//! functions instead. Up to 64 bytes they copy with a few overlapping loads and stores and no
//! loop (in wasm each turn of a loop also checks the time limit); longer copies go 32 bytes a
//! turn. (A function of its own with bulk memory enabled cannot keep `memory.copy` for the
//! long ones: wasm has no per-function features, so LLVM would then use it everywhere.) Loads
//! come before the stores they could overlap, so `memcpy` and `memmove` are one function.
//!
//! The standard library's versions are weak symbols, so these replace them at link time. They
//! are exported under those names in wasm32 only; natively the platform's libc serves and
//! these are tested against it.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use core::ptr::{read_unaligned as load, write_unaligned as store};

/// Copies and fills up to this many bytes are done without a loop.
const INLINE_MAX: usize = 64;

#[cfg_attr(target_arch = "wasm32", no_mangle)]
unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    copy(dst, src, n);
    dst
}

#[cfg_attr(target_arch = "wasm32", no_mangle)]
unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    copy(dst, src, n);
    dst
}

#[inline(always)]
unsafe fn copy(dst: *mut u8, src: *const u8, n: usize) {
    if n > INLINE_MAX {
        return copy_long(dst, src, n);
    }
    if n >= 16 {
        // The first and last 16 (and, past 32, 32) bytes: together they cover all n.
        let (a, b) = (load(src as *const u64), load(src.add(8) as *const u64));
        let (c, d) = (
            load(src.add(n - 16) as *const u64),
            load(src.add(n - 8) as *const u64),
        );
        if n > 32 {
            let (e, f) = (
                load(src.add(16) as *const u64),
                load(src.add(24) as *const u64),
            );
            let g = load(src.add(n - 32) as *const u64);
            let h = load(src.add(n - 24) as *const u64);
            store(dst.add(16) as *mut u64, e);
            store(dst.add(24) as *mut u64, f);
            store(dst.add(n - 32) as *mut u64, g);
            store(dst.add(n - 24) as *mut u64, h);
        }
        store(dst as *mut u64, a);
        store(dst.add(8) as *mut u64, b);
        store(dst.add(n - 16) as *mut u64, c);
        store(dst.add(n - 8) as *mut u64, d);
    } else if n >= 8 {
        let (a, b) = (load(src as *const u64), load(src.add(n - 8) as *const u64));
        store(dst as *mut u64, a);
        store(dst.add(n - 8) as *mut u64, b);
    } else if n >= 4 {
        let (a, b) = (load(src as *const u32), load(src.add(n - 4) as *const u32));
        store(dst as *mut u32, a);
        store(dst.add(n - 4) as *mut u32, b);
    } else if n >= 2 {
        let (a, b) = (load(src as *const u16), load(src.add(n - 2) as *const u16));
        store(dst as *mut u16, a);
        store(dst.add(n - 2) as *mut u16, b);
    } else if n == 1 {
        *dst = *src;
    }
}

/// Longer copies, 32 bytes a turn. The first (or last) 32 bytes are loaded before any store
/// and stored last, and the turns run away from the overlap (forward when `dst` is below `src`,
/// backward otherwise), so no byte is stored before it is loaded.
#[inline(never)]
unsafe fn copy_long(dst: *mut u8, src: *const u8, n: usize) {
    if (dst as usize) <= (src as usize) {
        let end = load32(src.add(n - 32));
        let mut i = 0;
        while i + 32 < n {
            store32(dst.add(i), load32(src.add(i)));
            i += 32;
        }
        store32(dst.add(n - 32), end);
    } else {
        let start = load32(src);
        let mut i = n;
        while i > 32 {
            i -= 32;
            store32(dst.add(i), load32(src.add(i)));
        }
        store32(dst, start);
    }
}

#[inline(always)]
unsafe fn load32(p: *const u8) -> [u64; 4] {
    let p = p as *const u64;
    [load(p), load(p.add(1)), load(p.add(2)), load(p.add(3))]
}

#[inline(always)]
unsafe fn store32(p: *mut u8, v: [u64; 4]) {
    let p = p as *mut u64;
    store(p, v[0]);
    store(p.add(1), v[1]);
    store(p.add(2), v[2]);
    store(p.add(3), v[3]);
}

#[cfg_attr(target_arch = "wasm32", no_mangle)]
unsafe extern "C" fn memset(dst: *mut u8, byte: i32, n: usize) -> *mut u8 {
    let v = u64::from(byte as u8) * 0x0101_0101_0101_0101;
    if n > INLINE_MAX {
        let mut i = 0;
        while i + 32 < n {
            store32(dst.add(i), [v; 4]);
            i += 32;
        }
        store32(dst.add(n - 32), [v; 4]);
        return dst;
    }
    if n >= 16 {
        if n > 32 {
            store(dst.add(16) as *mut u64, v);
            store(dst.add(24) as *mut u64, v);
            store(dst.add(n - 32) as *mut u64, v);
            store(dst.add(n - 24) as *mut u64, v);
        }
        store(dst as *mut u64, v);
        store(dst.add(8) as *mut u64, v);
        store(dst.add(n - 16) as *mut u64, v);
        store(dst.add(n - 8) as *mut u64, v);
    } else if n >= 8 {
        store(dst as *mut u64, v);
        store(dst.add(n - 8) as *mut u64, v);
    } else if n >= 4 {
        store(dst as *mut u32, v as u32);
        store(dst.add(n - 4) as *mut u32, v as u32);
    } else if n >= 2 {
        store(dst as *mut u16, v as u16);
        store(dst.add(n - 2) as *mut u16, v as u16);
    } else if n == 1 {
        *dst = byte as u8;
    }
    dst
}

/// Compares eight bytes a turn; the standard library's compares one (slice and string
/// equality, map key lookups and sorting all end up here).
#[cfg_attr(target_arch = "wasm32", no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i + 8 <= n {
        let (x, y) = (load(a.add(i) as *const u64), load(b.add(i) as *const u64));
        if x != y {
            // Bytes in memory order are a big-endian number.
            return if x.swap_bytes() < y.swap_bytes() {
                -1
            } else {
                1
            };
        }
        i += 8;
    }
    while i < n {
        let (x, y) = (*a.add(i), *b.add(i));
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

#[cfg_attr(target_arch = "wasm32", no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    memcmp(a, b, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn copies_every_length_at_every_overlap() {
        for n in 0..200 {
            for shift in [
                -70isize, -33, -32, -17, -8, -1, 0, 1, 5, 8, 16, 31, 32, 65, 300,
            ] {
                let mut buf = pattern(1000);
                let mut want = buf.clone();
                let (src, dst) = (400usize, (400 + shift) as usize);
                want.copy_within(src..src + n, dst);
                unsafe { memmove(buf.as_mut_ptr().add(dst), buf.as_ptr().add(src), n) };
                assert_eq!(buf, want, "n {n}, shift {shift}");
            }
        }
    }

    #[test]
    fn fills_every_length() {
        for n in 0..200 {
            let mut buf = pattern(260);
            let mut want = buf.clone();
            want[30..30 + n].fill(0xA5);
            unsafe { memset(buf.as_mut_ptr().add(30), 0x1A5, n) };
            assert_eq!(buf, want, "n {n}");
        }
    }

    #[test]
    fn compares_as_bytes_do() {
        for n in 0..40 {
            let a = pattern(n);
            assert_eq!(unsafe { memcmp(a.as_ptr(), a.clone().as_ptr(), n) }, 0);
            for at in 0..n {
                for delta in [1u8, 0x80, 0xFF] {
                    let mut b = a.clone();
                    b[at] = b[at].wrapping_add(delta);
                    let got = unsafe { memcmp(a.as_ptr(), b.as_ptr(), n) };
                    assert_eq!(
                        got.signum(),
                        a.cmp(&b) as i32,
                        "n {n}, at {at}, delta {delta}"
                    );
                    assert_ne!(unsafe { bcmp(b.as_ptr(), a.as_ptr(), n) }, 0);
                }
            }
        }
    }
}
