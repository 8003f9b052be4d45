//! Bounded fuzzing of the source archive reader, both ways out ([`unpack`] to disk and
//! [`Repacker::copy`]): gzipped tarballs of well-formed trees, of trees with one hostile entry
//! (a path that climbs out, an absolute one, a link out of the tree or through a link, a hard
//! link to outside, a name twice, a file below a file), of trees with a bomb (a file, a long
//! name, an extended header or a crowd of entries past the limit), and of entries at random.
//! Whatever the archive, nothing outside the destination changes, no link there leads out, what
//! is unpacked stays within the limit, and the repacked context holds exactly what was unpacked.
//! The committed seeds (`tests/corpus/archive/`: `ok-…` unpack, `bad-…` are refused, `large-…`
//! are too large for 64 KiB; regenerate them with `cargo test -p runway-archive --test fuzz --
//! --ignored`) are replayed first; `PROPTEST_CASES` sets how many generated archives follow.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseResult;
use runway_archive::{Limits, Repacker, TooLarge, unpack};
use runway_fuzzing::Corpus;
use tar::EntryType;

/// Stands for the test's own folder in an entry's path or a link's target, so that absolute
/// paths lead somewhere the test watches.
const ROOT: &str = "{ROOT}";

/// The limit the seeds are read with.
const SEED_LIMIT: u64 = 64 << 10;

#[derive(Clone, Debug)]
enum Kind {
    File(Vec<u8>, bool),
    /// A file of this many zero bytes: they compress to almost nothing.
    Zeros(u64),
    Dir,
    Symlink(String),
    HardLink(String),
    Fifo,
    CharDevice,
    /// A pax global header (`git archive` writes one) of this many bytes.
    PaxGlobal(u64),
    /// A pax header of this many bytes, for the entry after it.
    PaxLocal(u64),
    /// A GNU long name of this many bytes, for the entry after it.
    LongName(u64),
}

#[derive(Clone, Debug)]
struct Entry {
    path: String,
    kind: Kind,
}

fn entry(path: &str, kind: Kind) -> Entry {
    Entry {
        path: path.to_owned(),
        kind,
    }
}

