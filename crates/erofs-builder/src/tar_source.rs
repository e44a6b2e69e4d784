//! The tar stream source: applies a tar stream's entries in order, as extraction would,
//! and stages file contents in a temporary file so that the stream is read only once.
//!
//! Semantics (see `docs/tar-input.md`): later entries win; missing parent directories are
//! created 0755, owned by 0:0, with the image's time; hard links point backwards only;
//! `..` components, absolute paths and paths through symlinks are refused unless
//! [`TarOptions::clamp_paths`]; holes of sparse entries stay holes. OCI whiteouts become
//! overlayfs whiteouts by default ([`Whiteouts`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::read::hash_zeros;
use crate::source::{Source, SourceCtx};
use crate::tar::{Entry, EntryKind, TarError, TarReader};
use crate::tree::{DataSource, DirEntry, FileContent, Inode, Kind, StagedData, Tree};
use crate::{BuildError, MtimePolicy};

/// What happens to OCI whiteout entries (`.wh.NAME`, `.wh..wh..opq`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Whiteouts {
    /// Convert them to overlayfs form: a 0/0 character device named NAME, and
    /// `trusted.overlay.opaque=y` on the directory (erofs-utils `--aufs`). The default.
    #[default]
    Convert,
    /// Drop them, and every `trusted.overlay.*` xattr (`--aufs --ovlfs-strip`).
    Strip,
    /// Keep them as the ordinary files they are in the stream.
    Keep,
}

/// How a tar stream is read. Start from [`TarOptions::default`] and set fields.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct TarOptions {
    /// OCI whiteout handling.
    pub whiteouts: Whiteouts,
    /// Resolve `..` and absolute paths inside the image root instead of refusing them, as
    /// erofs-utils does.
    pub clamp_paths: bool,
    /// Read past zero blocks (concatenated archives), as `tar --ignore-zeros`.
    pub ignore_zeros: bool,
    /// The stream holds headers only (`--tar=headerball`): files keep their sizes and
    /// read as zeroes.
    pub headerball: bool,
    /// Index mode (`--tar=i`): files are not copied; their chunk indexes point at their data
    /// in the tar itself, extra device 1 of the image (offsets in the decompressed stream).
    pub index: bool,
    /// With `index`: the content goes to a region the image reserves after its metadata
    /// (block map entries, no device table), to be filled from the tar by whoever reads the
    /// report's region map (`--tar=i,MAPFILE`), instead of staying on extra device 1.
    pub index_map: bool,
    /// Keep `trusted.overlay.*` and `user.overlay.*` xattrs found in the stream (by default
    /// they are dropped with a warning: a layer must not forge overlay metadata).
    pub keep_overlay_xattrs: bool,
}

/// A tar stream (already decompressed) as a build source.
pub struct TarSource<R> {
    reader: Option<R>,
    options: TarOptions,
}

impl<R: Read> TarSource<R> {
    /// A source reading `reader` once.
    pub fn new(reader: R, options: TarOptions) -> Self {
        Self {
            reader: Some(reader),
            options,
        }
    }
}

impl<R: Read> Source for TarSource<R> {
    fn read_tree(&mut self, ctx: &mut SourceCtx<'_>) -> Result<Tree, BuildError> {
        let reader = self.reader.take().ok_or_else(|| {
            BuildError::InvalidOption("a tar stream can be read only once".into())
        })?;
        let spool = tempfile::tempfile_in(ctx.staging_dir)
            .map_err(|e| BuildError::io(ctx.staging_dir, e))?;
        let mut b = Builder::new(&self.options, ctx, spool);
        let mut tar = TarReader::new(reader, self.options.ignore_zeros);
        tar.headerball = self.options.headerball;
        let mut n = 0u64;
        while let Some(entry) = tar.next_entry().map_err(BuildError::Tar)? {
            for note in &entry.notes {
                b.ctx.warn(format!(
                    "{}: offset {}: {note}",
                    String::from_utf8_lossy(&entry.path),
                    entry.offset
                ));
            }
            b.apply(&mut tar, entry)?;
            n += 1;
            if n.is_multiple_of(crate::SCAN_BATCH) {
                b.ctx.progress.advance(crate::SCAN_BATCH, 0);
            }
            b.ctx.progress.check_cancelled()?;
        }
        for w in std::mem::take(&mut tar.warnings) {
            b.ctx.warn(w);
        }
        b.finish()
    }
}

