//! Which worker thread this code runs on. Each worker keeps its own shared upstream pools, so
//! a pool is looked up by the calling worker's index; the workers (in `proxy`) set it when
//! they start.

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker this code runs on (0 outside workers).
pub fn current() -> usize {
    WORKER.with(|w| w.get())
}

/// Marks the calling thread as worker `index`.
pub fn set_current(index: usize) {
    WORKER.with(|w| w.set(index));
}
