//! `cargo xtask bench`: mkfs and fsck against erofs-utils and the read-and-hash floor.
//!
//! Every figure is a ratio against a peer measured in the same run on the same machine.
//! Each command runs as its own process under GNU time, so wall time, CPU time and peak RSS
//! are measured the same way for every row. The page cache is warmed before timing, and
//! images are written to tmpfs when one is available, as in reference-tools.md.
//!
//! `EROFS_UTILS_BIN=/path/to/mkfs.erofs` adds a newer erofs-utils as a peer: of the tar
//! rows, and of every compressed row with the same `-z`/`-C`/`-E` options. Without it the
//! bench runs against Debian's mkfs.erofs 1.5 and the floors only.

use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{dist, util};

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Tree to build images of (default: /usr/share when it has 40k files and 500 MiB,
    /// otherwise a generated tree of that size).
    #[arg(long)]
    tree: Option<PathBuf>,
    /// Runs per command; the median wall time is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Size in MiB of each of the eight files of the large-file tree (0: no such rows).
    #[arg(long, default_value_t = 128)]
    large_mib: u64,
    /// File counts for the scaling table (small files).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    scale: Vec<usize>,
    /// Run only the rows whose name contains SUBSTRING (repeatable), together with the peers
    /// and floors they are compared with; `--only scaling` runs the scaling table.
    #[arg(long, value_name = "SUBSTRING")]
    only: Vec<String>,
    /// Where the table goes.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// Internal: run a floor program (`read` or `hash`) over the files listed in a file, or
    /// `decode` over the pclusters of an image, or `decode-hash` over its files.
    #[arg(long, hide = true, num_args = 2, value_names = ["KIND", "LIST"])]
    floor: Option<Vec<String>>,
    /// Internal: the `-z` algorithm of the compress floor (`--floor compress LIST`).
    #[arg(long, hide = true, default_value = "lz4")]
    floor_z: String,
    /// Internal: the pcluster size in bytes (`-C`) of the compress floor; 0: one block.
    #[arg(long, hide = true, default_value_t = 0)]
    floor_pcluster: u32,
    /// Internal: threads for the floor program.
    #[arg(long, hide = true, default_value_t = 0)]
    threads: usize,
    /// Internal: the floor program also writes every file once, block-aligned, into this file.
    #[arg(long, hide = true)]
    floor_out: Option<PathBuf>,
}

/// One measured command.
#[derive(Clone, Debug)]
struct Sample {
    wall: f64,
    user: f64,
    sys: f64,
    rss_kib: u64,
}

struct Row {
    name: String,
    sample: Sample,
    image_bytes: Option<u64>,
    baseline: Option<String>,
    note: String,
    /// Rows built with the same options by another mkfs, whose image size the note compares
    /// this row's with: (how the note names it, the row's name).
    size_peers: Vec<(String, String)>,
}

