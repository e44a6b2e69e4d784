//! Reads EROFS images: superblock checks, inodes, directories, xattrs, file data, a tree
//! walk with cycle detection, plus the logic behind `dump.erofs-rs` and `fsck.erofs-rs`
//! (statistics, consistency checks, extraction).
//!
//! The core reader's types ([`Image`], [`Inode`], [`Error`], [`ReadAt`], [`Progress`]...)
//! are at the crate root; the tools built on it have a public module each: [`check`],
//! [`extract`], [`stats`], [`space`] and [`summary`].
//!
//! Everything read from the image is bounds-checked before use. A corrupt image gives an
//! [`Error`] that names the nid and/or byte offset; the reader never panics, never
//! allocates more than the image size (or a documented limit), and never loops forever.
//!
//! ```no_run
//! let image = erofs_reader::Image::open("image.erofs")?;
//! for entry in image.walk()? {
//!     let entry = entry?;
//!     println!("{} nid {}", entry.path.escape_ascii(), entry.nid);
//! }
//! # Ok::<(), erofs_reader::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

// The tools built on the core reader: each its own public module, with its options and
// report types.
pub mod check;
pub mod extract;
pub mod space;
pub mod stats;
pub mod summary;

// The core reader: private modules, its API re-exported below.
mod data;
mod decompress;
mod dir;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod image;
mod inode;
mod nidmap;
#[cfg(feature = "parallel")]
mod par_walk;
mod progress;
mod source;
mod walk;
mod xattr;
mod zmap;

pub use data::{Extent, ExtentKind, FileReader, MAX_SYMLINK_LEN};
pub use dir::{DirEntry, MAX_PATH_COMPONENTS, RawDirent};
pub use erofs_format::{DataLayout, FileType};
pub use error::{Corruption, Error, Location, Result};
pub use image::{Image, OpenOptions, READABLE_INCOMPAT, compat_names, incompat_names};
pub use inode::Inode;
pub use progress::{CancelToken, Cancellable, Cancelled, NoProgress, Progress};
pub use source::ReadAt;
pub use walk::{Walk, WalkEntry};
pub use xattr::{Xattr, XattrHeader};
pub use zmap::{PCLUSTER_CACHE_BYTES, ZExtent, ZStorage};

/// Serializes raw bytes as a string: UTF-8 as is, other bytes escaped `\xNN`.
#[cfg(feature = "serde")]
pub fn serde_bytes_lossy<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&escape_bytes(b))
}

/// Renders raw bytes as a string: valid UTF-8 stays as is; invalid bytes become `\xNN`
/// and a backslash becomes `\\`, so the mapping is reversible.
pub fn escape_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn image_is_send_and_sync() {
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<super::Image>();
    }

    /// The tools built on the reader use only its public API (and the nid map helper), so
    /// that they can move to a crate of their own without opening the core's raw reads.
    #[test]
    fn the_tools_use_only_the_public_reader_api() {
        let tools = [
            ("check.rs", include_str!("check.rs")),
            ("extract.rs", include_str!("extract.rs")),
            ("stats.rs", include_str!("stats.rs")),
            ("summary.rs", include_str!("summary.rs")),
            ("space.rs", include_str!("space.rs")),
        ];
        let private = [
            "read_exact(",
            "read_vec(",
            "read_meta(",
            "read_meta_vec(",
            "zinfo(",
            "z_map_with(",
            "z_decoded(",
            "z_read_at(",
            "zcache(",
            "crate::decompress",
        ];
        for (name, text) in tools {
            for p in private {
                assert!(!text.contains(p), "{name} uses the reader's private {p}");
            }
        }
    }

    #[test]
    fn escape_keeps_utf8_and_escapes_the_rest() {
        assert_eq!(super::escape_bytes(b"a\xffb\\"), "a\\xffb\\\\");
        assert_eq!(super::escape_bytes("é".as_bytes()), "é");
    }
}