/// One tar record: a header with `name` and `link` written raw (`tar`'s own setters refuse the
/// hostile ones), a GNU long name or long link record first when they do not fit, then `size`
/// bytes of `data`, padded.
fn record(
    out: &mut impl Write,
    kind: EntryType,
    mode: u32,
    name: &[u8],
    link: &[u8],
    data: &mut dyn Read,
    size: u64,
) {
    let mut long = |kind: EntryType, text: &[u8]| {
        let text = [text, b"\0"].concat();
        record(
            out,
            kind,
            0o644,
            b"././@LongLink",
            b"",
            &mut &text[..],
            text.len() as u64,
        );
    };
    if name.len() > 100 {
        long(EntryType::GNULongName, name);
    }
    if link.len() > 100 {
        long(EntryType::GNULongLink, link);
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(1_700_000_000);
    let old = header.as_old_mut();
    old.name.fill(0);
    old.name[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    old.linkname.fill(0);
    old.linkname[..link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    header.set_cksum();
    out.write_all(header.as_bytes()).unwrap();
    let copied = io::copy(&mut data.take(size), out).unwrap();
    assert_eq!(copied, size);
    out.write_all(&[0; 512][..((512 - size % 512) % 512) as usize])
        .unwrap();
}

/// `size` bytes of pax records, as `git archive` writes its commit id.
fn pax_records(size: u64) -> Vec<u8> {
    let record = b"52 comment=3f9a1c2b4d5e6f708192a3b4c5d6e7f8091a2b3c\n";
    record.iter().copied().cycle().take(size as usize).collect()
}

/// The gzipped tarball of `entries`, `ROOT` standing for `root`.
fn tarball(entries: &[Entry], root: &Path) -> Vec<u8> {
    let root = root.to_str().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for entry in entries {
        let path = entry.path.replace(ROOT, root);
        let name = path.as_bytes();
        let mut none = io::empty();
        let gz = &mut gz;
        match &entry.kind {
            Kind::File(data, executable) => {
                let mode = if *executable { 0o755 } else { 0o644 };
                record(
                    gz,
                    EntryType::Regular,
                    mode,
                    name,
                    b"",
                    &mut &data[..],
                    data.len() as u64,
                );
            }
            Kind::Zeros(size) => {
                record(
                    gz,
                    EntryType::Regular,
                    0o644,
                    name,
                    b"",
                    &mut io::repeat(0),
                    *size,
                );
            }
            Kind::Dir => record(gz, EntryType::Directory, 0o755, name, b"", &mut none, 0),
            Kind::Symlink(target) => {
                let target = target.replace(ROOT, root);
                record(
                    gz,
                    EntryType::Symlink,
                    0o777,
                    name,
                    target.as_bytes(),
                    &mut none,
                    0,
                );
            }
            Kind::HardLink(target) => {
                let target = target.replace(ROOT, root);
                record(
                    gz,
                    EntryType::Link,
                    0o644,
                    name,
                    target.as_bytes(),
                    &mut none,
                    0,
                );
            }
            Kind::Fifo => record(gz, EntryType::Fifo, 0o644, name, b"", &mut none, 0),
            Kind::CharDevice => record(gz, EntryType::Char, 0o644, name, b"", &mut none, 0),
            Kind::PaxGlobal(size) => {
                let records = pax_records(*size);
                record(
                    gz,
                    EntryType::XGlobalHeader,
                    0o644,
                    b"pax_global_header",
                    b"",
                    &mut &records[..],
                    *size,
                );
            }
            Kind::PaxLocal(size) => {
                let records = pax_records(*size);
                record(
                    gz,
                    EntryType::XHeader,
                    0o644,
                    b"PaxHeader/x",
                    b"",
                    &mut &records[..],
                    *size,
                );
                record(gz, EntryType::Regular, 0o644, name, b"", &mut none, 0);
            }
            Kind::LongName(size) => {
                let mut long = io::repeat(b'a').take(size - 1).chain(&b"\0"[..]);
                record(
                    gz,
                    EntryType::GNULongName,
                    0o644,
                    b"././@LongLink",
                    b"",
                    &mut long,
                    *size,
                );
                record(gz, EntryType::Regular, 0o644, name, b"", &mut none, 0);
            }
        }
    }
    gz.write_all(&[0; 1024]).unwrap();
    gz.finish().unwrap()
}

/// What a path holds, on disk or in a tarball.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>, bool),
    Symlink(PathBuf),
    /// Anything else (a FIFO, a device): never to be written.
    Other,
}

/// Every path under `dir` (relative to it, not following links), but `skip`.
fn walk(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, Node> {
    let mut found = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        let Ok(children) = std::fs::read_dir(&next) else {
            continue;
        };
        for child in children {
            let path = child.unwrap().path();
            if path == skip {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let node = if meta.is_dir() {
                todo.push(path.clone());
                Node::Dir
            } else if meta.is_symlink() {
                Node::Symlink(std::fs::read_link(&path).unwrap())
            } else if meta.is_file() {
                Node::File(std::fs::read(&path).unwrap(), meta.mode() & 0o111 != 0)
            } else {
                Node::Other
            };
            found.insert(path.strip_prefix(dir).unwrap().to_path_buf(), node);
        }
    }
    found
}

/// Whether a link at `link` (relative to a tree's root) to `target` stays in the tree, read
/// as written.
fn stays_inside(link: &Path, target: &Path) -> bool {
    let mut depth = link.components().count().saturating_sub(1);
    for part in target.components() {
        match part {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            _ => return false,
        }
    }
    true
}

/// The repacked build context: what it holds, each hard link read as the file it names, and
/// each folder its entries imply. Checks on the way that its paths are relative and plain, and
/// that its links stay inside.
fn repacked(gz: &[u8]) -> Result<BTreeMap<PathBuf, Node>, TestCaseError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut found = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        prop_assert!(
            path.components()
                .all(|part| matches!(part, Component::Normal(_))),
            "repacked as {:?}",
            path
        );
        for parent in path.ancestors().skip(1) {
            if !parent.as_os_str().is_empty() {
                found.entry(parent.to_path_buf()).or_insert(Node::Dir);
            }
        }
        let link = entry.link_name().unwrap().map(|link| link.into_owned());
        let node = match (entry.header().entry_type(), link) {
            (EntryType::Directory, _) => Node::Dir,
            (EntryType::Regular, None) => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                Node::File(data, entry.header().mode().unwrap() & 0o111 != 0)
            }
            (EntryType::Symlink, Some(target)) => {
                prop_assert!(stays_inside(&path, &target), "{:?} -> {:?}", path, target);
                Node::Symlink(target)
            }
            (EntryType::Link, Some(source)) => {
                let file = found
                    .get(&source)
                    .filter(|node| matches!(node, Node::File(..)));
                prop_assert!(file.is_some(), "{:?} links to {:?}", path, source);
                file.cloned().unwrap_or(Node::Other)
            }
            (kind, _) => {
                prop_assert!(false, "repacked {:?} as {:?}", path, kind);
                Node::Other
            }
        };
        prop_assert!(found.insert(path.clone(), node).is_none() || found[&path] == Node::Dir);
    }
    Ok(found)
}

