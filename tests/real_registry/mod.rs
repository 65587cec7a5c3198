//! Support code for `tests/real_registry.rs`: the processes, servers, images and log
//! parsers a real-registry test world is made of. See [`world`] for the picture.
// Some fields exist for the Debug output of failing assertions.
#![allow(dead_code)]

pub(crate) mod distribution;
pub(crate) mod net;
pub(crate) mod nginx;
pub(crate) mod oci_image;
pub(crate) mod pki;
pub(crate) mod proc;
pub(crate) mod proxy;
pub(crate) mod relay;
pub(crate) mod tokens;
pub(crate) mod tools;
pub(crate) mod world;
