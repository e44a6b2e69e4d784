//! `--shared-report IMG [IMG...]`: which files of these images would share page cache
//! under `mount -o inode_share,domain_id=...`, what that saves, and what prevents it.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use erofs_cli::Exit;
use erofs_reader::{Image, NoProgress, OpenOptions, Progress};
use erofs_share::collect::{facts_of, image_facts, regular_files};
use erofs_share::verify::{Issue, verify_files};
use erofs_share::{FileFacts, ImageFacts, analyze, render_text};
use rayon::prelude::*;

/// Reads every image (in parallel), builds the report and prints it.
pub fn run(
    images: &[PathBuf],
    top: usize,
    verify_content: bool,
    json: bool,
    quiet: bool,
) -> Result<Exit> {
    let bar = erofs_cli::Bar::new(!quiet && !json, "reading", "images");
    bar.start(Some(images.len() as u64), None);
    let read: Vec<Result<(ImageFacts, Vec<FileFacts>)>> = images
        .par_iter()
        .enumerate()
        .map(|(i, path)| {
            let name = path.display().to_string();
            let img = Image::open_with(path, OpenOptions::default().verify_checksum(true))
                .with_context(|| format!("cannot read {name}"))?;
            let facts = image_facts(&name, &img);
            let regular = regular_files(&img).with_context(|| format!("walking {name}"))?;
            let mut files =
                facts_of(i, &img, &regular).with_context(|| format!("reading {name}"))?;
            if verify_content {
                let v = verify_files(&img, regular, &NoProgress)
                    .with_context(|| format!("verifying {name}"))?;
                let bad: HashMap<u64, String> = v
                    .issues
                    .into_iter()
                    .filter_map(|i| match i.issue {
                        Issue::Mismatch { computed, .. } => Some((i.nid, computed)),
                        _ => None,
                    })
                    .collect();
                for f in &mut files {
                    f.content_mismatch = bad.get(&f.nid).cloned();
                }
            }
            bar.advance(1, 0);
            Ok((facts, files))
        })
        .collect();
    bar.finish();
    let mut facts = Vec::new();
    let mut files = Vec::new();
    for r in read {
        let (f, mut fs) = r?;
        facts.push(f);
        files.append(&mut fs);
    }
    let report = analyze(&facts, &files);
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        out.write_all(render_text(&report, top).as_bytes())?;
    }
    if !verify_content {
        return Ok(Exit::Ok);
    }
    let conflicts = files
        .iter()
        .filter(|f| f.content_mismatch.is_some())
        .count();
    let hashed = files.iter().filter(|f| f.fingerprint.is_some()).count();
    if !json {
        // The verdict line matches the exit status.
        if conflicts == 0 {
            writeln!(
                out,
                "content verified: all {hashed} fingerprinted files match their fingerprints"
            )?;
        } else {
            writeln!(
                out,
                "content verified: {conflicts} of {hashed} fingerprinted files do not match their fingerprints (CONTENT CONFLICT above)"
            )?;
        }
    }
    Ok(if conflicts == 0 {
        Exit::Ok
    } else {
        Exit::ErrorsLeft
    })
}