/// What an archive must give.
#[derive(Clone, Debug)]
enum Expect {
    /// Unpacked; with, when known, exactly this tree.
    Unpacked(Option<BTreeMap<PathBuf, Node>>),
    /// Refused for what it holds, not for its size.
    Refused,
    TooLarge,
    /// Anything, so long as it is safe.
    Safe,
}

fn too_large(error: &anyhow::Error) -> bool {
    error.downcast_ref::<TooLarge>().is_some()
}

/// Unpacks and repacks `entries` (or, for a seed, `bytes`) under `limits` and checks what the
/// module promises, whatever the archive: nothing outside the destination changes, no link
/// there leads out, no FIFO or device is made, what is unpacked stays within the limit, and
/// the repacked context is safe and holds what was unpacked. Then what `expect` says.
fn check(archive: Result<&[u8], &[Entry]>, limits: &Limits, expect: &Expect) -> TestCaseResult {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    std::fs::create_dir(root.join("outside")).unwrap();
    let sentinel = root.join("outside/sentinel");
    std::fs::write(&sentinel, "kept").unwrap();
    let dest = root.join("checkout");
    let archive = match archive {
        Ok(bytes) => bytes.to_vec(),
        Err(entries) => tarball(entries, root),
    };
    let before = walk(root, &dest);

    let unpacked = unpack(&archive[..], &dest, limits);

    prop_assert_eq!(&walk(root, &dest), &before, "something outside changed");
    prop_assert_eq!(
        std::fs::metadata(&sentinel).unwrap().nlink(),
        1,
        "a link to outside"
    );
    let tree = walk(&dest, Path::new(""));
    let mut bytes = 0;
    let mut inodes = std::collections::HashSet::new();
    for (path, node) in &tree {
        match node {
            Node::Symlink(target) => {
                prop_assert!(stays_inside(path, target), "{:?} -> {:?}", path, target);
                if let Ok(resolved) = dest.join(path).canonicalize() {
                    prop_assert!(
                        resolved.starts_with(dest.canonicalize().unwrap()),
                        "{:?}",
                        path
                    );
                }
            }
            // Hard links share their bytes: each file counts once.
            Node::File(data, _) => {
                let inode = std::fs::metadata(dest.join(path)).unwrap().ino();
                if inodes.insert(inode) {
                    bytes += data.len() as u64;
                }
            }
            Node::Other => prop_assert!(false, "{:?} is neither file, folder nor link", path),
            Node::Dir => {}
        }
    }
    prop_assert!(bytes <= limits.max_bytes, "{} bytes unpacked", bytes);

    let mut repacker = Repacker::new(Vec::new());
    let copied = repacker.copy(&archive[..], limits);
    let context = copied.and_then(|()| repacker.finish());
    if let Ok(gz) = &context {
        repacked(gz)?;
    }
    match (&unpacked, &context) {
        (Ok(()), Ok(gz)) => prop_assert_eq!(&repacked(gz)?, &tree, "repacked otherwise"),
        (Ok(()), Err(error)) => prop_assert!(false, "unpacked, but not repacked: {:#}", error),
        (Err(error), Ok(_)) if too_large(error) => {
            prop_assert!(false, "too large to unpack, but repacked: {:#}", error)
        }
        (Err(unpacked), Err(repacked)) if too_large(unpacked) => {
            prop_assert!(too_large(repacked), "{:#}", repacked)
        }
        _ => {}
    }
    match expect {
        Expect::Unpacked(expected) => {
            prop_assert!(unpacked.is_ok(), "refused: {:#}", unpacked.unwrap_err());
            if let Some(expected) = expected {
                prop_assert_eq!(&tree, expected);
            }
        }
        Expect::Refused => {
            let Err(error) = &unpacked else {
                return Err(TestCaseError::fail("unpacked"));
            };
            prop_assert!(!too_large(error), "{:#}", error);
            let repacked = context.err().map(|error| format!("{error:#}"));
            prop_assert_eq!(repacked, Some(format!("{error:#}")), "refused otherwise");
        }
        Expect::TooLarge => {
            let Err(error) = &unpacked else {
                return Err(TestCaseError::fail("unpacked"));
            };
            prop_assert!(too_large(error), "{:#}", error);
        }
        Expect::Safe => {}
    }
    Ok(())
}

