//! Inputs that once crashed the `share_walk` fuzz target, run through the same code.

#[test]
fn inputs_that_once_crashed_the_fuzzer_are_handled() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    for bytes in erofs_testkit::files_in(&dir) {
        erofs_share::fuzzing::exercise(&bytes);
    }
}
