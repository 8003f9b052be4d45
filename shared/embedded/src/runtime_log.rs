//! The apps' runtime log on a laptop: what each app process writes to standard output and
//! error, one JSON line per line of output in `<dir>/<app>/runtime.log` (every revision of
//! the app in one file, as Cloud Logging keeps one log per service), with its time, revision
//! and stream. A file past its size is kept as `runtime.log.1` and a new one begun.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use runway_core::domain::{AppName, Region};
use runway_core::ports::{LogError, LogLine, LogRead, RuntimeLog};

/// The file of an app's runtime log in its folder.
const FILE: &str = "runtime.log";
/// The size past which the file is kept as `.1` and a new one begun: the app's log takes at
/// most about twice this.
const ROTATE_AT: u64 = 4 * 1024 * 1024;
/// A line longer than this is cut into lines of this length: an app printing without newlines
/// must not grow Runway's memory.
const LONGEST_LINE: usize = 16 * 1024;
/// How much of the log one read takes in at most.
const READ_AT_MOST: u64 = 256 * 1024;

/// Appends an app's lines to its runtime log, from every revision's output at once.
pub(crate) struct LogWriter {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    rotate_at: u64,
}

pub(crate) type SharedWriter = Arc<Mutex<LogWriter>>;

impl LogWriter {
    pub(crate) fn new(app_dir: &Path) -> SharedWriter {
        Self::rotating_at(app_dir, ROTATE_AT)
    }

    fn rotating_at(app_dir: &Path, rotate_at: u64) -> SharedWriter {
        Arc::new(Mutex::new(Self {
            path: app_dir.join(FILE),
            file: None,
            size: 0,
            rotate_at,
        }))
    }

    /// Appends `line`; a log that cannot be written (the app was deleted, the disk is full)
    /// loses the line, never the app.
    fn write(&mut self, line: &LogLine) {
        let Ok(mut json) = serde_json::to_vec(line) else {
            return;
        };
        json.push(b'\n');
        if let Err(error) = self.append(&json) {
            tracing::debug!(%error, path = %self.path.display(), "could not write an app's log line");
            self.file = None;
        }
    }

    fn append(&mut self, json: &[u8]) -> std::io::Result<()> {
        if self.file.is_some() && self.size + json.len() as u64 > self.rotate_at {
            std::fs::rename(&self.path, rotated(&self.path))?;
            self.file = None;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                self.size = file.metadata()?.len();
                self.file.insert(file)
            }
        };
        // One write per line: a reader never sees half of one, except at the very end.
        file.write_all(json)?;
        self.size += json.len() as u64;
        Ok(())
    }
}

fn rotated(path: &Path) -> PathBuf {
    path.with_extension("log.1")
}

/// Copies what a process writes on one of its streams to the app's log, line by line, until
/// the stream ends.
pub(crate) async fn copy_lines(
    from: impl AsyncRead + Unpin,
    stream: &'static str,
    revision: String,
    to: SharedWriter,
) {
    let mut from = BufReader::with_capacity(LONGEST_LINE, from);
    let mut line = Vec::new();
    loop {
        let buffer = match from.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buffer) => buffer,
        };
        let room = LONGEST_LINE - line.len();
        let (take, ends) = match buffer.iter().position(|b| *b == b'\n') {
            Some(at) if at <= room => (at + 1, true),
            _ => (buffer.len().min(room), false),
        };
        line.extend_from_slice(&buffer[..take]);
        from.consume(take);
        if ends || line.len() >= LONGEST_LINE {
            emit(&mut line, stream, &revision, &to);
        }
    }
    emit(&mut line, stream, &revision, &to);
}

fn emit(line: &mut Vec<u8>, stream: &str, revision: &str, to: &SharedWriter) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']);
    if !text.trim().is_empty() {
        let line = LogLine {
            at: chrono::Utc::now(),
            revision: revision.to_owned(),
            stream: stream.to_owned(),
            text: text.to_owned(),
        };
        to.lock().unwrap_or_else(|e| e.into_inner()).write(&line);
    }
    line.clear();
}

/// A line of runway's own about the app (why it restarted it), on the `system` stream as Cloud
/// Run's own lines about a revision are.
pub(crate) fn note(to: &SharedWriter, revision: &str, text: &str) {
    let line = LogLine {
        at: chrono::Utc::now(),
        revision: revision.to_owned(),
        stream: "system".to_owned(),
        text: text.to_owned(),
    };
    to.lock().unwrap_or_else(|e| e.into_inner()).write(&line);
}