/// Entry point.
pub fn run(args: &BenchArgs) -> Result<()> {
    if let Some(f) = &args.floor {
        if f[0] == "compress" {
            return compress_floor(
                Path::new(&f[1]),
                args.threads,
                &args.floor_z,
                args.floor_pcluster,
            );
        }
        return floor(
            &f[0],
            Path::new(&f[1]),
            args.threads,
            args.floor_out.as_deref(),
        );
    }
    let sel = Select {
        only: args.only.clone(),
    };
    ensure_tools()?;
    let root = util::workspace_root();
    let bin = dist::build_release()?;
    let mkfs_rs = bin.join("mkfs-erofs-rs");
    let fsck_rs = bin.join("fsck-erofs-rs");
    let work = scratch_dir()?;
    // The images and lists are gigabytes in /dev/shm (memory): gone when the run ends,
    // however it ends. A generated tree (a directory) stays for the next run.
    let _scratch = ScratchFiles(work.clone());
    let tree = match &args.tree {
        Some(t) => t.clone(),
        None => default_tree(&work)?,
    };
    let files = list_files(&tree)?;
    let total: u64 = files.iter().map(|(_, s)| s).sum();
    eprintln!(
        "bench: tree {} — {} files, {} MiB",
        tree.display(),
        files.len(),
        total >> 20
    );
    let list = work.join("files.list");
    write_list(&files, &list)?;
    let xtask = std::env::current_exe()?;
    let t = tree.to_str().context("tree path is not UTF-8")?;
    let l = list.to_str().context("scratch path is not UTF-8")?;
    let img = |n: &str| work.join(n).to_string_lossy().into_owned();

    // Warm the page cache so every row reads from memory, as the reference figures do.
    measure(
        &[
            xtask.to_str().unwrap_or("xtask"),
            "bench",
            "--floor",
            "read",
            l,
        ],
        1,
        None,
    )?;

    // Which groups of rows run (`--only`): a group is a row with the peers and floors it is
    // compared with, and the rows whose images later groups read.
    let compressed = z_groups();
    let fsck_on = sel.any(FSCK_ROWS);
    let verity_on = sel.any(&["mkfs.erofs-rs --fingerprint=sha256 --verity"]);
    let plain_on = sel.any(PLAIN_ROWS) || fsck_on || verity_on;
    // `add` measures a row only while the gate is open: the group it belongs to was chosen.
    let gate = std::cell::Cell::new(true);
    let rows = std::cell::RefCell::new(Vec::new());
    let add = |name: &str,
               argv: &[&str],
               image: Option<&str>,
               baseline: Option<&str>,
               note: &str|
     -> Result<()> {
        if !gate.get() {
            return Ok(());
        }
        eprintln!("bench: {name}");
        if let Some(i) = image {
            let _ = std::fs::remove_file(i);
        }
        let sample =
            measure(argv, args.runs, image).with_context(|| format!("benchmark row {name}"))?;
        // A floor's output is data at file offsets, not an image: no size to compare.
        let image_bytes = image
            .filter(|_| !name.starts_with("floor"))
            .and_then(|i| std::fs::metadata(i).ok())
            .map(|m| m.len());
        rows.borrow_mut().push(Row {
            name: name.into(),
            sample,
            image_bytes,
            baseline: baseline.map(Into::into),
            note: note.into(),
            size_peers: Vec::new(),
        });
        Ok(())
    };
    let x = xtask.to_str().context("xtask path")?;
    let mk = mkfs_rs.to_str().context("mkfs path")?;
    let fk = fsck_rs.to_str().context("fsck path")?;
    let (plain, fp, upstream) = (
        img("rs-plain.erofs"),
        img("rs-fp.erofs"),
        img("upstream.erofs"),
    );

    gate.set(sel.any(FLOOR_ROWS));
    add(
        "floor: read every file (2 threads)",
        &[x, "bench", "--floor", "read", l],
        None,
        None,
        "",
    )?;
    add(
        "floor: read + sha256 (1 thread)",
        &[x, "bench", "--floor", "hash", l, "--threads", "1"],
        None,
        None,
        "",
    )?;
    add(
        "floor: read + sha256 (all threads)",
        &[x, "bench", "--floor", "hash", l],
        None,
        None,
        "",
    )?;
    let floor_img = img("floor.img");
    add(
        "floor: read + sha256 + write once (all threads)",
        &[x, "bench", "--floor", "hash", l, "--floor-out", &floor_img],
        Some(&floor_img),
        None,
        "",
    )?;

    let cat = format!("xargs -0 -n 512 cat < {l} > /dev/null");
    add(
        "cat every file",
        &["sh", "-c", &cat],
        None,
        Some("floor: read every file (2 threads)"),
        "",
    )?;
    let sums = format!("xargs -0 -n 512 -P 2 sha256sum < {l} > /dev/null");
    add(
        "sha256sum every file (2 procs)",
        &["sh", "-c", &sums],
        None,
        Some("floor: read + sha256 (all threads)"),
        "",
    )?;
    gate.set(plain_on);
    let up = format!("mkfs.erofs {upstream} {t} > /dev/null");
    add(
        "mkfs.erofs 1.5 (Debian)",
        &["sh", "-c", &up],
        Some(&upstream),
        None,
        "",
    )?;
    add(
        "mkfs.erofs-rs",
        &[mk, "--quiet", t, &plain],
        Some(&plain),
        Some("mkfs.erofs 1.5 (Debian)"),
        "",
    )?;
    add(
        "mkfs.erofs-rs --fingerprint=sha256",
        &[mk, "--quiet", "--fingerprint=sha256", t, &fp],
        Some(&fp),
        Some("mkfs.erofs 1.5 (Debian)"),
        "",
    )?;
    let share = in_order_share(&[mk, "--quiet", "--fingerprint=sha256", t, &fp], &fp)?;
    add(
        "mkfs.erofs-rs --fingerprint=sha256 -j1",
        &[mk, "--quiet", "--fingerprint=sha256", "-j1", t, &fp],
        Some(&fp),
        Some("mkfs.erofs-rs --fingerprint=sha256"),
        &share,
    )?;
    // Compressed builds: each algorithm with mkfs.erofs's defaults, then with 64 KiB
    // pclusters and tail packing (and fragments once this mkfs.erofs-rs takes them).
    // Debian's mkfs.erofs 1.5 is the peer where it has the algorithm (lz4, lz4hc); the
    // others are compared with the compress floor. A newer erofs-utils named by
    // EROFS_UTILS_BIN is a peer of every row, with the same options.
    let chosen: Vec<&ZGroup> = compressed
        .iter()
        .filter(|g| sel.any(&g.names(false)) || sel.any(&g.names(true)))
        .collect();
    let fragments = chosen.iter().any(|g| g.big) && takes_fragments(mk, &work)?;
    let utils = erofs_utils_mkfs();
    // The compress floor runs erofs-builder's code, as mkfs.erofs-rs does: it must be as
    // optimised as mkfs.erofs-rs to be a floor (a debug build adds a third to lz4hc's time).
    let zfloor = if chosen.iter().any(|g| !g.debian_has()) {
        release_xtask()?
    } else {
        String::new()
    };
    for g in chosen {
        gate.set(true);
        let names = g.names(fragments);
        let (rs_name, up_name, utils_name, floor_name) =
            (&names[0], &names[1], &names[2], &names[3]);
        let tag = format!("{}{}", g.alg, if g.big { "-big" } else { "" });
        let (up_img, rs_img, utils_img) = (
            img(&format!("up-{tag}.erofs")),
            img(&format!("rs-{tag}.erofs")),
            img(&format!("utils-{tag}.erofs")),
        );
        let rs_opts = g.options(fragments);
        let mut size_peers = Vec::new();
        let baseline = if g.debian_has() {
            let up = format!(
                "mkfs.erofs {} {up_img} {t} > /dev/null",
                g.options(false).join(" ")
            );
            add(up_name, &["sh", "-c", &up], Some(&up_img), None, "")?;
            let label = if fragments && g.big {
                "1.5's (no fragments)"
            } else {
                "1.5's"
            };
            size_peers.push((label.to_string(), up_name.clone()));
            up_name.clone()
        } else {
            let pcluster = if g.big { "65536" } else { "0" };
            add(
                floor_name,
                &[
                    &zfloor,
                    "bench",
                    "--floor",
                    "compress",
                    l,
                    "--floor-z",
                    g.alg,
                    "--floor-pcluster",
                    pcluster,
                ],
                None,
                None,
                "erofs-builder's compress_segment, release build, 4 MiB segments; no walk, no layout, no image",
            )?;
            floor_name.clone()
        };
        if let Some(u) = &utils {
            // A newer erofs-utils may lack an algorithm or an option: a peer that fails
            // loses its row, never the run.
            let mut argv = vec![u.as_str(), "--quiet"];
            argv.extend(rs_opts.iter().map(String::as_str));
            argv.extend([utils_img.as_str(), t]);
            match add(utils_name, &argv, Some(&utils_img), None, "") {
                Ok(()) => size_peers.push(("$EROFS_UTILS_BIN's".into(), utils_name.clone())),
                Err(e) => eprintln!("bench: no {utils_name} row: {e:#}"),
            }
        }
        let mut argv = vec![mk, "--quiet"];
        argv.extend(rs_opts.iter().map(String::as_str));
        argv.extend([t, rs_img.as_str()]);
        let share = in_order_share(&argv, &rs_img)?;
        add(rs_name, &argv, Some(&rs_img), Some(&baseline), &share)?;
        if let Some(r) = rows.borrow_mut().iter_mut().find(|r| &r.name == rs_name) {
            r.size_peers = size_peers;
        }
        for i in [&up_img, &utils_img, &rs_img] {
            let _ = std::fs::remove_file(i);
        }
    }
    gate.set(true);
    if args.large_mib > 0 && sel.any(&[format!("large files (8 x {} MiB)", args.large_mib)]) {
        let large = work.join("large");
        generate_large_tree(&large, args.large_mib)?;
        let lfiles = list_files(&large)?;
        let llist = work.join("large.list");
        write_list(&lfiles, &llist)?;
        let (ld, ll) = (
            large.to_string_lossy().into_owned(),
            llist.to_string_lossy().into_owned(),
        );
        let (lfloor, limg) = (img("large-floor.img"), img("large-fp.erofs"));
        let tag = format!("large files (8 x {} MiB)", args.large_mib);
        add(
            &format!("floor: read + sha256 + write once, {tag}"),
            &[x, "bench", "--floor", "hash", &ll, "--floor-out", &lfloor],
            Some(&lfloor),
            None,
            "",
        )?;
        let _ = std::fs::remove_file(&lfloor);
        let all = format!("mkfs.erofs-rs --fingerprint=sha256, {tag}");
        let share = in_order_share(&[mk, "--quiet", "--fingerprint=sha256", &ld, &limg], &limg)?;
        add(
            &all,
            &[mk, "--quiet", "--fingerprint=sha256", &ld, &limg],
            Some(&limg),
            Some(&format!("floor: read + sha256 + write once, {tag}")),
            &share,
        )?;
        let share = in_order_share(
            &[mk, "--quiet", "--fingerprint=sha256", "-j1", &ld, &limg],
            &limg,
        )?;
        add(
            &format!("mkfs.erofs-rs --fingerprint=sha256 -j1, {tag}"),
            &[mk, "--quiet", "--fingerprint=sha256", "-j1", &ld, &limg],
            Some(&limg),
            Some(&all),
            &share,
        )?;
        let _ = std::fs::remove_file(&limg);
        let _ = std::fs::remove_dir_all(&large);
    }
    // Tar input: the same tree as one stream, plain and gzip, against reading (and
    // decompressing) the stream once, and that plus sha256 of every byte.
    gate.set(sel.any(TAR_ROWS));
    let tar = img("tree.tar");
    let tgz = img("tree.tar.gz");
    if gate.get() {
        util::run(std::process::Command::new("tar").args(["-C", t, "-cf", &tar, "."]))?;
        util::run(
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("gzip -c {tar} > {tgz}")),
        )?;
    }
    add(
        "floor: read the tar stream",
        &["sh", "-c", &format!("cat {tar} > /dev/null")],
        None,
        None,
        "",
    )?;
    add(
        "floor: tar + sha256",
        &["sh", "-c", &format!("sha256sum {tar} > /dev/null")],
        None,
        None,
        "",
    )?;
    add(
        "floor: gunzip",
        &["sh", "-c", &format!("gzip -dc {tgz} > /dev/null")],
        None,
        None,
        "",
    )?;
    add(
        "floor: gunzip + sha256",
        &[
            "sh",
            "-c",
            &format!("gzip -dc {tgz} | sha256sum > /dev/null"),
        ],
        None,
        None,
        "",
    )?;
    let tar_img = img("rs-tar.erofs");
    add(
        "mkfs.erofs-rs --tar=f --fingerprint=sha256",
        &[
            mk,
            "--quiet",
            "--tar=f",
            "--fingerprint=sha256",
            &tar,
            &tar_img,
        ],
        Some(&tar_img),
        Some("floor: tar + sha256"),
        "",
    )?;
    add(
        "mkfs.erofs-rs --tar=f --fingerprint=sha256, gzip",
        &[
            mk,
            "--quiet",
            "--tar=f",
            "--fingerprint=sha256",
            &tgz,
            &tar_img,
        ],
        Some(&tar_img),
        Some("floor: gunzip + sha256"),
        "",
    )?;
    if let Some(utils) = &utils {
        let up_tar = img("upstream-tar.erofs");
        add(
            "mkfs.erofs --tar=f --xattr-inode-digest ($EROFS_UTILS_BIN)",
            &[
                "sh",
                "-c",
                &format!("{utils} --tar=f --xattr-inode-digest --quiet {up_tar} {tar}"),
            ],
            Some(&up_tar),
            None,
            "",
        )?;
        add(
            "mkfs.erofs-rs --tar=f --xattr-inode-digest",
            &[
                mk,
                "--quiet",
                "--tar=f",
                "--xattr-inode-digest",
                &tar,
                &tar_img,
            ],
            Some(&tar_img),
            Some("mkfs.erofs --tar=f --xattr-inode-digest ($EROFS_UTILS_BIN)"),
            "",
        )?;
    }

    gate.set(verity_on);
    let vimg = img("verity.img");
    add(
        "mkfs.erofs-rs --fingerprint=sha256 --verity",
        &[mk, "--quiet", "--fingerprint=sha256", "--verity", t, &vimg],
        Some(&vimg),
        Some("mkfs.erofs-rs --fingerprint=sha256"),
        "",
    )?;
    gate.set(fsck_on);
    add(
        "fsck.erofs 1.5, metadata walk",
        &["fsck.erofs", &upstream],
        None,
        None,
        "",
    )?;
    add(
        "fsck.erofs-rs, metadata walk",
        &[fk, &plain],
        None,
        Some("fsck.erofs 1.5, metadata walk"),
        "",
    )?;
    add(
        "fsck.erofs 1.5 --extract (no write)",
        &[
            "sh",
            "-c",
            &format!("fsck.erofs --extract {upstream} > /dev/null"),
        ],
        None,
        None,
        "",
    )?;
    add(
        "fsck.erofs-rs --verify-fingerprints (1 thread)",
        &[
            "env",
            "RAYON_NUM_THREADS=1",
            fk,
            "--verify-fingerprints",
            &fp,
        ],
        None,
        None,
        "",
    )?;
    add(
        "fsck.erofs-rs --verify-fingerprints",
        &[fk, "--verify-fingerprints", &fp],
        None,
        Some("fsck.erofs-rs --verify-fingerprints (1 thread)"),
        "",
    )?;
    // Compressed images (Debian's mkfs 1.5 cannot fingerprint, so these rows read and
    // decode every byte instead of verifying): against Debian's fsck and the decode floor.
    // Debian's mkfs has no lzma: that row reads the 1.9.3 reference image (an 8 MB tree).
    let lzma_ref = root.join("../shared/testdata/erofs-utils-1.9.3/lzma-default.erofs");
    for alg in ["lz4hc", "lzma"].into_iter().filter(|_| fsck_on) {
        let z = if alg == "lzma" {
            if !lzma_ref.is_file() {
                eprintln!("bench: {} is missing; no lzma rows", lzma_ref.display());
                continue;
            }
            lzma_ref.to_string_lossy().into_owned()
        } else {
            let z = img("up-lz4hc.erofs");
            let st = Command::new("mkfs.erofs")
                .args(["-zlz4hc", &z, t])
                .stdout(Stdio::null())
                .status()?;
            if !st.success() {
                eprintln!("bench: mkfs.erofs -zlz4hc failed; no lz4hc rows");
                continue;
            }
            z
        };
        let floor_name = format!("floor: decode every pcluster ({alg}, all threads)");
        add(
            &floor_name,
            &[x, "bench", "--floor", "decode", &z],
            None,
            None,
            "erofs-reader's decoders; the extents listed by a walk first",
        )?;
        if alg == "lz4hc" {
            add(
                "fsck.erofs 1.5 --extract (lz4hc, no write)",
                &["sh", "-c", &format!("fsck.erofs --extract {z} > /dev/null")],
                None,
                Some(&floor_name),
                "",
            )?;
        }
        add(
            &format!("fsck.erofs-rs --extract ({alg}, no write)"),
            &[fk, "--extract", &z],
            None,
            Some(if alg == "lz4hc" {
                "fsck.erofs 1.5 --extract (lz4hc, no write)"
            } else {
                floor_name.as_str()
            }),
            "checks the indexes and decodes every extent",
        )?;
        // Verification decodes and hashes every file (SHA-256 alone costs more CPU than
        // the decoding): against the decode floor. The lz4hc image is mkfs.erofs-rs's, as
        // Debian's mkfs cannot fingerprint; the lzma reference image is fingerprinted.
        let v = if alg == "lz4hc" {
            let v = img("rs-lz4hc-fp.erofs");
            let st = Command::new(mk)
                .args(["--quiet", "-zlz4hc", "--fingerprint=sha256", t, &v])
                .stdout(Stdio::null())
                .status()?;
            if !st.success() {
                eprintln!("bench: mkfs.erofs-rs -zlz4hc failed; no verification row");
                continue;
            }
            v
        } else {
            z.clone()
        };
        let hash_floor = format!("floor: decode + sha256 every file ({alg}, all threads)");
        add(
            &hash_floor,
            &[x, "bench", "--floor", "decode-hash", &v],
            None,
            Some(&floor_name),
            "what verification cannot avoid: decode or read every file, and hash it",
        )?;
        add(
            &format!("fsck.erofs-rs --verify-fingerprints ({alg})"),
            &[fk, "--verify-fingerprints", &v],
            None,
            Some(&floor_name),
            "decodes and hashes every file",
        )?;
    }
    if is_root() {
        let mnt = work.join("mnt");
        std::fs::create_dir_all(&mnt)?;
        let m = mnt.to_string_lossy().into_owned();
        let script = format!(
            "mount -t erofs -o loop,ro {fp} {m} && (cd {m} && find . -type f -print0 | xargs -0 -n 512 -P 2 sha256sum > /dev/null); s=$?; umount {m}; exit $s"
        );
        add(
            "loop mount + sha256sum (2 procs)",
            &["sh", "-c", &script],
            None,
            Some("fsck.erofs-rs --verify-fingerprints"),
            "kernel reads the image",
        )?;
    }

    let mut scale_rows = Vec::new();
    for &n in args.scale.iter().filter(|_| sel.any(&["scaling"])) {
        let dir = work.join(format!("scale-{n}"));
        generate_small_files(&dir, n)?;
        let d = dir.to_string_lossy().into_owned();
        let (a, b) = (img("scale-up.erofs"), img("scale-rs.erofs"));
        eprintln!("bench: scaling, {n} files");
        // The peer may run out of memory on large counts (mkfs.erofs 1.5 holds every inode):
        // that is a result to report, not a reason to lose the run.
        let up = measure(
            &["sh", "-c", &format!("mkfs.erofs {a} {d} > /dev/null")],
            1,
            Some(&a),
        )
        .map_err(|e| format!("{e:#}"));
        let rs = measure(
            &[mk, "--quiet", "--fingerprint=sha256", &d, &b],
            1,
            Some(&b),
        )?;
        scale_rows.push((n, up, rs));
        let _ = std::fs::remove_dir_all(&dir);
    }

    let report = render(
        &tree,
        files.len(),
        total,
        &rows.into_inner(),
        &scale_rows,
        &args.only,
    )?;
    print!("{report}");
    let out = root.join(&args.out);
    std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("bench: wrote {}", out.display());
    Ok(())
}

