#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| selfheal_fuzzing::webhook_signature(data));
