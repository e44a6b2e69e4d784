//! Scenarios that run on any kernel (stock or patched): every block size and layout our mkfs
//! writes, mounted as a block device and file-backed and compared in full; mount options;
//! corrupted images.

use super::{Boot, Env, Prepared, Scenario, Tree, erofs_mount};
use crate::kernel::Variant;
use crate::mkfs::{DEFAULT_FINGERPRINT_XATTR, Options};
use crate::trees::LONG_PREFIX;
use anyhow::Result;
use erofs_guest::plan::{
    ConformanceParams, CorruptCase, CorruptParams, ImageCheck, MountCase, MountOptionsParams,
    PageCacheParams,
};
use std::path::PathBuf;

/// The stock scenarios.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "blocks-4096",
            about: "full tree, 4096-byte blocks, bdev + file-backed",
            prepare: |e| full(e, &[("b4096", opts(4096))]),
        },
        Scenario {
            name: "tar-input",
            about: "the full tree through GNU tar --acls and --tar=f (4096, 512), fingerprints; --tar=i with the tar appended",
            prepare: tar_input,
        },
        Scenario {
            name: "tar-overlay",
            about: "an OCI layer pair through --tar=f as overlayfs lower layers",
            prepare: tar_overlay,
        },
        Scenario {
            name: "blocks-1024",
            about: "full tree, 1024-byte blocks, bdev + file-backed",
            prepare: |e| full(e, &[("b1024", opts(1024))]),
        },
        Scenario {
            name: "blocks-2048",
            about: "full tree, 2048-byte blocks, bdev + file-backed",
            prepare: |e| full(e, &[("b2048", opts(2048))]),
        },
        Scenario {
            name: "blocks-512",
            about: "full tree, 512-byte blocks, bdev + file-backed",
            prepare: |e| full(e, &[("b512", opts(512))]),
        },
        Scenario {
            name: "noinline",
            about: "-E noinline_data (plain data only) at 4096 and 512",
            prepare: |e| {
                full(
                    e,
                    &[
                        (
                            "noinline4096",
                            Options {
                                noinline: true,
                                ..opts(4096)
                            },
                        ),
                        (
                            "noinline512",
                            Options {
                                noinline: true,
                                ..opts(512)
                            },
                        ),
                    ],
                )
            },
        },
        Scenario {
            name: "shared-xattrs",
            about: "-x 1 (every repeated xattr shared) at 4096 and 1024",
            prepare: |e| {
                full(
                    e,
                    &[
                        (
                            "shared4096",
                            Options {
                                shared_xattrs: Some(1),
                                ..opts(4096)
                            },
                        ),
                        (
                            "shared1024",
                            Options {
                                shared_xattrs: Some(1),
                                ..opts(1024)
                            },
                        ),
                    ],
                )
            },
        },
        Scenario {
            name: "long-prefix",
            about: "--xattr-prefix (long xattr name prefixes) at 4096 and 512",
            prepare: |e| {
                let p = Options {
                    xattr_prefixes: vec![LONG_PREFIX.into()],
                    ..opts(4096)
                };
                let q = Options {
                    xattr_prefixes: vec![LONG_PREFIX.into(), "trusted.overlay.".into()],
                    shared_xattrs: Some(1),
                    ..opts(512)
                };
                full(e, &[("prefix4096", p), ("prefix512", q)])
            },
        },
        Scenario {
            name: "fingerprint",
            about: "--fingerprint=sha256 with the default and a user.* xattr name",
            prepare: |e| {
                let a = Options {
                    fingerprint: Some(DEFAULT_FINGERPRINT_XATTR.into()),
                    ..opts(4096)
                };
                let b = Options {
                    fingerprint: Some("user.fp".into()),
                    ..opts(1024)
                };
                full(e, &[("fp4096", a), ("fp1024-user", b)])
            },
        },
        Scenario {
            name: "all-root",
            about: "--all-root",
            prepare: |e| {
                full(
                    e,
                    &[(
                        "allroot",
                        Options {
                            all_root: true,
                            ..opts(4096)
                        },
                    )],
                )
            },
        },
        Scenario {
            name: "compressed",
            about: "-z lz4, lz4hc -C65536, deflate and lz4 at 1024-byte blocks with compact \
                    indexes, each also with -E ztailpacking, and lz4hc with full indexes \
                    (-E legacy-compress); lzma (default, extreme -C65536 ztailpacking, \
                    -C1048576, 1024-byte blocks), zstd (default, 15 -C65536 ztailpacking, \
                    1024-byte blocks), lz4hc:lzma:zstd with --compress-hints picking each; \
                    fragments (lz4, lzma -C65536 with ztailpacking, lz4 at 1024-byte blocks) \
                    and zstd all-fragments; -E dedupe on a tree of duplicates (lz4, lz4hc \
                    -C65536 ztailpacking, lzma -C65536, zstd, deflate -C16384, lz4 1024-byte \
                    blocks, lz4hc -C65536 with fragments); bdev + file-backed",
            prepare: |e| {
                let z = |alg: &str, c: Option<u32>, bs: u32| Options {
                    compress: Some(alg.into()),
                    pcluster: c,
                    ..opts(bs)
                };
                let tail = |o: Options| Options {
                    ztailpacking: true,
                    ..o
                };
                let frag = |f: &'static str, o: Options| Options {
                    fragments: Some(f),
                    ..o
                };
                let dedupe = |o: Options| Options { dedupe: true, ..o };
                let dups = e.tree(Tree::Duplicates)?;
                let full_tree = e.tree(Tree::Full)?;
                conformance_trees(
                    e,
                    &[
                        (
                            full_tree,
                            &[
                                ("lz4", z("lz4", None, 4096)),
                                ("lz4hc-C64k", z("lz4hc", Some(65536), 4096)),
                                ("deflate", z("deflate", None, 4096)),
                                ("deflate9-C16k", z("deflate,9", Some(16384), 4096)),
                                ("lz4-1024", z("lz4", None, 1024)),
                                ("lz4-ztail", tail(z("lz4", None, 4096))),
                                ("lz4hc-C64k-ztail", tail(z("lz4hc", Some(65536), 4096))),
                                ("deflate-ztail", tail(z("deflate", None, 4096))),
                                ("lz4-1024-ztail", tail(z("lz4", None, 1024))),
                                (
                                    "lz4hc-legacy",
                                    Options {
                                        legacy_compress: true,
                                        ..z("lz4hc", Some(16384), 4096)
                                    },
                                ),
                                ("lzma", z("lzma", None, 4096)),
                                ("lzma109-C64k-ztail", tail(z("lzma,109", Some(65536), 4096))),
                                ("lzma0-C1M", z("lzma,0", Some(1 << 20), 4096)),
                                ("lzma-1024", z("lzma", None, 1024)),
                                ("zstd", z("zstd", None, 4096)),
                                ("zstd15-C64k-ztail", tail(z("zstd,15", Some(65536), 4096))),
                                ("zstd-1024", z("zstd", None, 1024)),
                                ("lz4-frag", frag("fragments", z("lz4", None, 4096))),
                                (
                                    "lzma-C64k-ztail-frag",
                                    frag("fragments", tail(z("lzma", Some(65536), 4096))),
                                ),
                                ("zstd-allfrag", frag("all-fragments", z("zstd", None, 4096))),
                                ("lz4-1024-frag", frag("fragments", z("lz4", None, 1024))),
                                (
                                    // The second and third algorithms only through the hints (the
                                    // combination mkfs.erofs 1.9.3 crashes on).
                                    "multi-hints",
                                    Options {
                                        compress_hints: Some(
                                            "65536 1 ^regular/(big|text)$\n4096 2 ^regular/size-\n"
                                                .into(),
                                        ),
                                        ..tail(z("lz4hc:lzma:zstd", Some(16384), 4096))
                                    },
                                ),
                            ][..],
                        ),
                        (
                            dups,
                            &[
                                ("dedupe-lz4", dedupe(z("lz4", None, 4096))),
                                (
                                    "dedupe-lz4hc-C64k-ztail",
                                    dedupe(tail(z("lz4hc", Some(65536), 4096))),
                                ),
                                ("dedupe-lzma-C64k", dedupe(z("lzma", Some(65536), 4096))),
                                ("dedupe-zstd-ztail", dedupe(tail(z("zstd", None, 4096)))),
                                (
                                    "dedupe-deflate-C16k",
                                    dedupe(z("deflate", Some(16384), 4096)),
                                ),
                                ("dedupe-lz4-1024", dedupe(z("lz4", None, 1024))),
                                (
                                    "dedupe-frag-lz4hc-C64k-ztail",
                                    dedupe(frag("fragments", tail(z("lz4hc", Some(65536), 4096)))),
                                ),
                            ][..],
                        ),
                    ],
                )
            },
        },
        Scenario {
            name: "example-tree",
            about: "testdata/example-tree at 4096 and 512",
            prepare: example,
        },
        Scenario {
            name: "mount-options",
            about: "unknown mount options are rejected, known ones accepted",
            prepare: mount_options,
        },
        Scenario {
            name: "page-cache",
            about: "two files with the same content keep separate page caches (mmap+mincore, fadvise, meminfo)",
            prepare: page_cache,
        },
        Scenario {
            name: "corrupt",
            about: "damaged images give mount or read errors, never an oops",
            prepare: |e| corrupt(e, 4096),
        },
        Scenario {
            name: "corrupt-1024",
            about: "the same damage to a 1024-byte-block image",
            prepare: |e| corrupt(e, 1024),
        },
        Scenario {
            name: "compressed-reference",
            about: "the mkfs.erofs 1.9.3 compressed reference images (lz4, lzma, deflate, zstd; \
                    big pclusters, ztailpacking, fragments, dedupe, 1 KiB blocks), bdev + file-backed, \
                    against the tree make-tree.py builds",
            prepare: compressed_reference,
        },
        Scenario {
            name: "compressed-reference-ours",
            about: "the tree of the mkfs.erofs 1.9.3 reference images, built by the mkfs under \
                    test with each reference image's options (48-bit left out), against the \
                    tree make-tree.py builds",
            prepare: compressed_reference_ours,
        },
    ]
}

