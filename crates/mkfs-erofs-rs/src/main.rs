//! `mkfs.erofs-rs`: builds an uncompressed EROFS image from a directory or a tar stream.
//!
//! A thin front end: options become [`erofs_builder::Options`], progress is rendered with
//! indicatif on stderr when it is a terminal, errors get their context from anyhow. The
//! erofs-utils drop-in name is handled in [`compat`], `-E` in [`extended`], the kinds of
//! IMAGE in [`erofs_builder::output`].

mod compat;
mod extended;
mod json_report;
mod signals;

use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Instant;

mod input;
mod integrity;

use anyhow::{Context, Result, bail};
use clap::{FromArgMatches, Parser};
use erofs_builder::{
    BuildError, FingerprintOptions, MtimePolicy, Options, Output, OutputKind, UuidChoice,
};
use erofs_cli::Exit;

/// Build an EROFS image from a directory.
#[derive(Parser, Debug)]
#[command(
    name = "mkfs.erofs-rs",
    version,
    about = "Build an EROFS image from a directory, with parallel sha256 fingerprints"
)]
struct Cli {
    /// Source directory; with --tar, the tar file (`-`: standard input).
    source: PathBuf,
    /// Image to write: a file (replaced atomically when complete), a block device, or a
    /// stream (a character device, a fifo, or - for standard output).
    image: PathBuf,

