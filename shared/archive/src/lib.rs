//! Source archives as forges serve them: a commit's tree as a gzipped tar whose entries all sit
//! in one top-level folder (GitHub's `OWNER-REPO-SHA7/`, `git archive --prefix`).
//!
//! The archive comes from the network, so it is read as hostile: every entry must sit inside the
//! single top-level folder, which is stripped; absolute paths and `..` are refused; nothing is
//! written through a symbolic link, over an earlier entry, or below a file; a link may only point
//! inside the tree; and the archive, and what it unpacks to, are bounded ([`Limits`]). Builders
//! read the tree later, so a link that escapes it would leak the build machine's files into an
//! image.
//!
//! Two ways out, checked alike: [`unpack`] writes the tree into a folder (the local builder), and
//! [`Repacker`] turns it into a build context tarball as it streams past, without touching disk or
//! holding the archive (the Cloud Build builder, whose instance's disk is its memory).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, anyhow, bail};
use tar::EntryType;

/// How much of a source Runway takes for one build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes, both of the archive as it arrives and of the tar it unpacks to: its files, and
    /// what tar holds in memory besides (long names, pax headers) and the headers of its
    /// entries.
    pub max_bytes: u64,
}

impl Limits {
    /// Far beyond any Streamlit app's code; data belongs in Cloud Storage or Git LFS.
    pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

    pub fn max_mib(&self) -> u64 {
        self.max_bytes >> 20
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

/// The archive, or what it unpacks to, is larger than [`Limits::max_bytes`]. Reading stops there.
#[derive(Debug, thiserror::Error)]
#[error("the source is larger than {} MiB, the most Runway takes for one build", .limit >> 20)]
pub struct TooLarge {
    pub limit: u64,
}

/// The archive could not be read from where it comes from (the network failed mid-way): worth
/// another try, unlike an archive that is malformed or hostile.
#[derive(Debug, thiserror::Error)]
#[error("reading the source failed: {0}")]
pub struct Unreadable(pub io::Error);

/// Root files no larger than this can be kept as text while repacking ([`Repacker::text`]).
const MAX_KEPT_TEXT: u64 = 1 << 20;

/// Unpacks the gzipped tarball `gz` into `dest` (created if missing), dropping the one folder
/// every entry sits in. A [`TooLarge`] error says the source passed `limits`.
pub fn unpack(gz: impl Read, dest: &Path, limits: &Limits) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest).context("creating the checkout folder")?;
    walk(gz, limits, &mut Disk { dest })?;
    Ok(())
}

/// A build context tarball (gzipped, paths relative to the tree's root) written to `out` as the
/// source archive is read: [`copy`](Self::copy) the archive, [`add`](Self::add) what the build
/// needs besides (a generated Dockerfile), then [`finish`](Self::finish).
pub struct Repacker<W: Write> {
    sink: ContextSink<W>,
    tree: Tree,
}

impl<W: Write> Repacker<W> {
    pub fn new(out: W) -> Self {
        let encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        Self {
            sink: ContextSink {
                builder: tar::Builder::new(encoder),
                keep: Vec::new(),
                kept: HashMap::new(),
            },
            tree: Tree::default(),
        }
    }

    /// Keeps the text of these files, by their paths from the tree's root (when small and
    /// UTF-8), for [`text`](Self::text).
    pub fn keep_text(mut self, names: &[&str]) -> Self {
        self.sink.keep = names.iter().map(|name| (*name).to_owned()).collect();
        self
    }

    /// Copies the archive's tree. A [`TooLarge`] error says the source passed `limits`.
    pub fn copy(&mut self, gz: impl Read, limits: &Limits) -> anyhow::Result<()> {
        self.tree = walk(gz, limits, &mut self.sink)?;
        Ok(())
    }

    /// Whether the tree has a file (or a link) at `path`, relative to its root.
    pub fn contains(&self, path: &str) -> bool {
        self.tree
            .entries
            .get(Path::new(path))
            .is_some_and(|kind| *kind != Kind::Dir)
    }

    /// The text of a root file named in [`keep_text`](Self::keep_text).
    pub fn text(&self, name: &str) -> Option<&str> {
        self.sink.kept.get(name).map(String::as_str)
    }