/// The 1.9.3 reference images, beside the project.
const REFERENCE_DIR: &str = "../shared/testdata/erofs-utils-1.9.3";

/// The reference images' directory, their commands (`commands.txt`) and the source tree
/// `make-tree.py` builds (once per work directory); `None` without the directory.
fn reference_tree(env: &Env) -> Result<Option<(PathBuf, String, PathBuf)>> {
    let dir = crate::util::workspace_root().join(REFERENCE_DIR);
    let Ok(commands) = std::fs::read_to_string(dir.join("commands.txt")) else {
        return Ok(None);
    };
    let tree = env.work.join("reference-tree-1.9.3");
    if !tree.is_dir() {
        let st = std::process::Command::new("python3")
            .arg(dir.join("make-tree.py"))
            .arg(&tree)
            .status()?;
        anyhow::ensure!(st.success(), "make-tree.py failed");
    }
    Ok(Some((dir, commands, tree)))
}

/// The mkfs under test's build of the reference tree with each 1.9.3 image's options (the
/// option sets whose cuts this project matches mkfs.erofs on: fragments and dedupe
/// together, files of zeroes read from one pcluster), so that 6.12 reads exactly those.
fn compressed_reference_ours(env: &mut Env) -> Result<Prepared> {
    let Some((dir, commands, tree)) = reference_tree(env)? else {
        return Ok(Prepared::Skip(format!("{} is missing", REFERENCE_DIR)));
    };
    let mut images: Vec<(String, Options)> = Vec::new();
    for line in commands.lines() {
        let Some((name, cmd)) = line.split_once(": ") else {
            continue;
        };
        if cmd.contains("-E48bit") {
            continue;
        }
        let mut o = Options {
            fingerprint: Some("trusted.erofs.fingerprint".into()),
            all_root: true,
            ..Default::default()
        };
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let mut k = 0;
        while k < words.len() {
            let w = words[k];
            if let Some(z) = w.strip_prefix("-z") {
                o.compress = Some(z.into());
            } else if w == "-C" {
                k += 1;
                o.pcluster = Some(words[k].parse()?);
            } else if let Some(c) = w.strip_prefix("-C") {
                o.pcluster = Some(c.parse()?);
            } else if let Some(b) = w.strip_prefix("-b") {
                o.block_size = b.parse()?;
            } else if let Some(h) = w.strip_prefix("--compress-hints=") {
                o.compress_hints = Some(std::fs::read_to_string(dir.join(h))?);
            } else if let Some(list) = w.strip_prefix("-E") {
                for e in list.split(',') {
                    match e {
                        "ztailpacking" => o.ztailpacking = true,
                        "dedupe" => o.dedupe = true,
                        "fragments" => o.fragments = Some("fragments"),
                        "all-fragments" => o.fragments = Some("all-fragments"),
                        other => anyhow::bail!("{name}: -E{other} is not mapped"),
                    }
                }
            }
            k += 1;
        }
        images.push((format!("ours-{}", name.trim_end_matches(".erofs")), o));
    }
    let images: Vec<(&str, Options)> = images
        .iter()
        .map(|(l, o)| (l.as_str(), o.clone()))
        .collect();
    conformance_of(env, tree, &images)
}

