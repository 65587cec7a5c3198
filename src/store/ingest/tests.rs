//! Unit tests of the ingest's on-disk helpers.

use std::fs::{self, File};

use super::disk::{CHECKPOINT, HASH_BUF, parse_dir_name, read_checkpoint, write_checkpoint};
use super::hash_prefix;
use crate::store::StoreError;
use edgepull_core::oci::Digest;

#[test]
fn dir_names_parse_only_valid_digests() {
    let d = Digest::of(b"x");
    assert_eq!(parse_dir_name(format!("sha256-{}", d.hex()).as_ref()), Some(d));
    assert_eq!(parse_dir_name("sha256-../../etc".as_ref()), None);
    assert_eq!(parse_dir_name(d.hex().as_ref()), None);
}

#[test]
fn checkpoint_files_round_trip_and_bad_ones_read_as_none() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(read_checkpoint(dir.path()).unwrap(), Some(0));
    write_checkpoint(dir.path(), 12345, &crate::store::fsio::WriteBudget::default()).unwrap();
    assert_eq!(read_checkpoint(dir.path()).unwrap(), Some(12345));
    fs::write(dir.path().join(CHECKPOINT), b"12x").unwrap();
    assert_eq!(read_checkpoint(dir.path()).unwrap(), None);
}

#[test]
fn hash_prefix_covers_exactly_len_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    let body: Vec<u8> = (0..(HASH_BUF * 2 + 17)).map(|i| i as u8).collect();
    fs::write(&p, &body).unwrap();
    let mut f = File::open(&p).unwrap();
    let n = HASH_BUF + 5;
    let h = hash_prefix(&mut f, n as u64, &p).unwrap();
    assert_eq!(h.finish(), Digest::of(&body[..n]));
    let mut f = File::open(&p).unwrap();
    let Err(err) = hash_prefix(&mut f, body.len() as u64 + 1, &p) else {
        panic!("hashing past the end must fail")
    };
    assert!(matches!(err, StoreError::Io { op: "read", .. }), "{err:?}");
}