/// Builds this program in release mode and returns its path, for the floors that run the
/// project's own libraries.
fn release_xtask() -> Result<String> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(util::workspace_root())
        .args(["build", "--release", "-p", "xtask"]);
    util::run(&mut cmd)?;
    Ok(util::target_dir()
        .join("release/xtask")
        .to_string_lossy()
        .into_owned())
}

/// `--only`: the substrings that choose rows; none chooses every row.
struct Select {
    only: Vec<String>,
}

impl Select {
    /// Whether a group with rows named `names` runs: one of them contains a substring.
    fn any<S: AsRef<str>>(&self, names: &[S]) -> bool {
        self.only.is_empty()
            || names
                .iter()
                .any(|n| self.only.iter().any(|o| n.as_ref().contains(o.as_str())))
    }
}

/// The floors of the plain builds, and the tools measured against them.
const FLOOR_ROWS: &[&str] = &[
    "floor: read every file (2 threads)",
    "floor: read + sha256 (1 thread)",
    "floor: read + sha256 (all threads)",
    "floor: read + sha256 + write once (all threads)",
    "cat every file",
    "sha256sum every file (2 procs)",
];
/// The uncompressed builds; the fsck and verity rows read their images.
const PLAIN_ROWS: &[&str] = &[
    "mkfs.erofs 1.5 (Debian)",
    "mkfs.erofs-rs",
    "mkfs.erofs-rs --fingerprint=sha256",
    "mkfs.erofs-rs --fingerprint=sha256 -j1",
];
/// The tar-input rows and their floors.
const TAR_ROWS: &[&str] = &[
    "floor: read the tar stream",
    "floor: tar + sha256",
    "floor: gunzip",
    "floor: gunzip + sha256",
    "mkfs.erofs-rs --tar=f --fingerprint=sha256",
    "mkfs.erofs-rs --tar=f --fingerprint=sha256, gzip",
    "mkfs.erofs --tar=f --xattr-inode-digest ($EROFS_UTILS_BIN)",
    "mkfs.erofs-rs --tar=f --xattr-inode-digest",
];
/// The checking rows (names, or the part of them before the algorithm).
const FSCK_ROWS: &[&str] = &[
    "fsck.erofs 1.5, metadata walk",
    "fsck.erofs-rs, metadata walk",
    "fsck.erofs-rs --verify-fingerprints",
    "fsck.erofs-rs --extract",
    "floor: decode every pcluster",
    "loop mount + sha256sum (2 procs)",
];

