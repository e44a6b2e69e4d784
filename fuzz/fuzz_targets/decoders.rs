//! Arbitrary pclusters through the LZ4, MicroLZMA, DEFLATE and zstd decoders.
//! Property: no panic, no hang, output exactly the asked length or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    erofs_reader::fuzzing::decode_pcluster(data);
});
