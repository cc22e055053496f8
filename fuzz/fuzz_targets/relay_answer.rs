#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| _bartizan::fuzzing::relay_answer(data));
