//! `dump.erofs-rs`: shows what is inside an EROFS image.
//!
//! The default view is the superblock summary. `-S` adds statistics, `--nid`/`--path`
//! select an inode (shown with its layout, sizes, xattrs and extents), `--ls` lists a
//! directory, `--cat` writes a file's contents, `--xattrs` lists xattrs, `--map` accounts
//! for every byte of the image. `--json` turns
//! every view into one JSON object (see docs/json.md).

mod appended;
mod compat;
mod shared_report;
mod views;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use erofs_cli::Exit;
use erofs_reader::{Cancellable, Image, OpenOptions};

/// Command-line interface.
#[derive(Parser, Debug)]
#[command(
    name = "dump.erofs-rs",
    version,
    about = "Show what is inside an EROFS image"
)]
pub struct Cli {
    /// The image file (with --shared-report: every image to compare).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,

    /// Show the superblock summary (the default when no other view is chosen).
    #[arg(short = 's')]
    pub superblock: bool,

    /// Show statistics: file counts per type, sizes, histograms.
    #[arg(short = 'S')]
    pub stats: bool,

    /// Select the inode with this nid.
    #[arg(long, value_name = "NID")]
    pub nid: Option<u64>,

    /// Select the inode at this path (from the image root; wins over --nid).
    #[arg(long, value_name = "PATH")]
    pub path: Option<OsString>,

    /// Show the data extents of the selected inode (always part of the inode view;
    /// accepted for dump.erofs compatibility).
    #[arg(short = 'e')]
    pub extents: bool,

    /// List the selected directory (the root by default).
    #[arg(long)]
    pub ls: bool,

    /// Write the selected file's contents to stdout.
    #[arg(long)]
    pub cat: bool,

    /// List the xattrs of the selected inode (the root by default).
    #[arg(long)]
    pub xattrs: bool,

    /// Account for every byte of the image: a sorted list of ranges (superblock, inodes,
    /// xattrs, directories, data, pclusters, padding, unreferenced bytes) with their owners,
    /// and totals per kind that sum to the image size.
    #[arg(long)]
    pub map: bool,

    /// Print JSON (one object whose keys are the views shown; see docs/json.md).
    #[arg(long)]
    pub json: bool,

    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Report which regular files of the IMAGEs would share page cache when all are
    /// mounted with `-o inode_share` in one domain, what that saves, and what prevents it.
    #[arg(long)]
    pub shared_report: bool,

    /// With --shared-report: also hash every fingerprinted file and flag content that does
    /// not match its fingerprint (it would poison the shared page cache); exits 4 if any.
    #[arg(long, requires = "shared_report")]
    pub verify_content: bool,

    /// With --shared-report: how many groups to list, largest saving first.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        requires = "shared_report"
    )]
    pub top: usize,
}

fn main() -> std::process::ExitCode {
    let cli = compat::parse();
    erofs_cli::run_interruptible("dump.erofs-rs", |interrupt| run(&cli, interrupt))
}

/// Opens an image for viewing; the message names the path once, and says when it is a
/// directory rather than an image.
pub fn open_image(image: &std::path::Path) -> Result<Image<'static>> {
    if image.is_dir() {
        bail!("{} is a directory, not an EROFS image", image.display());
    }
    // dump shows damaged images too: the checksum is reported, not enforced.
    Image::open_with(image, OpenOptions::default().verify_checksum(false)).map_err(|e| match e {
        // Already names the path.
        erofs_reader::Error::Open { .. } => anyhow::anyhow!("{e}"),
        e => anyhow::anyhow!("cannot read {}: {e}", image.display()),
    })
}