/// The 1.9.3 reference images Linux 6.12 can mount (it lacks incompat `48BIT`), each with
/// the fingerprint xattr name the guest sees: erofs-utils' default name has no VFS prefix,
/// so only `trusted.erofs.fingerprint` is listed.
fn compressed_reference(env: &mut Env) -> Result<Prepared> {
    let Some((dir, commands, tree)) = reference_tree(env)? else {
        return Ok(Prepared::Skip(format!("{} is missing", REFERENCE_DIR)));
    };
    let mut boot = Boot::default();
    let mut checks = Vec::new();
    let mut files = Vec::new();
    for line in commands.lines() {
        let Some((name, cmd)) = line.split_once(": ") else {
            continue;
        };
        if cmd.contains("-E48bit") {
            continue;
        }
        let label = name.trim_end_matches(".erofs").to_string();
        let o = Options {
            fingerprint: cmd
                .contains("=trusted.erofs.fingerprint")
                .then(|| "trusted.erofs.fingerprint".to_string()),
            all_root: true,
            ..Default::default()
        };
        let manifest = boot.file(&format!("/data/{label}.json"), env.manifest(&tree, &o)?);
        let img = dir.join(name);
        let dev = boot.disk(&img);
        let block_size = if cmd.contains("-b1024") { 1024 } else { 4096 };
        checks.push(ImageCheck {
            label: label.clone(),
            manifest,
            block_size,
            mounts: vec![
                erofs_mount(&dev, &format!("/mnt/{label}"), ""),
                erofs_mount(
                    &format!("/carrier/{name}"),
                    &format!("/mnt/{label}-file"),
                    "",
                ),
            ],
        });
        files.push((name.to_string(), img));
    }
    let refs: Vec<(&str, &std::path::Path)> = files
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    let carrier = env.carrier("reference-1.9.3", &refs)?;
    let cdev = boot.disk(&carrier);
    boot.memory_mib = 1024;
    boot.timeout_secs = 900;
    let params = ConformanceParams {
        carriers: vec![erofs_mount(&cdev, "/carrier", "")],
        images: checks,
    };
    boot.run("conformance", "compressed-reference", params)?;
    Ok(Prepared::Boot(boot))
}