/// A node of the tree under construction. Replaced nodes stay in the table, unreachable
/// (a hard link may still name them), and are left out when the tree is flattened.
struct Node {
    kind: NodeKind,
    permissions: u16,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: u32,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    old_fingerprint: Option<Vec<u8>>,
    /// Set by whiteout markers; they survive a later entry for the same directory.
    opaque: bool,
    origin: bool,
}

enum NodeKind {
    Dir(BTreeMap<Vec<u8>, usize>),
    File {
        size: u64,
        spool_offset: u64,
        ranges: Option<Vec<Range<u64>>>,
        name: Arc<str>,
        /// Its sha256, taken while staging (with fingerprints on): a [`Hashing`] file.
        digest: Option<usize>,
    },
    /// Index mode: the data stays in the tar, at this stream offset.
    Blob {
        size: u64,
        offset: u64,
        /// 1: extra device 1; 0: the image's reserved region.
        device: u16,
        /// As for `File`.
        digest: Option<usize>,
        name: Arc<str>,
    },
    Symlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

struct Builder<'a, 'c> {
    opts: &'a TarOptions,
    ctx: &'a mut SourceCtx<'c>,
    nodes: Vec<Node>,
    spool: std::io::BufWriter<File>,
    /// Next free spool offset, and the length the spool must have (sparse tails).
    spool_end: u64,
    spool_len: u64,
    /// The time of implicit directories.
    default_time: i64,
    /// With fingerprints: hashes file contents as they stream past.
    hashing: Option<Hashing>,
}

fn entry_err(e: &Entry, reason: impl Into<String>) -> BuildError {
    BuildError::Tar(TarError {
        offset: e.offset,
        entry: Some(e.path.clone()),
        reason: reason.into(),
    })
}

impl<'a, 'c> Builder<'a, 'c> {
    fn new(opts: &'a TarOptions, ctx: &'a mut SourceCtx<'c>, spool: File) -> Self {
        let default_time = ctx.options.timestamp.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
        let fingerprints = ctx.options.fingerprint.is_some();
        let mut b = Self {
            opts,
            ctx,
            nodes: Vec::new(),
            spool: std::io::BufWriter::with_capacity(1 << 20, spool),
            spool_end: 0,
            spool_len: 0,
            default_time,
            hashing: fingerprints.then(|| {
                // Beside the thread that decompresses and parses, when there are cores for it.
                Hashing::new(rayon::current_num_threads() > 1)
            }),
        };
        let root = b.implicit_dir();
        b.nodes.push(root);
        b
    }

    fn implicit_dir(&self) -> Node {
        let (uid, gid) = self.ctx.options.scan.ownership.apply(0, 0);
        Node {
            kind: NodeKind::Dir(BTreeMap::new()),
            permissions: 0o755,
            uid,
            gid,
            mtime: self.default_time,
            mtime_nsec: 0,
            xattrs: Vec::new(),
            old_fingerprint: None,
            opaque: false,
            origin: false,
        }
    }

