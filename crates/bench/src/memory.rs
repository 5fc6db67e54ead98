//! Peak heap measurement for examples and benchmarks.
//!
//! A binary opts in by installing the counting allocator:
//! ```no_run
//! #[global_allocator]
//! static ALLOC: polysketch_bench::memory::CountingAlloc = polysketch_bench::memory::CountingAlloc::new();
//! # fn main() {}
//! ```
//! then brackets a piece of work with [`CountingAlloc::reset_peak`] and
//! [`CountingAlloc::peak_since_reset`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes currently allocated and their peak.
#[derive(Debug)]
pub struct CountingAlloc {
    current: AtomicUsize,
    peak: AtomicUsize,
}

impl CountingAlloc {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self { current: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }

    /// Bytes allocated now.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Starts a new measurement: the peak becomes the current allocation.
    pub fn reset_peak(&self) {
        self.peak.store(self.current(), Ordering::Relaxed);
    }

    /// Largest allocation total since the last [`reset_peak`](Self::reset_peak), minus what was
    /// allocated at that reset: the extra memory the work in between needed at its peak.
    pub fn peak_since_reset(&self, baseline: usize) -> usize {
        self.peak.load(Ordering::Relaxed).saturating_sub(baseline)
    }
}

impl Default for CountingAlloc {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are only
// bookkeeping and never affect the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = self.current.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator (so by `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        self.current.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = self.current.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc` and `dealloc`; the caller upholds `realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = self.current.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + new_size
                    - layout.size();
                self.peak.fetch_max(now, Ordering::Relaxed);
            } else {
                self.current.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

static METER: std::sync::OnceLock<&'static CountingAlloc> = std::sync::OnceLock::new();

/// Makes `alloc` (the program's global allocator) the meter of the benchmarks' peak columns.
/// The first call wins.
pub fn install_meter(alloc: &'static CountingAlloc) {
    let _ = METER.set(alloc);
}

/// The installed meter, if the program has one (see [`install_meter`]).
pub fn meter() -> Option<&'static CountingAlloc> {
    METER.get().copied()
}