fn opts(block_size: u32) -> Options {
    Options {
        block_size,
        ..Default::default()
    }
}

/// The conformance boot for the full tree.
fn full(env: &mut Env, images: &[(&str, Options)]) -> Result<Prepared> {
    conformance(env, Tree::Full, images)
}

fn example(env: &mut Env) -> Result<Prepared> {
    let t = env.tree(Tree::Example)?;
    if !t.is_dir() {
        return Ok(Prepared::Skip(
            "testdata/example-tree does not exist".into(),
        ));
    }
    conformance(
        env,
        Tree::Example,
        &[("example4096", opts(4096)), ("example512", opts(512))],
    )
}

/// Builds each image, attaches it as a disk and inside a carrier disk, and plans a full
/// comparison of both mounts against the manifest of the source tree.
pub fn conformance(env: &mut Env, tree: Tree, images: &[(&str, Options)]) -> Result<Prepared> {
    let src = env.tree(tree)?;
    conformance_of(env, src, images)
}

/// [`conformance`] for a source tree given by its path.
fn conformance_of(env: &mut Env, src: PathBuf, images: &[(&str, Options)]) -> Result<Prepared> {
    conformance_trees(env, &[(src, images)])
}

/// [`conformance`] in one boot for images of several source trees.
fn conformance_trees(env: &mut Env, trees: &[(PathBuf, &[(&str, Options)])]) -> Result<Prepared> {
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for (src, images) in trees {
        for (label, o) in images.iter() {
            match env.mkfs.unsupported(o) {
                None => usable.push((*label, o, src)),
                Some(why) => skipped.push(format!("{label}: {why}")),
            }
        }
    }
    if usable.is_empty() {
        return Ok(Prepared::Skip(skipped.join("; ")));
    }
    let mut boot = Boot::default();
    let mut checks = Vec::new();
    let mut built = Vec::new();
    for (label, o, src) in &usable {
        let img = env.image(src, label, o)?;
        let manifest = boot.file(&format!("/data/{label}.json"), env.manifest(src, o)?);
        let dev = boot.disk(&img);
        checks.push(ImageCheck {
            label: label.to_string(),
            manifest,
            block_size: o.block_size() as u64,
            mounts: vec![erofs_mount(&dev, &format!("/mnt/{label}"), "")],
        });
        built.push((format!("{label}.erofs"), img));
    }
    let files: Vec<(&str, &std::path::Path)> = built
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    let mut name = usable.iter().map(|u| u.0).collect::<Vec<_>>().join("+");
    if name.len() > 100 {
        // A file name has at most 255 bytes: the first label, the count, and a hash of
        // the whole list keep it unique.
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        name = format!("{}+{}-more-{h:016x}", usable[0].0, usable.len() - 1);
    }
    let carrier = env.carrier(&name, &files)?;
    let cdev = boot.disk(&carrier);
    for c in &mut checks {
        let file = format!("/carrier/{}.erofs", c.label);
        c.mounts
            .push(erofs_mount(&file, &format!("/mnt/{}-file", c.label), ""));
    }
    let params = ConformanceParams {
        carriers: vec![erofs_mount(&cdev, "/carrier", "")],
        images: checks,
    };
    boot.run("conformance", "conformance", params)?;
    for s in skipped {
        eprintln!("qemu-test: note: {s}");
    }
    Ok(Prepared::Boot(boot))
}

