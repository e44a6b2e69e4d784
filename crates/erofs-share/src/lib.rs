//! Predicting EROFS page-cache sharing, and verifying content fingerprints.
//!
//! Linux 7.0 (and our 6.12 backport) lets regular files of EROFS images mounted with
//! `-o inode_share,domain_id=ID` share one page cache when their fingerprint xattr values,
//! their domain and their `i_size` match and they use the same read path. This crate answers
//! the operator's question before turning that on: across a set of images mounted in one
//! domain, which files would share, how many pages that saves, and what stops the rest.
//!
//! The crate works on plain facts ([`ImageFacts`], [`FileFacts`]) so that the model can be
//! tested without images; the reader-based collection lives in the binaries' callers.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod report;
mod text;

pub use report::*;
pub use text::render_text;
