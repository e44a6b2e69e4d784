//! Opens arbitrary bytes as an EROFS image and exercises everything the reader does.
//! The only property: no panic, no hang, no unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    erofs_reader::fuzzing::open_and_walk_everything(data);
});