    /// The path's components after normalisation, or why it is refused.
    fn components<'p>(&self, path: &'p [u8]) -> Result<Vec<&'p [u8]>, String> {
        if path.starts_with(b"/") && !self.opts.clamp_paths {
            return Err("absolute path (use --tar-clamp-paths to store it under the root)".into());
        }
        let mut out: Vec<&[u8]> = Vec::new();
        for c in path.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    if !self.opts.clamp_paths {
                        return Err(
                            "'..' component (use --tar-clamp-paths to clamp it at the root)".into(),
                        );
                    }
                    out.pop();
                }
                _ if c.contains(&0) => return Err("a name contains a NUL byte".into()),
                _ if c.len() > erofs_format::MAX_NAME_LEN => {
                    return Err(format!("a name of {} bytes is longer than 255", c.len()));
                }
                _ => out.push(c),
            }
        }
        Ok(out)
    }

    /// The directory holding `parents`, creating missing ones.
    fn parent_dir(
        &mut self,
        e: &Entry,
        parents: &[&[u8]],
        create: bool,
    ) -> Result<usize, BuildError> {
        let mut dir = 0usize;
        for c in parents {
            let NodeKind::Dir(children) = &self.nodes[dir].kind else {
                unreachable!("walks only through directories")
            };
            dir = match children.get(*c) {
                Some(&id) => match self.nodes[id].kind {
                    NodeKind::Dir(_) => id,
                    NodeKind::Symlink(_) => {
                        return Err(entry_err(
                            e,
                            format!(
                                "the path goes through the symbolic link {}",
                                String::from_utf8_lossy(c)
                            ),
                        ));
                    }
                    _ => {
                        return Err(entry_err(
                            e,
                            format!("{} is not a directory", String::from_utf8_lossy(c)),
                        ));
                    }
                },
                None if create => {
                    let id = self.nodes.len();
                    let node = self.implicit_dir();
                    self.nodes.push(node);
                    self.children(dir).insert(c.to_vec(), id);
                    id
                }
                None => {
                    return Err(entry_err(
                        e,
                        format!("{} does not exist", String::from_utf8_lossy(c)),
                    ));
                }
            };
        }
        Ok(dir)
    }

    fn children(&mut self, dir: usize) -> &mut BTreeMap<Vec<u8>, usize> {
        match &mut self.nodes[dir].kind {
            NodeKind::Dir(c) => c,
            _ => unreachable!("a parent is a directory"),
        }
    }

    /// The xattrs kept of an entry's, sorted and unique (the last value of a name wins),
    /// and a fingerprint xattr of our own name the stream carried.
    #[allow(clippy::type_complexity)]
    fn xattrs(&mut self, e: &Entry) -> (Vec<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>) {
        let options = self.ctx.options;
        let fp = options
            .fingerprint
            .as_ref()
            .map(|f| f.xattr_name.as_slice());
        let mut map = BTreeMap::new();
        let mut old_fp = None;
        for (name, value) in &e.xattrs {
            if Some(name.as_slice()) == fp {
                old_fp = Some(value.clone());
                continue;
            }
            if options.xattr_tolerance < 0 {
                continue;
            }
            let what = String::from_utf8_lossy(name);
            let path = String::from_utf8_lossy(&e.path);
            let overlay =
                name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.");
            let why = if overlay && self.opts.whiteouts == Whiteouts::Strip {
                continue;
            } else if overlay && !self.opts.keep_overlay_xattrs {
                Some("overlay xattrs from the stream are dropped (--tar-keep-overlay-xattrs keeps them)".to_string())
            } else {
                match erofs_format::xattr::split_short_prefix(name) {
                    None => Some("no EROFS name prefix".to_string()),
                    Some((_, suffix)) if suffix.len() > 255 => {
                        Some("name longer than 255 bytes after its prefix".into())
                    }
                    _ if value.len() > u16::MAX as usize => {
                        Some(format!("value of {} bytes is too large", value.len()))
                    }
                    _ => None,
                }
            };
            match why {
                Some(why) => self.ctx.warn(format!(
                    "{path}: offset {}: xattr {what}: {why}; left out",
                    e.offset
                )),
                None => {
                    map.insert(name.clone(), value.clone());
                }
            }
        }
        (map.into_iter().collect(), old_fp)
    }

    fn node_of(&mut self, e: &Entry, kind: NodeKind) -> Node {
        let (uid, gid) = self.ctx.options.scan.ownership.apply(e.uid, e.gid);
        let (mtime, mtime_nsec) = match (self.ctx.options.timestamp, self.ctx.options.scan.mtime) {
            (Some(t), MtimePolicy::AllTime | MtimePolicy::IgnoreMtime) => (t, 0),
            _ => (e.mtime, e.mtime_nsec),
        };
        let (xattrs, old_fingerprint) = self.xattrs(e);
        Node {
            kind,
            permissions: (e.mode & 0o7777) as u16,
            uid,
            gid,
            mtime,
            mtime_nsec,
            xattrs,
            old_fingerprint,
            opaque: false,
            origin: false,
        }
    }

    /// Stages a regular file's data and returns its kind.
    fn stage<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        e: &Entry,
    ) -> Result<NodeKind, BuildError> {
        let name: Arc<str> = format!(
            "{} (tar offset {})",
            String::from_utf8_lossy(&e.path),
            e.offset
        )
        .into();
        if self.opts.headerball {
            return Ok(NodeKind::File {
                size: e.size,
                spool_offset: 0,
                ranges: Some(Vec::new()),
                name,
                digest: None,
            });
        }
        let sparse = e.sparse.is_some();
        if sparse {
            // Sparse files sit block-aligned in the spool, so that their holes are holes
            // there too.
            let aligned = self.spool_end.next_multiple_of(4096);
            self.spool
                .seek(SeekFrom::Start(aligned))
                .map_err(|err| BuildError::io(self.ctx.staging_dir, err))?;
            self.spool_end = aligned;
        }
        let base = self.spool_end;
        let mut at = base;
        let spool = &mut self.spool;
        // The fingerprint is taken from the bytes as they go to the spool, so that the
        // writer copies the region without reading it twice. Holes hash as zeroes.
        let mut hasher = self.hashing.as_mut().filter(|_| e.size > 0);
        tar.read_data(e, |off, data| {
            if base + off != at {
                spool.seek(SeekFrom::Start(base + off))?;
                if let Some(h) = &mut hasher {
                    h.zeros(base + off - at)?;
                }
                at = base + off;
            }
            spool.write_all(data)?;
            if let Some(h) = &mut hasher {
                h.data(data)?;
            }
            at += data.len() as u64;
            Ok(())
        })
        .map_err(BuildError::Tar)?;
        let digest = match hasher {
            Some(h) => {
                h.zeros(base + e.size - at)
                    .map_err(|err| BuildError::io(self.ctx.staging_dir, err))?;
                Some(
                    h.end()
                        .map_err(|err| BuildError::io(self.ctx.staging_dir, err))?,
                )
            }
            None => None,
        };
        if at != base + e.size && sparse {
            self.spool
                .seek(SeekFrom::Start(base + e.size))
                .map_err(|err| BuildError::io(self.ctx.staging_dir, err))?;
        }
        self.spool_end = base + e.size;
        self.spool_len = self.spool_len.max(self.spool_end);
        let ranges = e.sparse.as_ref().map(|m| {
            let mut out: Vec<Range<u64>> = Vec::new();
            for &(off, len) in m.iter().filter(|s| s.1 > 0) {
                match out.last_mut() {
                    Some(last) if last.end == off => last.end = off + len,
                    _ => out.push(off..off + len),
                }
            }
            out
        });
        Ok(NodeKind::File {
            size: e.size,
            spool_offset: base,
            ranges,
            name,
            digest,
        })
    }

    /// Applies one entry.
    fn apply<R: Read>(&mut self, tar: &mut TarReader<R>, e: Entry) -> Result<(), BuildError> {
        let comps = self.components(&e.path).map_err(|r| entry_err(&e, r))?;
        let Some((&last, parents)) = comps.split_last() else {
            // The root entry (`./`, `.`, `/` or an empty name).
            if e.kind != EntryKind::Directory {
                return Err(entry_err(&e, "the root entry is not a directory"));
            }
            let node = self.node_of(&e, NodeKind::Dir(BTreeMap::new()));
            self.update_dir(0, node);
            return Ok(());
        };
        // Whiteouts.
        if self.opts.whiteouts != Whiteouts::Keep && last.starts_with(b".wh.") {
            if self.opts.whiteouts == Whiteouts::Strip {
                return Ok(());
            }
            if last == b".wh..wh..opq" {
                let dir = self.parent_dir(&e, parents, true)?;
                self.nodes[dir].opaque = true;
                return Ok(());
            }
            if last.starts_with(b".wh..wh.") || matches!(&last[4..], b"" | b"." | b"..") {
                self.ctx.warn(format!(
                    "{}: offset {}: aufs-internal or empty whiteout name skipped",
                    String::from_utf8_lossy(&e.path),
                    e.offset
                ));
                return Ok(());
            }
            let dir = self.parent_dir(&e, parents, true)?;
            let mut node = self.node_of(&e, NodeKind::Char(0, 0));
            node.permissions = 0;
            node.xattrs.clear();
            node.old_fingerprint = None;
            let id = self.nodes.len();
            self.nodes.push(node);
            self.children(dir).insert(last[4..].to_vec(), id);
            self.nodes[dir].origin = true;
            return Ok(());
        }
        let dir = self.parent_dir(&e, parents, true)?;
        let kind = match e.kind {
            EntryKind::HardLink => return self.hard_link(&e, dir, last),
            EntryKind::Regular if self.opts.index => {
                if e.sparse.is_some() {
                    return Err(entry_err(
                        &e,
                        "a sparse entry cannot be indexed (its data is condensed); use --tar=f",
                    ));
                }
                // The data is read anyway (the stream goes on after it): hash it on the
                // way past when fingerprints are wanted.
                let digest = match self.hashing.as_mut().filter(|_| e.size > 0) {
                    Some(h) => {
                        tar.read_data(&e, |_, d| h.data(d))
                            .map_err(BuildError::Tar)?;
                        Some(
                            h.end()
                                .map_err(|err| BuildError::io(self.ctx.staging_dir, err))?,
                        )
                    }
                    None => None,
                };
                NodeKind::Blob {
                    size: e.size,
                    offset: e.data_offset,
                    device: if self.opts.index_map { 0 } else { 1 },
                    digest,
                    name: String::from_utf8_lossy(&e.path).into(),
                }
            }
            EntryKind::Regular => self.stage(tar, &e)?,
            EntryKind::Directory => NodeKind::Dir(BTreeMap::new()),
            EntryKind::Symlink => NodeKind::Symlink(e.link.clone()),
            EntryKind::CharDevice => NodeKind::Char(e.dev.0, e.dev.1),
            EntryKind::BlockDevice => NodeKind::Block(e.dev.0, e.dev.1),
            EntryKind::Fifo => NodeKind::Fifo,
        };
        if let NodeKind::Symlink(t) = &kind
            && t.is_empty()
        {
            return Err(entry_err(&e, "symbolic link with an empty target"));
        }
        let mut node = self.node_of(&e, kind);
        if matches!(node.kind, NodeKind::Symlink(_)) {
            // As extraction gives them: the mode of a symlink is not used.
            node.permissions = 0o777;
        }
        let existing = self.children(dir).get(last).copied();
        if let (Some(id), NodeKind::Dir(_)) = (existing, &node.kind)
            && matches!(self.nodes[id].kind, NodeKind::Dir(_))
        {
            self.update_dir(id, node);
            return Ok(());
        }
        let id = self.nodes.len();
        self.nodes.push(node);
        self.children(dir).insert(last.to_vec(), id);
        Ok(())
    }

    /// A later entry for an existing directory: new metadata, same children.
    fn update_dir(&mut self, id: usize, node: Node) {
        let old = &mut self.nodes[id];
        old.permissions = node.permissions;
        old.uid = node.uid;
        old.gid = node.gid;
        old.mtime = node.mtime;
        old.mtime_nsec = node.mtime_nsec;
        old.xattrs = node.xattrs;
    }

    fn hard_link(&mut self, e: &Entry, dir: usize, name: &[u8]) -> Result<(), BuildError> {
        let target = self
            .components(&e.link)
            .map_err(|r| entry_err(e, format!("hard link target: {r}")))?;
        let Some((&tlast, tparents)) = target.split_last() else {
            return Err(entry_err(e, "hard link to the root directory"));
        };
        let tdir = self.parent_dir(e, tparents, false).map_err(|_| {
            entry_err(
                e,
                format!(
                    "hard link target {} is not an earlier entry",
                    String::from_utf8_lossy(&e.link)
                ),
            )
        })?;
        let Some(&tid) = self.children(tdir).get(tlast) else {
            return Err(entry_err(
                e,
                format!(
                    "hard link target {} is not an earlier entry",
                    String::from_utf8_lossy(&e.link)
                ),
            ));
        };
        if matches!(self.nodes[tid].kind, NodeKind::Dir(_)) {
            return Err(entry_err(e, "hard link to a directory"));
        }
        self.children(dir).insert(name.to_vec(), tid);
        Ok(())
    }

    /// Flattens the tree from the root in bytewise name order, as the directory scan does.
    fn finish(mut self) -> Result<Tree, BuildError> {
        let staging = self.ctx.staging_dir;
        let io = |err| BuildError::io(staging, err);
        self.spool.flush().map_err(io)?;
        let spool = self.spool.into_inner().map_err(|e| io(e.into_error()))?;
        if spool.metadata().map_err(io)?.len() < self.spool_len {
            spool.set_len(self.spool_len).map_err(io)?;
        }
        let spool = Arc::new(spool);
        let digests = match self.hashing.take() {
            Some(h) => h.finish().map_err(io)?,
            None => Vec::new(),
        };
        let mut nodes: Vec<Option<Node>> = self.nodes.into_iter().map(Some).collect();
        let mut inodes = Vec::new();
        let mut index_of: Vec<Option<usize>> = vec![None; nodes.len()];
        let root = nodes[0].take().expect("the root exists");
        let mut root_children = None;
        inodes.push(to_inode(root, 0, &spool, &digests, &mut root_children));
        index_of[0] = Some(0);
        let mut pending = vec![(0usize, root_children.unwrap_or_default())];
        while let Some((dir, children)) = pending.pop() {
            let mut entries = Vec::with_capacity(children.len());
            let mut subdirs = Vec::new();
            for (name, id) in children {
                let idx = match index_of[id] {
                    Some(idx) => {
                        inodes[idx].nlink += 1;
                        idx
                    }
                    None => {
                        let node = nodes[id].take().expect("each node is placed once");
                        let idx = inodes.len();
                        let mut grand = None;
                        inodes.push(to_inode(node, dir, &spool, &digests, &mut grand));
                        index_of[id] = Some(idx);
                        if let Some(g) = grand {
                            subdirs.push((idx, g));
                        }
                        idx
                    }
                };
                entries.push(DirEntry { name, inode: idx });
            }
            inodes[dir].nlink = 2 + subdirs.len() as u32;
            if let Kind::Directory { entries: e, .. } = &mut inodes[dir].kind {
                *e = entries;
            }
            // Depth first, first child first: pushed in reverse.
            pending.extend(subdirs.into_iter().rev());
        }
        let tree = Tree { inodes };
        tree.validate()
            .map_err(|e| BuildError::InvalidOption(format!("tar stream: {e}")))?;
        Ok(tree)
    }
}

