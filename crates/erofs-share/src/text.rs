//! The human-readable rendering of a [`Report`].

use std::fmt::Write;

use crate::{Finding, ImageProblem, Member, PAGE_SIZE, Report};

/// How many paths a human report lists per finding before summarising the rest.
const LIST_LIMIT: usize = 10;

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn short_fp(hex: &str) -> String {
    // "sha256:" is 7 bytes, hex "7368613235363a".
    match hex.strip_prefix("7368613235363a") {
        Some(digest) => format!("sha256:{}…", &digest[..digest.len().min(16)]),
        None => format!("0x{}…", &hex[..hex.len().min(16)]),
    }
}

fn member_line(out: &mut String, r: &Report, m: &Member) {
    let image = r.images.get(m.image).map_or("?", |i| i.path.as_str());
    let path = m.paths.first().map_or("<unlinked>", String::as_str);
    let _ = write!(out, "      {image}: {path}");
    if m.paths.len() > 1 {
        let _ = write!(out, " (+{} hard links)", m.paths.len() - 1);
    }
    out.push('\n');
}

fn problem_text(p: &ImageProblem) -> String {
    match p {
        ImageProblem::NoIshareFeature => {
            "no ishare_xattrs feature (compat 0x20): the kernel turns inode_share off".into()
        }
        ImageProblem::BadPrefixId { id, count } => format!(
            "ishare_xattr_prefix_id {id} is not below xattr_prefix_count {count}: \
             Linux 7.0+ refuses to mount it"
        ),
    }
}

