//! The sharing model: group eligible files by key and count the pages they save.

use std::collections::{BTreeMap, BTreeSet};

use erofs_format::xattr::parse_sha256_fingerprint;
use erofs_verity::to_hex;

/// Page-cache accounting unit. Savings are counted in 4 KiB pages, whatever the block size.
pub const PAGE_SIZE: u64 = 4096;

/// Which read path (kernel address-space operations) a file uses. Files on different read
/// paths never share, since Linux 7.0-rc2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ReadPath {
    /// FLAT_PLAIN, FLAT_INLINE or CHUNK_BASED data.
    Uncompressed,
    /// Compressed data (any algorithm).
    Compressed,
}

/// What the report needs to know about one image.
#[derive(Clone, Debug)]
pub struct ImageFacts {
    /// How the user named the image.
    pub path: String,
    /// Block size in bytes; the kernel ignores fingerprint values longer than a block.
    pub block_size: u32,
    /// Compat bit `ISHARE_XATTRS` (0x20).
    pub ishare_compat: bool,
    /// Superblock `xattr_prefix_count`.
    pub prefix_count: u8,
    /// Superblock `ishare_xattr_prefix_id`.
    pub ishare_prefix_id: u8,
    /// Full name of the fingerprint xattr, when the prefix id is valid.
    pub fingerprint_name: Option<Vec<u8>>,
}

impl ImageFacts {
    /// Why no file of this image can share, if anything at image level prevents it.
    pub fn problem(&self) -> Option<ImageProblem> {
        if !self.ishare_compat {
            Some(ImageProblem::NoIshareFeature)
        } else if self.ishare_prefix_id >= self.prefix_count {
            Some(ImageProblem::BadPrefixId {
                id: self.ishare_prefix_id,
                count: self.prefix_count,
            })
        } else {
            None
        }
    }
}

/// An image-level reason that no file shares.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ImageProblem {
    /// The superblock lacks compat `ISHARE_XATTRS`: the kernel turns `inode_share` off.
    NoIshareFeature,
    /// `ishare_xattr_prefix_id` is not below `xattr_prefix_count`: Linux 7.0+ refuses to mount.
    BadPrefixId {
        /// The stored id.
        id: u8,
        /// The number of long prefixes.
        count: u8,
    },
}

/// What the report needs to know about one regular-file inode.
#[derive(Clone, Debug)]
pub struct FileFacts {
    /// Index into the image list.
    pub image: usize,
    /// Inode number.
    pub nid: u64,
    /// Every path of the inode (hard links give several), sorted.
    pub paths: Vec<String>,
    /// `i_size`.
    pub size: u64,
    /// Read path class.
    pub read_path: ReadPath,
    /// The fingerprint xattr value, if the inode has one.
    pub fingerprint: Option<Vec<u8>>,
    /// When the content was hashed (`--verify-content`) and does not match the stored
    /// fingerprint: the SHA-256 of the content, hex. `None` when not checked or matching.
    pub content_mismatch: Option<String>,
}

/// Per-image totals.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ImageSummary {
    /// The image as named by the user.
    pub path: String,
    /// Regular-file inodes.
    pub files: u64,
    /// Of those, inodes with a fingerprint xattr.
    pub fingerprinted: u64,
    /// Sum of the regular files' sizes.
    pub bytes: u64,
    /// Full name of the fingerprint xattr, if the image declares one.
    pub fingerprint_name: Option<String>,
    /// Image-level problem, if any.
    pub problem: Option<ImageProblem>,
}

/// One file as it appears in a group or a finding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Member {
    /// Index into [`Report::images`].
    pub image: usize,
    /// Inode number.
    pub nid: u64,
    /// Paths of the inode.
    pub paths: Vec<String>,
}

/// A set of inodes that would use one shared page cache.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ShareGroup {
    /// The fingerprint value, hex-encoded.
    pub fingerprint: String,
    /// File size in bytes.
    pub size: u64,
    /// Read path of every member.
    pub read_path: ReadPath,
    /// Member inodes (at least two).
    pub members: Vec<Member>,
    /// Whether the members span more than one image.
    pub cross_image: bool,
    /// `(members − 1) × pages(size)`.
    pub saved_pages: u64,
}

/// One variant of a fingerprint value that appears with conflicting attributes.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Variant {
    /// File size of this variant.
    pub size: u64,
    /// Read path of this variant.
    pub read_path: ReadPath,
    /// Inodes of this variant.
    pub members: Vec<Member>,
}