fn to_inode(
    node: Node,
    parent: usize,
    spool: &Arc<File>,
    digests: &[[u8; 32]],
    children: &mut Option<BTreeMap<Vec<u8>, usize>>,
) -> Inode {
    let mut xattrs = node.xattrs;
    let mut set = |name: &[u8], value: &[u8]| {
        xattrs.retain(|(n, _)| n != name);
        xattrs.push((name.to_vec(), value.to_vec()));
    };
    if node.opaque {
        set(b"trusted.overlay.opaque", b"y");
    }
    if node.origin {
        // Keeps overlayfs from listing the whiteouts when the directory is read directly.
        set(b"trusted.overlay.origin", b"");
    }
    xattrs.sort();
    let kind = match node.kind {
        NodeKind::Dir(c) => {
            *children = Some(c);
            Kind::Directory {
                parent,
                entries: Vec::new(),
            }
        }
        NodeKind::File {
            size,
            spool_offset,
            ranges,
            name,
            digest,
        } => Kind::Regular(FileContent {
            size,
            source: DataSource::At(StagedData {
                file: Arc::clone(spool),
                offset: spool_offset,
                name,
                digest: digest.and_then(|k| digests.get(k).copied()),
            }),
            data_ranges: ranges,
            old_fingerprint: node.old_fingerprint,
            source_id: None,
        }),
        NodeKind::Blob {
            size,
            offset,
            device,
            digest,
            name,
        } => Kind::Regular(FileContent {
            size,
            source: if size == 0 {
                // Nothing to point at: an empty staged region.
                DataSource::At(StagedData {
                    file: Arc::clone(spool),
                    offset: 0,
                    name,
                    digest: None,
                })
            } else {
                DataSource::Blob(crate::tree::BlobData {
                    device,
                    offset,
                    digest: digest.and_then(|k| digests.get(k).copied()),
                })
            },
            data_ranges: None,
            old_fingerprint: node.old_fingerprint,
            source_id: None,
        }),
        NodeKind::Symlink(t) => Kind::Symlink(t),
        NodeKind::Char(a, b) => Kind::CharDevice(a, b),
        NodeKind::Block(a, b) => Kind::BlockDevice(a, b),
        NodeKind::Fifo => Kind::Fifo,
    };
    Inode {
        kind,
        permissions: node.permissions,
        uid: node.uid,
        gid: node.gid,
        mtime: node.mtime,
        mtime_nsec: node.mtime_nsec,
        nlink: 1,
        xattrs,
    }
}