/// One compressed build row and its peers: an algorithm, with mkfs.erofs's defaults or with
/// 64 KiB pclusters and tail packing (`big`).
struct ZGroup {
    alg: &'static str,
    big: bool,
}

/// Every algorithm in both sets.
fn z_groups() -> Vec<ZGroup> {
    [false, true]
        .into_iter()
        .flat_map(|big| {
            ["lz4", "lz4hc", "lzma", "deflate", "zstd"]
                .into_iter()
                .map(move |alg| ZGroup { alg, big })
        })
        .collect()
}

impl ZGroup {
    /// Debian's mkfs.erofs 1.5 has the algorithm.
    fn debian_has(&self) -> bool {
        matches!(self.alg, "lz4" | "lz4hc")
    }

    /// The mkfs options; `fragments` only where the set asks for it and the mkfs takes it.
    fn options(&self, fragments: bool) -> Vec<String> {
        let mut o = vec![format!("-z{}", self.alg)];
        if self.big {
            o.push("-C65536".into());
            o.push(if fragments {
                "-Eztailpacking,fragments".into()
            } else {
                "-Eztailpacking".into()
            });
        }
        o
    }

    /// The rows' names: ours, Debian's 1.5 (never given fragments, which it lacks and whose
    /// name it ignores silently), `$EROFS_UTILS_BIN`'s and the compress floor.
    fn names(&self, fragments: bool) -> [String; 4] {
        let ours = self.options(fragments).join(" ");
        let pcluster = if self.big { " -C65536" } else { "" };
        [
            format!("mkfs.erofs-rs {ours}"),
            format!("mkfs.erofs 1.5 {}", self.options(false).join(" ")),
            format!("mkfs.erofs {ours} ($EROFS_UTILS_BIN)"),
            format!(
                "floor: compress every file (-z{}{pcluster}, all threads)",
                self.alg
            ),
        ]
    }
}

/// Whether `mkfs` takes `-E fragments`: tried on a tiny tree, so the bench asks for it once
/// the builder has it and runs without it before.
fn takes_fragments(mkfs: &str, work: &Path) -> Result<bool> {
    let dir = work.join("probe-fragments");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("a"), "fragment probe\n".repeat(500))?;
    let image = work.join("probe-fragments.erofs");
    let ok = Command::new(mkfs)
        .args(["--quiet", "-zlz4", "-C65536", "-Eztailpacking,fragments"])
        .args([&dir, &image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&image);
    eprintln!(
        "bench: mkfs.erofs-rs {} -E fragments",
        if ok { "takes" } else { "refuses" }
    );
    Ok(ok)
}

/// The mkfs.erofs of a newer erofs-utils, named by `EROFS_UTILS_BIN` (the path of that
/// mkfs.erofs, as the tar tests take it too). Optional: when unset or not a file, the run
/// goes on without its rows.
fn erofs_utils_mkfs() -> Option<String> {
    let mkfs = PathBuf::from(std::env::var_os("EROFS_UTILS_BIN")?);
    if mkfs.is_file() {
        Some(mkfs.to_string_lossy().into_owned())
    } else {
        eprintln!(
            "bench: EROFS_UTILS_BIN={} is not a file (it names the mkfs.erofs itself); \
             no rows for it",
            mkfs.display()
        );
        None
    }
}

fn ensure_tools() -> Result<()> {
    let mut missing = Vec::new();
    if !Path::new("/usr/bin/time").exists() {
        missing.push("time");
    }
    if which("mkfs.erofs").is_none() {
        missing.push("erofs-utils");
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("bench needs: apt-get install {}", missing.join(" "));
    }
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing),
    )
}

fn is_root() -> bool {
    std::env::var("USER").is_ok_and(|u| u == "root")
        || std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
}

/// Removes the regular files directly in a scratch directory when dropped.
struct ScratchFiles(PathBuf);

impl Drop for ScratchFiles {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn scratch_dir() -> Result<PathBuf> {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.join("erofs-rs-bench")
    } else {
        util::cache_dir()?.join("bench")
    };
    std::fs::create_dir_all(&base)?;
    Ok(base)
}

/// /usr/share when it is big enough, else a generated tree of the same shape.
fn default_tree(work: &Path) -> Result<PathBuf> {
    let usr = PathBuf::from("/usr/share");
    if let Ok(files) = list_files(&usr) {
        let bytes: u64 = files.iter().map(|(_, s)| s).sum();
        if files.len() >= 40_000 && bytes >= 500 << 20 {
            return Ok(usr);
        }
    }
    let dir = util::cache_dir()?.join("bench-tree");
    if !dir.join(".complete").exists() {
        eprintln!(
            "bench: /usr/share is too small; generating {}",
            dir.display()
        );
        let _ = work;
        generate_tree(&dir)?;
        std::fs::write(dir.join(".complete"), b"")?;
    }
    Ok(dir)
}

