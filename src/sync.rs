//! Locks that stay usable after a panic. A thread that panics while holding one of the
//! server's locks (an app's exception never does: those are caught as Python errors) leaves
//! data that is still whole, since every critical section here only moves counters and
//! handles; refusing it would turn one bad request into a server that answers nothing.

use std::sync::{LockResult, PoisonError};

/// The guard of a lock (or of a condition variable's wait), poisoned or not.
pub trait Recover<G> {
    fn recover(self) -> G;
}

impl<G> Recover<G> for LockResult<G> {
    fn recover(self) -> G {
        self.unwrap_or_else(PoisonError::into_inner)
    }
}
