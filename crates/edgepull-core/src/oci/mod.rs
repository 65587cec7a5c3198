//! Types from the OCI image and distribution specs: digests, references, platforms and
//! manifest documents. Pure parsing and validation; no IO.

pub mod cpuinfo;
pub mod digest;
pub mod manifest;
pub mod platform;
pub mod reference;
pub mod sizes;

pub use digest::{Digest, DigestError, Hasher};
pub use manifest::{Descriptor, Document, ImageIndex, ImageManifest};
pub use platform::Platform;
pub use reference::Reference;