    /// Block size in bytes: 512, 1024, 2048 or 4096.
    #[arg(short = 'b', value_name = "BYTES", default_value_t = 4096)]
    block_size: u32,
    /// Xattrs used by more than N inodes go to the shared area; below 0 drops source xattrs.
    #[arg(
        short = 'x',
        value_name = "N",
        default_value_t = 2,
        allow_hyphen_values = true
    )]
    xattr_tolerance: i32,
    /// Volume label (at most 15 bytes).
    #[arg(short = 'L', value_name = "LABEL")]
    label: Option<String>,
    /// Volume UUID: random, clear, or a value.
    #[arg(short = 'U', value_name = "UUID")]
    uuid: Option<String>,
    /// Fixed timestamp for the image and every file (also SOURCE_DATE_EPOCH).
    #[arg(short = 'T', value_name = "SECONDS", allow_hyphen_values = true)]
    timestamp: Option<i64>,
    /// With -T: apply the timestamp to every file (the default).
    #[arg(long, overrides_with_all = ["mkfs_time", "all_time"])]
    all_time: bool,
    /// With -T: use the timestamp only as the image's build time; files keep their mtimes.
    #[arg(long, overrides_with_all = ["mkfs_time", "all_time"])]
    mkfs_time: bool,
    /// Give every file the image's time (the -T value or the build time): compact inodes.
    #[arg(long, overrides_with_all = ["ignore_mtime", "preserve_mtime"])]
    ignore_mtime: bool,
    /// Keep each file's mtime (the default).
    #[arg(long, overrides_with_all = ["ignore_mtime", "preserve_mtime"])]
    preserve_mtime: bool,
    /// Extended options, comma separated: noinline_data, [^]xattr-name-filter, ztailpacking
    /// (inline compressed tails), legacy-compress (full lcluster indexes), dedupe (with -z:
    /// pclusters shared between extents, within and across files; a shared prefix sets
    /// incompat 0x20, which Linux 6.1+ reads and erofs-utils 1.5 refuses), 48bit (the
    /// 48-bit layout; Linux 6.15+, not 6.12), fragments[=BYTES] (file tails in the packed
    /// inode, Linux 6.1+; BYTES: its pcluster size, at most -C), all-fragments[=BYTES]
    /// (whole files there), [^]fragdedupe[=inode|full]
    /// (identical fragments stored once; full by default).
    #[arg(short = 'E', value_name = "OPTS", action = clap::ArgAction::Append)]
    extended: Vec<String>,

    /// Own every file by root.
    #[arg(long)]
    all_root: bool,
    /// Store this uid for every file.
    #[arg(long, value_name = "UID")]
    force_uid: Option<u32>,
    /// Store this gid for every file.
    #[arg(long, value_name = "GID")]
    force_gid: Option<u32>,
    /// Add this to every uid.
    #[arg(long, value_name = "N", default_value_t = 0)]
    uid_offset: u32,
    /// Add this to every gid.
    #[arg(long, value_name = "N", default_value_t = 0)]
    gid_offset: u32,
    /// Leave out this path (relative to SOURCE); repeatable.
    #[arg(long, value_name = "PATH")]
    exclude_path: Vec<PathBuf>,
    /// Leave out paths (relative to SOURCE) matching this regex; repeatable.
    #[arg(long, value_name = "REGEX")]
    exclude_regex: Vec<String>,

    /// Store a content fingerprint xattr on every non-empty regular file.
    #[arg(long, value_name = "ALG", value_parser = ["sha256"])]
    fingerprint: Option<String>,
    /// Name of the fingerprint xattr.
    #[arg(long, value_name = "NAME", default_value = "trusted.erofs.fingerprint")]
    fingerprint_xattr: String,
    /// erofs-utils spelling: fingerprints under NAME (default erofs.fingerprint.v1).
    #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = true,
          default_missing_value = "erofs.fingerprint.v1")]
    xattr_inode_digest: Option<String>,
    /// Register a long xattr name prefix; repeatable.
    #[arg(long, value_name = "PREFIX")]
    xattr_prefix: Vec<String>,

    /// Store hard-linked files as separate inodes (the image then does not depend on how the
    /// host happened to link files).
    #[arg(long)]
    hard_dereference: bool,
    /// Skip unreadable files instead of failing, and list them at the end.
    #[arg(long)]
    keep_going: bool,
    /// No progress bar and no summary.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Print a JSON build report on standard output (see docs/json.md).
    #[arg(long)]
    json: bool,
    /// Worker threads; 0 means one per CPU [default: one per CPU].
    #[arg(
        short = 'j',
        long,
        visible_alias = "workers",
        value_name = "N",
        default_value_t = 0,
        hide_default_value = true
    )]
    threads: usize,
    /// Compress regular files: `ALG[,LEVEL][:ALG2[,LEVEL]]...`: lz4, lz4hc (levels 0..=12,
    /// default 9), deflate (0..=9, default 1), libdeflate (the same format; libdeflate's
    /// levels 0..=12, default 1), lzma (MicroLZMA: 0..=9 or the extreme
    /// 100..=109, default 6; `,dictsize=BYTES` 4096..=8388608) or zstd (0..=22, default 3;
    /// `,dictsize=BYTES` 1024..=1048576). `level=N` is accepted for the level. The first
    /// algorithm compresses every file; later ones only those that --compress-hints sends
    /// to them.
    #[arg(short = 'z', value_name = "ALG[,LEVEL]")]
    compress: Option<String>,
    /// Per-path pcluster sizes and algorithms, one rule per line:
    /// `PCLUSTER-BYTES [ALGORITHM-INDEX] REGEX` (the regex is matched against the path
    /// relative to the source, without a leading `/`; the first matching rule wins; the
    /// index counts -z's algorithms from 0).
    #[arg(long, value_name = "FILE", requires = "compress")]
    compress_hints: Option<PathBuf>,
    /// Largest pcluster in bytes, a multiple of the block size (default: one block).
    #[arg(short = 'C', value_name = "BYTES", requires = "compress")]
    pcluster: Option<u32>,
    /// The most bytes one extent decodes to (decimal or 0x hex), at least one block;
    /// default and ceiling: 12 MiB, the most Linux decodes.
    #[arg(long, value_name = "BYTES", requires = "compress", value_parser = parse_max_extent)]
    max_extent_bytes: Option<u32>,

    /// erofs-utils' message level; accepted for compatibility, no effect.
    #[arg(short = 'd', value_name = "LEVEL", allow_hyphen_values = true)]
    debug_level: Option<i32>,
    /// erofs-utils' data order for tar input; a directory's data is always in path order.
    #[arg(long, value_name = "ORDER", value_parser = ["path", "none"])]
    sort: Option<String>,

    #[command(flatten)]
    tar: TarArgs,

    #[command(flatten)]
    integrity: integrity::IntegrityArgs,
}

