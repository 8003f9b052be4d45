//! Pid files: how a `runway` that starts again finds the processes the one before it started
//! (apps, builds) and was killed before it could stop them.

use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::write_private;

/// The fields of `/proc/PID/stat` after the command name (`state ppid …`): the name may hold
/// spaces and parentheses, so they start after its last `)`.
pub(crate) fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    Some(fields.split_whitespace().map(str::to_owned).collect())
}

/// What a pid file holds: enough to recognise the very process Runway started, so that a pid
/// the system gave to another process since (after a reboot, someone else's Streamlit) is
/// never killed for it.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PidRecord {
    pub pid: u32,
    /// When the process started, in clock ticks after boot (`/proc/PID/stat`): a pid reused
    /// later names a process that started later.
    pub start_time: u64,
    /// Its working directory, the release's checkout in Runway's data dir: ticks repeat from
    /// one boot to the next, this folder is the app's alone.
    pub cwd: PathBuf,
}

impl PidRecord {
    /// The running process `pid` as a record, if it runs.
    fn of(pid: u32) -> Option<Self> {
        // Field 22 of the line.
        let start_time = stat_fields(pid)?.get(19)?.parse().ok()?;
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
        Some(Self {
            pid,
            start_time,
            cwd,
        })
    }
}

/// Records the process `pid` (an app, a build) in `path`, for [`reap_orphans`] after a crash of runway.
pub(crate) fn record_pid(path: &Path, pid: u32) {
    let written = PidRecord::of(pid)
        .and_then(|record| serde_json::to_vec(&record).ok())
        .map(|json| write_private(path, &json));
    if !matches!(written, Some(Ok(()))) {
        tracing::warn!(
            pid,
            "could not record a process; a crash of runway may leave it running"
        );
    }
}

/// Kills the processes recorded in the pid files one folder below `dir` (`<dir>/<app>/*.pid`,
/// `<dir>/<build>/*.pid`) that are still the very processes Runway started (same start time,
/// same working directory), and removes the pid files.
pub(crate) fn reap_orphans(dir: &Path) {
    let Ok(apps) = std::fs::read_dir(dir) else {
        return;
    };
    for pid_file in apps
        .flatten()
        .filter_map(|app| std::fs::read_dir(app.path()).ok())
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "pid"))
    {
        let text = std::fs::read(&pid_file).unwrap_or_default();
        match serde_json::from_slice::<PidRecord>(&text) {
            Ok(recorded) if PidRecord::of(recorded.pid).as_ref() == Some(&recorded) => {
                tracing::warn!(
                    pid = recorded.pid,
                    "stopping a process left by a previous runway"
                );
                let _ = kill(Pid::from_raw(recorded.pid as i32), Signal::SIGKILL);
            }
            Ok(_) => {} // It ended; its pid may be another process's now.
            // A bare pid, as runway wrote before it recorded more: nothing shows whose it is.
            Err(_) => tracing::warn!(
                pid_file = %pid_file.display(),
                "not stopping the process of a pid file that does not say which process it was"
            ),
        }
        let _ = std::fs::remove_file(&pid_file);
    }
}