/// 45,000 files and about 600 MiB: mostly small files, a few large ones, some duplicates,
/// with deterministic content.
fn generate_tree(dir: &Path) -> Result<()> {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..45_000usize {
        let sub = dir.join(format!("d{:03}/e{:02}", i % 300, i % 17));
        std::fs::create_dir_all(&sub)?;
        let r = next();
        let size = match r % 100 {
            0 => 4 << 20,
            1..=20 => (r >> 8) as usize % (64 << 10),
            _ => (r >> 8) as usize % 4096,
        };
        let dup = r % 7 == 0;
        let mut data = vec![0u8; size];
        let mut s = if dup { (size as u64) | 1 } else { r | 1 };
        for chunk in data.chunks_mut(8) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            chunk.copy_from_slice(&s.to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(sub.join(format!("f{i}")), &data)?;
    }
    Ok(())
}

fn generate_small_files(dir: &Path, n: usize) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    for i in 0..n {
        let sub = dir.join(format!("{:04}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        std::fs::write(
            sub.join(format!("{i}")),
            format!("file {i}\n").repeat(1 + i % 50),
        )?;
    }
    Ok(())
}

fn list_files(tree: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))?;
        for e in rd {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push((e.path(), e.metadata()?.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs `argv` `runs` times under GNU time and keeps the run with the median wall time.
/// `output` is removed before every run, so that no run pays for freeing the previous
/// run's file.
fn measure(argv: &[&str], runs: usize, output: Option<&str>) -> Result<Sample> {
    let mut samples = Vec::new();
    let out = std::env::temp_dir().join(format!("erofs-rs-bench-time-{}", std::process::id()));
    for _ in 0..runs.max(1) {
        if let Some(o) = output {
            let _ = std::fs::remove_file(o);
        }
        let status = Command::new("/usr/bin/time")
            .args(["-f", "%e %U %S %M", "-o"])
            .arg(&out)
            .args(argv)
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("running {argv:?}"))?;
        if !status.success() {
            bail!("{argv:?} failed: {status}");
        }
        let text = std::fs::read_to_string(&out)?;
        let last = text.lines().last().unwrap_or_default();
        let f: Vec<&str> = last.split_whitespace().collect();
        if f.len() != 4 {
            bail!("unexpected GNU time output {text:?}");
        }
        samples.push(Sample {
            wall: f[0].parse()?,
            user: f[1].parse()?,
            sys: f[2].parse()?,
            rss_kib: f[3].parse()?,
        });
    }
    samples.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    Ok(samples[samples.len() / 2].clone())
}

/// Writes the NUL-separated file list the floors read, and the sizes beside it (they let the
/// write floor place every file at its final offset up front).
fn write_list(files: &[(PathBuf, u64)], list: &Path) -> Result<()> {
    std::fs::write(
        list,
        files
            .iter()
            .map(|(p, _)| p.as_os_str().as_encoded_bytes())
            .collect::<Vec<_>>()
            .join(&b'\0'),
    )?;
    std::fs::write(
        sizes_path(list),
        files
            .iter()
            .map(|(_, s)| s.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    Ok(())
}

/// Eight files of `mib` MiB each (deterministic, incompressible): a tree where a few large
/// files dominate, so that their hashing, not the walk, bounds the build.
fn generate_large_tree(dir: &Path, mib: u64) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    for i in 0..8u64 {
        let mut s = 0x9E37_79B9_7F4A_7C15u64 ^ (i + 1);
        let mut data = vec![0u8; (mib << 20) as usize];
        for chunk in data.chunks_mut(8) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            chunk.copy_from_slice(&s.to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(dir.join(format!("large-{i}")), &data)?;
    }
    Ok(())
}

/// Runs a build once with `MKFS_EROFS_RS_TIMINGS=1` and returns its in-order share of CPU
/// time as mkfs.erofs-rs reports it ("in-order cpu …").
fn in_order_share(argv: &[&str], output: &str) -> Result<String> {
    let _ = std::fs::remove_file(output);
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .env("MKFS_EROFS_RS_TIMINGS", "1")
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("running {argv:?}"))?;
    if !out.status.success() {
        bail!("{argv:?} failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stderr);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("in-order "))
        .map(|l| format!("in-order {l}"))
        .unwrap_or_default())
}

/// Where the sizes of the files in `list` are kept, in the same order.
fn sizes_path(list: &Path) -> PathBuf {
    list.with_extension("sizes")
}

/// The floor programs: read (and hash) every listed file with a pool of threads and
/// 128 KiB reads, the way a fingerprinting mkfs must at least. With `out`, every piece read
/// is also written once into that file at the file's final, block-aligned offset (computed
/// up front from the sizes), which is the least an image builder must write.
fn floor(kind: &str, list: &Path, threads: usize, out: Option<&Path>) -> Result<()> {
    use sha2::Digest;
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    if kind == "decode" {
        return decode_floor(list, threads);
    }
    if kind == "decode-hash" {
        return decode_hash_floor(list, threads);
    }
    let raw = std::fs::read(list)?;
    let paths: Vec<&[u8]> = raw.split(|&b| b == 0).filter(|p| !p.is_empty()).collect();
    let hash = match kind {
        "read" => false,
        "hash" => true,
        _ => bail!("unknown floor {kind}"),
    };
    let output = match out {
        Some(o) => {
            let sizes = std::fs::read_to_string(sizes_path(list))?;
            let mut offsets = Vec::with_capacity(paths.len());
            let mut at = 0u64;
            for s in sizes.lines() {
                offsets.push(at);
                at += s.parse::<u64>()?.next_multiple_of(4096);
            }
            if offsets.len() != paths.len() {
                bail!("{} sizes for {} files", offsets.len(), paths.len());
            }
            Some((std::fs::File::create(o)?, offsets))
        }
        None => None,
    };
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        threads
    };
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<u64> {
                    let mut buf = vec![0u8; 128 << 10];
                    let mut acc = 0u64;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = paths.get(i) else {
                            return Ok(acc);
                        };
                        let path = Path::new(
                            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(p),
                        );
                        let mut f = std::fs::File::open(path)?;
                        let mut h = sha2::Sha256::new();
                        let mut at = output.as_ref().map_or(0, |(_, o)| o[i]);
                        loop {
                            let n = f.read(&mut buf)?;
                            if n == 0 {
                                break;
                            }
                            if hash {
                                h.update(&buf[..n]);
                            }
                            if let Some((img, _)) = &output {
                                img.write_all_at(&buf[..n], at)?;
                                at += n as u64;
                            }
                            acc = acc.wrapping_add(n as u64);
                        }
                        if hash {
                            acc = acc.wrapping_add(u64::from(h.finalize()[0]));
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("floor thread panicked"))??;
        }
        Ok(())
    })
}

/// The compress floor: every file of the list that mkfs compresses (larger than a block) read
/// and compressed by erofs-builder's `compress_segment`, the fixed-output compressor mkfs.erofs-rs
/// itself runs, with the same algorithm, level and pcluster size, cut into the segments the
/// builder cuts (four pclusters, at least 4 MiB), each segment a job for any of `threads`
/// threads (0: all). It has no walk, no layout, no tail packing and writes nothing, so it
/// measures what the build adds to its own compression, not how fast that compression is
/// (the peers' rows show that).
fn compress_floor(list: &Path, threads: usize, z: &str, pcluster: u32) -> Result<()> {
    use erofs_builder::compress::{CompressOptions, Compressed, compress_segment};
    use std::os::unix::fs::FileExt;
    const BLKSZ: u32 = 4096;
    let mut opts = CompressOptions::parse(z)?;
    opts.max_pcluster_bytes = pcluster;
    let compressor = opts.resolved(0, BLKSZ);
    let pcluster = opts.pcluster_bytes(BLKSZ) as usize;
    let seg_len = (4 * pcluster as u64).max(4 << 20);
    let raw = std::fs::read(list)?;
    let paths: Vec<&[u8]> = raw.split(|&b| b == 0).filter(|p| !p.is_empty()).collect();
    let sizes: Vec<u64> = std::fs::read_to_string(sizes_path(list))?
        .lines()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    if sizes.len() != paths.len() {
        bail!("{} sizes for {} files", sizes.len(), paths.len());
    }
    let mut jobs = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        if size > u64::from(BLKSZ) {
            jobs.extend((0..size).step_by(seg_len as usize).map(|at| (i, at)));
        }
    }
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        threads
    };
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<u64> {
                    let (mut buf, mut out, mut scratch) =
                        (Vec::new(), Compressed::default(), Vec::new());
                    let mut acc = 0u64;
                    while let Some(&(i, at)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let path = Path::new(
                            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(paths[i]),
                        );
                        let end = (at + seg_len).min(sizes[i]);
                        buf.resize(usize::try_from(end - at)?, 0);
                        std::fs::File::open(path)?.read_exact_at(&mut buf, at)?;
                        compress_segment(
                            compressor,
                            &buf,
                            BLKSZ as usize,
                            pcluster,
                            erofs_format::compress::MAX_EXTENT_DECODED as usize,
                            end == sizes[i],
                            &mut out,
                            &mut scratch,
                        );
                        acc += out.data.len() as u64;
                    }
                    Ok(acc)
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("compress thread panicked"))??;
        }
        Ok(())
    })
}