/// The `--tar` options.
#[derive(clap::Args, Debug)]
struct TarArgs {
    /// SOURCE is a tar stream: --tar=f copies file data into the image (the default),
    /// --tar=i indexes it (512-byte blocks; files point into the tar, mounted with
    /// -o device=TAR, or with the tar appended to the image), --tar=i,MAPFILE reserves
    /// room for the data after the metadata and writes where each file's bytes go to
    /// MAPFILE, --tar=headerball takes headers only (files read as zeroes). gzip, zstd and xz input
    /// is detected by its magic. Missing parents get 0755, 0:0 and the image time; `..` and
    /// absolute paths are refused; OCI whiteouts are converted (as --aufs).
    #[arg(long = "tar", value_name = "MODE", num_args = 0..=1, require_equals = true,
          default_missing_value = "f", overrides_with = "mode")]
    mode: Option<String>,
    /// Convert OCI whiteouts to overlayfs form (the default with --tar): `.wh.NAME` becomes
    /// a 0/0 character device, `.wh..wh..opq` the trusted.overlay.opaque=y xattr.
    #[arg(long, overrides_with = "no_aufs")]
    aufs: bool,
    /// Keep `.wh.*` entries as the plain files they are in the stream.
    #[arg(long)]
    no_aufs: bool,
    /// Drop whiteouts, opaque markers and every overlay xattr.
    #[arg(long)]
    ovlfs_strip: bool,
    /// Resolve `..` and absolute paths inside the root (erofs-utils) instead of refusing.
    #[arg(long)]
    tar_clamp_paths: bool,
    /// Read past end-of-archive zero blocks (concatenated archives).
    #[arg(long)]
    tar_ignore_zeros: bool,
    /// Keep trusted.overlay.* / user.overlay.* xattrs found in the stream (dropped by default).
    #[arg(long)]
    tar_keep_overlay_xattrs: bool,
    /// The tar is gzip-compressed; with FILE, also write the decompressed tar there.
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true,
          default_missing_value = "")]
    ungzip: Option<String>,
    /// The tar is zstd-compressed; with FILE, also write the decompressed tar there.
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true,
          default_missing_value = "")]
    unzstd: Option<String>,
    /// The tar is xz-compressed; with FILE, also write the decompressed tar there.
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true,
          default_missing_value = "")]
    unxz: Option<String>,
    /// Print `sha256:<hex>` of the decompressed tar stream (the OCI diff_id) on stdout.
    #[arg(long)]
    print_diff_id: bool,
}

/// Builder options from the command line; an error here is a usage error.
fn options_from(cli: &Cli) -> Result<Options> {
    let blkszbits = match cli.block_size {
        512 => 9,
        1024 => 10,
        2048 => 11,
        4096 => 12,
        other => bail!("-b {other}: block size must be 512, 1024, 2048 or 4096"),
    };
    // -T sets every time; SOURCE_DATE_EPOCH only clamps (reproducible-builds.org).
    let (timestamp, clamp) = match cli.timestamp {
        Some(t) => (Some(t), false),
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if !v.is_empty() => (
                Some(
                    v.trim()
                        .parse::<i64>()
                        .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number"))?,
                ),
                true,
            ),
            _ => (None, false),
        },
    };
    let uuid = match &cli.uuid {
        Some(u) => UuidChoice::parse(u)?,
        None => UuidChoice::Random,
    };
    let extended::Extended {
        noinline_data,
        xattr_name_filter,
        ztailpacking,
        legacy_compress,
        bit48,
        fragments,
        packed_pcluster,
        fragdedupe,
        dedupe,
    } = extended::parse(&cli.extended)?;
    if dedupe && cli.compress.is_none() {
        anyhow::bail!(
            "-E dedupe shares compressed pclusters and needs -z (mkfs.erofs would switch to \
             chunk-based dedupe instead, which mkfs.erofs-rs does not do)"
        );
    }
    let mut o = Options::default();
    o.fingerprint = match (&cli.xattr_inode_digest, &cli.fingerprint) {
        (Some(name), _) => Some(FingerprintOptions::new(name.as_bytes())),
        (None, Some(_)) => Some(FingerprintOptions::new(cli.fingerprint_xattr.as_bytes())),
        (None, None) => None,
    };
    o.blkszbits = blkszbits;
    o.timestamp = timestamp;
    o.scan.mtime = if cli.ignore_mtime {
        MtimePolicy::IgnoreMtime
    } else if cli.mkfs_time {
        MtimePolicy::MkfsTime
    } else if clamp && !cli.all_time {
        MtimePolicy::Clamp
    } else {
        MtimePolicy::AllTime
    };
    o.uuid = uuid;
    o.label = cli.label.clone().unwrap_or_default().into_bytes();
    o.xattr_tolerance = cli.xattr_tolerance;
    o.xattr_prefixes = cli
        .xattr_prefix
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    o.xattr_name_filter = xattr_name_filter;
    o.noinline_data = noinline_data;
    o.scan.ownership.all_root = cli.all_root;
    o.scan.ownership.force_uid = cli.force_uid;
    o.scan.ownership.force_gid = cli.force_gid;
    o.scan.ownership.uid_offset = cli.uid_offset;
    o.scan.ownership.gid_offset = cli.gid_offset;
    o.scan.exclude_paths = cli
        .exclude_path
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    o.scan.exclude_regexes = cli.exclude_regex.clone();
    o.scan.keep_going = cli.keep_going;
    o.scan.hard_dereference = cli.hard_dereference;
    o.threads = cli.threads;
    if let Some(z) = &cli.compress {
        let mut c = erofs_builder::CompressOptions::parse(z)?;
        c.max_pcluster_bytes = cli.pcluster.unwrap_or(0);
        c.max_extent_bytes = cli.max_extent_bytes.unwrap_or(0);
        c.packed_pcluster_bytes = packed_pcluster;
        if let Some(path) = &cli.compress_hints {
            let text = std::fs::read_to_string(path).map_err(|e| {
                erofs_builder::BuildError::InvalidOption(format!(
                    "--compress-hints {}: {e}",
                    path.display()
                ))
            })?;
            c.hints = erofs_builder::compress::CompressHint::parse_file(
                &text,
                &path.display().to_string(),
            )?;
        }
        o.compression = Some(c);
    }
    o.zlayout.ztailpacking = ztailpacking;
    o.zlayout.full_indexes = legacy_compress;
    o.zlayout.fragments = fragments;
    o.zlayout.fragdedupe = fragdedupe;
    o.zlayout.dedupe = dedupe;
    o.bit48 = bit48;
    o.verity = cli.integrity.verity_options()?;
    o.fsverity_digest = cli.integrity.fsverity_digest;
    Ok(o)
}

