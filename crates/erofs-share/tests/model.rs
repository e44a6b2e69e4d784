//! The sharing model, checked against the rules of page-cache-share.md §5 and §8.

use erofs_format::xattr::sha256_fingerprint;
use erofs_share::{FileFacts, Finding, ImageFacts, ImageProblem, ReadPath, analyze};

fn image(path: &str) -> ImageFacts {
    ImageFacts {
        path: path.into(),
        block_size: 4096,
        ishare_compat: true,
        prefix_count: 1,
        ishare_prefix_id: 0,
        fingerprint_name: Some(b"trusted.erofs.fingerprint".to_vec()),
    }
}

fn fp(byte: u8) -> Option<Vec<u8>> {
    Some(sha256_fingerprint(&[byte; 32]).to_vec())
}

fn file(image: usize, nid: u64, path: &str, size: u64, fingerprint: Option<Vec<u8>>) -> FileFacts {
    FileFacts {
        image,
        nid,
        paths: vec![path.into()],
        size,
        read_path: ReadPath::Uncompressed,
        fingerprint,
        content_mismatch: None,
    }
}

#[test]
fn saving_is_members_minus_one_times_pages_of_size() {
    let images = [image("a"), image("b"), image("c")];
    // 3 copies of a 10000-byte file (3 pages) and 2 copies of a 1-byte file (1 page).
    let files = [
        file(0, 40, "/x", 10_000, fp(1)),
        file(1, 40, "/x", 10_000, fp(1)),
        file(2, 41, "/y/x", 10_000, fp(1)),
        file(0, 42, "/small", 1, fp(2)),
        file(1, 43, "/small", 1, fp(2)),
        file(2, 44, "/unique", 5000, fp(3)),
    ];
    let r = analyze(&images, &files);
    assert_eq!(r.totals.saved_pages, 2 * 3 + 1);
    assert_eq!(r.totals.saved_bytes, 7 * 4096);
    assert_eq!(r.totals.shared_groups, 2);
    assert_eq!(r.totals.cross_image_groups, 2);
    assert_eq!(r.totals.distinct_fingerprints, 3);
    assert_eq!(r.totals.pages_without_sharing, 3 * 3 + 2 + 2);
    assert_eq!(r.totals.pages_with_sharing, 13 - 7);
    assert_eq!(r.groups[0].size, 10_000, "largest saving first");
    assert!(r.findings.is_empty(), "{:?}", r.findings);
}

#[test]
fn identical_files_inside_one_image_share_too() {
    let r = analyze(
        &[image("a")],
        &[
            file(0, 40, "/1", 8192, fp(1)),
            file(0, 41, "/2", 8192, fp(1)),
        ],
    );
    assert_eq!(r.totals.within_image_groups, 1);
    assert_eq!(r.totals.cross_image_groups, 0);
    assert_eq!(r.totals.saved_pages, 2);
}

#[test]
fn a_hard_link_is_one_inode_and_saves_nothing() {
    let mut f = file(0, 40, "/1", 8192, fp(1));
    f.paths.push("/2".into());
    let r = analyze(&[image("a")], &[f]);
    assert_eq!(r.totals.shared_groups, 0);
    assert_eq!(r.totals.saved_pages, 0);
}

#[test]
fn same_fingerprint_with_different_sizes_is_a_conflict_and_only_one_size_shares() {
    let files = [
        file(0, 40, "/a", 4096, fp(1)),
        file(1, 40, "/a", 4096, fp(1)),
        file(1, 41, "/forged", 9000, fp(1)),
    ];
    let r = analyze(&[image("a"), image("b")], &files);
    assert!(
        matches!(&r.findings[..], [Finding::SizeConflict { variants, .. }] if variants.len() == 2)
    );
    assert_eq!(r.totals.saved_pages, 1, "only the 4096-byte pair shares");
}

#[test]
fn compressed_and_plain_copies_never_share() {
    let mut z = file(1, 40, "/a", 4096, fp(1));
    z.read_path = ReadPath::Compressed;
    let r = analyze(
        &[image("a"), image("b")],
        &[file(0, 40, "/a", 4096, fp(1)), z],
    );
    assert!(matches!(
        &r.findings[..],
        [Finding::ReadPathConflict { .. }]
    ));
    assert_eq!(r.totals.saved_pages, 0);
}

