//! Property test: random trees (every inode kind, hard links, odd names, xattrs, sparse and
//! in-memory files, random owners and times) built with random options read back unchanged
//! through erofs-reader.

use std::collections::BTreeMap;
use std::sync::Arc;

use erofs_builder::compress::CompressOptions;
use erofs_builder::tree::{DataSource, DirEntry, FileContent, Inode, Kind, Tree};
use erofs_builder::{
    FingerprintOptions, FragDedupe, Fragments, NoProgress, Options, UuidChoice, ValidTree,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

/// One generated entry: its parent (an earlier directory), name, and what it is.
#[derive(Clone, Debug)]
enum Gen {
    File(Vec<u8>, Option<u64>),
    Dir,
    Symlink(Vec<u8>),
    Char(u32, u32),
    Fifo,
    Socket,
    /// A hard link to the n-th file generated so far (modulo their count).
    Link(usize),
    /// A new file with the content of the n-th file so far, whole or (`true`) its first
    /// half: what `-E dedupe` shares.
    Copy(usize, bool),
}

#[derive(Clone, Debug)]
struct Entry {
    parent: usize,
    name: Vec<u8>,
    what: Gen,
    uid: u32,
    gid: u32,
    mtime: i64,
    nsec: u32,
    perm: u16,
    xattrs: Vec<(usize, usize)>,
}

const XATTR_NAMES: [&str; 5] = [
    "user.a",
    "user.longer.name",
    "trusted.t",
    "security.selinux",
    "user.prefixed.x",
];
const XATTR_VALUES: [&[u8]; 4] = [b"", b"v", b"same value for many", &[0xAB; 300]];

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(
            any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
            1..12
        ),
        (1usize..=255).prop_map(|n| vec![b'n'; n]),
        Just(b" ".to_vec()),
        Just(b"-".to_vec()),
        Just(b"...".to_vec()),
    ]
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

fn gen_kind() -> impl Strategy<Value = Gen> {
    prop_oneof![
        6 => (proptest::collection::vec(any::<u8>(), 0..9000), proptest::option::of(0u64..20_000))
            .prop_map(|(d, hole)| Gen::File(d, hole)),
        // Compressible content (a short period) behind a random-looking prefix, so that
        // compressed images get compressed extents, raw ones and flat fallbacks.
        3 => (0usize..40_000, 1usize..64, any::<u8>(), 0usize..6000).prop_map(
            |(len, period, seed, noise)| {
                let mut d: Vec<u8> = (0..len).map(|k| seed.wrapping_add((k % period) as u8)).collect();
                let mut x = u32::from(seed) | 1;
                for b in d.iter_mut().take(noise) {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    *b = x as u8;
                }
                Gen::File(d, None)
            }
        ),
        3 => Just(Gen::Dir),
        1 => proptest::collection::vec(
            any::<u8>().prop_filter("no NUL", |b| *b != 0),
            1..600
        )
        .prop_map(Gen::Symlink),
        1 => (0u32..4096, 0u32..0xFFFFF).prop_map(|(a, b)| Gen::Char(a, b)),
        1 => Just(Gen::Fifo),
        1 => Just(Gen::Socket),
        1 => any::<usize>().prop_map(Gen::Link),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(n, half)| Gen::Copy(n, half)),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        any::<usize>(),
        name(),
        gen_kind(),
        prop_oneof![Just(0u32), Just(1000), Just(70_000)],
        prop_oneof![Just(0u32), Just(100), Just(90_000)],
        prop_oneof![
            Just(1_700_000_000i64),
            Just(0),
            Just(-5),
            Just(4_000_000_000)
        ],
        prop_oneof![Just(0u32), Just(999_999_999)],
        0u16..0o7777,
        proptest::collection::vec((0usize..5, 0usize..4), 0..4),
    )
        .prop_map(
            |(parent, name, what, uid, gid, mtime, nsec, perm, xattrs)| Entry {
                parent,
                name,
                what,
                uid,
                gid,
                mtime,
                nsec,
                perm,
                xattrs,
            },
        )
}