/// sha256 of file contents in stream order, on a thread of its own (so that hashing runs
/// beside decompression and parsing) or inline. File `k` fed is digest `k` of [`Self::finish`].
enum Hashing {
    Inline {
        h: Sha256,
        out: Vec<[u8; 32]>,
    },
    Thread {
        tx: std::sync::mpsc::SyncSender<HashBatch>,
        /// Batches the thread has emptied, for reuse: their buffers are faulted in once.
        free: std::sync::mpsc::Receiver<HashBatch>,
        thread: std::thread::JoinHandle<Vec<[u8; 32]>>,
        files: usize,
        /// Filled until it holds about a megabyte or many files: small files go over
        /// together, so that the threads do not meet once per file.
        batch: HashBatch,
    },
}

/// Content bytes of several files back to back, and how they divide.
#[derive(Default)]
struct HashBatch {
    bytes: Vec<u8>,
    ops: Vec<HashOp>,
}

enum HashOp {
    /// The next this many bytes of `bytes`.
    Data(usize),
    /// This many zero bytes (a hole).
    Zeros(u64),
    /// The file ends.
    End,
}

/// A batch goes to the hashing thread at this many data bytes or operations.
const HASH_BATCH_BYTES: usize = 1 << 20;
const HASH_BATCH_OPS: usize = 4096;
/// Batches in flight (with the one being filled and the spare ones, this bounds memory).
const HASH_BATCHES: usize = 4;

