//! `--verity` and `--fsverity-digest`: their options and what they print.

use anyhow::{Result, bail};
use erofs_builder::{BuildReport, VerityOptions, VerityReport};
use std::path::PathBuf;

/// Integrity options.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Integrity")]
pub struct IntegrityArgs {
    /// Append a dm-verity hash tree (format 1, sha256, 4096-byte blocks) after the image and
    /// print its root hash, salt, data block count and hash offset.
    #[arg(long)]
    pub verity: bool,
    /// With --verity: write the hash tree (with its superblock) to FILE instead of appending it.
    #[arg(long, value_name = "FILE")]
    pub verity_file: Option<PathBuf>,
    /// With --verity: the salt in hex, or 'none'. Default: derived from the image UUID when
    /// the build is reproducible (-T or SOURCE_DATE_EPOCH), else 32 random bytes.
    #[arg(long, value_name = "HEX")]
    pub verity_salt: Option<String>,
    /// Print the fs-verity digest (sha256, 4096-byte blocks) of the finished image file, as
    /// `fsverity digest` computes it, without enabling fs-verity on it.
    #[arg(long)]
    pub fsverity_digest: bool,
}

impl IntegrityArgs {
    /// The builder's verity options, or an error before any work starts.
    pub fn verity_options(&self) -> Result<Option<VerityOptions>> {
        if !self.verity {
            if self.verity_file.is_some() || self.verity_salt.is_some() {
                bail!("--verity-file and --verity-salt need --verity");
            }
            return Ok(None);
        }
        let mut v = VerityOptions::appended();
        if let Some(s) = &self.verity_salt {
            v.salt = Some(
                erofs_verity::parse_salt(s).map_err(|e| anyhow::anyhow!("--verity-salt: {e}"))?,
            );
        }
        v.tree_file = self.verity_file.clone();
        Ok(Some(v))
    }
}

/// The lines printed on standard output (standard error when the image goes there):
/// `name: value`, one per line, for scripts.
pub fn print_report(report: &BuildReport, image_on_stdout: bool) {
    let mut text = String::new();
    if let Some(v) = &report.verity {
        text.push_str(&verity_lines(v));
    }
    if let Some(d) = &report.fsverity_digest {
        text.push_str(&format!(
            "fsverity-digest: sha256:{}\n",
            erofs_verity::to_hex(d)
        ));
    }
    if image_on_stdout {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
}

fn verity_lines(v: &VerityReport) -> String {
    let mut s = format!(
        "verity-root-hash: {}\nverity-salt: {}\nverity-data-blocks: {}\nverity-data-block-size: {}\nverity-hash-block-size: {}\nverity-hash-algorithm: {}\nverity-hash-offset: {}\n",
        erofs_verity::to_hex(&v.root_hash),
        if v.salt.is_empty() {
            "-".to_string()
        } else {
            erofs_verity::to_hex(&v.salt)
        },
        v.data_blocks,
        VerityReport::DATA_BLOCK_SIZE,
        VerityReport::HASH_BLOCK_SIZE,
        VerityReport::HASH_ALGORITHM,
        v.hash_offset,
    );
    if let Some(f) = &v.tree_file {
        s.push_str(&format!("verity-file: {}\n", f.display()));
    }
    s
}