    /// Adds a file the archive does not have (refused if it does).
    pub fn add(&mut self, path: &str, data: &[u8]) -> anyhow::Result<()> {
        let path = Path::new(path);
        self.tree.admit(path, Kind::File)?;
        let mut header = file_header(data.len() as u64, false, 0);
        self.sink
            .builder
            .append_data(&mut header, path, data)
            .with_context(|| format!("adding {}", path.display()))
    }

    /// Ends the tarball and returns `out`.
    pub fn finish(self) -> anyhow::Result<W> {
        let encoder = self
            .sink
            .builder
            .into_inner()
            .context("ending the tarball")?;
        encoder.finish().context("ending the tarball")
    }
}

/// What the archive holds, as far as it has been read: each entry's kind, so that no later entry
/// lands on, through or below one it must not.
#[derive(Default)]
struct Tree {
    entries: HashMap<PathBuf, Kind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Link,
}

impl Tree {
    /// Records `path` as a `kind`, refusing a path below a file or a link (writing through a link
    /// could lead outside) and a second entry at the same path (it could replace a link's target
    /// after the link was checked). Missing parent folders are implied, as tar allows.
    fn admit(&mut self, path: &Path, kind: Kind) -> anyhow::Result<()> {
        let mut parent = PathBuf::new();
        let parts: Vec<_> = path.components().collect();
        for component in &parts[..parts.len().saturating_sub(1)] {
            parent.push(component);
            match self.entries.entry(parent.clone()).or_insert(Kind::Dir) {
                Kind::Dir => {}
                _ => bail!(
                    "refusing {}: a part of it is not a folder (a link or a file)",
                    path.display()
                ),
            }
        }
        match self.entries.get(path) {
            None => {
                self.entries.insert(path.to_owned(), kind);
                Ok(())
            }
            Some(Kind::Dir) if kind == Kind::Dir => Ok(()),
            Some(_) => bail!("{} is twice in the archive", path.display()),
        }
    }

    fn is_file(&self, path: &Path) -> bool {
        self.entries.get(path) == Some(&Kind::File)
    }
}

/// Where a checked entry goes.
trait Sink {
    fn dir(&mut self, path: &Path) -> anyhow::Result<()>;
    fn file(&mut self, path: &Path, file: FileEntry, data: &mut dyn Read) -> anyhow::Result<()>;
    fn symlink(&mut self, path: &Path, target: &Path) -> anyhow::Result<()>;
    fn hard_link(&mut self, path: &Path, source: &Path) -> anyhow::Result<()>;
}

#[derive(Clone, Copy)]
struct FileEntry {
    size: u64,
    /// Git knows two file modes, 644 and 755; `git archive` writes them as such.
    executable: bool,
    mtime: u64,
}

/// Reads the archive entry by entry, checks each against the tree so far, and hands it on.
fn walk(gz: impl Read, limits: &Limits, sink: &mut dyn Sink) -> anyhow::Result<Tree> {
    let stopped = Rc::new(RefCell::new(None));
    let counted = Bounded {
        inner: gz,
        left: limits.max_bytes,
        stopped: stopped.clone(),
    };
    // tar reads some records whole by itself (a long name, a pax header): only the
    // decompressed stream sees them.
    let tar = Bounded {
        inner: flate2::read::GzDecoder::new(counted),
        left: limits.max_bytes,
        stopped: stopped.clone(),
    };
    let walked = walk_entries(tar, limits, sink);
    // The decoder and tar may wrap the reader's error in their own; this says what it was.
    match (walked, stopped.take()) {
        (Err(_), Some(Stopped::TooLarge)) => Err(anyhow!(TooLarge {
            limit: limits.max_bytes
        })),
        (Err(_), Some(Stopped::Failed(error))) => Err(anyhow!(Unreadable(error))),
        (walked, _) => walked,
    }
}

