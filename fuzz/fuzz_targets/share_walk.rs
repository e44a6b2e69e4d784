//! Arbitrary bytes through the sharing side: the parallel walk, the shared
//! report, and fingerprint verification (which hashes file data). The property: no panic,
//! no hang, no unbounded allocation. (That the parallel walk finds what the serial one does
//! is a test in erofs-reader.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    erofs_share::fuzzing::exercise(data);
});
