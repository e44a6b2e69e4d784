//! `--json`: one JSON object describing the build, on standard output (docs/json.md).

use std::path::Path;

use erofs_builder::{BuildReport, Options};
use serde::Serialize;

/// The build report; field meanings are in docs/json.md.
#[derive(Serialize)]
pub struct JsonReport<'a> {
    image: String,
    source: String,
    inodes: u64,
    blocks: u64,
    block_size: u32,
    bytes: u64,
    data_bytes: u64,
    files_fingerprinted: u64,
    compression_ratio: Option<f64>,
    compression: Option<JsonCompression>,
    uuid: String,
    seconds: f64,
    skipped: Vec<JsonSkipped>,
    warnings: &'a [String],
    options: JsonOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    verity: Option<JsonVerity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fsverity_digest: Option<String>,
}

/// `--verity`: what `veritysetup open` and a dm-verity table need.
#[derive(Serialize)]
struct JsonVerity {
    root_hash: String,
    salt: String,
    hash_offset: u64,
    data_blocks: u64,
    data_block_size: u32,
    hash_block_size: u32,
    hash_algorithm: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tree_file: Option<String>,
}

/// `-z`: what the compressor was given and what it stored.
#[derive(Serialize)]
struct JsonCompression {
    files: u64,
    compressed_files: u64,
    input_bytes: u64,
    stored_bytes: u64,
    shared_bytes: u64,
}

#[derive(Serialize)]
struct JsonSkipped {
    path: String,
    reason: String,
}

#[derive(Serialize)]
struct JsonOptions {
    fingerprint_xattr: Option<String>,
    timestamp: Option<i64>,
    mtime: String,
    noinline_data: bool,
    xattr_name_filter: bool,
    hard_dereference: bool,
    threads: usize,
    compress: Option<String>,
    pcluster_bytes: Option<u32>,
    ztailpacking: bool,
    legacy_compress: bool,
    /// "off", "tails" (`-E fragments`) or "all" (`-E all-fragments`).
    fragments: &'static str,
    /// "full", "inode" or "off" (`-E fragdedupe=`); only meaningful with fragments.
    fragdedupe: &'static str,
    bit48: bool,
    dedupe: bool,
    max_extent_bytes: Option<u32>,
}

/// Formats a UUID the usual way (8-4-4-4-12 hex digits).
fn uuid_string(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl<'a> JsonReport<'a> {
    /// The report of a finished build.
    pub fn new(
        source: &Path,
        image: &Path,
        compress: Option<&str>,
        options: &Options,
        report: &'a BuildReport,
        seconds: f64,
    ) -> Self {
        let block_size = 1u32 << options.blkszbits;
        Self {
            image: image.display().to_string(),
            source: source.display().to_string(),
            inodes: report.inodes,
            blocks: report.image_bytes / u64::from(block_size),
            block_size,
            bytes: report.image_bytes,
            data_bytes: report.data_bytes,
            files_fingerprinted: report.fingerprinted_files,
            compression_ratio: report.compression.as_ref().and_then(|c| c.ratio()),
            compression: report.compression.as_ref().map(|c| JsonCompression {
                files: c.files,
                compressed_files: c.compressed_files,
                input_bytes: c.input_bytes,
                stored_bytes: c.stored_bytes,
                shared_bytes: c.shared_bytes,
            }),
            uuid: uuid_string(&report.uuid),
            seconds,
            skipped: report
                .skipped
                .iter()
                .map(|s| JsonSkipped {
                    path: s.path.display().to_string(),
                    reason: s.reason.clone(),
                })
                .collect(),
            warnings: &report.warnings,
            options: JsonOptions {
                fingerprint_xattr: options
                    .fingerprint
                    .as_ref()
                    .map(|f| String::from_utf8_lossy(&f.xattr_name).into_owned()),
                timestamp: options.timestamp,
                mtime: format!("{:?}", options.scan.mtime).to_lowercase(),
                noinline_data: options.noinline_data,
                xattr_name_filter: options.xattr_name_filter,
                hard_dereference: options.scan.hard_dereference,
                threads: options.threads,
                compress: compress.map(str::to_owned),
                pcluster_bytes: options
                    .compression
                    .as_ref()
                    .map(|c| c.pcluster_bytes(block_size)),
                ztailpacking: options.zlayout.ztailpacking,
                legacy_compress: options.zlayout.full_indexes,
                fragments: match options.zlayout.fragments {
                    erofs_builder::Fragments::Off => "off",
                    erofs_builder::Fragments::Tails => "tails",
                    erofs_builder::Fragments::All => "all",
                },
                fragdedupe: match options.zlayout.fragdedupe {
                    erofs_builder::FragDedupe::Full => "full",
                    erofs_builder::FragDedupe::Inode => "inode",
                    erofs_builder::FragDedupe::Off => "off",
                },
                bit48: options.bit48,
                dedupe: options.zlayout.dedupe,
                max_extent_bytes: options.compression.as_ref().map(|c| c.max_extent() as u32),
            },
            verity: report.verity.as_ref().map(|v| JsonVerity {
                root_hash: erofs_verity::to_hex(&v.root_hash),
                salt: erofs_verity::to_hex(&v.salt),
                hash_offset: v.hash_offset,
                data_blocks: v.data_blocks,
                data_block_size: erofs_builder::VerityReport::DATA_BLOCK_SIZE,
                hash_block_size: erofs_builder::VerityReport::HASH_BLOCK_SIZE,
                hash_algorithm: erofs_builder::VerityReport::HASH_ALGORITHM,
                tree_file: v.tree_file.as_ref().map(|f| f.display().to_string()),
            }),
            fsverity_digest: report
                .fsverity_digest
                .map(|d| format!("sha256:{}", erofs_verity::to_hex(&d))),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_print_in_the_usual_groups() {
        let mut u = [0u8; 16];
        u[0] = 0xab;
        u[15] = 0x01;
        assert_eq!(
            super::uuid_string(&u),
            "ab000000-0000-0000-0000-000000000001"
        );
    }
}