fn walk_entries(tar: impl Read, limits: &Limits, sink: &mut dyn Sink) -> anyhow::Result<Tree> {
    let mut archive = tar::Archive::new(tar);
    let mut tree = Tree::default();
    let mut top: Option<PathBuf> = None;
    let mut unpacked = 0u64;
    for entry in archive.entries().context("reading the tarball")? {
        let mut entry = entry.context("reading the tarball")?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue; // `git archive` records the commit id in a global header.
        }
        let raw = entry.path().context("an entry's path")?.into_owned();
        let Some(relative) = inside_top_folder(&raw, &mut top)? else {
            continue; // The top folder itself.
        };
        unpacked = unpacked.saturating_add(entry.size());
        if unpacked > limits.max_bytes {
            return Err(anyhow!(TooLarge {
                limit: limits.max_bytes
            }));
        }
        match kind {
            EntryType::Directory => {
                tree.admit(&relative, Kind::Dir)?;
                sink.dir(&relative)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                tree.admit(&relative, Kind::File)?;
                let header = entry.header();
                let file = FileEntry {
                    size: entry.size(),
                    executable: header.mode().is_ok_and(|mode| mode & 0o111 != 0),
                    mtime: header.mtime().unwrap_or(0),
                };
                sink.file(&relative, file, &mut entry)?;
            }
            EntryType::Symlink => {
                let link = link_name(&entry)?;
                check_symlink_target(&relative, &link)?;
                tree.admit(&relative, Kind::Link)?;
                sink.symlink(&relative, &link)?;
            }
            EntryType::Link => {
                let link = link_name(&entry)?;
                let Some(source) = inside_top_folder(&link, &mut top)? else {
                    bail!("{} is a hard link to a folder", relative.display());
                };
                if !tree.is_file(&source) {
                    bail!(
                        "refusing the hard link {} -> {}: its target is not a file unpacked before it",
                        relative.display(),
                        source.display()
                    );
                }
                tree.admit(&relative, Kind::File)?;
                sink.hard_link(&relative, &source)?;
            }
            // Devices and FIFOs have no place in source code; git cannot even store them.
            _ => {}
        }
    }
    if top.is_none() {
        bail!("the archive is empty");
    }
    Ok(tree)
}

/// A reader that stops with an error once more than `left` bytes went through it, and says
/// why it stopped (the first reason, when one reader reads another).
struct Bounded<R> {
    inner: R,
    left: u64,
    stopped: Rc<RefCell<Option<Stopped>>>,
}

enum Stopped {
    TooLarge,
    Failed(io::Error),
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = match self.inner.read(buf) {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return Err(error),
            Err(error) => {
                let shown = io::Error::new(error.kind(), error.to_string());
                self.stopped
                    .borrow_mut()
                    .get_or_insert(Stopped::Failed(error));
                return Err(shown);
            }
        };
        match self.left.checked_sub(read as u64) {
            Some(left) => {
                self.left = left;
                Ok(read)
            }
            None => {
                self.stopped.borrow_mut().get_or_insert(Stopped::TooLarge);
                Err(io::Error::other("the source passed its size limit"))
            }
        }
    }
}

/// `path` without GitHub's top-level folder, or `None` for the folder itself. The first entry
/// fixes which folder that is; an entry outside it, or any absolute or `..` path, is refused.
fn inside_top_folder(path: &Path, top: &mut Option<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            _ => bail!(
                "refusing the entry {:?}: archive paths must be relative and free of \"..\"",
                path
            ),
        }
    }
    let Some((first, rest)) = parts.split_first() else {
        bail!("refusing an entry with an empty path");
    };
    match top {
        Some(top) if top.as_os_str() != *first => bail!(
            "refusing the entry {:?}: it is outside the archive's single top-level folder {:?}",
            path,
            top
        ),
        Some(_) => {}
        None => *top = Some(PathBuf::from(first)),
    }
    Ok((!rest.is_empty()).then(|| rest.iter().collect()))
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>) -> anyhow::Result<PathBuf> {
    entry
        .link_name()
        .context("a link's target")?
        .map(|name| name.into_owned())
        .ok_or_else(|| anyhow!("a link without a target"))
}