/// A well-formed tree under `top/`: files in folders, some executable, links to them (symbolic
/// and hard), maybe its folders named, maybe a FIFO or a device (skipped); and the tree it
/// must unpack to.
fn trees() -> impl Strategy<Value = (Vec<Entry>, BTreeMap<PathBuf, Node>)> {
    let files = proptest::collection::btree_map(
        "([a-c]/){0,2}[a-z]{1,6}",
        (proptest::collection::vec(any::<u8>(), 0..64), any::<bool>()),
        1..8,
    );
    let links = proptest::collection::vec(
        (any::<Index>(), any::<Index>(), "[a-z]{1,4}", any::<bool>()),
        0..4,
    );
    (
        files,
        links,
        any::<bool>(),
        proptest::option::of(select(&[Kind::Fifo, Kind::CharDevice][..])),
    )
        .prop_map(|(files, links, name_folders, special)| {
            // A name cannot be a file and a folder.
            let files: Vec<_> = files
                .iter()
                .filter(|(path, _)| {
                    !files
                        .keys()
                        .any(|other| other.starts_with(&format!("{path}/")))
                })
                .collect();
            let mut entries = Vec::new();
            let mut tree = BTreeMap::new();
            let mut folders = std::collections::BTreeSet::new();
            for (path, _) in &files {
                for parent in Path::new(path.as_str()).ancestors().skip(1) {
                    if !parent.as_os_str().is_empty() {
                        folders.insert(parent.to_path_buf());
                    }
                }
            }
            if name_folders {
                entries.push(entry("top/", Kind::Dir));
                for folder in &folders {
                    entries.push(entry(&format!("top/{}/", folder.display()), Kind::Dir));
                }
            }
            for folder in folders {
                tree.insert(folder, Node::Dir);
            }
            for (path, (data, executable)) in &files {
                entries.push(entry(
                    &format!("top/{path}"),
                    Kind::File(data.clone(), *executable),
                ));
                tree.insert(PathBuf::from(path), Node::File(data.clone(), *executable));
            }
            for (to, beside, name, symbolic) in links {
                let (target, (data, executable)) = files[to.index(files.len())];
                // Beside another file: in its folder.
                let folder = Path::new(files[beside.index(files.len())].0.as_str())
                    .parent()
                    .unwrap();
                let path = folder.join(format!("l-{name}"));
                if tree.contains_key(&path) {
                    continue;
                }
                if symbolic {
                    let up = "../".repeat(folder.components().count());
                    let link = format!("{up}{target}");
                    entries.push(entry(
                        &format!("top/{}", path.display()),
                        Kind::Symlink(link.clone()),
                    ));
                    tree.insert(path, Node::Symlink(PathBuf::from(link)));
                } else {
                    entries.push(entry(
                        &format!("top/{}", path.display()),
                        Kind::HardLink(format!("top/{target}")),
                    ));
                    tree.insert(path, Node::File(data.clone(), *executable));
                }
            }
            if let Some(kind) = special {
                entries.push(entry("top/special", kind));
            }
            (entries, tree)
        })
}

