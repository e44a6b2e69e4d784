//! Predicting EROFS page-cache sharing, and verifying content fingerprints.
//!
//! Linux 7.0 (and our 6.12 backport) lets regular files of EROFS images mounted with
//! `-o inode_share,domain_id=ID` share one page cache when their fingerprint xattr values,
//! their domain and their `i_size` match and they use the same read path. This crate answers
//! the operator's question before turning that on: across a set of images mounted in one
//! domain, which files would share, how many pages that saves, and what stops the rest.
//!
//! The model works on plain facts ([`ImageFacts`], [`FileFacts`]) so that it can be tested
//! without images; [`collect`] gathers those facts from images with `erofs-reader`, and
//! [`verify`] recomputes fingerprints in parallel.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod collect;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod report;
mod text;
pub mod verify;

pub use report::*;
pub use text::render_text;