/// A symbolic link at `link` (relative to the checkout) may point at `target` only if it stays
/// inside: relative, its `..` parts first and climbing no higher than the checkout. Forbidding
/// `..` after a name means no link can climb out through another link (`a -> .`, `b -> a/..`).
fn check_symlink_target(link: &Path, target: &Path) -> anyhow::Result<()> {
    let depth = link.components().count().saturating_sub(1);
    let mut climbs = 0;
    let mut named = false;
    for component in target.components() {
        match component {
            Component::ParentDir if !named => climbs += 1,
            Component::Normal(_) => named = true,
            Component::CurDir => {}
            _ => bail!(
                "refusing the link {} -> {}: links must stay inside the repository",
                link.display(),
                target.display()
            ),
        }
    }
    if climbs > depth {
        bail!(
            "refusing the link {} -> {}: it points outside the repository",
            link.display(),
            target.display()
        );
    }
    Ok(())
}

/// Creates each folder of `relative` under `dest`, refusing to pass through anything that is not
/// a real folder (a link could lead outside).
fn make_dirs(dest: &Path, relative: &Path) -> anyhow::Result<()> {
    let mut path = dest.to_path_buf();
    for component in relative.components() {
        path.push(component);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => bail!(
                "refusing {}: a part of it is not a folder (a link or a file)",
                relative.display()
            ),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir(&path)
                    .with_context(|| format!("creating {}", relative.display()))?;
            }
            Err(error) => return Err(error).context(format!("checking {}", relative.display())),
        }
    }
    Ok(())
}

fn make_parent_dirs(dest: &Path, relative: &Path) -> anyhow::Result<()> {
    match relative.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => make_dirs(dest, parent),
        _ => Ok(()),
    }
}

/// Writes a new file; `create_new` refuses an existing path, so a link placed earlier in the
/// archive cannot redirect the write.
fn write_file(
    dest: &Path,
    relative: &Path,
    data: &mut dyn Read,
    executable: bool,
) -> anyhow::Result<()> {
    make_parent_dirs(dest, relative)?;
    let path = dest.join(relative);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {} (twice in the archive?)", relative.display()))?;
    io::copy(data, &mut file).with_context(|| format!("writing {}", relative.display()))?;
    let mode = if executable { 0o755 } else { 0o644 };
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", relative.display()))
}

/// A hard link to a file unpacked earlier; resolved on disk, so it cannot reach outside `dest`.
fn hard_link(dest: &Path, source: &Path, relative: &Path) -> anyhow::Result<()> {
    let resolved = dest.join(source).canonicalize().ok();
    let root = dest
        .canonicalize()
        .context("resolving the checkout folder")?;
    let Some(from) = resolved.filter(|from| from.starts_with(&root) && from.is_file()) else {
        bail!(
            "refusing the hard link {} -> {}: its target is not a file unpacked before it",
            relative.display(),
            source.display()
        );
    };
    make_parent_dirs(dest, relative)?;
    std::fs::hard_link(from, dest.join(relative))
        .with_context(|| format!("creating the hard link {}", relative.display()))
}

/// Unpacking: the tree is written into `dest`. The checks above have been made; these writes
/// still refuse to pass through links or replace files, in case the folder was not empty.
struct Disk<'a> {
    dest: &'a Path,
}

impl Sink for Disk<'_> {
    fn dir(&mut self, path: &Path) -> anyhow::Result<()> {
        make_dirs(self.dest, path)
    }

    fn file(&mut self, path: &Path, file: FileEntry, data: &mut dyn Read) -> anyhow::Result<()> {
        write_file(self.dest, path, data, file.executable)
    }

    fn symlink(&mut self, path: &Path, target: &Path) -> anyhow::Result<()> {
        make_parent_dirs(self.dest, path)?;
        std::os::unix::fs::symlink(target, self.dest.join(path))
            .with_context(|| format!("creating the link {}", path.display()))
    }

    fn hard_link(&mut self, path: &Path, source: &Path) -> anyhow::Result<()> {
        hard_link(self.dest, source, path)
    }
}

/// Repacking: the tree goes into a new tarball, paths relative to its root.
struct ContextSink<W: Write> {
    builder: tar::Builder<flate2::write::GzEncoder<W>>,
    /// Root files whose text to keep, and what was kept.
    keep: Vec<String>,
    kept: HashMap<String, String>,
}