/// The full tree as GNU tar carries it (extracted from its own tar, which drops the socket),
/// built from that tar with `--tar=f` and compared in full with the extracted tree.
fn tar_input(env: &mut Env) -> Result<Prepared> {
    if !crate::util::is_root() {
        return Ok(Prepared::Skip(
            "extracting with owners and device nodes needs root".into(),
        ));
    }
    let src = env.tree(Tree::Full)?;
    let norm = env.work.join("trees/full-through-tar");
    if norm.exists() {
        std::fs::remove_dir_all(&norm)?;
    }
    std::fs::create_dir_all(&norm)?;
    let script = format!(
        "tar --xattrs --xattrs-include='*' --acls --format=posix --sparse --numeric-owner -C '{}' -cf - . \
         | tar --xattrs --xattrs-include='*' --acls --same-owner --numeric-owner -xpf - -C '{}'",
        src.display(),
        norm.display()
    );
    crate::util::run(std::process::Command::new("sh").arg("-c").arg(script))?;
    let tar = |bs: u32| Options {
        tar: true,
        fingerprint: Some(DEFAULT_FINGERPRINT_XATTR.into()),
        ..opts(bs)
    };
    let index = Options {
        tar_index: true,
        ..opts(512)
    };
    conformance_of(
        env,
        norm,
        &[
            ("tar4096", tar(4096)),
            ("tar512", tar(512)),
            ("tarindex", index),
        ],
    )
}

