//! dm-verity: an image built with `mkfs.erofs-rs --verity` opened by the kernel's dm-verity
//! through `dm-mod.create=` (no userspace tool) and mounted; the same image with one flipped
//! data byte gives EIO on the file that owns it and on nothing else.

use super::{Boot, Env, Expected, Prepared, Scenario, erofs_mount};
use crate::mkfs::{self, EPOCH, Mkfs, UUID};
use anyhow::{Context, Result, bail};
use erofs_guest::plan::{ConformanceParams, ImageCheck, VerityEioParams};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// The verity scenarios.
pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "verity",
        about: "--verity image through dm-verity (dm-mod.create=): full compare; a flipped byte gives EIO on its file only",
        prepare: verity,
    }]
}

/// The file whose block is damaged, and its content: three blocks no other file has.
const VICTIM: &str = "victim.bin";

fn victim() -> Vec<u8> {
    (0..3 * 4096u32)
        .map(|i| b"VICTIM-BLOCK-"[(i % 13) as usize] ^ (i / 4096) as u8)
        .collect()
}

fn make_tree(root: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root.join("keep/deeper"))?;
    std::fs::write(root.join(VICTIM), victim())?;
    std::fs::write(root.join("keep/one.txt"), b"one\n")?;
    let mut x = 0x9e37_79b9_u32;
    let big: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(root.join("keep/deeper/big.bin"), &big)?;
    std::fs::write(root.join("keep/tail.bin"), &big[..5000])?;
    std::os::unix::fs::symlink("one.txt", root.join("keep/link"))?;
    Ok(())
}

/// `name: value` lines of mkfs's standard output.
fn build(bin: &Path, src: &Path, img: &Path, block: u32) -> Result<BTreeMap<String, String>> {
    let out = Command::new(bin)
        .args(["--quiet", "--verity"])
        .arg(format!("-T{EPOCH}"))
        .arg(format!("-U{UUID}"))
        .arg(format!("-b{block}"))
        .arg(src)
        .arg(img)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("mkfs --verity: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// A `dm-mod.create` device: `name,uuid,minor,flags,table`.
fn dm_device(name: &str, dev: &str, v: &BTreeMap<String, String>) -> Result<String> {
    let blocks: u64 = v["verity-data-blocks"].parse()?;
    let hash_offset: u64 = v["verity-hash-offset"].parse()?;
    // The tree starts one hash block after the verity superblock.
    let hash_start = hash_offset / 4096 + 1;
    let salt = &v["verity-salt"];
    Ok(format!(
        "{name},,,ro,0 {} verity 1 {dev} {dev} 4096 4096 {blocks} {hash_start} sha256 {} {salt}",
        blocks * 8,
        v["verity-root-hash"],
    ))
}

fn verity(env: &mut Env) -> Result<Prepared> {
    let Mkfs::Ours(bin) = &env.mkfs else {
        return Ok(Prepared::Skip("Debian's mkfs.erofs has no --verity".into()));
    };
    let bin = bin.clone();
    let src = env.work.join("trees/verity");
    make_tree(&src)?;
    let dir = env.work.join("images");
    std::fs::create_dir_all(&dir)?;
    let mut boot = Boot::default();
    let opts = mkfs::Options::default();
    let manifest = boot.file("/data/verity.json", env.manifest(&src, &opts)?);
    let mut devices = Vec::new();
    let mut checks = Vec::new();
    let mut eio = Vec::new();
    // dm-verity's 4096-byte data blocks make a device with 4096-byte sectors, from which Linux
    // mounts only 4096-byte-block images (mkfs refuses --verity with other block sizes).
    for (i, block) in [4096u32].into_iter().enumerate() {
        let good = dir.join(format!("verity-{block}.erofs"));
        let v = build(&bin, &src, &good, block)?;
        let mut bytes = std::fs::read(&good)?;
        let first = &victim()[..4096];
        let at = (0..bytes.len().saturating_sub(4096))
            .step_by(block as usize)
            .find(|&o| &bytes[o..o + 4096] == first)
            .context("the victim's data is not in the image, block-aligned")?;
        bytes[at + 1000] ^= 0x01;
        let bad = dir.join(format!("verity-{block}-flipped.erofs"));
        std::fs::write(&bad, &bytes)?;
        let gdev = boot.disk(&good);
        let bdev = boot.disk(&bad);
        devices.push(dm_device(&format!("vgood{block}"), &gdev, &v)?);
        devices.push(dm_device(&format!("vbad{block}"), &bdev, &v)?);
        // dm-init creates the devices in order: dm-0, dm-1, ...
        checks.push(ImageCheck {
            label: format!("verity{block}"),
            manifest: manifest.clone(),
            block_size: block as u64,
            mounts: vec![erofs_mount(
                &format!("/dev/dm-{}", 2 * i),
                &format!("/mnt/verity{block}"),
                "",
            )],
        });
        eio.push(VerityEioParams {
            mount: erofs_mount(
                &format!("/dev/dm-{}", 2 * i + 1),
                &format!("/mnt/verity{block}-flipped"),
                "",
            ),
            manifest: manifest.clone(),
            bad: VICTIM.into(),
        });
    }
    boot.append.push(format!(
        "dm-mod.waitfor={}",
        (0..boot.disks.len())
            .map(super::virtio_disk_name)
            .collect::<Vec<_>>()
            .join(",")
    ));
    boot.append
        .push(format!("dm-mod.create=\"{}\"", devices.join(";")));
    boot.run(
        "conformance",
        "verity",
        ConformanceParams {
            carriers: Vec::new(),
            images: checks,
        },
    )?;
    for p in eio {
        let label = format!("verity-eio {}", p.mount.source);
        boot.run("verity_eio", &label, p)?;
    }
    boot.expected = Expected {
        // dm-verity names the corrupted block; EROFS reports the failed read.
        errors: vec!["is corrupted".into(), "erofs".into()],
        crashes: Vec::new(),
    };
    Ok(Prepared::Boot(boot))
}