impl<W: Write> Sink for ContextSink<W> {
    fn dir(&mut self, path: &Path) -> anyhow::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        self.builder
            .append_data(&mut header, path, io::empty())
            .with_context(|| format!("packing {}", path.display()))
    }

    fn file(&mut self, path: &Path, file: FileEntry, data: &mut dyn Read) -> anyhow::Result<()> {
        let mut header = file_header(file.size, file.executable, file.mtime);
        let kept = path
            .to_str()
            .filter(|name| file.size <= MAX_KEPT_TEXT && self.keep.iter().any(|keep| keep == name));
        if let Some(name) = kept {
            let mut bytes = Vec::new();
            data.read_to_end(&mut bytes)
                .with_context(|| format!("reading {name}"))?;
            self.builder
                .append_data(&mut header, path, &bytes[..])
                .with_context(|| format!("packing {name}"))?;
            if let Ok(text) = String::from_utf8(bytes) {
                self.kept.insert(name.to_owned(), text);
            }
            return Ok(());
        }
        self.builder
            .append_data(&mut header, path, data)
            .with_context(|| format!("packing {}", path.display()))
    }

    fn symlink(&mut self, path: &Path, target: &Path) -> anyhow::Result<()> {
        self.link(EntryType::Symlink, path, target)
    }

    fn hard_link(&mut self, path: &Path, source: &Path) -> anyhow::Result<()> {
        self.link(EntryType::Link, path, source)
    }
}

impl<W: Write> ContextSink<W> {
    fn link(&mut self, kind: EntryType, path: &Path, target: &Path) -> anyhow::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(0o777);
        header.set_size(0);
        self.builder
            .append_link(&mut header, path, target)
            .with_context(|| format!("packing the link {}", path.display()))
    }
}

