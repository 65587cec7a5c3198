#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edgepull_fuzz::endpoints_file(data));