/// Renders the report for a terminal, listing at most `top` groups.
pub fn render_text(r: &Report, top: usize) -> String {
    let mut o = String::new();
    let t = &r.totals;
    let _ = writeln!(
        o,
        "Page-cache sharing report for {} image(s)",
        r.images.len()
    );
    for a in &r.assumptions {
        let _ = writeln!(o, "  assumes: {a}");
    }
    let _ = writeln!(o);
    let w = r
        .images
        .iter()
        .map(|i| i.path.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        o,
        "{:<w$}  {:>9}  {:>13}  {:>11}  fingerprint xattr",
        "IMAGE", "FILES", "FINGERPRINTED", "BYTES"
    );
    for i in &r.images {
        let name = match (&i.fingerprint_name, &i.problem) {
            (_, Some(ImageProblem::NoIshareFeature)) => "(none)".to_string(),
            (Some(n), _) => n.clone(),
            (None, _) => "(invalid)".to_string(),
        };
        let _ = writeln!(
            o,
            "{:<w$}  {:>9}  {:>13}  {:>11}  {name}",
            i.path,
            i.files,
            i.fingerprinted,
            size(i.bytes)
        );
    }
    let _ = writeln!(o);
    let pct = if t.pages_without_sharing == 0 {
        0.0
    } else {
        100.0 * t.saved_pages as f64 / t.pages_without_sharing as f64
    };
    let _ = writeln!(o, "Across all images:");
    let _ = writeln!(
        o,
        "  regular files:           {} ({})",
        t.files,
        size(t.bytes)
    );
    let _ = writeln!(o, "  eligible for sharing:    {}", t.eligible);
    let _ = writeln!(o, "  distinct fingerprints:   {}", t.distinct_fingerprints);
    let _ = writeln!(
        o,
        "  shared groups:           {} ({} within one image, {} across images), {} files deduplicated",
        t.shared_groups, t.within_image_groups, t.cross_image_groups, t.deduplicated_files
    );
    let _ = writeln!(
        o,
        "  page cache, no sharing:  {} pages ({})",
        t.pages_without_sharing,
        size(t.pages_without_sharing.saturating_mul(PAGE_SIZE))
    );
    let _ = writeln!(
        o,
        "  page cache, sharing:     {} pages ({})",
        t.pages_with_sharing,
        size(t.pages_with_sharing.saturating_mul(PAGE_SIZE))
    );
    let _ = writeln!(
        o,
        "  saved:                   {} pages ({}, {pct:.1}%)",
        t.saved_pages,
        size(t.saved_bytes)
    );

    if !r.groups.is_empty() {
        let _ = writeln!(o, "\nTop {} group(s) by saving:", top.min(r.groups.len()));
        for (n, g) in r.groups.iter().take(top).enumerate() {
            let _ = writeln!(
                o,
                "  #{:<3} {} x {} files, saves {}  {}{}",
                n + 1,
                size(g.size),
                g.members.len(),
                size(g.saved_pages.saturating_mul(PAGE_SIZE)),
                short_fp(&g.fingerprint),
                if g.cross_image {
                    ""
                } else {
                    "  (within one image)"
                }
            );
            for m in g.members.iter().take(LIST_LIMIT) {
                member_line(&mut o, r, m);
            }
            if g.members.len() > LIST_LIMIT {
                let _ = writeln!(o, "      … and {} more", g.members.len() - LIST_LIMIT);
            }
        }
    }

    let _ = writeln!(o, "\nWhat prevents sharing:");
    if r.findings.is_empty() {
        let _ = writeln!(o, "  nothing: every non-empty regular file is eligible");
    }
    for f in &r.findings {
        let img = |i: &usize| {
            r.images
                .get(*i)
                .map_or("?", |x| x.path.as_str())
                .to_string()
        };
        match f {
            Finding::Image { image, problem } => {
                let _ = writeln!(o, "  {}: {}", img(image), problem_text(problem));
            }
            Finding::NoFingerprint {
                image,
                members,
                bytes,
            } => {
                let _ = writeln!(
                    o,
                    "  {}: {} non-empty regular file(s) without a fingerprint ({}):",
                    img(image),
                    members.len(),
                    size(*bytes)
                );
                for m in members.iter().take(LIST_LIMIT) {
                    member_line(&mut o, r, m);
                }
                if members.len() > LIST_LIMIT {
                    let _ = writeln!(
                        o,
                        "      … and {} more (see --json)",
                        members.len() - LIST_LIMIT
                    );
                }
            }
            Finding::EmptyFiles { image, count } => {
                let _ = writeln!(
                    o,
                    "  {}: {count} empty file(s): nothing to share",
                    img(image)
                );
            }
            Finding::SizeConflict {
                fingerprint,
                variants,
            } => {
                let _ = writeln!(
                    o,
                    "  same fingerprint {} with different sizes: the kernel shares one size and warns for the others:",
                    short_fp(fingerprint)
                );
                for v in variants {
                    let _ = writeln!(o, "    size {} ({:?}):", v.size, v.read_path);
                    for m in v.members.iter().take(LIST_LIMIT) {
                        member_line(&mut o, r, m);
                    }
                }
            }
            Finding::ReadPathConflict {
                fingerprint,
                variants,
            } => {
                let _ = writeln!(
                    o,
                    "  same fingerprint {} on different read paths (compressed vs uncompressed never share):",
                    short_fp(fingerprint)
                );
                for v in variants {
                    let _ = writeln!(o, "    {:?}:", v.read_path);
                    for m in v.members.iter().take(LIST_LIMIT) {
                        member_line(&mut o, r, m);
                    }
                }
            }
            Finding::MalformedFingerprint {
                image,
                member,
                value_len,
            } => {
                let _ = writeln!(
                    o,
                    "  {}: fingerprint of {value_len} bytes is not `sha256:` + 32 bytes (shared as opaque bytes, cannot be verified):",
                    img(image)
                );
                member_line(&mut o, r, member);
            }
            Finding::OversizeFingerprint {
                image,
                member,
                value_len,
            } => {
                let _ = writeln!(
                    o,
                    "  {}: fingerprint of {value_len} bytes is empty or longer than a block: the kernel ignores it:",
                    img(image)
                );
                member_line(&mut o, r, member);
            }
            Finding::ContentMismatch {
                image,
                member,
                stored,
                computed,
            } => {
                let _ = writeln!(
                    o,
                    "  {}: CONTENT CONFLICT: the data does not match its fingerprint {} (content sha256 {}…); \
                     the kernel trusts the value, so this file would share wrong data with its group:",
                    img(image),
                    short_fp(stored),
                    &computed[..computed.len().min(16)]
                );
                member_line(&mut o, r, member);
            }
            Finding::NameMismatch { names } => {
                let list: Vec<String> = names
                    .iter()
                    .map(|(i, n)| format!("{} uses {n}", img(i)))
                    .collect();
                let _ = writeln!(
                    o,
                    "  images declare different fingerprint names ({}); the kernel matches values only, \
                     so files still share when their values are byte-identical",
                    list.join(", ")
                );
            }
        }
    }
    o
}