fn file_header(size: u64, executable: bool, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_mode(if executable { 0o755 } else { 0o644 });
    header.set_size(size);
    header.set_mtime(mtime);
    header
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    enum Item {
        File(&'static str, &'static str, u32),
        Dir(&'static str),
        Symlink(&'static str, &'static str),
        HardLink(&'static str, &'static str),
    }

    /// A gzipped tarball with exactly these entries. Names go into the header raw, because
    /// `tar`'s own setters refuse the hostile paths these tests need.
    fn tarball(items: &[Item]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for item in items {
            let mut header = tar::Header::new_gnu();
            let (path, data): (&str, &[u8]) = match item {
                Item::File(path, text, mode) => {
                    header.set_entry_type(EntryType::Regular);
                    header.set_mode(*mode);
                    (path, text.as_bytes())
                }
                Item::Dir(path) => {
                    header.set_entry_type(EntryType::Directory);
                    header.set_mode(0o755);
                    (path, b"")
                }
                Item::Symlink(path, target) | Item::HardLink(path, target) => {
                    let kind = match item {
                        Item::Symlink(..) => EntryType::Symlink,
                        _ => EntryType::Link,
                    };
                    header.set_entry_type(kind);
                    header.set_mode(0o777);
                    header.set_link_name_literal(target).unwrap();
                    (path, b"")
                }
            };
            let name = &mut header.as_old_mut().name;
            name.fill(0);
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        let mut gz = builder.into_inner().unwrap();
        gz.flush().unwrap();
        gz.finish().unwrap()
    }

    fn unpack_items(items: &[Item]) -> (tempfile::TempDir, anyhow::Result<()>) {
        let dir = tempfile::tempdir().unwrap();
        let result = unpack(
            &tarball(items)[..],
            &dir.path().join("checkout"),
            &Limits::default(),
        );
        (dir, result)
    }

    /// The archive's entries repacked: (path, kind, mode, link target or contents).
    fn repack_items(items: &[Item]) -> anyhow::Result<Vec<(String, EntryType, u32, String)>> {
        let mut repacker = Repacker::new(Vec::new());
        repacker.copy(&tarball(items)[..], &Limits::default())?;
        Ok(entries(&repacker.finish()?))
    }

    fn entries(gz: &[u8]) -> Vec<(String, EntryType, u32, String)> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
        let mut found = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let kind = entry.header().entry_type();
            let mode = entry.header().mode().unwrap();
            let mut text = String::new();
            match entry.link_name().unwrap() {
                Some(link) => text = link.display().to_string(),
                None => drop(entry.read_to_string(&mut text)),
            }
            found.push((path, kind, mode, text));
        }
        found
    }

    /// Refused by both ways out, with the same message.
    fn refused(items: &[Item]) -> String {
        let (dir, result) = unpack_items(items);
        let error = result.expect_err("the archive should be refused");
        assert!(
            !dir.path().join("escaped").exists(),
            "a file was written outside the checkout"
        );
        let unpacked = format!("{error:#}");
        let repacked = format!(
            "{:#}",
            repack_items(items).expect_err("refused repacking too")
        );
        assert_eq!(unpacked, repacked);
        unpacked
    }

    #[test]
    fn unpacks_files_folders_modes_and_inner_links_without_the_top_folder() {
        let (dir, result) = unpack_items(&[
            Item::Dir("acme-app-1234567/"),
            Item::File("acme-app-1234567/app.py", "print(1)", 0o644),
            Item::Dir("acme-app-1234567/bin/"),
            Item::File("acme-app-1234567/bin/run", "#!/bin/sh", 0o755),
            Item::Symlink("acme-app-1234567/bin/app.py", "../app.py"),
            Item::HardLink("acme-app-1234567/copy.py", "acme-app-1234567/app.py"),
        ]);

        result.unwrap();
        let checkout = dir.path().join("checkout");
        assert_eq!(
            std::fs::read_to_string(checkout.join("app.py")).unwrap(),
            "print(1)"
        );
        let mode = |p: &str| {
            std::fs::metadata(checkout.join(p))
                .unwrap()
                .permissions()
                .mode()
        };
        assert_eq!(mode("bin/run") & 0o777, 0o755);
        assert_eq!(mode("app.py") & 0o777, 0o644);
        assert_eq!(
            std::fs::read_link(checkout.join("bin/app.py")).unwrap(),
            Path::new("../app.py")
        );
        assert_eq!(
            std::fs::read_to_string(checkout.join("copy.py")).unwrap(),
            "print(1)"
        );
        assert!(!checkout.join("acme-app-1234567").exists());
    }

    #[test]
    fn refuses_a_path_that_climbs_out_with_dot_dot() {
        let message = refused(&[
            Item::Dir("top/"),
            Item::File("top/../../escaped", "x", 0o644),
        ]);

        assert!(message.contains("free of \"..\""), "{message}");
    }

    #[test]
    fn refuses_an_absolute_path() {
        let message = refused(&[Item::File("/tmp/escaped", "x", 0o644)]);

        assert!(message.contains("must be relative"), "{message}");
    }

    #[test]
    fn refuses_an_entry_outside_the_single_top_folder() {
        let message = refused(&[
            Item::File("top/a", "x", 0o644),
            Item::File("other/b", "x", 0o644),
        ]);

        assert!(message.contains("outside the archive's single top-level folder"));
    }

    #[test]
    fn refuses_links_that_point_outside_the_checkout() {
        for target in ["../escaped", "../../etc/passwd", "/etc/passwd", "a/../../x"] {
            let message = refused(&[Item::Symlink("top/link", target)]);

            assert!(message.contains("refusing the link"), "{target}: {message}");
        }
    }

    #[test]
    fn refuses_a_chain_of_links_that_would_climb_out_together() {
        let message = refused(&[Item::Symlink("top/a", "."), Item::Symlink("top/b", "a/..")]);

        assert!(message.contains("refusing the link b -> a/.."), "{message}");
    }

    #[test]
    fn never_writes_through_a_link() {
        let message = refused(&[
            Item::Dir("top/real/"),
            Item::Symlink("top/alias", "real"),
            Item::File("top/alias/file", "x", 0o644),
        ]);

        assert!(message.contains("not a folder"), "{message}");
    }

    #[test]
    fn never_overwrites_a_link_with_a_file() {
        let message = refused(&[
            Item::File("top/target", "x", 0o644),
            Item::Symlink("top/link", "target"),
            Item::File("top/link", "overwritten", 0o644),
        ]);

        assert!(message.contains("twice in the archive"), "{message}");
    }

    #[test]
    fn refuses_a_hard_link_to_something_outside() {
        let message = refused(&[Item::HardLink("top/h", "top/../../../etc/passwd")]);

        assert!(message.contains("free of \"..\""), "{message}");
    }

    #[test]
    fn refuses_an_empty_archive() {
        assert!(refused(&[]).contains("empty"));
    }

    #[test]
    fn refuses_a_file_below_a_file() {
        let message = refused(&[
            Item::File("top/a", "x", 0o644),
            Item::File("top/a/b", "x", 0o644),
        ]);

        assert!(message.contains("not a folder"), "{message}");
    }

    #[test]
    fn repacks_files_folders_modes_and_inner_links_without_the_top_folder() {
        let repacked = repack_items(&[
            Item::Dir("acme-app-1234567/"),
            Item::File("acme-app-1234567/app.py", "print(1)", 0o644),
            Item::Dir("acme-app-1234567/bin/"),
            Item::File("acme-app-1234567/bin/run", "#!/bin/sh", 0o775),
            Item::Symlink("acme-app-1234567/bin/app.py", "../app.py"),
            Item::HardLink("acme-app-1234567/copy.py", "acme-app-1234567/app.py"),
        ])
        .unwrap();

        let expected = [
            ("app.py", EntryType::Regular, 0o644, "print(1)"),
            ("bin", EntryType::Directory, 0o755, ""),
            ("bin/run", EntryType::Regular, 0o755, "#!/bin/sh"),
            ("bin/app.py", EntryType::Symlink, 0o777, "../app.py"),
            ("copy.py", EntryType::Link, 0o777, "app.py"),
        ];
        let repacked: Vec<_> = repacked
            .iter()
            .map(|(path, kind, mode, text)| {
                (path.trim_end_matches('/'), *kind, *mode, text.as_str())
            })
            .collect();
        assert_eq!(repacked, expected);
    }

    #[test]
    fn a_repack_keeps_root_texts_knows_its_files_and_takes_new_ones() {
        let mut repacker = Repacker::new(Vec::new()).keep_text(&["requirements.txt"]);
        let archive = tarball(&[
            Item::File("top/requirements.txt", "pandas\n", 0o644),
            Item::File("top/pages/app.py", "x", 0o644),
            Item::Symlink("top/main.py", "pages/app.py"),
        ]);
        repacker.copy(&archive[..], &Limits::default()).unwrap();

        assert_eq!(repacker.text("requirements.txt"), Some("pandas\n"));
        assert_eq!(repacker.text("pages/app.py"), None);
        assert!(repacker.contains("pages/app.py") && repacker.contains("main.py"));
        assert!(!repacker.contains("pages") && !repacker.contains("Dockerfile"));
        repacker.add("Dockerfile", b"FROM scratch\n").unwrap();
        let twice = repacker.add("main.py", b"x").unwrap_err();
        assert!(format!("{twice}").contains("twice"), "{twice}");
        let paths: Vec<_> = entries(&repacker.finish().unwrap())
            .into_iter()
            .map(|(path, ..)| path)
            .collect();
        assert_eq!(
            paths,
            ["requirements.txt", "pages/app.py", "main.py", "Dockerfile"]
        );
    }

    /// Random bytes: they do not compress, so the archive is as large as its files.
    fn noise(len: usize) -> String {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'a' + (state % 26) as u8)
            })
            .collect()
    }

    #[test]
    fn a_source_past_the_limit_is_too_large_whether_packed_or_unpacked() {
        let limits = Limits {
            max_bytes: 64 << 10,
        };
        // What it unpacks to is past the limit, the archive itself is not (zeros compress).
        let zeros = "\0".repeat(100 << 10);
        let big_unpacked = tarball(&[Item::File(
            "top/a",
            Box::leak(zeros.into_boxed_str()),
            0o644,
        )]);
        assert!(big_unpacked.len() < 64 << 10);
        // The archive itself is past the limit.
        let text = noise(200 << 10);
        let big_archive = tarball(&[Item::File("top/a", Box::leak(text.into_boxed_str()), 0o644)]);

        for archive in [big_unpacked, big_archive] {
            let dir = tempfile::tempdir().unwrap();
            let unpacked = unpack(&archive[..], dir.path(), &limits).unwrap_err();
            let repacked = Repacker::new(io::sink())
                .copy(&archive[..], &limits)
                .unwrap_err();

            for error in [unpacked, repacked] {
                let too_large = error.downcast_ref::<TooLarge>().expect("TooLarge");
                assert_eq!(too_large.limit, 64 << 10);
            }
        }
    }

    /// Found by fuzzing: what tar reads by itself (a long name, a pax header, each read into
    /// memory whole) was not counted, so a few hundred compressed bytes could make it read
    /// gigabytes. What the archive unpacks to is counted as it is decompressed.
    #[test]
    fn a_long_name_or_header_past_the_limit_is_too_large() {
        let limits = Limits {
            max_bytes: 64 << 10,
        };
        let long_name = {
            let mut builder = tar::Builder::new(Vec::new());
            let name = format!("top/{}", "a".repeat(256 << 10));
            builder
                .append_data(&mut file_header(1, false, 0), name, &b"x"[..])
                .unwrap();
            builder.into_inner().unwrap()
        };
        let pax_header = {
            let mut builder = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(EntryType::XGlobalHeader);
            header.set_size(1 << 20);
            header.set_cksum();
            builder
                .append(&header, io::repeat(b'a').take(1 << 20))
                .unwrap();
            builder
                .append_data(&mut file_header(1, false, 0), "top/a", &b"x"[..])
                .unwrap();
            builder.into_inner().unwrap()
        };
        for tar in [long_name, pax_header] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(&tar).unwrap();
            let archive = gz.finish().unwrap();
            assert!(archive.len() < 4 << 10, "{}", archive.len());

            let dir = tempfile::tempdir().unwrap();
            let unpacked = unpack(&archive[..], dir.path(), &limits).unwrap_err();
            let repacked = Repacker::new(io::sink())
                .copy(&archive[..], &limits)
                .unwrap_err();

            for error in [unpacked, repacked] {
                let shown: String = format!("{error:#}").chars().take(200).collect();
                assert!(error.downcast_ref::<TooLarge>().is_some(), "{shown}");
            }
        }
    }

    /// The first `len` bytes of the archive, then a failure, as a dropped download does.
    struct Dropped<'a>(&'a [u8]);

    impl Read for Dropped<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_read_that_fails_mid_way_is_unreadable_not_malformed() {
        let text = noise(64 << 10);
        let archive = tarball(&[Item::File("top/a", Box::leak(text.into_boxed_str()), 0o644)]);
        let half = Dropped(&archive[..archive.len() / 2]);

        let error = Repacker::new(io::sink())
            .copy(half, &Limits::default())
            .unwrap_err();

        let unreadable = error.downcast_ref::<Unreadable>().expect("Unreadable");
        assert_eq!(unreadable.0.kind(), io::ErrorKind::ConnectionReset);
    }

    /// Hands out the archive, but stops with an error at `stop_at` unless the repacked output
    /// has started by then: repacking must not hold the archive back.
    struct Watched<'a> {
        data: &'a [u8],
        at: usize,
        stop_at: usize,
        written: Rc<Cell<usize>>,
    }

    impl Read for Watched<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at >= self.stop_at && self.written.get() == 0 {
                return Err(io::Error::other(
                    "nothing repacked yet at the archive's middle",
                ));
            }
            let n = buf.len().min(self.data.len() - self.at).min(8 << 10);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    struct Counting(Rc<Cell<usize>>);

    impl Write for Counting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.set(self.0.get() + buf.len());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn repacking_writes_as_it_reads() {
        let text = noise(2 << 20);
        let archive = tarball(&[
            Item::File("top/a", Box::leak(text.into_boxed_str()), 0o644),
            Item::File("top/b", "x", 0o644),
        ]);
        let written = Rc::new(Cell::new(0));
        let reader = Watched {
            data: &archive,
            at: 0,
            stop_at: archive.len() / 2,
            written: written.clone(),
        };

        let mut repacker = Repacker::new(Counting(written.clone()));
        repacker.copy(reader, &Limits::default()).unwrap();
        repacker.finish().unwrap();

        // All of it came out (the same text, compressed alike).
        assert!(written.get() > archive.len() / 2, "{}", written.get());
    }
}
