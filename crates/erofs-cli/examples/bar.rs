//! Drives the tools' progress bar the way a check does: a known number of inodes, advanced
//! in batches. Draws only on a terminal.

use erofs_task::Progress;

fn main() {
    let bar = erofs_cli::Bar::new(true, "checking", "inodes");
    bar.start(Some(50_000), None);
    for _ in 0..50 {
        bar.advance(1_000, 0);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    bar.warning("an example warning, printed above the bar");
    bar.finish();
    println!("checked 50000 inodes");
}