/// Why a run failed: the exit status tells a usage error from an operational one.
enum Failure {
    Usage(anyhow::Error),
    Operational(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Operational(e.into())
    }
}

fn main() -> std::process::ExitCode {
    let name = erofs_cli::invoked_as();
    let cmd = compat::command(name.as_deref());
    erofs_cli::generate_if_asked(&cmd, &compat::MAN_SECTIONS);
    let matches = erofs_cli::parse(cmd, std::env::args_os().collect());
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Exit::Usage.code();
        }
    };
    match run(&cli) {
        Ok(()) => Exit::Ok.code(),
        Err(Failure::Operational(e)) if erofs_cli::is_broken_pipe(&e) || is_output_pipe(&e) => {
            Exit::Ok.code()
        }
        Err(Failure::Usage(e)) => {
            eprintln!("mkfs.erofs-rs: error: {e:#}");
            Exit::Usage.code()
        }
        Err(Failure::Operational(e)) => {
            eprintln!("mkfs.erofs-rs: error: {e:#}");
            if !cli.keep_going && is_source_read_error(&e) {
                eprintln!("hint: --keep-going skips unreadable files and lists them at the end");
            }
            Exit::Operational.code()
        }
    }
}

/// A source file or directory that could not be read (what `--keep-going` skips).
fn is_source_read_error(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| matches!(c.downcast_ref::<BuildError>(), Some(BuildError::Io { .. })))
}

