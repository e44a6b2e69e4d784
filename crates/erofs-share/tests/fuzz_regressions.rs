//! Inputs that once crashed the `share_walk` fuzz target, run through the same code.

#[test]
fn inputs_that_once_crashed_the_fuzzer_are_handled() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        erofs_share::fuzzing::exercise(std::fs::read(&p).unwrap());
        n += 1;
    }
    assert!(n >= 1);
}
