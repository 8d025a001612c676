//! A counting allocator: live heap bytes of the threads that count. Servers
//! run on runtimes whose threads are marked, so that only the clients'
//! memory is measured. Counting is off until [`start_counting`]: one shared
//! counter updated from several threads on every allocation would slow the
//! throughput and latency parts down, more for a reader whose allocations
//! and frees happen on different threads than for one that stays on one.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

thread_local! {
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

static LIVE: AtomicIsize = AtomicIsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

/// Counts from now on (for the memory part; never turned off again).
pub fn start_counting() {
    COUNTING.store(true, Ordering::SeqCst);
}

/// The global allocator of the benchmark binary.
pub struct Counting;

fn counted() -> bool {
    COUNTING.load(Ordering::Relaxed) && UNCOUNTED.try_with(|u| !u.get()).unwrap_or(false)
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter is only arithmetic on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && counted() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if counted() {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && counted() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
}

/// Live heap bytes allocated by counted threads.
pub fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A multi-threaded runtime whose threads are not counted: for servers.
pub fn server_runtime(threads: usize) -> tokio::runtime::Runtime {
    uncounted_runtime(threads)
}

/// A multi-threaded runtime whose threads are not counted: for whatever is
/// not measured (servers in the client parts, clients in the server part).
pub fn uncounted_runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .on_thread_start(|| UNCOUNTED.with(|u| u.set(true)))
        .enable_all()
        .build()
        .expect("a server runtime")
}
