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

/// Blocks up to this size, in steps of [`GRAIN`], are pooled by [`Pools`].
const POOLED: usize = 1024;
const GRAIN: usize = 16;
const CLASSES: usize = POOLED / GRAIN;

/// An allocator that keeps freed small blocks in a free list per size class (16, 32, … 1024
/// bytes) and hands them out again first, over a general allocator for everything else.
///
/// A plugin allocates and frees the same few sizes again and again, record after record;
/// popping a free list costs a few instructions where a general allocator works out a bin
/// and splits or merges blocks (a wasm call of its own, and in wasm every call checks the time
/// limit). The price: pooled blocks stay in their class once freed, so a plugin's small blocks
/// only ever take as much memory as it once held at a time.
///
/// Only for a single thread: a plugin instance runs on one, and this is the allocator of
/// components only (natively it is only tested).
pub struct Pools<A> {
    /// The first free block of each class; each free block starts with a pointer to the next.
    free: std::cell::UnsafeCell<[*mut u8; CLASSES]>,
    backing: A,
}

// SAFETY: components have one thread (see above); nothing else shares a `Pools`.
unsafe impl<A: Sync> Sync for Pools<A> {}

impl<A> Pools<A> {
    pub const fn new(backing: A) -> Self {
        Pools {
            free: std::cell::UnsafeCell::new([std::ptr::null_mut(); CLASSES]),
            backing,
        }
    }

    /// The size class of `layout`, if it is pooled.
    fn class(layout: std::alloc::Layout) -> Option<usize> {
        (layout.size() <= POOLED && layout.align() <= GRAIN)
            .then(|| layout.size().saturating_sub(1) / GRAIN)
    }
}

unsafe impl<A: std::alloc::GlobalAlloc> std::alloc::GlobalAlloc for Pools<A> {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let Some(class) = Self::class(layout) else {
            return self.backing.alloc(layout);
        };
        let free = &mut *self.free.get();
        let block = free[class];
        if block.is_null() {
            // Every block of a class has the class's whole size, so any freed one fits.
            let size = (class + 1) * GRAIN;
            return self
                .backing
                .alloc(std::alloc::Layout::from_size_align_unchecked(size, GRAIN));
        }
        free[class] = *(block as *mut *mut u8);
        block
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        let Some(class) = Self::class(layout) else {
            return self.backing.dealloc(ptr, layout);
        };
        let free = &mut *self.free.get();
        *(ptr as *mut *mut u8) = free[class];
        free[class] = ptr;
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        let new = std::alloc::Layout::from_size_align_unchecked(size, layout.align());
        match (Self::class(layout), Self::class(new)) {
            (Some(a), Some(b)) if a == b => ptr,
            (None, None) => self.backing.realloc(ptr, layout, size),
            _ => {
                let moved = self.alloc(new);
                if !moved.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(size));
                    self.dealloc(ptr, layout);
                }
                moved
            }
        }
    }
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

    #[test]
    fn pools_keep_every_block_apart_and_its_bytes_whole() {
        use std::alloc::{GlobalAlloc, Layout, System};
        let pools = Pools::new(System);
        let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
        let mut next = move |n: usize| rng.usize(..n);
        // (block, layout, fill byte)
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        for step in 0..20_000 {
            let fill = step as u8;
            match next(3) {
                0 if !live.is_empty() => {
                    let (ptr, layout, byte) = live.swap_remove(next(live.len()));
                    let bytes = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
                    assert!(bytes.iter().all(|&b| b == byte), "block kept its bytes");
                    unsafe { pools.dealloc(ptr, layout) };
                }
                1 if !live.is_empty() => {
                    let i = next(live.len());
                    let (ptr, layout, byte) = live[i];
                    let size = 1 + next(2_000);
                    let ptr = unsafe { pools.realloc(ptr, layout, size) };
                    assert!(!ptr.is_null());
                    let kept = unsafe { std::slice::from_raw_parts(ptr, layout.size().min(size)) };
                    assert!(kept.iter().all(|&b| b == byte), "realloc kept the bytes");
                    unsafe { std::ptr::write_bytes(ptr, fill, size) };
                    live[i] = (
                        ptr,
                        Layout::from_size_align(size, layout.align()).unwrap(),
                        fill,
                    );
                }
                _ => {
                    let layout = Layout::from_size_align(1 + next(2_000), 1 << next(6)).unwrap();
                    let ptr = unsafe { pools.alloc(layout) };
                    assert!(!ptr.is_null());
                    assert_eq!(ptr as usize % layout.align(), 0, "aligned");
                    unsafe { std::ptr::write_bytes(ptr, fill, layout.size()) };
                    live.push((ptr, layout, fill));
                }
            }
        }
        for (ptr, layout, byte) in live {
            let bytes = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            assert!(bytes.iter().all(|&b| b == byte));
            unsafe { pools.dealloc(ptr, layout) };
        }
    }
}