/// Turns generated entries into a valid tree plus the expected view of every path.
fn build_tree(entries: &[Entry]) -> Tree {
    let mut inodes = vec![Inode {
        kind: Kind::Directory {
            parent: 0,
            entries: Vec::new(),
        },
        permissions: 0o755,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
        mtime_nsec: 0,
        nlink: 2,
        xattrs: Vec::new(),
    }];
    let mut dirs = vec![0usize];
    let mut files = Vec::new();
    let mut children: BTreeMap<usize, BTreeMap<Vec<u8>, usize>> = BTreeMap::new();
    for e in entries {
        let parent = dirs[e.parent % dirs.len()];
        let siblings = children.entry(parent).or_default();
        if siblings.contains_key(&e.name) {
            continue;
        }
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = e
            .xattrs
            .iter()
            .map(|&(n, v)| (XATTR_NAMES[n].as_bytes().to_vec(), XATTR_VALUES[v].to_vec()))
            .collect();
        xattrs.sort();
        xattrs.dedup_by(|a, b| a.0 == b.0);
        let kind = match &e.what {
            Gen::Link(n) if !files.is_empty() => {
                let target = files[n % files.len()];
                siblings.insert(e.name.clone(), target);
                continue;
            }
            Gen::Copy(n, half) if !files.is_empty() => {
                let Kind::Regular(c) = &inodes[files[n % files.len()]].kind else {
                    unreachable!("files lists regular files")
                };
                let mut c = c.clone();
                if *half {
                    let DataSource::Bytes(b) = &c.source else {
                        unreachable!("generated files are bytes")
                    };
                    let data: Vec<u8> = b[..b.len() / 2].to_vec();
                    c.size = data.len() as u64;
                    c.source = DataSource::Bytes(Arc::from(data));
                    c.data_ranges = None;
                }
                Kind::Regular(c)
            }
            Gen::Link(_) | Gen::Copy(..) | Gen::Fifo => Kind::Fifo,
            Gen::File(d, hole) => {
                let mut data = d.clone();
                let data_ranges = hole.map(|h| {
                    // A hole of `h` zero bytes in the middle of the data.
                    let mid = data.len() / 2;
                    let tail = data.split_off(mid);
                    let start = data.len() as u64;
                    data.extend(std::iter::repeat_n(0, h as usize));
                    data.extend_from_slice(&tail);
                    vec![0..start, start + h..data.len() as u64]
                });
                Kind::Regular(FileContent {
                    size: data.len() as u64,
                    source: DataSource::Bytes(Arc::from(data)),
                    data_ranges,
                    old_fingerprint: None,
                    source_id: None,
                })
            }
            Gen::Dir => Kind::Directory {
                parent,
                entries: Vec::new(),
            },
            Gen::Symlink(t) => Kind::Symlink(t.clone()),
            Gen::Char(a, b) => Kind::CharDevice(*a, *b),
            Gen::Socket => Kind::Socket,
        };
        let idx = inodes.len();
        if matches!(kind, Kind::Directory { .. }) {
            dirs.push(idx);
        }
        if matches!(kind, Kind::Regular(_)) {
            files.push(idx);
        }
        inodes.push(Inode {
            kind,
            permissions: e.perm,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
            mtime_nsec: e.nsec,
            nlink: 0,
            xattrs,
        });
        siblings.insert(e.name.clone(), idx);
    }
    for inode in inodes.iter_mut() {
        inode.nlink = if matches!(inode.kind, Kind::Directory { .. }) {
            2
        } else {
            0
        };
    }
    for (dir, kids) in children {
        let entries: Vec<DirEntry> = kids
            .into_iter()
            .map(|(name, inode)| DirEntry { name, inode })
            .collect();
        for e in &entries {
            if matches!(inodes[e.inode].kind, Kind::Directory { .. }) {
                inodes[dir].nlink += 1;
            } else {
                inodes[e.inode].nlink += 1;
            }
        }
        if let Kind::Directory { entries: slot, .. } = &mut inodes[dir].kind {
            *slot = entries;
        }
    }
    Tree { inodes }
}