fn stopped() -> std::io::Error {
    std::io::Error::other("the hashing thread stopped")
}

impl Hashing {
    fn new(thread: bool) -> Self {
        if !thread {
            return Self::Inline {
                h: Sha256::new(),
                out: Vec::new(),
            };
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<HashBatch>(HASH_BATCHES);
        let (back, free) = std::sync::mpsc::sync_channel::<HashBatch>(HASH_BATCHES + 2);
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut h = Sha256::new();
            for mut batch in rx {
                let mut at = 0;
                for op in &batch.ops {
                    match *op {
                        HashOp::Data(n) => {
                            h.update(&batch.bytes[at..at + n]);
                            at += n;
                        }
                        HashOp::Zeros(n) => hash_zeros(&mut h, n),
                        HashOp::End => {
                            out.push(std::mem::replace(&mut h, Sha256::new()).finalize().into())
                        }
                    }
                }
                batch.bytes.clear();
                batch.ops.clear();
                // No one takes it back once the feeder is done: let it go.
                let _ = back.try_send(batch);
            }
            out
        });
        Self::Thread {
            tx,
            free,
            thread,
            files: 0,
            batch: HashBatch::default(),
        }
    }

    /// Sends the batch being filled once it is large enough, and takes an emptied one.
    fn maybe_send(&mut self) -> std::io::Result<()> {
        let Self::Thread {
            tx, free, batch, ..
        } = self
        else {
            return Ok(());
        };
        if batch.bytes.len() >= HASH_BATCH_BYTES || batch.ops.len() >= HASH_BATCH_OPS {
            let next = free.try_recv().unwrap_or_default();
            tx.send(std::mem::replace(batch, next))
                .map_err(|_| stopped())?;
        }
        Ok(())
    }

    fn data(&mut self, d: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Inline { h, .. } => {
                h.update(d);
                Ok(())
            }
            Self::Thread { batch, .. } => {
                batch.bytes.extend_from_slice(d);
                batch.ops.push(HashOp::Data(d.len()));
                self.maybe_send()
            }
        }
    }

    fn zeros(&mut self, n: u64) -> std::io::Result<()> {
        match self {
            _ if n == 0 => Ok(()),
            Self::Inline { h, .. } => {
                hash_zeros(h, n);
                Ok(())
            }
            Self::Thread { batch, .. } => {
                batch.ops.push(HashOp::Zeros(n));
                self.maybe_send()
            }
        }
    }

    /// Ends the current file; returns its number.
    fn end(&mut self) -> std::io::Result<usize> {
        match self {
            Self::Inline { h, out } => {
                out.push(std::mem::replace(h, Sha256::new()).finalize().into());
                Ok(out.len() - 1)
            }
            Self::Thread { files, batch, .. } => {
                batch.ops.push(HashOp::End);
                *files += 1;
                let k = *files - 1;
                self.maybe_send()?;
                Ok(k)
            }
        }
    }

    /// The digests of every file, in the order they were fed.
    fn finish(self) -> std::io::Result<Vec<[u8; 32]>> {
        match self {
            Self::Inline { out, .. } => Ok(out),
            Self::Thread {
                tx,
                thread,
                files,
                batch,
                ..
            } => {
                if !batch.ops.is_empty() {
                    tx.send(batch).map_err(|_| stopped())?;
                }
                drop(tx);
                let out = thread
                    .join()
                    .map_err(|_| std::io::Error::other("the hashing thread panicked"))?;
                if out.len() != files {
                    return Err(std::io::Error::other("the hashing thread lost files"));
                }
                Ok(out)
            }
        }
    }
}