/// A stream output whose reader went away (`mkfs.erofs-rs DIR - | head -c 1`).
fn is_output_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(c.downcast_ref::<BuildError>(),
            Some(BuildError::Output(io)) if io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// SOURCE must be a directory; with the arguments swapped (erofs-utils' order under our
/// name), say so instead of failing on a missing SOURCE.
fn check_source(cli: &Cli) -> Result<()> {
    let source_is_dir = std::fs::metadata(&cli.source).is_ok_and(|m| m.is_dir());
    if source_is_dir {
        return Ok(());
    }
    if cli.source.as_os_str() == "-" {
        bail!(
            "SOURCE - (standard input) is a tar stream: add --tar=f, or give a directory \
             (usage: {})",
            compat::usage(erofs_cli::invoked_as().as_deref())
        );
    }
    let image_is_dir = std::fs::metadata(&cli.image).is_ok_and(|m| m.is_dir());
    let what = match std::fs::metadata(&cli.source) {
        Ok(_) => "is not a directory",
        Err(_) => "does not exist",
    };
    if image_is_dir {
        bail!(
            "SOURCE {} {what}, and IMAGE {} is a directory: did you swap SOURCE and IMAGE? \
             (usage: {})",
            cli.source.display(),
            cli.image.display(),
            compat::usage(erofs_cli::invoked_as().as_deref())
        );
    }
    bail!("SOURCE {} {what}", cli.source.display());
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let options = options_from(cli).map_err(Failure::Usage)?;
    options.validate().map_err(|e| Failure::Usage(e.into()))?;
    if cli.tar.mode.is_none() {
        check_source(cli).map_err(Failure::Usage)?;
    }
    if options.bit48 && !cli.quiet {
        // Said before any work: the image will not mount where many users try it first.
        eprintln!(
            "mkfs.erofs-rs: note: -E 48bit sets incompat feature 48bit (0x80): Linux 6.15 or \
             later mounts the image; Linux 6.12 refuses it (\"unidentified incompatible \
             feature\"), as do erofs-utils before 1.9"
        );
    }
    let start = Instant::now();
    let unnamed = std::env::var_os("MKFS_EROFS_RS_NO_TMPFILE").is_none();
    let cleanup = signals::Cleanup::install().context("installing signal handlers")?;
    if cli.image.as_os_str() == "-" && std::io::stdout().is_terminal() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "IMAGE -: standard output is a terminal; redirect it to a file or a pipe"
        )));
    }
    let mut out = Output::create_with(&cli.image, unnamed)?;
    if let Some(temp) = out.temp_path() {
        cleanup.remove_on_signal(temp.to_path_buf());
    }
    let timings = std::env::var_os("MKFS_EROFS_RS_TIMINGS").is_some();
    let mut bar = erofs_cli::Bar::new(!cli.quiet && !cli.json, "building", "files");
    if timings {
        bar = bar.print_phases(start);
    }
    let (report, diff_id) = match &cli.tar.mode {
        None => (
            erofs_builder::build_dir_to_output(&cli.source, &mut out, &options, &bar)?,
            None,
        ),
        Some(mode) => run_tar(cli, mode, &options, &mut out, &bar)?,
    };
    let to_stdout = out.kind() == OutputKind::Stream && cli.image.as_os_str() == "-";
    out.commit()?;
    if let Some(d) = diff_id {
        let hex = erofs_verity::to_hex(&d);
        // With the image on standard output, the diff_id goes to stderr.
        if to_stdout {
            eprintln!("sha256:{hex}");
        } else {
            println!("sha256:{hex}");
        }
    }
    if timings {
        // The serial share of the build: CPU time on the in-order path over all CPU time.
        let cpu = erofs_cli::cpu_seconds().unwrap_or(0.0);
        let ordered = report.timings.ordered_cpu.as_secs_f64();
        eprintln!(
            "in-order cpu {ordered:.3}s ({:.1}% of {cpu:.2}s cpu), workers waited {:.3}s",
            if cpu > 0.0 {
                100.0 * ordered / cpu
            } else {
                0.0
            },
            report.timings.worker_wait.as_secs_f64()
        );
    }
    let seconds = start.elapsed().as_secs_f64();
    if cli.json {
        let json = json_report::JsonReport::new(
            &cli.source,
            &cli.image,
            cli.compress.as_deref(),
            &options,
            &report,
            seconds,
        );
        // With the image on standard output, the report goes to stderr.
        let text = serde_json::to_string_pretty(&json)? + "\n";
        if to_stdout {
            std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes())?;
        } else {
            std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())?;
        }
        return Ok(());
    }
    if !report.skipped.is_empty() && !cli.quiet {
        let n = report.skipped.len();
        eprintln!(
            "skipped {n} unreadable {} (--keep-going):",
            if n == 1 { "entry" } else { "entries" }
        );
        for s in &report.skipped {
            eprintln!("  {}: {}", s.path.display(), s.reason);
        }
    }
    integrity::print_report(&report, to_stdout);
    if !cli.quiet {
        eprintln!(
            "{}: {} inodes, {} bytes, {} fingerprinted files, {:.2}s",
            cli.image.display(),
            report.inodes,
            report.image_bytes,
            report.fingerprinted_files,
            seconds
        );
    }
    Ok(())
}