/// Entries that make any tree hostile, wherever they stand in it.
fn hostile() -> impl Strategy<Value = Vec<Entry>> {
    let file = |path: &str| entry(path, Kind::File(b"escaped".to_vec(), false));
    prop_oneof![
        select(
            &[
                "top/../escaped",
                "top/a/../../escaped",
                "../escaped",
                "./../escaped",
                "{ROOT}/escaped",
                "{ROOT}/outside/sentinel",
                "other/escaped",
            ][..]
        )
        .prop_map(move |path| vec![file(path)]),
        select(
            &[
                "..",
                "../escaped",
                "../outside/sentinel",
                "{ROOT}/outside/sentinel",
                "/",
                "a/../../escaped",
                "./../../escaped",
                "../../../../../../../../escaped",
            ][..]
        )
        .prop_map(|target| vec![entry("top/zz-link", Kind::Symlink(target.to_owned()))]),
        // A folder through a link: the link is inside, what is written below it would not be.
        select(&[".", "a", "zz-folder"][..]).prop_map(move |target| vec![
            entry("top/zz-folder/", Kind::Dir),
            entry("top/zz-link", Kind::Symlink(target.to_owned())),
            file("top/zz-link/escaped"),
        ]),
        // Two links that climb out together.
        Just(vec![
            entry("top/zz-a", Kind::Symlink(".".to_owned())),
            entry("top/zz-b", Kind::Symlink("zz-a/..".to_owned())),
        ]),
        select(
            &[
                "top/../outside/sentinel",
                "{ROOT}/outside/sentinel",
                "top/zz-missing",
                "top",
                "other/x",
                "top/zz-link",
            ][..]
        )
        .prop_map(|source| vec![
            entry("top/zz-link", Kind::Symlink("zz-missing".to_owned())),
            entry("top/zz-hard", Kind::HardLink(source.to_owned())),
        ]),
        // The same name twice, the second time a link or a file.
        select(&[".", "../escaped"][..]).prop_map(move |target| vec![
            file("top/zz-twice"),
            entry("top/zz-twice", Kind::Symlink(target.to_owned())),
        ]),
        Just(vec![
            entry("top/zz-twice", Kind::Symlink(".".to_owned())),
            file("top/zz-twice"),
        ]),
        Just(vec![file("top/zz-file"), file("top/zz-file/escaped")]),
    ]
}

/// What breaks the limit: a file of zeros, a long name, a pax header or a crowd of entries,
/// each small once compressed. Sized for `limit`.
fn bombs(limit: u64) -> impl Strategy<Value = Vec<Entry>> {
    (2..6u64, 0..5u8).prop_map(move |(times, how)| {
        let size = limit * times;
        match how {
            0 => vec![entry("top/zz-zeros", Kind::Zeros(size))],
            1 => vec![entry("top/zz-long", Kind::LongName(size))],
            2 => vec![entry("top/zz-pax", Kind::PaxGlobal(size))],
            3 => vec![entry("top/zz-pax", Kind::PaxLocal(size))],
            _ => (0..size / 512)
                .map(|i| entry(&format!("top/zz-fifo-{i}"), Kind::Fifo))
                .collect(),
        }
    })
}