fn content(tree: &Tree, i: usize) -> Vec<u8> {
    match &tree.inodes[i].kind {
        Kind::Regular(FileContent {
            source: DataSource::Bytes(b),
            ..
        }) => b.to_vec(),
        Kind::Symlink(t) => t.clone(),
        _ => Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, .. ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip_through_the_reader(
        entries in proptest::collection::vec(entry(), 0..40),
        blkszbits in 9u8..=12,
        fingerprint in any::<bool>(),
        noinline in any::<bool>(),
        tolerance in -1i32..3,
        prefix in any::<bool>(),
        z in 0usize..7,
        big in 0usize..3,
        ztail in any::<bool>(),
        legacy in any::<bool>(),
        bit48 in any::<bool>(),
        frags in 0usize..3,
        fragdedupe in 0usize..3,
        dedupe in any::<bool>(),
        max_extent in 0u32..4,
    ) {
        let tree = ValidTree::new(build_tree(&entries)).expect("generated tree is valid");
        let mut options = Options::default();
        options.blkszbits = blkszbits;
        // The epoch; the tree keeps its own mtimes (some equal it: compact inodes).
        options.timestamp = Some(1_700_000_000);
        options.uuid = UuidChoice::Clear;
        options.xattr_tolerance = tolerance;
        options.xattr_prefixes = if prefix { vec![b"user.prefixed.".to_vec()] } else { vec![] };
        options.noinline_data = noinline;
        options.fingerprint =
            fingerprint.then(|| FingerprintOptions::new("trusted.erofs.fingerprint"));
        options.compression = (z > 0).then(|| {
            let zs = ["lz4", "lz4hc", "deflate", "lzma,0", "zstd,1", "lz4hc:lzma,0:zstd,1"];
            let mut c = CompressOptions::parse(zs[z - 1]).unwrap();
            c.max_pcluster_bytes = [0, 4, 16][big] << blkszbits;
            // --max-extent-bytes: none, one block, or a size between blocks.
            c.max_extent_bytes = [0, 1 << blkszbits, 3 << blkszbits | 123, 0][max_extent as usize];
            if c.compressors.len() > 1 {
                // Hints send some files to the second and third algorithms.
                let hints = format!("{} 1 [a-f]\n{} 2 [g-p]\n", 1u32 << blkszbits, 2u32 << blkszbits);
                c.hints = erofs_builder::compress::CompressHint::parse_file(&hints, "hints")
                    .unwrap();
            }
            c
        });
        // -E ztailpacking, legacy-compress (full indexes) and 48bit.
        options.zlayout.ztailpacking = ztail;
        options.zlayout.full_indexes = legacy;
        options.bit48 = bit48;
        // -E fragments / all-fragments (with -z only) and -E fragdedupe's three modes.
        if z > 0 {
            options.zlayout.fragments =
                [Fragments::Off, Fragments::Tails, Fragments::All][frags];
        }
        options.zlayout.fragdedupe = [FragDedupe::Full, FragDedupe::Inode, FragDedupe::Off][fragdedupe];
        options.zlayout.dedupe = dedupe;
        let mut image = Vec::new();
        erofs_builder::build_tree_to_writer(&tree, &mut image, &options, &NoProgress)
            .expect("build");
        let first = image.clone();
        let img = erofs_reader::Image::from_bytes(image).expect("open");
        let incompat = erofs_format::Incompat::from_bits(img.superblock().feature_incompat.get());
        prop_assert!(
            erofs_format::Incompat::WRITE_SUPPORTED.contains(incompat),
            "wrote incompat bits outside WRITE_SUPPORTED: {:?}",
            incompat.names_with_unknown()
        );
        // With all-fragments every non-empty file is in the packed inode, which the
        // superblock names; without fragments there is none, and the FRAGMENTS bit only
        // as DEDUPE (an extent with PARTIAL_REF).
        let any_data = tree.inodes.iter().any(|i| matches!(&i.kind, Kind::Regular(c) if c.size > 0));
        let packed = img.superblock().packed_nid.get();
        let has_frag = incompat.contains(erofs_format::Incompat::FRAGMENTS);
        if options.zlayout.fragments == Fragments::All && any_data {
            prop_assert!(has_frag && packed > 0, "all-fragments without a packed inode");
        }
        if options.zlayout.fragments == Fragments::Off {
            prop_assert!(packed == 0);
            prop_assert!(!has_frag || options.zlayout.dedupe);
        }
        // Expected view: path -> inode index.
        let mut expect: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        let mut stack = vec![(b"/".to_vec(), 0usize)];
        while let Some((path, i)) = stack.pop() {
            if let Kind::Directory { entries, .. } = &tree.inodes[i].kind {
                for e in entries {
                    let mut p = path.clone();
                    if p.len() > 1 { p.push(b'/'); }
                    p.extend_from_slice(&e.name);
                    stack.push((p, e.inode));
                }
            }
            expect.insert(path, i);
        }
        let mut seen = 0;
        let mut nid_of: BTreeMap<usize, u64> = BTreeMap::new();
        for w in img.walk().expect("walk") {
            let w = w.expect("walk entry");
            let i = *expect.get(&w.path).unwrap_or_else(|| panic!("unexpected {:?}", w.path));
            seen += 1;
            let want = &tree.inodes[i];
            let got = &w.inode;
            prop_assert_eq!(got.mode, want.mode());
            prop_assert_eq!((got.uid, got.gid), (want.uid, want.gid));
            prop_assert_eq!((got.mtime, got.mtime_nsec), (want.mtime, want.mtime_nsec));
            prop_assert_eq!(got.nlink, want.nlink);
            if let Some(&nid) = nid_of.get(&i) {
                prop_assert_eq!(nid, w.nid, "hard links share one inode");
            }
            nid_of.insert(i, w.nid);
            match &want.kind {
                Kind::Regular(_) => {
                    let data = img.read_to_vec(got, u64::MAX).expect("read");
                    prop_assert_eq!(&data, &content(&tree, i));
                    let cap = options.compression.as_ref().map_or(0, |c| c.max_extent_bytes);
                    if cap > 0 && matches!(
                        got.layout,
                        erofs_format::DataLayout::CompressedFull
                            | erofs_format::DataLayout::CompressedCompact
                    ) {
                        // (A fragment is not a pcluster's extent: the cap is not on it.)
                        for x in img.z_extents(got).expect("extents") {
                            if matches!(x.storage, erofs_reader::ZStorage::Fragment { .. }) {
                                continue;
                            }
                            prop_assert!(x.length <= u64::from(cap), "{} > {cap}", x.length);
                        }
                    }
                }
                Kind::Symlink(t) => prop_assert_eq!(&img.readlink(got).expect("readlink"), t),
                Kind::CharDevice(a, b) => prop_assert_eq!(got.rdev(), Some((*a, *b))),
                _ => {}
            }
            let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = img
                .xattrs(got)
                .expect("xattrs")
                .into_iter()
                .map(|x| (x.name, x.value))
                .collect();
            xattrs.sort();
            let mut want_x = if tolerance < 0 { Vec::new() } else { want.xattrs.clone() };
            if fingerprint && matches!(&want.kind, Kind::Regular(c) if c.size > 0) {
                let mut v = b"sha256:".to_vec();
                v.extend_from_slice(&Sha256::digest(content(&tree, i)));
                want_x.push((b"trusted.erofs.fingerprint".to_vec(), v));
                want_x.sort();
            }
            prop_assert_eq!(xattrs, want_x, "xattrs of {:?}", w.path);
        }
        prop_assert_eq!(seen, expect.len());
        // Same input, same bytes.
        let mut again = Vec::new();
        erofs_builder::build_tree_to_writer(&tree, &mut again, &options, &NoProgress)
            .expect("build again");
        prop_assert!(again == first, "rebuild differs");
    }
}