/// Builds from the tar stream SOURCE into `out`; returns the report and the stream's
/// diff_id when `--print-diff-id` asked for it.
fn run_tar(
    cli: &Cli,
    mode: &str,
    options: &Options,
    out: &mut Output,
    bar: &erofs_cli::Bar,
) -> Result<(erofs_builder::BuildReport, Option<[u8; 32]>)> {
    use erofs_builder::tar_source::{TarOptions, TarSource, Whiteouts};
    use input::Codec;
    let t = &cli.tar;
    if !cli.exclude_path.is_empty() || !cli.exclude_regex.is_empty() || cli.keep_going {
        bail!("--exclude-path, --exclude-regex and --keep-going apply to directories, not --tar");
    }
    // mkfs.erofs's spelling: MODE[,MAPFILE].
    let (mode, map_file) = match mode.split_once(',') {
        Some((m, f)) if !f.is_empty() => (m, Some(std::path::Path::new(f))),
        Some((m, _)) => (m, None),
        None => (mode, None),
    };
    let (headerball, index) = match mode {
        "f" => (false, false),
        "headerball" => (true, false),
        "i" | "0" => (false, true),
        other => bail!("--tar={other}: unknown mode (f, i or headerball)"),
    };
    if map_file.is_some() && !index {
        bail!("--tar={mode},MAPFILE: a map file goes with --tar=i only");
    }
    let mut options = options.clone();
    if index && map_file.is_none() {
        // Tar data sits at 512-byte offsets: blocks of 512 address all of it.
        options.blkszbits = 9;
    }
    let options = &options;
    let forced: Vec<(Codec, &String)> = [
        (Codec::Gzip, &t.ungzip),
        (Codec::Zstd, &t.unzstd),
        (Codec::Xz, &t.unxz),
    ]
    .into_iter()
    .filter_map(|(c, p)| p.as_ref().map(|p| (c, p)))
    .collect();
    if forced.len() > 1 {
        bail!("--ungzip, --unzstd and --unxz exclude each other");
    }
    let digests = std::sync::Arc::new(std::sync::Mutex::new(input::Digests::default()));
    let dump = forced
        .first()
        .filter(|(_, p)| !p.is_empty())
        .map(|(_, p)| std::path::Path::new(p.as_str()));
    let stream = input::open(
        &cli.source,
        forced.first().map(|(c, _)| *c),
        dump,
        std::sync::Arc::clone(&digests),
    )?;
    let whiteouts = if t.ovlfs_strip {
        Whiteouts::Strip
    } else if t.no_aufs && !t.aufs {
        Whiteouts::Keep
    } else {
        Whiteouts::Convert
    };
    let mut tar_options = TarOptions::default();
    tar_options.whiteouts = whiteouts;
    tar_options.clamp_paths = t.tar_clamp_paths;
    tar_options.ignore_zeros = t.tar_ignore_zeros;
    tar_options.headerball = headerball;
    tar_options.index = index;
    tar_options.index_map = map_file.is_some();
    tar_options.keep_overlay_xattrs = t.tar_keep_overlay_xattrs;
    let mut source = TarSource::new(stream, tar_options);
    let report =
        erofs_builder::build_to_output(&mut source, out, options, bar).with_context(|| {
            format!(
                "building {} from {}",
                cli.image.display(),
                cli.source.display()
            )
        })?;
    if let Some(path) = map_file {
        // mkfs.erofs's block list: image block, block count, tar offset (hex), and the
        // zero bytes after the content in its last block (decimal) when there are any.
        let mut text = String::new();
        for r in &report.region_map {
            text += &format!("{:08x} {:8x} {:08x}", r.blkaddr, r.blocks, r.source_offset);
            if r.zeroed > 0 {
                text += &format!(" {:08}", r.zeroed);
            }
            text.push('\n');
        }
        std::fs::write(path, text)
            .with_context(|| format!("writing the map file {}", path.display()))?;
    }
    let diff_id = if t.print_diff_id {
        digests.lock().unwrap_or_else(|e| e.into_inner()).diff_id
    } else {
        None
    };
    Ok((report, diff_id))
}

/// `--max-extent-bytes`: an unsigned number as mkfs.erofs reads it (decimal, or hex after
/// `0x`), not zero; larger than 32 bits means no cap below Linux's.
fn parse_max_extent(v: &str) -> Result<u32, String> {
    let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse::<u64>(),
    }
    .map_err(|_| format!("invalid maximum extent size {v:?}: expected a number of bytes"))?;
    if n == 0 {
        return Err("the maximum extent size must be at least one block, not 0".into());
    }
    Ok(n.min(u64::from(u32::MAX)) as u32)
}