/// The decode floor: every pcluster of every compressed file of `image` decoded once, spread
/// over `threads` threads (0: all), with no walk order, hashing or output. The extents are
/// listed first by a serial walk (timed too, as a fsck must map them as well); then each
/// thread reads each pcluster and runs the decoder into one reused buffer, nothing else.
fn decode_floor(image: &Path, threads: usize) -> Result<()> {
    let img = erofs_reader::Image::open(image)?;
    let mut jobs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for e in img.walk()? {
        let e = e?;
        if e.inode.is_file() && e.inode.is_compressed() && seen.insert(e.nid) {
            for x in img.z_extents(&e.inode)? {
                if !matches!(x.storage, erofs_reader::ZStorage::Fragment { .. }) {
                    jobs.push((e.inode.clone(), x));
                }
            }
        }
    }
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        threads
    };
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<u64> {
                    // One output buffer per thread, as a decoder loop would keep.
                    let mut buf = Vec::new();
                    let mut acc = 0u64;
                    while let Some((inode, x)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let n = usize::try_from(x.length)?;
                        if buf.len() < n {
                            buf.resize(n, 0);
                        }
                        img.z_decode_extent_into(inode, x, &mut buf[..n])?;
                        acc += n as u64;
                    }
                    Ok(acc)
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("decode thread panicked"))??;
        }
        Ok(())
    })
}

/// The floor of fingerprint verification: the content of every regular file of `image`
/// decoded (as [`decode_floor`] does) or read, and hashed with SHA-256, files spread over
/// `threads` threads (0: all). The extents are listed first by a serial walk (timed too);
/// then each thread takes a file and decodes its extents in order into one reused buffer,
/// hashing each; fragments and uncompressed files are read through the reader.
fn decode_hash_floor(image: &Path, threads: usize) -> Result<()> {
    use sha2::Digest;
    let img = erofs_reader::Image::open(image)?;
    let mut jobs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for e in img.walk()? {
        let e = e?;
        if e.inode.is_file() && seen.insert(e.nid) {
            let extents = if e.inode.is_compressed() {
                img.z_extents(&e.inode)?
            } else {
                Vec::new()
            };
            jobs.push((e.inode, extents));
        }
    }
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        threads
    };
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<u64> {
                    let mut buf = vec![0u8; 128 << 10];
                    let mut acc = 0u64;
                    while let Some((inode, extents)) =
                        jobs.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        let mut h = sha2::Sha256::new();
                        let read = |h: &mut sha2::Sha256,
                                    from: u64,
                                    len: u64,
                                    buf: &mut Vec<u8>|
                         -> Result<()> {
                            let mut at = from;
                            while at < from + len {
                                let n = (from + len - at).min(128 << 10) as usize;
                                if buf.len() < n {
                                    buf.resize(n, 0);
                                }
                                let got = img.read_at(inode, at, &mut buf[..n])?;
                                anyhow::ensure!(got == n, "short read");
                                h.update(&buf[..n]);
                                at += n as u64;
                            }
                            Ok(())
                        };
                        if extents.is_empty() {
                            read(&mut h, 0, inode.size, &mut buf)?;
                        }
                        for x in extents {
                            if matches!(x.storage, erofs_reader::ZStorage::Fragment { .. }) {
                                read(&mut h, x.logical, x.length, &mut buf)?;
                                continue;
                            }
                            let n = usize::try_from(x.length)?;
                            if buf.len() < n {
                                buf.resize(n, 0);
                            }
                            img.z_decode_extent_into(inode, x, &mut buf[..n])?;
                            h.update(&buf[..n]);
                        }
                        acc = acc.wrapping_add(u64::from(h.finalize()[0]));
                    }
                    Ok(acc)
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("decode thread panicked"))??;
        }
        Ok(())
    })
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {cpu}, Linux {}", kernel.trim())
}

/// "image 1.0040x of 1.5's" for each peer of `r` built with the same options.
fn size_notes(r: &Row, rows: &[Row]) -> Vec<String> {
    r.size_peers
        .iter()
        .filter_map(|(label, name)| {
            let peer = rows.iter().find(|x| &x.name == name)?.image_bytes?;
            Some(format!(
                "image {:.4}x of {label}",
                r.image_bytes? as f64 / peer.max(1) as f64
            ))
        })
        .collect()
}

/// The share of CPU time spent in order, from mkfs.erofs-rs's timing line
/// ("in-order cpu 0.141s (9.0% of 1.56s cpu), ...").
fn in_order_pct(note: &str) -> Option<f64> {
    let rest = &note[note.find("in-order cpu ")?..];
    let open = rest.find('(')?;
    let pct = rest[open + 1..].split('%').next()?;
    pct.trim().parse().ok()
}

/// Issue 11's targets for one compressed build row: wall time at most 0.5x of mkfs.erofs 1.5
/// where 1.5 has the algorithm (else the ratio to the compress floor, for reference), image
/// size within 1% of each peer built with the same options, in-order work under 10% of the
/// CPU time. A peer or figure the run lacks is said to be missing, never made up.
fn z_target(r: &Row, rows: &[Row]) -> String {
    let find = |n: &str| rows.iter().find(|x| x.name == n);
    let mut parts = Vec::new();
    match r.baseline.as_deref().and_then(|b| find(b).map(|x| (b, x))) {
        Some((b, base)) => {
            let ratio = r.sample.wall / base.sample.wall.max(0.001);
            parts.push(if b.starts_with("floor") {
                format!("wall {ratio:.2}x of {b} (no 1.5 peer; for reference)")
            } else {
                format!("wall {ratio:.2}x of {b} (target: at most 0.5x)")
            });
        }
        None => parts.push("no wall-time peer in this run".into()),
    }
    // A newer erofs-utils has no target of its own: its wall time is for reference.
    for (label, name) in &r.size_peers {
        if Some(name.as_str()) != r.baseline.as_deref()
            && let Some(peer) = find(name)
        {
            parts.push(format!(
                "wall {:.2}x of {label} (for reference)",
                r.sample.wall / peer.sample.wall.max(0.001)
            ));
        }
    }
    let sizes = size_notes(r, rows);
    parts.push(if sizes.is_empty() {
        "no size peer with these options (set EROFS_UTILS_BIN)".into()
    } else {
        format!("{} (target: within 1%)", sizes.join(", "))
    });
    parts.push(match in_order_pct(&r.note) {
        Some(p) => format!("in order {p:.1}% of CPU (target: under 10%)"),
        None => "no in-order figure".into(),
    });
    format!("{}: {}", r.name, parts.join("; "))
}

/// Why the fingerprinted build tends to the read-and-hash floor, and what bounds it.
const DESIGN_NOTE: &str = "## How the fingerprinted build approaches the floor