/// An OCI layer pair through `--tar=f`: the upper layer deletes a file and a file in a
/// directory and makes a directory opaque. Both images are overlayfs lower layers; the
/// merged view is compared in full with the expected one.
fn tar_overlay(env: &mut Env) -> Result<Prepared> {
    use std::os::unix::fs::PermissionsExt;
    let root = env.work.join("trees/overlay");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let layer = |name: &str, files: &[(&str, &[u8])]| -> Result<PathBuf> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        for (rel, data) in files {
            let p = dir.join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if rel.ends_with('/') {
                std::fs::create_dir_all(&p)?;
            } else {
                std::fs::write(&p, data)?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
            }
        }
        for e in walkdir(&dir)? {
            if e.is_dir() {
                std::fs::set_permissions(&e, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        Ok(dir)
    };
    let base = layer(
        "base",
        &[
            ("keep", b"kept"),
            ("deleted", b"gone"),
            ("dir/old", b"gone"),
            ("dir/stays", b"stays"),
            ("opaque/hidden", b"gone"),
        ],
    )?;
    let upper = layer(
        "upper",
        &[
            (".wh.deleted", b""),
            ("dir/.wh.old", b""),
            ("dir/added", b"added"),
            ("opaque/.wh..wh..opq", b""),
            ("opaque/fresh", b"fresh"),
        ],
    )?;
    let merged = layer(
        "merged",
        &[
            ("keep", b"kept"),
            ("dir/stays", b"stays"),
            ("dir/added", b"added"),
            ("opaque/fresh", b"fresh"),
        ],
    )?;
    let o = Options {
        tar: true,
        ..opts(4096)
    };
    if let Some(why) = env.mkfs.unsupported(&o) {
        return Ok(Prepared::Skip(why));
    }
    let base_img = env.image(&base, "ovl-base", &o)?;
    let upper_img = env.image(&upper, "ovl-upper", &o)?;
    // overlayfs reports a link count of 1 for directories merged from several layers.
    let mut manifest: erofs_guest::manifest::Manifest =
        serde_json::from_slice(&env.manifest(&merged, &o)?)?;
    for e in &mut manifest.entries {
        if matches!(e.path.as_slice(), b"" | b"dir") {
            e.nlink = 1;
        }
    }
    let mut boot = Boot::default();
    let manifest = boot.file("/data/overlay.json", serde_json::to_vec(&manifest)?);
    let (b, u) = (boot.disk(&base_img), boot.disk(&upper_img));
    let params = ConformanceParams {
        carriers: vec![
            erofs_mount(&b, "/lower/base", ""),
            erofs_mount(&u, "/lower/upper", ""),
        ],
        images: vec![ImageCheck {
            label: "overlay".into(),
            manifest,
            block_size: 0,
            mounts: vec![erofs_guest::plan::MountSpec {
                source: "overlay".into(),
                target: "/mnt/merged".into(),
                fstype: "overlay".into(),
                data: "lowerdir=/lower/upper:/lower/base".into(),
            }],
        }],
    };
    boot.run("conformance", "conformance", params)?;
    Ok(Prepared::Boot(boot))
}

/// Every directory under `dir`, itself included.
fn walkdir(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let d = out[i].clone();
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                out.push(e.path());
            }
        }
        i += 1;
    }
    Ok(out)
}