/// The last `lines` lines `revision` wrote, as text: why a process that would not start
/// stopped.
pub(crate) fn revision_tail(app_dir: &Path, revision: &str, lines: usize) -> String {
    let path = app_dir.join(FILE);
    let Ok(mut file) = File::open(&path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (read, _) = read_lines(&mut file, len.saturating_sub(READ_AT_MOST), len, true);
    let mine: Vec<String> = read
        .into_iter()
        .filter(|line| line.revision == revision)
        .map(|line| line.text)
        .collect();
    mine[mine.len().saturating_sub(lines)..].join("\n")
}

/// Reads the log: `<dir>/<app>/runtime.log`, as `ProcessPlatform` writes it.
#[derive(Clone)]
pub struct LocalRuntimeLog {
    dir: PathBuf,
}

impl LocalRuntimeLog {
    /// `dir` is the platform's (`ProcessPlatformConfig::dir`).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

/// Where a reader stands: the file (by inode, which a rotation keeps) and the byte after the
/// last line it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    inode: u64,
    offset: u64,
}

impl Cursor {
    fn parse(text: &str) -> Option<Self> {
        let (inode, offset) = text.split_once(':')?;
        Some(Self {
            inode: inode.parse().ok()?,
            offset: offset.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.inode, self.offset)
    }
}

/// The lines of `file` from `from` (the start of a line, or anywhere with `skip_first`) to
/// `to`, and the offset after the last whole line: a line still being written is left for
/// the next read.
fn read_lines(file: &mut File, from: u64, to: u64, skip_first: bool) -> (Vec<LogLine>, u64) {
    let mut bytes = Vec::new();
    let read = file
        .seek(SeekFrom::Start(from))
        .and_then(|_| file.take(to.saturating_sub(from)).read_to_end(&mut bytes));
    if read.is_err() {
        return (Vec::new(), from);
    }
    let whole = bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |at| at + 1);
    let mut text = &bytes[..whole];
    if skip_first && from > 0 {
        // Begun mid-line: the first whole line starts after the next newline.
        let start = text
            .iter()
            .position(|b| *b == b'\n')
            .map_or(text.len(), |at| at + 1);
        text = &text[start..];
    }
    let lines = text
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect();
    (lines, from + whole as u64)
}

/// The app's log file, if it has written one.
fn open_log(path: &Path) -> std::io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// No lines, and where to look again.
fn nothing(cursor: String) -> LogRead {
    LogRead {
        lines: Vec::new(),
        cursor,
    }
}

/// The newest `max` lines of the log in `app_dir`, from the kept file too when the current
/// one has fewer.
fn tail_of(app_dir: &Path, max: usize) -> std::io::Result<LogRead> {
    let path = app_dir.join(FILE);
    let Some(mut file) = open_log(&path)? else {
        return Ok(nothing(String::new()));
    };
    let meta = file.metadata()?;
    let (mut lines, end) = read_lines(
        &mut file,
        meta.len().saturating_sub(READ_AT_MOST),
        meta.len(),
        true,
    );
    if lines.len() < max
        && let Ok(mut kept) = File::open(rotated(&path))
    {
        let len = kept.metadata()?.len();
        let (mut older, _) = read_lines(&mut kept, len.saturating_sub(READ_AT_MOST), len, true);
        older.append(&mut lines);
        lines = older;
    }
    lines.drain(..lines.len().saturating_sub(max));
    let cursor = Cursor {
        inode: meta.ino(),
        offset: end,
    };
    Ok(LogRead {
        lines,
        cursor: cursor.to_string(),
    })
}

/// The lines after `cursor`, at most `max`: the rest of the kept file first when the cursor
/// is in it (a rotation since), else from the start of the current file when it is in
/// neither.
fn after_in(app_dir: &Path, cursor: &str, max: usize) -> std::io::Result<LogRead> {
    let path = app_dir.join(FILE);
    let Some(mut file) = open_log(&path)? else {
        return Ok(nothing(cursor.to_owned()));
    };
    let meta = file.metadata()?;
    let mut lines = Vec::new();
    let mut at = Cursor {
        inode: meta.ino(),
        offset: 0,
    };
    match Cursor::parse(cursor) {
        Some(given) if given.inode == meta.ino() && given.offset <= meta.len() => at = given,
        Some(given) => {
            if let Ok(mut kept) = File::open(rotated(&path))
                && kept.metadata()?.ino() == given.inode
            {
                let len = kept.metadata()?.len();
                let end = len.min(given.offset + READ_AT_MOST);
                let (older, _) = read_lines(&mut kept, given.offset.min(len), end, false);
                lines = older;
                if end < len {
                    // More of the kept file than one read takes: go on there next time.
                    let offset = given.offset + READ_AT_MOST;
                    lines.truncate(max);
                    let cursor = Cursor { offset, ..given };
                    return Ok(LogRead {
                        lines,
                        cursor: cursor.to_string(),
                    });
                }
            }
        }
        None => {}
    }
    let end = meta.len().min(at.offset + READ_AT_MOST);
    let (mut newer, next) = read_lines(&mut file, at.offset, end, false);
    lines.append(&mut newer);
    at.offset = next;
    if lines.len() > max {
        // Keep the newest `max`: a page that fell that far behind skips the rest.
        lines.drain(..lines.len() - max);
    }
    Ok(LogRead {
        lines,
        cursor: at.to_string(),
    })
}

#[async_trait]
impl RuntimeLog for LocalRuntimeLog {
    async fn tail(&self, app: &AppName, _: &Region, max: usize) -> Result<LogRead, LogError> {
        let dir = self.dir.join(app.as_str());
        tokio::task::spawn_blocking(move || tail_of(&dir, max))
            .await
            .map_err(anyhow::Error::from)?
            .map_err(|error| LogError::Unavailable(error.to_string()))
    }

    async fn after(
        &self,
        app: &AppName,
        _: &Region,
        cursor: &str,
        max: usize,
    ) -> Result<LogRead, LogError> {
        let dir = self.dir.join(app.as_str());
        let cursor = cursor.to_owned();
        tokio::task::spawn_blocking(move || after_in(&dir, &cursor, max))
            .await
            .map_err(anyhow::Error::from)?
            .map_err(|error| LogError::Unavailable(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(read: &LogRead) -> Vec<&str> {
        read.lines.iter().map(|line| line.text.as_str()).collect()
    }

    async fn copied(output: &[u8]) -> Vec<LogLine> {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::new(dir.path());
        copy_lines(output, "stdout", "app-1".into(), writer).await;
        tail_of(dir.path(), 100).unwrap().lines
    }

    #[tokio::test]
    async fn each_line_of_output_is_one_line_of_the_log_with_its_revision_and_stream() {
        let lines = copied(b"one\r\n\n  two  \nthree without newline").await;

        let texts: Vec<_> = lines.iter().map(|line| line.text.as_str()).collect();
        assert_eq!(texts, ["one", "  two  ", "three without newline"]);
        assert!(
            lines
                .iter()
                .all(|line| line.revision == "app-1" && line.stream == "stdout")
        );
    }

    #[tokio::test]
    async fn a_line_without_end_is_cut_at_the_longest_a_line_may_be() {
        let output = vec![b'x'; LONGEST_LINE * 2 + 10];

        let lines = copied(&output).await;

        let lengths: Vec<_> = lines.iter().map(|line| line.text.len()).collect();
        assert_eq!(lengths, [LONGEST_LINE, LONGEST_LINE, 10]);
    }

    #[tokio::test]
    async fn a_reader_goes_on_from_its_cursor_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::rotating_at(dir.path(), 400);
        let write = |text: &str| {
            copy_lines_now(&writer, text);
        };
        write("first");
        let start = tail_of(dir.path(), 10).unwrap();
        assert_eq!(texts(&start), ["first"]);

        // Enough lines to rotate the file once: the reader gets every one, in order.
        let written: Vec<String> = (0..5).map(|n| format!("line {n}")).collect();
        for text in &written {
            write(text);
        }
        assert!(rotated(&dir.path().join(FILE)).exists(), "the log rotated");
        let read = after_in(dir.path(), &start.cursor, 100).unwrap();
        assert_eq!(
            texts(&read),
            written.iter().map(String::as_str).collect::<Vec<_>>()
        );

        // And nothing again until something is written.
        let again = after_in(dir.path(), &read.cursor, 100).unwrap();
        assert!(again.lines.is_empty());
        write("last");
        assert_eq!(
            texts(&after_in(dir.path(), &again.cursor, 100).unwrap()),
            ["last"]
        );
    }

    fn copy_lines_now(writer: &SharedWriter, text: &str) {
        writer.lock().unwrap().write(&LogLine {
            at: chrono::Utc::now(),
            revision: "app-1".into(),
            stream: "stderr".into(),
            text: text.into(),
        });
    }

    #[test]
    fn a_line_being_written_waits_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::new(dir.path());
        copy_lines_now(&writer, "whole");
        let start = tail_of(dir.path(), 10).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap()
            .write_all(b"{\"at\":\"2026")
            .unwrap();

        let read = after_in(dir.path(), &start.cursor, 10).unwrap();

        assert!(read.lines.is_empty());
        assert_eq!(
            read.cursor, start.cursor,
            "the half line is read again later"
        );
    }

    #[test]
    fn the_tail_is_the_newest_lines_newest_last_and_a_bad_cursor_reads_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::new(dir.path());
        for n in 0..5 {
            copy_lines_now(&writer, &format!("{n}"));
        }

        assert_eq!(texts(&tail_of(dir.path(), 2).unwrap()), ["3", "4"]);
        assert_eq!(
            texts(&after_in(dir.path(), "nonsense", 2).unwrap()),
            ["3", "4"]
        );
        assert_eq!(
            texts(&after_in(dir.path(), "1:99999999", 10).unwrap()).len(),
            5
        );
    }

    #[test]
    fn an_app_without_a_log_has_no_lines() {
        let dir = tempfile::tempdir().unwrap();
        assert!(tail_of(dir.path(), 10).unwrap().lines.is_empty());
        assert_eq!(revision_tail(dir.path(), "app-1", 5), "");
    }
}
