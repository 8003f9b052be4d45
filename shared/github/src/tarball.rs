//! Unpacking a GitHub source tarball into a checkout folder.
//!
//! The archive comes from the network, so it is treated as hostile: every entry must sit inside
//! GitHub's single top-level folder (`OWNER-REPO-SHA7/`), which is stripped; absolute paths and
//! `..` are refused; nothing is ever written through a symbolic link or over an existing file;
//! and a link may only point inside the checkout. Builders read the checkout later, so a link
//! that escapes it would leak the build machine's files into an image.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use tar::EntryType;

/// Unpacked size at which we stop: far beyond any Streamlit app, and short of filling a disk.
const MAX_UNPACKED_BYTES: u64 = 4 << 30;

/// Unpacks the gzipped tarball `gz` into `dest` (created if missing), dropping the one folder
/// every entry sits in.
pub fn unpack(gz: &[u8], dest: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest).context("creating the checkout folder")?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
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
        unpacked += entry.size();
        if unpacked > MAX_UNPACKED_BYTES {
            bail!("the archive unpacks to more than {MAX_UNPACKED_BYTES} bytes");
        }
        let target = dest.join(&relative);
        match kind {
            EntryType::Directory => make_dirs(dest, &relative)?,
            EntryType::Regular | EntryType::Continuous => {
                // Git knows two file modes, 644 and 755; `git archive` writes them as such.
                let executable = entry.header().mode().is_ok_and(|mode| mode & 0o111 != 0);
                write_file(dest, &relative, &mut entry, executable)?;
            }
            EntryType::Symlink => {
                let link = link_name(&entry)?;
                check_symlink_target(&relative, &link)?;
                make_parent_dirs(dest, &relative)?;
                std::os::unix::fs::symlink(&link, &target)
                    .with_context(|| format!("creating the link {}", relative.display()))?;
            }
            EntryType::Link => {
                let link = link_name(&entry)?;
                let Some(source) = inside_top_folder(&link, &mut top)? else {
                    bail!("{} is a hard link to a folder", relative.display());
                };
                hard_link(dest, &source, &relative)?;
            }
            // Devices and FIFOs have no place in source code; git cannot even store them.
            _ => {}
        }
    }
    if top.is_none() {
        bail!("the archive is empty");
    }
    Ok(())
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
    data: &mut impl Read,
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

#[cfg(test)]
mod tests {
    use std::io::Write;

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
        let result = unpack(&tarball(items), &dir.path().join("checkout"));
        (dir, result)
    }

    fn refused(items: &[Item]) -> String {
        let (dir, result) = unpack_items(items);
        let error = result.expect_err("the archive should be refused");
        assert!(
            !dir.path().join("escaped").exists(),
            "a file was written outside the checkout"
        );
        format!("{error:#}")
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
}