#[test]
fn image_without_the_compat_bit_shares_nothing() {
    let mut b = image("b");
    b.ishare_compat = false;
    b.fingerprint_name = None;
    let r = analyze(
        &[image("a"), b],
        &[
            file(0, 40, "/a", 4096, fp(1)),
            file(1, 40, "/a", 4096, fp(1)),
        ],
    );
    assert_eq!(r.totals.saved_pages, 0);
    assert!(r.findings.iter().any(|f| matches!(
        f,
        Finding::Image {
            image: 1,
            problem: ImageProblem::NoIshareFeature
        }
    )));
}

#[test]
fn prefix_id_must_be_below_prefix_count() {
    let mut b = image("b");
    b.ishare_prefix_id = 1;
    assert_eq!(
        b.problem(),
        Some(ImageProblem::BadPrefixId { id: 1, count: 1 })
    );
}

#[test]
fn missing_fingerprints_and_empty_files_are_listed_with_paths() {
    let files = [
        file(0, 40, "/nofp", 100, None),
        file(0, 41, "/empty", 0, None),
    ];
    let r = analyze(&[image("a")], &files);
    assert!(r.findings.iter().any(|f| matches!(f, Finding::NoFingerprint { members, bytes: 100, .. } if members[0].paths == ["/nofp"])));
    assert!(
        r.findings
            .iter()
            .any(|f| matches!(f, Finding::EmptyFiles { count: 1, .. }))
    );
}

#[test]
fn malformed_values_still_share_but_are_flagged_and_oversize_values_do_not_share() {
    let hexish = Some(b"sha256:abcdef".to_vec());
    let huge = Some(vec![7u8; 5000]);
    let files = [
        file(0, 40, "/m", 100, hexish.clone()),
        file(0, 41, "/m2", 100, hexish),
        file(0, 42, "/h", 100, huge.clone()),
        file(0, 43, "/h2", 100, huge),
    ];
    let r = analyze(&[image("a")], &files);
    assert_eq!(r.totals.shared_groups, 1);
    assert_eq!(
        r.findings
            .iter()
            .filter(|f| matches!(f, Finding::MalformedFingerprint { .. }))
            .count(),
        2
    );
    assert_eq!(
        r.findings
            .iter()
            .filter(|f| matches!(f, Finding::OversizeFingerprint { .. }))
            .count(),
        2
    );
}

#[test]
fn different_fingerprint_names_are_reported() {
    let mut b = image("b");
    b.fingerprint_name = Some(b"erofs.fingerprint.v1".to_vec());
    let r = analyze(&[image("a"), b], &[]);
    assert!(matches!(&r.findings[..], [Finding::NameMismatch { names }] if names.len() == 2));
}

#[test]
fn text_report_names_images_paths_and_the_saving() {
    let files = [
        file(0, 40, "/usr/lib/libfoo.so", 10_000, fp(1)),
        file(1, 40, "/usr/lib/libfoo.so", 10_000, fp(1)),
    ];
    let r = analyze(&[image("v1.erofs"), image("v2.erofs")], &files);
    let text = erofs_share::render_text(&r, 10);
    assert!(text.contains("v1.erofs: /usr/lib/libfoo.so"), "{text}");
    assert!(text.contains("saved:                   3 pages"), "{text}");
}

#[test]
fn content_that_does_not_match_its_fingerprint_is_a_poisoning_finding() {
    let mut bad = file(1, 40, "/a", 4096, fp(1));
    bad.content_mismatch = Some("00".repeat(32));
    let r = analyze(
        &[image("a"), image("b")],
        &[file(0, 40, "/a", 4096, fp(1)), bad],
    );
    assert!(matches!(
        &r.findings[..],
        [Finding::ContentMismatch { image: 1, .. }]
    ));
    assert!(
        !r.findings[0].blocks_sharing(),
        "the kernel trusts the value and shares anyway"
    );
    assert_eq!(r.totals.shared_groups, 1);
}