/// Something that prevents (or may prevent) sharing, with the files concerned.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Finding {
    /// Non-empty regular files without a fingerprint xattr.
    NoFingerprint {
        /// Image index.
        image: usize,
        /// The files.
        members: Vec<Member>,
        /// Their total size.
        bytes: u64,
    },
    /// Empty files never carry a fingerprint and never share (nothing to cache).
    EmptyFiles {
        /// Image index.
        image: usize,
        /// How many.
        count: u64,
    },
    /// An image-level problem: none of its files share.
    Image {
        /// Image index.
        image: usize,
        /// The problem.
        problem: ImageProblem,
    },
    /// One fingerprint value with different sizes: the kernel shares only the variant whose
    /// inode comes first and logs a warning for the others.
    SizeConflict {
        /// The value, hex-encoded.
        fingerprint: String,
        /// Each (size, read path) variant.
        variants: Vec<Variant>,
    },
    /// One fingerprint value on different read paths (e.g. compressed vs plain): never shared.
    ReadPathConflict {
        /// The value, hex-encoded.
        fingerprint: String,
        /// Each variant.
        variants: Vec<Variant>,
    },
    /// A value that is not `sha256:` plus 32 raw bytes. The kernel compares values as opaque
    /// bytes, so such files may still share, but their content cannot be verified.
    MalformedFingerprint {
        /// Image index.
        image: usize,
        /// The file.
        member: Member,
        /// Length of the value.
        value_len: usize,
    },
    /// A value longer than a block: the kernel ignores it, so the file does not share.
    OversizeFingerprint {
        /// Image index.
        image: usize,
        /// The file.
        member: Member,
        /// Length of the value.
        value_len: usize,
    },
    /// The content does not match the fingerprint (seen only with `--verify-content`). The
    /// kernel trusts the value, so this file would serve its bytes to every other member
    /// of its group, or read theirs: page-cache poisoning.
    ContentMismatch {
        /// Image index.
        image: usize,
        /// The file.
        member: Member,
        /// The stored fingerprint, hex.
        stored: String,
        /// SHA-256 of the content, hex.
        computed: String,
    },
    /// The images declare different fingerprint xattr names. The kernel compares only value
    /// bytes, so equal values still share; but images built by different tools or with
    /// different conventions often disagree on the values too.
    NameMismatch {
        /// `(image index, name)` for every image that declares one.
        names: Vec<(usize, String)>,
    },
}

impl Finding {
    /// Whether the finding stops the files it names from sharing.
    pub fn blocks_sharing(&self) -> bool {
        !matches!(
            self,
            Finding::MalformedFingerprint { .. }
                | Finding::NameMismatch { .. }
                | Finding::ContentMismatch { .. }
        )
    }
}

/// Totals across all images.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Totals {
    /// Regular-file inodes in all images.
    pub files: u64,
    /// Sum of their sizes.
    pub bytes: u64,
    /// Inodes eligible for sharing (fingerprint, non-empty, image without problems).
    pub eligible: u64,
    /// Distinct fingerprint values among eligible files.
    pub distinct_fingerprints: u64,
    /// Groups of two or more inodes that would share.
    pub shared_groups: u64,
    /// Of those, groups whose members all live in one image.
    pub within_image_groups: u64,
    /// Of those, groups spanning two or more images.
    pub cross_image_groups: u64,
    /// Inodes that would read through another inode's page cache.
    pub deduplicated_files: u64,
    /// Pages cached if every file of every image is read once, without sharing.
    pub pages_without_sharing: u64,
    /// The same, with sharing.
    pub pages_with_sharing: u64,
    /// Pages saved: sum over groups of `(members − 1) × pages(size)`.
    pub saved_pages: u64,
    /// `saved_pages × 4096`.
    pub saved_bytes: u64,
}

/// The sharing report for a set of images mounted in one domain.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Report {
    /// What the report assumes about how the images are mounted.
    pub assumptions: Vec<String>,
    /// Per-image totals, in the order given.
    pub images: Vec<ImageSummary>,
    /// Totals across images.
    pub totals: Totals,
    /// All share groups, by saving (largest first), then by fingerprint.
    pub groups: Vec<ShareGroup>,
    /// Everything that prevents sharing.
    pub findings: Vec<Finding>,
}

/// Number of 4 KiB pages a file of `size` bytes occupies in the page cache.
pub fn pages(size: u64) -> u64 {
    size.div_ceil(PAGE_SIZE)
}

fn member(f: &FileFacts) -> Member {
    Member {
        image: f.image,
        nid: f.nid,
        paths: f.paths.clone(),
    }
}

/// Members of one fingerprint value, by (size, read path).
type VariantMap = BTreeMap<(u64, ReadPath), Vec<Member>>;

