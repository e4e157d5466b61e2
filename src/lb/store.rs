//! The memory a table lives in: its own heap allocation, or memory that `io` keeps mapped
//! for the rest of the process (a state file on tmpfs, so that the next xlb finds the flow
//! and SNAT tables where this one left them: `io::state`).
//!
//! A leaf with no unsafe: `io` hands over the mapped memory as a `&'static mut` slice, which
//! it never unmaps, and vouches (in its own `unsafe`) that every bit pattern found there is
//! a valid `T`.

use std::ops::{Deref, DerefMut};

/// Where a table's slots are.
#[derive(Debug)]
pub enum Store<T: 'static> {
    /// A heap allocation of its own (freed with the table).
    Heap(Box<[T]>),
    /// Memory that stays mapped for the rest of the process (outlives the table).
    Kept(&'static mut [T]),
}

impl<T> Store<T> {
    /// Whether the slots are kept memory (a state file), not heap.
    pub fn is_kept(&self) -> bool {
        matches!(self, Store::Kept(_))
    }
}

impl<T> Deref for Store<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        match self {
            Store::Heap(b) => b,
            Store::Kept(s) => s,
        }
    }
}

impl<T> DerefMut for Store<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Store::Heap(b) => b,
            Store::Kept(s) => s,
        }
    }
}
