//! Recomputing every fingerprint of an image, in parallel.
//!
//! Verification is data-bound: the metadata walk reads directories in parallel, then the
//! files are read and hashed on the rayon pool, largest first so that one big file does not
//! end up alone at the tail. Results are sorted by nid, so the report never depends on
//! timing or on the number of threads.

use erofs_format::Compat;
use erofs_format::xattr::parse_sha256_fingerprint;
use erofs_reader::{Cancelled, Image, Inode, Progress, escape_bytes};
use erofs_verity::to_hex;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::collect::{RegularFile, regular_files};

/// Bytes read per call while hashing: the size of each thread's buffer.
pub const READ_CHUNK: usize = 256 << 10;

/// A file whose fingerprint is wrong or could not be checked.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct FileIssue {
    /// Inode number.
    pub nid: u64,
    /// Paths of the inode.
    pub paths: Vec<String>,
    /// File size.
    pub size: u64,
    /// What is wrong.
    pub issue: Issue,
}

/// What is wrong with one file's fingerprint.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Issue {
    /// The stored digest differs from the content's SHA-256.
    Mismatch {
        /// Stored digest, hex.
        stored: String,
        /// Computed digest, hex.
        computed: String,
    },
    /// The value is not `sha256:` plus 32 raw bytes.
    Unidentified {
        /// Length of the stored value.
        value_len: usize,
    },
    /// Reading the file failed.
    ReadError {
        /// The reader's error.
        error: String,
    },
    /// A non-empty regular file without a fingerprint (a warning: it will not share).
    Missing,
    /// An empty file carrying a fingerprint (a warning: the kernel never shares empty files).
    OnEmptyFile,
}

impl Issue {
    /// Whether this is an error (as opposed to a warning).
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Issue::Mismatch { .. } | Issue::Unidentified { .. } | Issue::ReadError { .. }
        )
    }
}

/// The outcome of [`verify_fingerprints`].
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct VerifyReport {
    /// Full name of the fingerprint xattr, when the image declares one.
    pub fingerprint_name: Option<String>,
    /// Problems with the superblock fields (compat bit, prefix id, prefix table).
    pub superblock_problems: Vec<String>,
    /// Regular files in the image.
    pub regular_files: u64,
    /// Files whose fingerprint was recomputed.
    pub verified: u64,
    /// Bytes read and hashed.
    pub bytes_hashed: u64,
    /// Files whose fingerprint matched.
    pub matched: u64,
    /// Every problem, by nid.
    pub issues: Vec<FileIssue>,
}

impl VerifyReport {
    /// No fingerprints at all: nothing to verify.
    pub fn has_no_fingerprints(&self) -> bool {
        self.fingerprint_name.is_none() && self.superblock_problems.is_empty()
    }

    /// Errors (as opposed to warnings).
    pub fn errors(&self) -> usize {
        self.superblock_problems.len() + self.issues.iter().filter(|i| i.issue.is_error()).count()
    }

    /// Warnings.
    pub fn warnings(&self) -> usize {
        self.issues.len() - self.issues.iter().filter(|i| i.issue.is_error()).count()
    }
}