fn run(cli: &Cli, interrupt: &erofs_cli::Interrupt) -> Result<Exit> {
    if cli.shared_report {
        return shared_report::run(
            &cli.images,
            cli.top,
            cli.verify_content,
            cli.json,
            cli.quiet,
        );
    }
    let image = &cli.images[0];
    let img = open_image(image)?;

    let selected = match (&cli.path, cli.nid) {
        (Some(p), _) => {
            let bytes = p.as_bytes();
            Some((
                img.lookup(bytes).map_err(|e| match e {
                    erofs_reader::Error::NotFound { .. } => anyhow::anyhow!(
                        "--path {}: no such file or directory in {}",
                        p.to_string_lossy(),
                        image.display()
                    ),
                    e => anyhow::Error::from(e).context(format!("--path {}", p.to_string_lossy())),
                })?,
                Some(bytes.to_vec()),
            ))
        }
        (None, Some(nid)) => Some((img.inode(nid).with_context(|| format!("nid {nid}"))?, None)),
        (None, None) => None,
    };
    let inode_view = selected.is_some() && !cli.ls && !cli.cat && !cli.xattrs;
    let superblock = cli.superblock
        || !(cli.stats || selected.is_some() || cli.ls || cli.cat || cli.xattrs || cli.map);
    let target = || -> Result<(erofs_reader::Inode, Option<Vec<u8>>)> {
        match &selected {
            Some(s) => Ok(s.clone()),
            None => Ok((img.inode(img.root_nid())?, Some(b"/".to_vec()))),
        }
    };
    if cli.cat && selected.is_none() {
        bail!("--cat needs --nid or --path");
    }

    let mut out = std::io::stdout().lock();
    let mut json = serde_json::Map::new();
    if superblock {
        let info = erofs_reader::summary::SuperblockInfo::of(&img);
        let tail = appended::detect(&img);
        if cli.json {
            json.insert("superblock".into(), serde_json::to_value(&info)?);
            if let Some(t) = &tail {
                json.insert("appended".into(), serde_json::to_value(t)?);
            }
        } else {
            views::print_superblock(&mut out, &info)?;
            if let Some(t) = &tail {
                appended::print(&mut out, t)?;
            }
        }
    }
    if cli.stats {
        let bar = erofs_cli::Bar::new(!cli.quiet && !cli.json, "walking", "inodes");
        let stats = {
            let _armed = interrupt.arm();
            let progress = Cancellable::new(&bar, interrupt.token().clone());
            erofs_reader::stats::stats(&img, &progress).context("statistics")?
        };
        if cli.json {
            json.insert("stats".into(), serde_json::to_value(&stats)?);
        } else {
            views::print_stats(&mut out, &stats)?;
        }
    }
    if cli.map {
        let map = erofs_reader::space::space_map(&img).context("mapping the image")?;
        if cli.json {
            json.insert("map".into(), serde_json::to_value(&map)?);
        } else {
            views::print_map(&mut out, &map)?;
        }
    }
    if inode_view && let Some((inode, path)) = &selected {
        let v = views::InodeView::of(&img, inode, path.as_deref())?;
        if cli.json {
            json.insert("inode".into(), serde_json::to_value(&v)?);
        } else {
            views::print_inode(&mut out, &v)?;
        }
    }
    if cli.ls {
        let (dir, _) = target()?;
        let entries = img
            .read_dir(&dir)
            .with_context(|| format!("listing nid {}", dir.nid))?;
        if cli.json {
            json.insert("ls".into(), serde_json::to_value(&entries)?);
        } else {
            views::print_ls(&mut out, &entries)?;
        }
    }
    if cli.xattrs {
        let (inode, _) = target()?;
        let xattrs = img
            .xattrs(&inode)
            .with_context(|| format!("xattrs of nid {}", inode.nid))?;
        if cli.json {
            json.insert("xattrs".into(), serde_json::to_value(&xattrs)?);
        } else {
            views::print_xattrs(&mut out, &xattrs)?;
        }
    }
    if cli.cat {
        let (inode, _) = target()?;
        if !inode.is_file() && !inode.is_symlink() {
            let what = match &cli.path {
                Some(p) => p.to_string_lossy().into_owned(),
                None => format!("nid {}", inode.nid),
            };
            if inode.is_dir() {
                bail!("--cat: {what} is a directory, not a file (--ls lists it)");
            }
            bail!(
                "--cat: {what} is a {}, not a file",
                inode.file_type().name()
            );
        }
        if cli.json {
            let data = img.read_to_vec(&inode, img.len().max(1 << 30))?;
            json.insert(
                "cat".into(),
                serde_json::json!({
                    "nid": inode.nid,
                    "size": inode.size,
                    "content": erofs_reader::escape_bytes(&data),
                }),
            );
        } else {
            std::io::copy(&mut img.reader(&inode), &mut out)
                .with_context(|| format!("reading nid {}", inode.nid))?;
        }
    }
    if cli.json {
        serde_json::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(Exit::Ok)
}
