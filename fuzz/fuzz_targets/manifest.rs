#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edgepull_fuzz::manifest(data));
