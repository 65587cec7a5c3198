//! Resumable, verified blob download.
//!
//! `policy` (retry or give up, and how long to wait) and `range` (does this response
//! continue the partial file) are pure decisions: they must never do IO, read the clock or
//! draw random numbers. The download loop does the IO and asks them.

pub mod policy;
pub mod range;
