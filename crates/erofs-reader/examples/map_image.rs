//! Opens an image held in memory (a borrowed `&[u8]`; a `File`, a `Vec`, a memory map or any
//! other `ReadAt` works the same way) and prints where its bytes go, per kind:
//!
//! ```sh
//! cargo run -p erofs-reader --example map_image -- example.erofs
//! ```

use erofs_reader::Image;
use erofs_reader::space::space_map;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = std::env::args_os().nth(1) else {
        return Err("usage: map_image IMAGE".into());
    };
    let bytes = std::fs::read(&path)?;
    let img = Image::from_bytes(&bytes[..])?;
    let map = space_map(&img)?;
    for (kind, total) in &map.totals {
        println!("{kind:<20} {total:>12}");
    }
    println!("{:<20} {:>12}", "image", map.image_size);
    Ok(())
}
