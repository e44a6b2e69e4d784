//! `mkfs.erofs-rs`: builds an uncompressed EROFS image from a directory.
//!
//! A thin front end: options become [`erofs_builder::Options`], progress is rendered with
//! indicatif on stderr when it is a terminal, errors get their context from anyhow.

use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use erofs_builder::{
    FingerprintOptions, MtimePolicy, Options, Ownership, Phase, Progress, UuidChoice,
};

/// Build an EROFS image from a directory.
#[derive(Parser, Debug)]
#[command(name = "mkfs.erofs-rs", version, about, long_about = None)]
struct Cli {
    /// Source directory.
    source: PathBuf,
    /// Image file to create (replaced atomically on success).
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
    /// Extended options, comma separated: noinline_data, [^]xattr-name-filter.
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

    /// Skip unreadable files instead of failing, and list them at the end.
    #[arg(long)]
    keep_going: bool,
    /// No progress bar and no summary.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Worker threads (default: one per CPU).
    #[arg(short = 'j', long, value_name = "N", default_value_t = 0)]
    threads: usize,
    /// Compress regular files: `ALG[,LEVEL]`: lz4, lz4hc (levels 0..=12, default 9) or deflate
    /// (levels 0..=9, default 1).
    #[arg(short = 'z', value_name = "ALG[,LEVEL]")]
    compress: Option<String>,
    /// Largest pcluster in bytes, a multiple of the block size (default: one block).
    #[arg(short = 'C', value_name = "BYTES", requires = "compress")]
    pcluster: Option<u32>,
}

fn options_from(cli: &Cli) -> Result<Options> {
    let blkszbits = match cli.block_size {
        512 => 9,
        1024 => 10,
        2048 => 11,
        4096 => 12,
        other => bail!("-b {other}: block size must be 512, 1024, 2048 or 4096"),
    };
    let timestamp = match cli.timestamp {
        Some(t) => Some(t),
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if !v.is_empty() => Some(
                v.trim()
                    .parse::<i64>()
                    .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number"))?,
            ),
            _ => None,
        },
    };
    let uuid = match &cli.uuid {
        Some(u) => UuidChoice::parse(u)?,
        None => UuidChoice::Random,
    };
    let mut noinline_data = false;
    let mut xattr_name_filter = true;
    for opt in cli.extended.iter().flat_map(|e| e.split(',')) {
        match opt {
            "" => {}
            "noinline_data" | "^inline_data" => noinline_data = true,
            "inline_data" => noinline_data = false,
            "xattr-name-filter" => xattr_name_filter = true,
            "^xattr-name-filter" => xattr_name_filter = false,
            other => bail!("-E {other}: unknown extended option"),
        }
    }
    let fingerprint = match (&cli.xattr_inode_digest, &cli.fingerprint) {
        (Some(name), _) => Some(FingerprintOptions {
            xattr_name: name.as_bytes().to_vec(),
        }),
        (None, Some(_)) => Some(FingerprintOptions {
            xattr_name: cli.fingerprint_xattr.as_bytes().to_vec(),
        }),
        (None, None) => None,
    };
    Ok(Options {
        blkszbits,
        timestamp,
        mtime: if cli.ignore_mtime {
            MtimePolicy::IgnoreMtime
        } else if cli.mkfs_time {
            MtimePolicy::MkfsTime
        } else {
            MtimePolicy::AllTime
        },
        uuid,
        label: cli.label.clone().unwrap_or_default().into_bytes(),
        xattr_tolerance: cli.xattr_tolerance,
        xattr_prefixes: cli
            .xattr_prefix
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect(),
        xattr_name_filter,
        noinline_data,
        fingerprint,
        ownership: Ownership {
            all_root: cli.all_root,
            force_uid: cli.force_uid,
            force_gid: cli.force_gid,
            uid_offset: cli.uid_offset,
            gid_offset: cli.gid_offset,
        },
        exclude_paths: cli
            .exclude_path
            .iter()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .collect(),
        exclude_regexes: cli.exclude_regex.clone(),
        keep_going: cli.keep_going,
        threads: cli.threads,
        compression: match &cli.compress {
            Some(z) => {
                let mut c = erofs_builder::compress::CompressOptions::parse(z)?;
                c.max_pcluster_bytes = cli.pcluster.unwrap_or(0);
                Some(c)
            }
            None => None,
        },
    })
}

/// Renders progress with indicatif, or only collects warnings when quiet / not a terminal.
struct Bar {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
    /// `MKFS_EROFS_RS_TIMINGS=1`: print when each stage starts, for profiling.
    timings: Option<Instant>,
    files_done: AtomicU64,
    files_total: AtomicU64,
}

impl Bar {
    fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_message("scanning");
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        let timings = std::env::var_os("MKFS_EROFS_RS_TIMINGS").map(|_| Instant::now());
        Self {
            bar,
            quiet,
            timings,
            files_done: AtomicU64::new(0),
            files_total: AtomicU64::new(0),
        }
    }
}

impl Progress for Bar {
    fn phase(&self, phase: Phase) {
        if let Some(t) = self.timings {
            eprintln!(
                "{:8.3}s {:>7} cpu {phase:?}",
                t.elapsed().as_secs_f64(),
                cpu_seconds().map_or("?".into(), |c| format!("{c:.2}s"))
            );
        }
        if let Some(b) = &self.bar {
            match phase {
                Phase::Scan => b.set_message("scanning"),
                Phase::Plan => b.set_message("planning"),
                Phase::Data => {}
                Phase::Metadata => {}
                Phase::Done => b.finish_and_clear(),
            }
        }
    }

    fn scanned(&self, entries: u64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("scanning: {entries} entries"));
        }
    }

    fn totals(&self, files: u64, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_length(bytes);
            b.set_position(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            self.files_total.store(files, Ordering::Relaxed);
            b.set_message(format!("0/{files} files"));
        }
    }

    fn advance(&self, files: u64, bytes: u64) {
        if let Some(b) = &self.bar {
            let done = self.files_done.fetch_add(files, Ordering::Relaxed) + files;
            let total = self.files_total.load(Ordering::Relaxed);
            b.set_message(format!("{done}/{total} files"));
            b.inc(bytes);
        }
    }

    fn warning(&self, message: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(format!("warning: {message}")),
            None => eprintln!("warning: {message}"),
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkfs.erofs-rs: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let options = options_from(cli)?;
    let start = Instant::now();
    let bar = Bar::new(cli.quiet);
    let report = erofs_builder::build_dir_to_path(&cli.source, &cli.image, &options, &bar)
        .with_context(|| format!("building {}", cli.image.display()))?;
    if let Some(b) = &bar.bar {
        b.finish_and_clear();
    }
    if bar.timings.is_some() {
        // The serial share of the build: CPU time on the in-order path over all CPU time.
        let cpu = cpu_seconds().unwrap_or(0.0);
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
    if !report.skipped.is_empty() {
        eprintln!("skipped {} files (--keep-going):", report.skipped.len());
        for s in &report.skipped {
            eprintln!("  {}: {}", s.path.display(), s.reason);
        }
    }
    if !cli.quiet {
        eprintln!(
            "{}: {} inodes, {} bytes, {} fingerprinted files, {:.2}s",
            cli.image.display(),
            report.inodes,
            report.image_bytes,
            report.fingerprinted_files,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// User plus system CPU time of this process so far, from /proc (for the timings only).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_whitespace().skip(11);
    let user: f64 = f.next()?.parse().ok()?;
    let sys: f64 = f.next()?.parse().ok()?;
    Some((user + sys) / 100.0)
}
