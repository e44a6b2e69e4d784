//! Lists every path of an image with its type and size, like `find -ls`:
//!
//! ```sh
//! cargo run -p erofs-reader --example list_image -- example.erofs
//! ```

use erofs_reader::Image;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = std::env::args_os().nth(1) else {
        return Err("usage: list_image IMAGE".into());
    };
    let img = Image::open(&path)?;
    for entry in img.walk()? {
        let entry = entry?;
        println!(
            "{:>8} {:>10}  {}",
            entry.inode.file_type().name(),
            entry.inode.size,
            String::from_utf8_lossy(&entry.path)
        );
    }
    Ok(())
}