/// Builds the report. `files` holds every regular-file inode of every image.
pub fn analyze(images: &[ImageFacts], files: &[FileFacts]) -> Report {
    let mut summaries: Vec<ImageSummary> = images
        .iter()
        .map(|i| ImageSummary {
            path: i.path.clone(),
            fingerprint_name: i
                .fingerprint_name
                .as_ref()
                .map(|n| String::from_utf8_lossy(n).into_owned()),
            problem: i.problem(),
            ..Default::default()
        })
        .collect();
    let mut totals = Totals::default();
    let mut findings = Vec::new();

    for (idx, problem) in summaries
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, s.problem.clone()?)))
    {
        findings.push(Finding::Image {
            image: idx,
            problem,
        });
    }
    let mut names: BTreeSet<&[u8]> = BTreeSet::new();
    for img in images {
        if let Some(n) = &img.fingerprint_name {
            names.insert(n);
        }
    }
    if names.len() > 1 {
        findings.push(Finding::NameMismatch {
            names: images
                .iter()
                .enumerate()
                .filter_map(|(i, img)| {
                    Some((
                        i,
                        String::from_utf8_lossy(img.fingerprint_name.as_ref()?).into_owned(),
                    ))
                })
                .collect(),
        });
    }

    let mut no_fp: BTreeMap<usize, (Vec<Member>, u64)> = BTreeMap::new();
    let mut empty: BTreeMap<usize, u64> = BTreeMap::new();
    // value -> (size, read path) -> members
    let mut by_value: BTreeMap<&[u8], VariantMap> = BTreeMap::new();

    for f in files {
        let Some(img) = images.get(f.image) else {
            continue;
        };
        let s = &mut summaries[f.image];
        s.files += 1;
        // Sizes come from possibly corrupt images: sums saturate rather than overflow.
        s.bytes = s.bytes.saturating_add(f.size);
        s.fingerprinted += u64::from(f.fingerprint.is_some());
        totals.files += 1;
        totals.bytes = totals.bytes.saturating_add(f.size);
        totals.pages_without_sharing = totals.pages_without_sharing.saturating_add(pages(f.size));
        if f.size == 0 {
            *empty.entry(f.image).or_default() += 1;
            continue;
        }
        if img.problem().is_some() {
            continue;
        }
        let Some(value) = f.fingerprint.as_deref() else {
            let e = no_fp.entry(f.image).or_default();
            e.0.push(member(f));
            e.1 = e.1.saturating_add(f.size);
            continue;
        };
        if value.is_empty() || value.len() > img.block_size as usize {
            findings.push(Finding::OversizeFingerprint {
                image: f.image,
                member: member(f),
                value_len: value.len(),
            });
            continue;
        }
        if let Some(computed) = &f.content_mismatch {
            findings.push(Finding::ContentMismatch {
                image: f.image,
                member: member(f),
                stored: to_hex(value),
                computed: computed.clone(),
            });
        }
        if parse_sha256_fingerprint(value).is_none() {
            findings.push(Finding::MalformedFingerprint {
                image: f.image,
                member: member(f),
                value_len: value.len(),
            });
        }
        totals.eligible += 1;
        by_value
            .entry(value)
            .or_default()
            .entry((f.size, f.read_path))
            .or_default()
            .push(member(f));
    }

    for (image, (mut members, bytes)) in no_fp {
        members.sort();
        findings.push(Finding::NoFingerprint {
            image,
            members,
            bytes,
        });
    }
    for (image, count) in empty {
        findings.push(Finding::EmptyFiles { image, count });
    }

    let mut groups = Vec::new();
    for (value, variants) in by_value {
        totals.distinct_fingerprints += 1;
        let mut variants: Vec<Variant> = variants
            .into_iter()
            .map(|((size, read_path), mut members)| {
                members.sort();
                Variant {
                    size,
                    read_path,
                    members,
                }
            })
            .collect();
        if variants.len() > 1 {
            let sizes: BTreeSet<u64> = variants.iter().map(|v| v.size).collect();
            let fingerprint = to_hex(value);
            findings.push(if sizes.len() > 1 {
                Finding::SizeConflict {
                    fingerprint,
                    variants: variants.clone(),
                }
            } else {
                Finding::ReadPathConflict {
                    fingerprint,
                    variants: variants.clone(),
                }
            });
        }
        // Only one variant can own the shared inode at a time; the kernel picks whichever
        // inode is instantiated first. Count the variant that saves the most.
        variants.sort_by_key(|v| {
            std::cmp::Reverse((v.members.len() as u64 - 1).saturating_mul(pages(v.size)))
        });
        let best = variants.swap_remove(0);
        if best.members.len() < 2 {
            continue;
        }
        let n = best.members.len() as u64;
        let first_image = best.members[0].image;
        let cross_image = best.members.iter().any(|m| m.image != first_image);
        groups.push(ShareGroup {
            fingerprint: to_hex(value),
            size: best.size,
            read_path: best.read_path,
            saved_pages: (n - 1).saturating_mul(pages(best.size)),
            cross_image,
            members: best.members,
        });
    }

    groups.sort_by(|a, b| {
        b.saved_pages
            .cmp(&a.saved_pages)
            .then(a.fingerprint.cmp(&b.fingerprint))
    });
    for g in &groups {
        totals.shared_groups += 1;
        if g.cross_image {
            totals.cross_image_groups += 1;
        } else {
            totals.within_image_groups += 1;
        }
        totals.deduplicated_files += g.members.len() as u64 - 1;
        totals.saved_pages = totals.saved_pages.saturating_add(g.saved_pages);
    }
    totals.saved_bytes = totals.saved_pages.saturating_mul(PAGE_SIZE);
    totals.pages_with_sharing = totals
        .pages_without_sharing
        .saturating_sub(totals.saved_pages);

    Report {
        assumptions: vec![
            "all images are mounted with -o inode_share and one common domain_id".into(),
            "uncompressed files share only between mounts of the same kind (all block devices, \
             or all file-backed)"
                .into(),
            "every file of every image is read once, and all images stay mounted together".into(),
        ],
        images: summaries,
        totals,
        groups,
        findings,
    }
}