/// Entries at random, of names and targets made of the parts hostile archives use.
fn random_entries() -> impl Strategy<Value = Vec<Entry>> {
    let part = select(
        &[
            "top", "top", "top", "a", "b", "..", ".", "", "{ROOT}", "outside", "sentinel",
            "escaped",
        ][..],
    );
    let path = proptest::collection::vec(part, 1..5).prop_map(|parts| parts.join("/"));
    let kind = prop_oneof![
        3 => (proptest::collection::vec(any::<u8>(), 0..16), any::<bool>()).prop_map(|(data, x)| Kind::File(data, x)),
        2 => Just(Kind::Dir),
        2 => path.clone().prop_map(Kind::Symlink),
        2 => path.clone().prop_map(Kind::HardLink),
        1 => Just(Kind::Fifo),
        1 => (1..2048u64).prop_map(Kind::PaxGlobal),
        1 => (1..2048u64).prop_map(Kind::LongName),
    ];
    proptest::collection::vec(
        (path, kind).prop_map(|(path, kind)| Entry { path, kind }),
        1..12,
    )
}

/// A case: its entries, the limit, and what it must give.
fn archives() -> impl Strategy<Value = (Vec<Entry>, u64, Expect)> {
    let clean =
        trees().prop_map(|(entries, tree)| (entries, 1 << 20, Expect::Unpacked(Some(tree))));
    let hostile = (trees(), hostile(), any::<Index>()).prop_map(|((mut entries, _), bad, at)| {
        let at = at.index(entries.len() + 1);
        entries.splice(at..at, bad);
        (entries, 1 << 20, Expect::Refused)
    });
    let large = (
        trees(),
        select(&[4u64 << 10, 16 << 10, 64 << 10][..]),
        any::<Index>(),
    )
        .prop_flat_map(|((entries, _), limit, at)| {
            bombs(limit).prop_map(move |bomb| {
                let mut entries = entries.clone();
                let at = at.index(entries.len()) + 1;
                entries.splice(at..at, bomb);
                (entries, limit, Expect::TooLarge)
            })
        });
    let random = (random_entries(), select(&[1u64 << 10, 1 << 20][..]))
        .prop_map(|(entries, limit)| (entries, limit, Expect::Safe));
    prop_oneof![3 => clean, 4 => hostile, 2 => large, 3 => random]
}

/// This crate's seeds (`tests/corpus/`) and regressions (`proptest-regressions/fuzz.txt`).
const CORPUS: Corpus = Corpus::new(env!("CARGO_MANIFEST_DIR"));

#[test]
fn archive() {
    let limits = Limits {
        max_bytes: SEED_LIMIT,
    };
    let kinds = [
        ("ok", Expect::Unpacked(None)),
        ("bad", Expect::Refused),
        ("large", Expect::TooLarge),
    ];
    CORPUS.replay_as("archive", &kinds, |_, bytes, expect| {
        check(Ok(&bytes), &limits, &expect)
    });
    CORPUS.fuzz(600, archives(), |(entries, limit, expect)| {
        check(Err(&entries), &Limits { max_bytes: limit }, &expect)
    });
}

