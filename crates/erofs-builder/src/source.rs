//! Where a build's files come from.
//!
//! A [`Source`] turns its input into a validated [`Tree`]; each regular file in it says
//! where the writer reads its bytes ([`crate::tree::DataSource`]): a path in a directory,
//! bytes in memory, or a region of a staging file. The writer never knows which source it
//! serves.

use std::path::{Path, PathBuf};

use crate::{BuildError, BuildReport, Options, Progress, Tree};

/// What a source gets to read itself with.
pub struct SourceCtx<'a> {
    /// The build's options (ownership, times and xattr rules apply to every source).
    pub options: &'a Options,
    /// Warnings and skipped files go here.
    pub report: &'a mut BuildReport,
    /// Progress and warnings.
    pub progress: &'a dyn Progress,
    /// A directory on the image's filesystem where a source may stage data it cannot read
    /// twice (a tar stream's file contents).
    pub staging_dir: &'a Path,
}

impl SourceCtx<'_> {
    /// Records a warning and passes it on.
    pub fn warn(&mut self, message: String) {
        self.progress.warning(&message);
        self.report.warnings.push(message);
    }
}

/// A producer of the tree to build.
pub trait Source {
    /// Reads the whole input into a tree. File contents may stay where they are (the
    /// writer reads them through each file's [`crate::tree::DataSource`]).
    fn read_tree(&mut self, ctx: &mut SourceCtx<'_>) -> Result<Tree, BuildError>;

    /// The path of `image` relative to this source, if the image would land inside it
    /// (and so must be left out).
    fn contains(&self, _image: &Path, _image_parent: &Path) -> Option<Vec<u8>> {
        None
    }
}

/// A directory on the local filesystem, read by a parallel walk (lstat, sorted readdir,
/// xattrs, holes of sparse files).
#[derive(Clone, Debug)]
pub struct DirSource {
    /// The directory.
    pub path: PathBuf,
}

impl Source for DirSource {
    fn read_tree(&mut self, ctx: &mut SourceCtx<'_>) -> Result<Tree, BuildError> {
        crate::scan::scan_dir(&self.path, ctx.options, ctx.report, ctx.progress)
    }

    fn contains(&self, image: &Path, image_parent: &Path) -> Option<Vec<u8>> {
        crate::image_inside_source(&self.path, image, image_parent)
    }
}