thread_local! {
    /// The read buffer of each pool thread.
    static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What verifying one file found.
struct Outcome {
    /// Bytes hashed, when the fingerprint was recomputed.
    hashed: Option<u64>,
    /// The problem, if any.
    issue: Option<FileIssue>,
}

/// SHA-256 of the whole content of `inode`, read through `buf` (grown to at most
/// [`READ_CHUNK`] bytes).
///
/// Callers on a thread pool keep one buffer per thread, so that hashing 45,000 files does
/// not allocate and zero a buffer for each of them.
pub fn sha256_of(
    image: &Image,
    inode: &Inode,
    buf: &mut Vec<u8>,
    progress: &dyn Progress,
) -> erofs_reader::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let want_len = READ_CHUNK
        .min(usize::try_from(inode.size).unwrap_or(READ_CHUNK))
        .max(1);
    if buf.len() < want_len {
        buf.resize(want_len, 0);
    }
    let mut off = 0u64;
    while off < inode.size {
        let want = usize::try_from((inode.size - off).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = image.read_at(inode, off, &mut buf[..want])?;
        if n == 0 {
            // read_at returns 0 before the end only for inodes without data; the digest
            // of what was read then mismatches and is reported as such.
            break;
        }
        h.update(&buf[..n]);
        off += n as u64;
        progress.advance(0, n as u64);
    }
    Ok(h.finalize().into())
}

/// One file to verify, with its fingerprint xattr (or the error looking it up).
struct Job {
    file: RegularFile,
    value: std::result::Result<Option<Vec<u8>>, String>,
}

/// Reads, hashes and judges one file.
fn verify_one(image: &Image, job: Job, progress: &dyn Progress) -> Outcome {
    let Job {
        file: RegularFile { inode, paths },
        value,
    } = job;
    let issue = |issue| {
        Some(FileIssue {
            nid: inode.nid,
            paths: paths.iter().map(|p| escape_bytes(p)).collect(),
            size: inode.size,
            issue,
        })
    };
    let value = match value {
        Ok(v) => v,
        Err(error) => {
            return Outcome {
                hashed: None,
                issue: issue(Issue::ReadError { error }),
            };
        }
    };
    let found = match (value, inode.size) {
        (None, 0) => None,
        (Some(_), 0) => issue(Issue::OnEmptyFile),
        (None, _) => issue(Issue::Missing),
        (Some(v), size) => match parse_sha256_fingerprint(&v) {
            None => issue(Issue::Unidentified { value_len: v.len() }),
            Some(stored) => {
                let found =
                    match BUF.with(|b| sha256_of(image, &inode, &mut b.borrow_mut(), progress)) {
                        Ok(computed) if &computed == stored => None,
                        Ok(computed) => issue(Issue::Mismatch {
                            stored: to_hex(stored),
                            computed: to_hex(&computed),
                        }),
                        Err(e) => issue(Issue::ReadError {
                            error: e.to_string(),
                        }),
                    };
                progress.advance(1, 0);
                return Outcome {
                    hashed: Some(size),
                    issue: found,
                };
            }
        },
    };
    progress.advance(1, inode.size);
    Outcome {
        hashed: None,
        issue: found,
    }
}

/// Recomputes the SHA-256 of every fingerprinted file and compares it with the stored value.
///
/// Runs on the current rayon pool. `progress` counts files and bytes; it is asked before
/// each file whether to stop ([`erofs_reader::Error::Cancelled`]).
pub fn verify_fingerprints(
    image: &Image,
    progress: &dyn Progress,
) -> erofs_reader::Result<VerifyReport> {
    verify_files(image, regular_files(image)?, progress)
}

/// [`verify_fingerprints`] over `files`, the image's regular files as [`regular_files`]
/// returns them, for callers that already walked the image.
pub fn verify_files(
    image: &Image,
    files: Vec<RegularFile>,
    progress: &dyn Progress,
) -> erofs_reader::Result<VerifyReport> {
    let sb = image.superblock();
    let mut superblock_problems = Vec::new();
    let compat = sb.compat().contains(Compat::ISHARE_XATTRS);
    let fingerprint_name = match image.fingerprint_name() {
        Ok(n) => n,
        Err(e) => {
            superblock_problems.push(format!(
                "compat ishare_xattrs is set but ishare_xattr_prefix_id {} is not below xattr_prefix_count {}: {e}",
                sb.ishare_xattr_prefix_id, sb.xattr_prefix_count
            ));
            None
        }
    };
    if compat && image.long_prefixes().len() != usize::from(sb.xattr_prefix_count) {
        superblock_problems.push(format!(
            "xattr_prefix_count is {} but {} prefix records could be read",
            sb.xattr_prefix_count,
            image.long_prefixes().len()
        ));
    }
    let mut report = VerifyReport {
        fingerprint_name: fingerprint_name.as_deref().map(escape_bytes),
        superblock_problems,
        regular_files: files.len() as u64,
        verified: 0,
        bytes_hashed: 0,
        matched: 0,
        issues: Vec::new(),
    };
    let Some(name) = fingerprint_name else {
        return Ok(report);
    };

    // Fingerprints are looked up in the given (nid) order, in contiguous runs per thread:
    // inodes and their xattrs are laid out by nid, so neighbouring lookups share cached
    // metadata blocks, where in size order nearly every lookup would read a block.
    let mut jobs: Vec<Job> = files
        .into_par_iter()
        .map(|file| {
            let value = image
                .get_xattr(&file.inode, &name)
                .map_err(|e| e.to_string());
            Job { file, value }
        })
        .collect();
    // Reading and hashing run on the pool, largest files first so that a big file does not
    // start last and run alone. (size, nid) is unique, so the unstable sort gives one order.
    jobs.par_sort_unstable_by(|a, b| {
        b.file
            .inode
            .size
            .cmp(&a.file.inode.size)
            .then(a.file.inode.nid.cmp(&b.file.inode.nid))
    });
    // Sizes come from the image, which may be corrupt: saturate rather than overflow.
    let total = jobs
        .iter()
        .fold(0u64, |t, j| t.saturating_add(j.file.inode.size));
    progress.start(Some(jobs.len() as u64), Some(total));
    let outcomes: Result<Vec<Outcome>, Cancelled> = jobs
        // By value, so that each file's paths are freed on the pool as it is done instead of
        // all at once on one thread at the end.
        .into_par_iter()
        // One file per job: sizes range from bytes to tens of MiB, and rayon's default
        // splitting leaves a quarter of the (largest) files on one thread.
        .with_max_len(1)
        .map(|job| {
            progress.check_cancelled()?;
            Ok(verify_one(image, job, progress))
        })
        .collect();
    progress.finish();
    for o in outcomes? {
        if let Some(size) = o.hashed {
            report.verified += 1;
            report.bytes_hashed = report.bytes_hashed.saturating_add(size);
            if o.issue.is_none() {
                report.matched += 1;
            }
        }
        report.issues.extend(o.issue);
    }
    report.issues.sort_by_key(|i| i.nid);
    Ok(report)
}