Nothing heavy runs in order. Into a seekable image every job writes its bytes at the offset the
plan gave them (positioned writes from every worker), so the image write is as parallel as the
reads. Small files are read and hashed in batches by whichever worker is free; a large file is
read, hashed and written front to back by the one job that owns it, and different large files
run in parallel, largest first. The in-order work left is merging small per-job results (tails,
digests), which the `in-order cpu` notes show at well under 1% of the build's CPU time. With
enough cores the build therefore tends to the read-and-hash floor of the same core count; what
bounds it is the hash of the largest single file, which is sequential by nature (SHA-256 is a
chain): a 2 GiB tree whose largest file is 256 MiB cannot finish before that file is hashed
(about 0.15 s at 1.7 GB/s), whatever the core count. Compressed builds keep one ordered step,
giving each segment's pclusters their address and writing them (a memory copy into the page
cache); the compression itself, the reads and the hashes run on the workers.
";

fn render(
    tree: &Path,
    nfiles: usize,
    bytes: u64,
    rows: &[Row],
    scale: &[(usize, std::result::Result<Sample, String>, Sample)],
    only: &[String],
) -> Result<String> {
    let mut o = String::new();
    writeln!(o, "# Benchmarks\n")?;
    writeln!(
        o,
        "Made by `cargo xtask bench`. Every ratio compares two rows of the same run on the same machine."
    )?;
    writeln!(
        o,
        "Each row is the median of several runs, with a warm page cache; images go to tmpfs.\n"
    )?;
    writeln!(o, "- machine: {}", machine())?;
    writeln!(
        o,
        "- tree: `{}`, {nfiles} regular files, {:.0} MiB of data\n",
        tree.display(),
        bytes as f64 / 1048576.0
    )?;
    if !only.is_empty() {
        writeln!(
            o,
            "- rows: only those whose names contain {}, with their peers and floors (`--only`)\n",
            only.iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        )?;
    }
    writeln!(
        o,
        "The floors are small programs inside the bench, given the file list up front: they read every \
         file with 128 KiB reads on all cores, hash it, and (the write-once floor) write its bytes once \
         into a tmpfs file at a block-aligned offset. They never walk the tree, lstat an entry or read \
         an xattr, which a builder must do before it can plan a byte.\n"
    )?;
    if rows.iter().any(|r| r.name.starts_with("floor: compress")) {
        writeln!(
            o,
            "The compress floors run erofs-builder's fixed-output compressor, the code mkfs.erofs-rs \
             runs (release build, same algorithm, level and pcluster size), over the files mkfs \
             compresses, cut into the builder's segments, on all cores; with no walk, no layout, no \
             tail packing and no image. A build's ratio to one is what the build adds to its own \
             compression; how fast that compression is shows against erofs-utils: Debian's 1.5 for \
             lz4 and lz4hc, and the erofs-utils named by `EROFS_UTILS_BIN` for every algorithm.\n"
        )?;
    }
    writeln!(
        o,
        "| command | wall (s) | CPU user+sys (s) | peak RSS (MiB) | image (bytes) | ratio (wall) |"
    )?;
    writeln!(o, "|---|---:|---:|---:|---:|---|")?;
    for r in rows {
        let note = size_notes(r, rows)
            .into_iter()
            .chain((!r.note.is_empty()).then(|| r.note.clone()))
            .collect::<Vec<_>>()
            .join("; ");
        let ratio = match &r.baseline {
            Some(b) => match rows.iter().find(|x| &x.name == b) {
                Some(base) => format!("{:.2}x of {b}", r.sample.wall / base.sample.wall.max(0.001)),
                None => String::new(),
            },
            None => String::new(),
        };
        writeln!(
            o,
            "| {}{} | {:.2} | {:.2} | {:.1} | {} | {ratio} |",
            r.name,
            if note.is_empty() {
                String::new()
            } else {
                format!(" ({note})")
            },
            r.sample.wall,
            r.sample.user + r.sample.sys,
            r.sample.rss_kib as f64 / 1024.0,
            r.image_bytes.map_or(String::new(), |b| b.to_string()),
        )?;
    }
    let get = |n: &str| rows.iter().find(|r| r.name == n).map(|r| r.sample.wall);
    writeln!(o, "\n## Targets\n")?;
    if let (Some(fp), Some(up)) = (
        get("mkfs.erofs-rs --fingerprint=sha256"),
        get("mkfs.erofs 1.5 (Debian)"),
    ) {
        writeln!(
            o,
            "- fingerprinted build / mkfs.erofs 1.5 plain build: {:.2}x (target: at most 1.0x)",
            fp / up
        )?;
    }
    if let (Some(fp), Some(floor)) = (
        get("mkfs.erofs-rs --fingerprint=sha256"),
        get("floor: read + sha256 + write once (all threads)"),
    ) {
        writeln!(
            o,
            "- fingerprinted build / floor (read + hash + write the data once): {:.2}x (target: at most 1.3x)",
            fp / floor
        )?;
    }
    if let (Some(fp), Some(floor)) = (
        get("mkfs.erofs-rs --fingerprint=sha256"),
        get("floor: read + sha256 (all threads)"),
    ) {
        writeln!(
            o,
            "- fingerprinted build / read + hash alone, nothing written: {:.2}x (for reference)",
            fp / floor
        )?;
    }
    if let (Some(v), Some(fp)) = (
        get("mkfs.erofs-rs --fingerprint=sha256 --verity"),
        get("mkfs.erofs-rs --fingerprint=sha256"),
    ) {
        writeln!(
            o,
            "- fingerprinted build with a dm-verity tree / without: {:.2}x (target: at most 1.2x)",
            v / fp
        )?;
    }
    if let (Some(one), Some(all)) = (
        get("mkfs.erofs-rs --fingerprint=sha256 -j1"),
        get("mkfs.erofs-rs --fingerprint=sha256"),
    ) {
        writeln!(
            o,
            "- fingerprinted build speed-up, all cores vs -j1: {:.2}x (in-order share of CPU in the rows' notes; target under 5%)",
            one / all
        )?;
    }
    for r in rows.iter().filter(|r| r.name.contains("large files")) {
        if let Some(b) = &r.baseline
            && let Some(base) = get(b)
        {
            writeln!(
                o,
                "- {} / {b}: {:.2}x{}",
                r.name,
                r.sample.wall / base.max(0.001),
                if b.starts_with("floor") {
                    " (target: at most 1.15x)"
                } else {
                    ""
                }
            )?;
        }
    }
    for r in rows
        .iter()
        .filter(|r| r.name.starts_with("mkfs.erofs-rs -z"))
    {
        writeln!(o, "- {}", z_target(r, rows))?;
    }
    if let (Some(one), Some(all)) = (
        get("fsck.erofs-rs --verify-fingerprints (1 thread)"),
        get("fsck.erofs-rs --verify-fingerprints"),
    ) {
        writeln!(
            o,
            "- fingerprint verify speed-up, all threads vs 1 thread: {:.2}x (target: at least 1.6x on 2 cores)",
            one / all
        )?;
    }
    if let (Some(v), Some(m)) = (
        get("fsck.erofs-rs --verify-fingerprints"),
        get("loop mount + sha256sum (2 procs)"),
    ) {
        writeln!(
            o,
            "- verify / loop mount + sha256sum: {:.2}x (target: at most 1.0x)",
            v / m
        )?;
    }
    writeln!(o, "\n{DESIGN_NOTE}")?;
    if !scale.is_empty() {
        writeln!(
            o,
            "\n## Scaling with file count (small files, one run each)\n"
        )?;
        writeln!(
            o,
            "| files | mkfs.erofs 1.5 (s) | mkfs.erofs-rs --fingerprint=sha256 (s) | ratio | RSS 1.5 / rs (MiB) | rs RSS per inode (bytes) |"
        )?;
        writeln!(o, "|---:|---:|---:|---:|---|---:|")?;
        for (n, up, rs) in scale {
            let per_inode = rs.rss_kib as f64 * 1024.0 / (*n).max(1) as f64;
            match up {
                Ok(up) => writeln!(
                    o,
                    "| {n} | {:.2} | {:.2} | {:.2}x | {:.0} / {:.0} | {per_inode:.0} |",
                    up.wall,
                    rs.wall,
                    rs.wall / up.wall.max(0.001),
                    up.rss_kib as f64 / 1024.0,
                    rs.rss_kib as f64 / 1024.0
                )?,
                Err(e) => writeln!(
                    o,
                    "| {n} | failed ({}) | {:.2} | | - / {:.0} | {per_inode:.0} |",
                    e.rsplit(": ").next().unwrap_or(e),
                    rs.wall,
                    rs.rss_kib as f64 / 1024.0
                )?,
            }
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, wall: f64, image: Option<u64>, baseline: Option<&str>, note: &str) -> Row {
        Row {
            name: name.into(),
            sample: Sample {
                wall,
                user: wall,
                sys: 0.0,
                rss_kib: 1024,
            },
            image_bytes: image,
            baseline: baseline.map(Into::into),
            note: note.into(),
            size_peers: Vec::new(),
        }
    }

    #[test]
    fn only_chooses_groups_by_substring_of_any_row_name() {
        let all = Select { only: vec![] };
        let lzma = Select {
            only: vec!["lzma".into(), "scaling".into()],
        };
        let g = ZGroup {
            alg: "lzma",
            big: true,
        };
        assert!(all.any(PLAIN_ROWS) && all.any(FSCK_ROWS));
        assert!(lzma.any(&g.names(false)) && lzma.any(&["scaling"]));
        assert!(!lzma.any(PLAIN_ROWS) && !lzma.any(TAR_ROWS) && !lzma.any(FLOOR_ROWS));
        let lz4 = ZGroup {
            alg: "lz4",
            big: false,
        };
        assert!(!lzma.any(&lz4.names(false)));
        // The floor row of a group chooses the group, so a floor can be re-measured alone.
        let floor = Select {
            only: vec!["floor: compress every file (-zlzma -C65536".into()],
        };
        assert!(floor.any(&g.names(false)));
    }

    #[test]
    fn fragments_reach_ours_and_erofs_utils_never_debian_1_5() {
        let g = ZGroup {
            alg: "lz4hc",
            big: true,
        };
        let [ours, debian, utils, floor] = g.names(true);
        assert_eq!(
            ours,
            "mkfs.erofs-rs -zlz4hc -C65536 -Eztailpacking,fragments"
        );
        assert_eq!(debian, "mkfs.erofs 1.5 -zlz4hc -C65536 -Eztailpacking");
        assert_eq!(
            utils,
            "mkfs.erofs -zlz4hc -C65536 -Eztailpacking,fragments ($EROFS_UTILS_BIN)"
        );
        assert_eq!(
            floor,
            "floor: compress every file (-zlz4hc -C65536, all threads)"
        );
        // Without fragments the first set keeps the row names docs/benchmarks.md has.
        let plain = ZGroup {
            alg: "lz4",
            big: false,
        };
        assert_eq!(plain.names(true)[0], "mkfs.erofs-rs -zlz4");
        assert_eq!(plain.names(true)[1], "mkfs.erofs 1.5 -zlz4");
        assert!(
            g.debian_has()
                && !ZGroup {
                    alg: "zstd",
                    big: false
                }
                .debian_has()
        );
    }

    #[test]
    fn in_order_share_is_read_from_the_timing_line() {
        let note = "in-order cpu 0.141s (9.0% of 1.56s cpu), workers waited 0.005s";
        assert_eq!(in_order_pct(note), Some(9.0));
        assert_eq!(in_order_pct(""), None);
        assert_eq!(in_order_pct("in-order cpu 0.1s (n/a)"), None);
    }

    #[test]
    fn targets_say_what_the_run_lacks() {
        let share = "in-order cpu 0.5s (2.5% of 20.0s cpu), workers waited 0.0s";
        // A row whose peer did not run, with no size peer and no timing line.
        let lonely = row(
            "mkfs.erofs-rs -zzstd",
            2.0,
            Some(100),
            Some("floor: compress every file (-zzstd, all threads)"),
            "",
        );
        let t = z_target(&lonely, std::slice::from_ref(&lonely));
        assert!(t.contains("no wall-time peer"), "{t}");
        assert!(t.contains("no size peer"), "{t}");
        assert!(t.contains("no in-order figure"), "{t}");
        // Against 1.5 and a newer erofs-utils.
        let up = row("mkfs.erofs 1.5 -zlz4hc", 8.0, Some(1000), None, "");
        let utils = row(
            "mkfs.erofs -zlz4hc ($EROFS_UTILS_BIN)",
            4.0,
            Some(990),
            None,
            "",
        );
        let mut rs = row(
            "mkfs.erofs-rs -zlz4hc",
            4.0,
            Some(1004),
            Some("mkfs.erofs 1.5 -zlz4hc"),
            share,
        );
        rs.size_peers = vec![
            ("1.5's".into(), up.name.clone()),
            ("$EROFS_UTILS_BIN's".into(), utils.name.clone()),
        ];
        let rows = [up, utils, rs];
        let t = z_target(&rows[2], &rows);
        assert!(
            t.contains("wall 0.50x of mkfs.erofs 1.5 -zlz4hc (target: at most 0.5x)"),
            "{t}"
        );
        assert!(
            t.contains("image 1.0040x of 1.5's, image 1.0141x of $EROFS_UTILS_BIN's"),
            "{t}"
        );
        assert!(t.contains("in order 2.5% of CPU"), "{t}");
        assert!(
            t.contains("wall 1.00x of $EROFS_UTILS_BIN's (for reference)"),
            "{t}"
        );
        assert!(!t.contains("of 1.5's (for reference)"), "{t}");
        // The floor as baseline is for reference only.
        let floor = row(
            "floor: compress every file (-zzstd, all threads)",
            1.0,
            None,
            None,
            "",
        );
        let rows = [floor, lonely];
        let t = z_target(&rows[1], &rows);
        assert!(
            t.contains(
                "wall 2.00x of floor: compress every file (-zzstd, all threads) (no 1.5 peer"
            ),
            "{t}"
        );
    }

    #[test]
    fn render_keeps_targets_whose_rows_ran_and_skips_the_rest() {
        let floor = row(
            "floor: compress every file (-zlzma, all threads)",
            10.0,
            None,
            None,
            "",
        );
        let rs = row(
            "mkfs.erofs-rs -zlzma",
            12.0,
            Some(4096),
            Some("floor: compress every file (-zlzma, all threads)"),
            "",
        );
        let out = render(Path::new("/t"), 1, 1, &[floor, rs], &[], &["lzma".into()]).unwrap();
        assert!(
            out.contains("only those whose names contain `lzma`"),
            "{out}"
        );
        assert!(out.contains("| mkfs.erofs-rs -zlzma | 12.00 |"), "{out}");
        assert!(out.contains("1.20x of floor: compress every file"), "{out}");
        assert!(
            out.contains("The compress floors run erofs-builder's"),
            "{out}"
        );
        assert!(!out.contains("fingerprinted build / "), "{out}");
        assert!(!out.contains("Scaling"), "{out}");
    }

    #[test]
    fn compress_floor_compresses_the_listed_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (i, len) in [10usize, 5000, (4 << 20) + 12345].into_iter().enumerate() {
            let p = dir.path().join(format!("f{i}"));
            std::fs::write(&p, &"erofs ".repeat(len / 6 + 1).as_bytes()[..len]).unwrap();
            files.push((p, len as u64));
        }
        let list = dir.path().join("files.list");
        write_list(&files, &list).unwrap();
        for z in ["lz4", "lz4hc", "lzma", "deflate", "zstd"] {
            compress_floor(&list, 2, z, 65536).unwrap();
        }
        assert!(compress_floor(&list, 1, "nosuch", 0).is_err());
        // A file that vanished after listing is an error, not a silent skip.
        std::fs::remove_file(&files[1].0).unwrap();
        assert!(compress_floor(&list, 1, "lz4", 0).is_err());
    }
}