/// The seeds: each archive kind the generators make, written once (`--ignored` writes them
/// again). Their absolute paths name a folder that does not exist.
#[test]
#[ignore = "writes tests/corpus/archive/"]
fn write_corpus() {
    let file = |path: &str, text: &str| entry(path, Kind::File(text.as_bytes().to_vec(), false));
    let tree = || {
        vec![
            entry("acme-demo-3f9a1c2/", Kind::Dir),
            file(
                "acme-demo-3f9a1c2/streamlit_app.py",
                "import streamlit as st\n",
            ),
            file("acme-demo-3f9a1c2/requirements.txt", "pandas\n"),
            entry("acme-demo-3f9a1c2/pages/", Kind::Dir),
        ]
    };
    let with = |extra: Vec<Entry>| [tree(), extra].concat();
    let top = "acme-demo-3f9a1c2";
    let seeds: Vec<(&str, Vec<Entry>)> = vec![
        ("ok-git-archive", {
            let mut entries = vec![entry("pax_global_header", Kind::PaxGlobal(52))];
            entries.extend(tree());
            entries
        }),
        (
            "ok-inner-links",
            with(vec![
                entry(
                    &format!("{top}/pages/app.py"),
                    Kind::Symlink("../streamlit_app.py".into()),
                ),
                entry(
                    &format!("{top}/copy.py"),
                    Kind::HardLink(format!("{top}/streamlit_app.py")),
                ),
                entry(
                    &format!("{top}/run.sh"),
                    Kind::File(b"#!/bin/sh\n".to_vec(), true),
                ),
            ]),
        ),
        (
            "ok-fifo-and-device-skipped",
            with(vec![
                entry(&format!("{top}/fifo"), Kind::Fifo),
                entry(&format!("{top}/tty"), Kind::CharDevice),
            ]),
        ),
        (
            "ok-long-names",
            with(vec![file(
                &format!("{top}/pages/{}.py", "n".repeat(150)),
                "x",
            )]),
        ),
        (
            "bad-dot-dot",
            with(vec![file(&format!("{top}/../../escaped"), "x")]),
        ),
        (
            "bad-absolute",
            with(vec![file("/nonexistent-runway-fuzz/escaped", "x")]),
        ),
        (
            "bad-outside-top-folder",
            with(vec![file("other/escaped", "x")]),
        ),
        (
            "bad-symlink-out",
            with(vec![entry(
                &format!("{top}/pages/out"),
                Kind::Symlink("../../escaped".into()),
            )]),
        ),
        (
            "bad-symlink-absolute",
            with(vec![entry(
                &format!("{top}/passwd"),
                Kind::Symlink("/etc/passwd".into()),
            )]),
        ),
        (
            "bad-symlink-chain",
            with(vec![
                entry(&format!("{top}/a"), Kind::Symlink(".".into())),
                entry(&format!("{top}/b"), Kind::Symlink("a/..".into())),
            ]),
        ),
        (
            "bad-write-through-link",
            with(vec![
                entry(&format!("{top}/alias"), Kind::Symlink("pages".into())),
                file(&format!("{top}/alias/escaped"), "x"),
            ]),
        ),
        (
            "bad-hardlink-out",
            with(vec![entry(
                &format!("{top}/h"),
                Kind::HardLink(format!("{top}/../../etc/passwd")),
            )]),
        ),
        (
            "bad-hardlink-to-folder",
            with(vec![entry(
                &format!("{top}/h"),
                Kind::HardLink(format!("{top}/pages")),
            )]),
        ),
        (
            "bad-link-then-file",
            with(vec![
                entry(
                    &format!("{top}/l"),
                    Kind::Symlink("requirements.txt".into()),
                ),
                file(&format!("{top}/l"), "overwritten"),
            ]),
        ),
        (
            "bad-file-below-file",
            with(vec![file(&format!("{top}/requirements.txt/x"), "x")]),
        ),
        (
            "bad-long-symlink-out",
            with(vec![entry(
                &format!("{top}/l"),
                Kind::Symlink(format!("{}../../escaped", "./".repeat(60))),
            )]),
        ),
        (
            "large-zeros",
            with(vec![entry(
                &format!("{top}/data.bin"),
                Kind::Zeros(1 << 20),
            )]),
        ),
        (
            "large-long-name",
            with(vec![entry(&format!("{top}/x"), Kind::LongName(256 << 10))]),
        ),
        (
            "large-pax-global",
            with(vec![entry(&format!("{top}/x"), Kind::PaxGlobal(1 << 20))]),
        ),
        (
            "large-pax-local",
            with(vec![entry(&format!("{top}/x"), Kind::PaxLocal(1 << 20))]),
        ),
        (
            "large-many-entries",
            with(
                (0..300)
                    .map(|i| entry(&format!("{top}/f{i}"), Kind::Fifo))
                    .collect(),
            ),
        ),
    ];
    let dir = CORPUS.dir("archive");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, entries) in seeds {
        std::fs::write(
            dir.join(format!("{name}.tar.gz")),
            tarball(&entries, Path::new("/")),
        )
        .unwrap();
    }
}
