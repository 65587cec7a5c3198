//! Support code for `tests/real_registry.rs`: the processes, servers, images and log
//! parsers a real-registry test world is made of. See [`world`] for the picture.
// Some fields exist for the Debug output of failing assertions.
#![allow(dead_code)]

pub mod distribution;
pub mod net;
pub mod nginx;
pub mod oci_image;
pub mod pki;
pub mod proc;
pub mod tokens;
pub mod tools;
pub mod world;
