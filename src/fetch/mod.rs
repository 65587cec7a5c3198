//! Resumable, verified blob download. This layer holds the pure decisions: when to retry
//! and how long to wait (`policy`), and whether a response continues a partial download
//! (`range`). Must never do IO itself in these modules; the download loop calls them.

pub mod policy;