fn mount_options(env: &mut Env) -> Result<Prepared> {
    let src = env.tree(Tree::Small)?;
    let img = env.image(&src, "mount-options", &opts(4096))?;
    let mut boot = Boot::default();
    let dev = boot.disk(&img);
    let case = |label: &str, data: &str, ok: bool| MountCase {
        label: label.into(),
        mount: erofs_mount(&dev, "/mnt/opt", data),
        expect_ok: ok,
    };
    let mut cases = vec![
        case("no options", "", true),
        case(
            "unknown option rejected",
            "this_option_does_not_exist",
            false,
        ),
        case(
            "unknown option after a known one rejected",
            "user_xattr,bogus=1",
            false,
        ),
        case("user_xattr accepted", "user_xattr", true),
        case("nouser_xattr accepted", "nouser_xattr", true),
        case("acl accepted", "acl", true),
        case("noacl accepted", "noacl", true),
        case(
            "cache_strategy=readaround accepted",
            "cache_strategy=readaround",
            true,
        ),
        case(
            "cache_strategy=bogus rejected",
            "cache_strategy=bogus",
            false,
        ),
    ];
    if env.variant == Variant::Stock {
        cases.push(case(
            "inode_share rejected by a stock kernel",
            "inode_share",
            false,
        ));
    }
    boot.expected.errors = vec![
        "Unknown parameter".into(),
        "Bad value".into(),
        "inode_share".into(),
        "cache_strategy".into(),
    ];
    boot.run(
        "mount_options",
        "mount-options",
        MountOptionsParams { cases },
    )?;
    Ok(Prepared::Boot(boot))
}

fn corrupt(env: &mut Env, block_size: u32) -> Result<Prepared> {
    if let Some(why) = env.mkfs.unsupported(&opts(block_size)) {
        return Ok(Prepared::Skip(why));
    }
    let name = format!("corrupt-{block_size}");
    let src = env.tree(Tree::Small)?;
    let clean = env.image(&src, &format!("{name}-base"), &opts(block_size))?;
    let mut boot = Boot::default();
    let mut cases = Vec::new();
    let dir = env.work.join("images").join(&name);
    std::fs::create_dir_all(&dir)?;
    let mut files = Vec::new();
    for (i, d) in env.damaged(&clean)?.into_iter().enumerate() {
        let p = dir.join(format!("{i:02}.erofs"));
        std::fs::write(&p, &d.bytes)?;
        // At most 24 block devices (PCI slots); every image is also mounted file-backed.
        if i < 24 {
            let dev = boot.disk(&p);
            cases.push(CorruptCase {
                label: format!("{} (bdev)", d.label),
                mount: erofs_mount(&dev, &format!("/mnt/c{i:02}"), ""),
                expect: d.expect,
            });
        }
        files.push((format!("{i:02}.erofs"), p, d));
    }
    let list: Vec<(&str, &std::path::Path)> = files
        .iter()
        .map(|(n, p, _)| (n.as_str(), p.as_path()))
        .collect();
    let carrier = env.carrier(&name, &list)?;
    let cdev = boot.disk(&carrier);
    for (n, _, d) in &files {
        cases.push(CorruptCase {
            label: format!("{} (file)", d.label),
            mount: erofs_mount(&format!("/carrier/{n}"), &format!("/mnt/f{n}"), ""),
            expect: d.file_expect.unwrap_or(d.expect),
        });
    }
    // Damaged images make the kernel complain; that is the point. Crashes stay forbidden.
    boot.expected.errors = vec![String::new()];
    boot.run(
        "corrupt",
        &name,
        CorruptParams {
            carriers: vec![erofs_mount(&cdev, "/carrier", "")],
            cases,
        },
    )?;
    Ok(Prepared::Boot(boot))
}

/// Baseline for page-cache sharing: without `inode_share`, reading two identical files costs
/// two page caches and dropping one leaves the other resident.
fn page_cache(env: &mut Env) -> Result<Prepared> {
    let o = Options {
        fingerprint: Some(DEFAULT_FINGERPRINT_XATTR.into()),
        ..opts(4096)
    };
    if let Some(why) = env.mkfs.unsupported(&o) {
        return Ok(Prepared::Skip(why));
    }
    let src = env.tree(Tree::SameContent)?;
    let img = env.image(&src, "page-cache", &o)?;
    let mut boot = Boot::default();
    let dev = boot.disk(&img);
    let params = PageCacheParams {
        mounts: vec![erofs_mount(&dev, "/mnt/pc", "")],
        file_a: "/mnt/pc/same-1".into(),
        file_b: "/mnt/pc/same-2".into(),
        expect_shared: false,
    };
    boot.run("page_cache", "page-cache", params)?;
    Ok(Prepared::Boot(boot))
}
