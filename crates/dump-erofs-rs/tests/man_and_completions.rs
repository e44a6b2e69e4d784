//! The man page and shell completions `cargo xtask dist` generates from the clap definition.

#[test]
fn the_man_page_renders_and_bash_and_zsh_load_the_completion() {
    erofs_testkit::check_man_and_completions(env!("CARGO_BIN_EXE_dump-erofs-rs"), "dump.erofs-rs");
}
