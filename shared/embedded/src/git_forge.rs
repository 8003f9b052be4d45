//! `Forge` for git repositories on this machine. A "webhook" is a JSON file in the repository's
//! git dir plus a `post-receive` hook that runs `runway post-receive`, which sends each hook a
//! GitHub-shaped `push` event signed with `X-Hub-Signature-256`, as GitHub would. Where GitHub
//! shows a release as a deployment and a commit status, the local forge writes a git note on
//! the commit (`git log --notes=runway`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::process::Command;

use super::write_private;
use runway_core::domain::{AppName, Branch, CommitSha, HookId, RepoUrl};
use runway_core::ports::{
    BRANCHES_LISTED, DELIVERIES_LISTED, Forge, ForgeError, HOOK_EVENTS, HookDelivery, Progress,
    PullState, ReleaseReport, Repository, SourceArchive, Webhook,
};
use runway_http::webhook;

mod pulls;

pub use pulls::{PullFile, close_pull, open_pull, pull_comments};

const HOOK_MARKER: &str = "Installed by Runway";
const HOOKS_DIR: &str = "runway-webhooks";
const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

#[derive(Clone, Debug)]
pub struct GitForge {
    /// The `runway` executable the `post-receive` hook runs.
    runway_bin: PathBuf,
    /// Where this machine's runway writes the address it listens on now (see
    /// [`GitForge::following`]).
    address_file: Option<PathBuf>,
}

/// A hook as stored in the repository, like GitHub keeps a hook's config.
#[derive(Serialize, Deserialize)]
struct HookFile {
    id: String,
    url: String,
    secret: String,
    events: Vec<String>,
    /// Absent in hook files written before it was recorded.
    #[serde(default)]
    created_at: Option<runway_core::domain::Timestamp>,
    /// Set on a hook to this machine's runway, which may listen on another port by the time
    /// of a push (port 0, a changed `RUNWAY_LISTEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    follows: Option<Follows>,
}

/// A hook that delivers to wherever runway listens now rather than to the port in its URL.
#[derive(Serialize, Deserialize)]
struct Follows {
    /// The file runway writes its address (`http://127.0.0.1:PORT`) to when it starts.
    address_file: PathBuf,
    /// The URL's path on runway: `/github/webhook/APP`.
    path: String,
}

impl HookFile {
    /// Where the hook delivers: for a hook that follows runway, its path at runway's address
    /// now; else (or when that address is unknown) the URL it was made with.
    fn target(&self) -> String {
        self.follows
            .as_ref()
            .and_then(|follows| {
                let address = read_address(&follows.address_file)?;
                Some(format!("{address}{}", follows.path))
            })
            .unwrap_or_else(|| self.url.clone())
    }
}

/// The address in runway's address file, if there is one.
fn read_address(file: &Path) -> Option<String> {
    let address = std::fs::read_to_string(file).ok()?;
    Some(address.trim().to_owned()).filter(|address| !address.is_empty())
}

impl GitForge {
    pub fn new(runway_bin: PathBuf) -> Self {
        Self {
            runway_bin,
            address_file: None,
        }
    }

    /// Hooks to the address in `address_file` (this machine's runway, which writes it each
    /// time it starts) follow that address: a push reaches runway on whatever port it listens
    /// now, with no app submitted again.
    pub fn following(mut self, address_file: PathBuf) -> Self {
        self.address_file = Some(address_file);
        self
    }

    /// How a hook to `url` follows runway, when `url` is on runway's address now.
    fn follows(&self, url: &str) -> Option<Follows> {
        let address_file = self.address_file.clone()?;
        let address = read_address(&address_file)?;
        let path = url.strip_prefix(&address)?;
        path.starts_with('/').then(|| Follows {
            address_file,
            path: path.to_owned(),
        })
    }
}

async fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, ForgeError> {
    let mut command = Command::new("git");
    if let Some(dir) = dir {
        command.arg("-C").arg(dir);
    }
    let output = command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .kill_on_drop(true)
        .output()
        .await
        .context("running git")?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(ForgeError::Other(anyhow::anyhow!(
            "git {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

fn local_path(repo: &RepoUrl) -> Result<&Path, ForgeError> {
    match repo {
        RepoUrl::Local { path } => Ok(path),
        RepoUrl::GitHub { .. } => Err(ForgeError::Rejected(
            "this Runway runs with the local git forge, which serves local repositories only \
             (a file:// URL or an absolute path); GitHub repositories need the GitHub forge"
                .into(),
        )),
    }
}

/// The repository's absolute git dir, or `NotFound` naming the path.
async fn git_dir(repo: &RepoUrl) -> Result<PathBuf, ForgeError> {
    let path = local_path(repo)?;
    match git(Some(path), &["rev-parse", "--absolute-git-dir"]).await {
        Ok(dir) => Ok(PathBuf::from(dir.trim())),
        Err(_) => Err(ForgeError::NotFound(format!(
            "no git repository at {}",
            path.display()
        ))),
    }
}

/// A stable numeric id, like GitHub's: derived from the git dir, kept under 2^53 so it survives
/// a round trip through JSON numbers in any language.
fn repo_id(git_dir: &Path) -> u64 {
    let digest = Sha256::digest(git_dir.as_os_str().as_encoded_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) >> 11
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The repository's own `post-receive` (`$GIT_DIR/hooks/post-receive`), the only place Runway
/// writes a hook: a hook that follows `core.hooksPath` or a symlink would make Runway write an
/// executable anywhere the repository's config points (another repository's hooks, a shared
/// folder, a file outside any repository).
async fn post_receive_path(git_dir: &Path) -> Result<PathBuf, ForgeError> {
    let own = git_dir.join("hooks");
    refuse_link(&own, "the hooks folder")?;
    let script = own.join("post-receive");
    refuse_link(&script, "the post-receive hook")?;
    // Set in the repository or in the user's or system's config, alike.
    let Ok(configured) = git(Some(git_dir), &["config", "--get", "core.hooksPath"]).await else {
        return Ok(script);
    };
    let used = git(
        Some(git_dir),
        &["rev-parse", "--path-format=absolute", "--git-path", "hooks"],
    )
    .await?;
    if Path::new(used.trim()) != own {
        return Err(ForgeError::Rejected(format!(
            "{} has core.hooksPath set to {}, so git would not run a hook in the repository's \
             own hooks folder, the only place Runway writes its post-receive hook. Unset it \
             (git -C {} config --unset core.hooksPath, or --global if it is set there), then \
             try again",
            git_dir.display(),
            configured.trim(),
            git_dir.display(),
        )));
    }
    Ok(script)
}

/// Refuses `path` when it is a symbolic link: what Runway writes there would land where the
/// link points.
fn refuse_link(path: &Path, what: &str) -> Result<(), ForgeError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(ForgeError::Rejected(format!(
            "{what} {} is a symbolic link; Runway writes hooks only into the repository's own \
             folder. Replace the link with a real folder or file, then try again",
            path.display()
        ))),
        _ => Ok(()),
    }
}

fn hooks_dir(git_dir: &Path) -> PathBuf {
    git_dir.join(HOOKS_DIR)
}

fn read_hooks(git_dir: &Path) -> anyhow::Result<Vec<HookFile>> {
    let mut hooks: Vec<HookFile> = read_json_files(&hooks_dir(git_dir))?;
    hooks.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(hooks)
}

/// Every `*.json` file in `dir`, read as `T`, in no particular order; none when `dir` is not
/// there.
fn read_json_files<T: serde::de::DeserializeOwned>(dir: &Path) -> anyhow::Result<Vec<T>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut read = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "json") {
            let text = std::fs::read_to_string(&path)?;
            read.push(serde_json::from_str(&text).with_context(|| path.display().to_string())?);
        }
    }
    Ok(read)
}

/// A child's output that keeps the child (killed on drop) for as long as it is read.
struct ChildOutput {
    _child: tokio::process::Child,
    stdout: tokio::process::ChildStdout,
}

impl tokio::io::AsyncRead for ChildOutput {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

/// `'…'` for sh, so any path is safe in the hook script.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[async_trait]
impl Forge for GitForge {
    async fn repository(&self, repo: &RepoUrl) -> Result<Repository, ForgeError> {
        let git_dir = git_dir(repo).await?;
        let head = git(
            None,
            &["ls-remote", "--symref", &file_url(&git_dir), "HEAD"],
        )
        .await?;
        let default_branch = head
            .lines()
            .find_map(|line| line.strip_prefix("ref: refs/heads/"))
            .and_then(|rest| rest.split('\t').next())
            .ok_or_else(|| {
                ForgeError::NotFound(format!(
                    "{} has no default branch (HEAD)",
                    git_dir.display()
                ))
            })?;
        let default_branch = Branch::parse(default_branch)
            .map_err(|e| ForgeError::Other(anyhow::anyhow!("default branch: {e}")))?;
        Ok(Repository {
            id: repo_id(&git_dir),
            full_name: git_dir.display().to_string(),
            default_branch,
        })
    }

    async fn resolve_commit(
        &self,
        repo: &RepoUrl,
        branch: &Branch,
    ) -> Result<CommitSha, ForgeError> {
        let git_dir = git_dir(repo).await?;
        let reference = format!("refs/heads/{branch}");
        let listing = git(None, &["ls-remote", &file_url(&git_dir), &reference]).await?;
        let sha = listing
            .lines()
            .find(|line| line.ends_with(&format!("\t{reference}")))
            .and_then(|line| line.split('\t').next())
            .ok_or_else(|| {
                ForgeError::NotFound(format!(
                    "branch '{branch}' does not exist in {}",
                    git_dir.display()
                ))
            })?;
        CommitSha::parse(sha).map_err(|e| ForgeError::Other(anyhow::anyhow!("{e}")))
    }

    async fn checkout(
        &self,
        repo: &RepoUrl,
        commit: &CommitSha,
        dest: &Path,
    ) -> Result<(), ForgeError> {
        let git_dir = git_dir(repo).await?;
        std::fs::create_dir_all(dest).context("creating the checkout folder")?;
        git(Some(dest), &["init", "-q"]).await?;
        git(
            Some(dest),
            &[
                "fetch",
                "-q",
                "--depth",
                "1",
                &file_url(&git_dir),
                commit.as_str(),
            ],
        )
        .await
        .map_err(|_| {
            ForgeError::NotFound(format!(
                "commit {} is not in the repository",
                commit.short()
            ))
        })?;
        git(Some(dest), &["checkout", "-q", "FETCH_HEAD"]).await?;
        // Like a source tarball: the tree only.
        std::fs::remove_dir_all(dest.join(".git")).context("removing .git from the checkout")?;
        Ok(())
    }

    async fn archive(
        &self,
        repo: &RepoUrl,
        commit: &CommitSha,
    ) -> Result<SourceArchive, ForgeError> {
        let git_dir = git_dir(repo).await?;
        let object = format!("{commit}^{{commit}}");
        git(
            None,
            &[
                "--git-dir",
                &git_dir.to_string_lossy(),
                "cat-file",
                "-e",
                &object,
            ],
        )
        .await
        .map_err(|_| {
            ForgeError::NotFound(format!(
                "commit {} is not in the repository",
                commit.short()
            ))
        })?;
        // As GitHub serves it: gzipped, every entry in one folder named after the commit.
        let prefix = format!("source-{}/", commit.short());
        let mut child = Command::new("git")
            .arg("--git-dir")
            .arg(&git_dir)
            .args([
                "archive",
                "--format=tar.gz",
                "--prefix",
                &prefix,
                commit.as_str(),
            ])
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("running git archive")?;
        let stdout = child.stdout.take().context("git archive's output")?;
        Ok(Box::pin(ChildOutput {
            _child: child,
            stdout,
        }))
    }

    async fn ensure_webhook(
        &self,
        repo: &RepoUrl,
        url: &str,
        secret: &SecretString,
    ) -> Result<HookId, ForgeError> {
        let git_dir = git_dir(repo).await?;
        // Creates of several apps on one repository at once: one at a time here, or one reads
        // the hook another is writing (or removing).
        let _hooks = HOOKS.lock().await;
        let script_path = post_receive_path(&git_dir).await?;
        if let Ok(existing) = std::fs::read_to_string(&script_path)
            && !existing.contains(HOOK_MARKER)
        {
            return Err(ForgeError::Rejected(format!(
                "{} already has a post-receive hook of its own; Runway will not replace it",
                git_dir.display()
            )));
        }
        // A hook to the same URL keeps its id and takes the new secret, as GitHub's PATCH does.
        let existing = read_hooks(&git_dir)?
            .into_iter()
            .find(|hook| hook.target() == url);
        let (id, created_at) = match existing {
            Some(hook) => (hook.id, hook.created_at),
            None => (
                uuid::Uuid::new_v4().simple().to_string(),
                Some(chrono::Utc::now()),
            ),
        };
        let hook = HookFile {
            id,
            url: url.to_owned(),
            secret: secret.expose_secret().to_owned(),
            events: HOOK_EVENTS.map(str::to_owned).to_vec(),
            created_at,
            follows: self.follows(url),
        };
        let dir = hooks_dir(&git_dir);
        // The hook files hold secrets: never into a folder a link sends elsewhere.
        refuse_link(&dir, "the webhooks folder")?;
        std::fs::create_dir_all(&dir).context("creating the webhooks folder")?;
        write_private(
            &dir.join(format!("{}.json", hook.id)),
            &serde_json::to_vec_pretty(&hook).context("hook file")?,
        )
        .context("writing the hook file")?;
        let script = format!(
            "#!/bin/sh\n# {HOOK_MARKER}: sends a signed GitHub-style push event to each webhook \
             in {HOOKS_DIR}/.\nexec {} post-receive\n",
            shell_quote(&self.runway_bin.display().to_string())
        );
        if let Some(hooks) = script_path.parent() {
            std::fs::create_dir_all(hooks).context("creating the hooks folder")?;
        }
        // Whole or not at all: git (or another reader) never sees a half-written hook.
        let partial =
            script_path.with_extension(format!("partial-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&partial, script).context("writing post-receive")?;
        std::fs::set_permissions(
            &partial,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .context("making post-receive executable")?;
        std::fs::rename(&partial, &script_path).context("putting post-receive in place")?;
        Ok(HookId::new(hook.id))
    }

    async fn delete_webhook(&self, repo: &RepoUrl, hook_id: &HookId) -> Result<(), ForgeError> {
        let hook_id = hook_id.as_str();
        let git_dir = git_dir(repo).await?;
        let _hooks = HOOKS.lock().await;
        if hook_id.is_empty() || !hook_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ForgeError::NotFound(format!("no webhook {hook_id:?}")));
        }
        let dir = hooks_dir(&git_dir);
        for file in [format!("{hook_id}.json"), format!("{hook_id}.deliveries")] {
            match std::fs::remove_file(dir.join(file)) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ForgeError::Other(error.into()));
                }
                _ => {}
            }
        }
        if read_hooks(&git_dir)?.is_empty() {
            // Only the hook Runway wrote, where it writes them: not one core.hooksPath or a
            // link points at now.
            let script_path = git_dir.join("hooks").join("post-receive");
            let is_file = std::fs::symlink_metadata(&script_path).is_ok_and(|m| m.is_file());
            if is_file
                && std::fs::read_to_string(&script_path).is_ok_and(|s| s.contains(HOOK_MARKER))
            {
                std::fs::remove_file(&script_path).context("removing post-receive")?;
            }
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(())
    }

    async fn webhooks(&self, repo: &RepoUrl) -> Result<Vec<Webhook>, ForgeError> {
        let git_dir = git_dir(repo).await?;
        Ok(read_hooks(&git_dir)?
            .into_iter()
            .map(|hook| Webhook {
                url: hook.target(),
                id: HookId::new(hook.id),
                created_at: hook.created_at,
                events: hook.events,
                active: true,
                content_type: Some("json".into()),
            })
            .collect())
    }

    /// What `runway post-receive` logged of the hook's deliveries, newest first.
    async fn hook_deliveries(
        &self,
        repo: &RepoUrl,
        hook_id: &HookId,
    ) -> Result<Vec<HookDelivery>, ForgeError> {
        let hook_id = hook_id.as_str();
        if hook_id.is_empty() || !hook_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ForgeError::NotFound(format!("no webhook {hook_id:?}")));
        }
        let git_dir = git_dir(repo).await?;
        let dir = hooks_dir(&git_dir);
        if !dir.join(format!("{hook_id}.json")).exists() {
            return Err(ForgeError::NotFound(format!("no webhook {hook_id}")));
        }
        let log = match std::fs::read_to_string(dir.join(format!("{hook_id}.deliveries"))) {
            Ok(log) => log,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(ForgeError::Other(error.into())),
        };
        let mut deliveries: Vec<HookDelivery> = log
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        deliveries.reverse();
        deliveries.truncate(DELIVERIES_LISTED);
        Ok(deliveries)
    }

    async fn branches(&self, repo: &RepoUrl) -> Result<Vec<Branch>, ForgeError> {
        let git_dir = git_dir(repo).await?;
        let listing = git(None, &["ls-remote", "--heads", &file_url(&git_dir)]).await?;
        let mut branches: Vec<Branch> = listing
            .lines()
            .filter_map(|line| line.split('\t').nth(1)?.strip_prefix("refs/heads/"))
            .filter_map(|name| Branch::parse(name).ok())
            .collect();
        branches.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        branches.truncate(BRANCHES_LISTED);
        Ok(branches)
    }

    async fn has_file(
        &self,
        repo: &RepoUrl,
        branch: &Branch,
        path: &str,
    ) -> Result<bool, ForgeError> {
        let git_dir = git_dir(repo).await?;
        let object = format!("refs/heads/{branch}:{path}");
        let kind = git(
            None,
            &[
                "--git-dir",
                &git_dir.to_string_lossy(),
                "cat-file",
                "-t",
                &object,
            ],
        )
        .await;
        Ok(kind.is_ok_and(|kind| kind.trim() == "blob"))
    }

    /// A git note on the commit, under `refs/notes/runway` (`git log --notes=runway` shows it):
    /// one line per app, `runway/APP #SEQ: STATE — description — URL`, the newest release's.
    async fn report(&self, repo: &RepoUrl, report: &ReleaseReport) -> Result<(), ForgeError> {
        let git_dir = git_dir(repo).await?;
        let commit = report.commit.as_str();
        let object = format!("{commit}^{{commit}}");
        if git(Some(&git_dir), &["cat-file", "-e", &object])
            .await
            .is_err()
        {
            return Err(ForgeError::NotFound(format!(
                "commit {} is not in {}",
                report.commit.short(),
                git_dir.display()
            )));
        }
        let _one_writer = NOTES.lock().await;
        let note = git(
            Some(&git_dir),
            &["notes", "--ref", NOTES_REF, "show", commit],
        )
        .await
        .unwrap_or_default();
        let Some(note) = noted(&note, report) else {
            return Ok(());
        };
        git(
            Some(&git_dir),
            &[
                "-c",
                "user.name=Runway",
                "-c",
                "user.email=runway@localhost",
                "notes",
                "--ref",
                NOTES_REF,
                "add",
                "-f",
                "-m",
                &note,
                commit,
            ],
        )
        .await
        .map(drop)
    }

    /// From `runway-pulls/N.json`, its head the branch's now.
    async fn pull_request(&self, repo: &RepoUrl, number: u64) -> Result<PullState, ForgeError> {
        let git_dir = git_dir(repo).await?;
        pulls::state(&git_dir, number).await
    }

    /// Written to `runway-pulls/N.comments/PREVIEW.md` in the git dir, replaced whole each time.
    async fn comment_on_pull(
        &self,
        repo: &RepoUrl,
        number: u64,
        preview: &AppName,
        body: &str,
    ) -> Result<(), ForgeError> {
        let git_dir = git_dir(repo).await?;
        pulls::comment(&git_dir, number, preview, body).map_err(ForgeError::Other)
    }
}

/// Where the local forge notes releases on their commits: `refs/notes/runway`.
pub const NOTES_REF: &str = "runway";

/// The commit's note with `report`'s line in place of the app's earlier one; `None` when there
/// is nothing to write (an `Inactive` report of a release the note never showed).
fn noted(note: &str, report: &ReleaseReport) -> Option<String> {
    let app = format!("runway/{} #", report.app);
    let this = format!("runway/{} #{}:", report.app, report.seq);
    if report.progress == Progress::Inactive && !note.lines().any(|line| line.starts_with(&this)) {
        return None;
    }
    let description = report.description.lines().next().unwrap_or_default().trim();
    let mut line = format!("{this} {} — {description}", report.progress.as_str());
    for url in [&report.environment_url, &report.log_url]
        .into_iter()
        .flatten()
    {
        line.push_str(" — ");
        line.push_str(url);
    }
    let mut lines: Vec<&str> = note
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with(&app))
        .collect();
    lines.push(&line);
    Some(lines.join("\n"))
}

/// Held while a release is noted on its commit: a note is read, changed and written whole.
static NOTES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Held while a repository's hooks change (see `ensure_webhook`).
static HOOKS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Appends `delivery` to the hook's log, `runway-webhooks/{id}.deliveries` (JSON lines),
/// keeping the newest [`DELIVERIES_LISTED`] as GitHub keeps a hook's recent ones.
fn log_delivery(git_dir: &Path, hook_id: &str, delivery: &HookDelivery) -> anyhow::Result<()> {
    let path = hooks_dir(git_dir).join(format!("{hook_id}.deliveries"));
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines: Vec<String> = old.lines().map(str::to_owned).collect();
    lines.push(serde_json::to_string(delivery)?);
    let keep = lines.len().saturating_sub(DELIVERIES_LISTED);
    let text = lines[keep..].join("\n") + "\n";
    write_private(&path, text.as_bytes())?;
    Ok(())
}

/// The body of `runway post-receive`: for each `old new ref` line git gives the hook, sends every
/// webhook of the repository a signed push event, and, for a branch an open pull request comes
/// from, a `synchronize` of it. Reports each delivery on stderr, which git shows the pusher; a
/// failed delivery never fails the push (it cannot: the refs are updated).
pub async fn deliver_post_receive(git_dir: &Path, updates: &str) -> anyhow::Result<()> {
    let hooks = read_hooks(git_dir)?;
    if hooks.is_empty() {
        return Ok(());
    }
    let pusher = git(Some(git_dir), &["config", "user.name"])
        .await
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "local".into());
    for line in updates.lines() {
        let mut fields = line.split_whitespace();
        let (Some(before), Some(after), Some(git_ref)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let payload = push_payload(git_dir, before, after, git_ref, &pusher).await?;
        deliver(
            git_dir,
            &hooks,
            "push",
            &payload,
            &format!("push of {git_ref}"),
        )
        .await?;
        if let Some(branch) = git_ref.strip_prefix("refs/heads/")
            && after != ZERO_SHA
        {
            pulls::synchronize(git_dir, branch, &pusher).await?;
        }
    }
    Ok(())
}

/// Sends `payload` as `event` to every hook of the repository, signed with each hook's secret
/// and under one delivery id (as GitHub sends an event), and logs what each answered.
async fn deliver(
    git_dir: &Path,
    hooks: &[HookFile],
    event: &str,
    payload: &serde_json::Value,
    what: &str,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let body = serde_json::to_vec(payload)?;
    let delivery = uuid::Uuid::new_v4().to_string();
    for hook in hooks {
        let target = hook.target();
        let result = client
            .post(&target)
            .header("content-type", "application/json")
            .header("user-agent", "Runway-Hookshot/local")
            .header("x-github-event", event)
            .header("x-github-delivery", &delivery)
            .header("x-github-hook-id", &hook.id)
            .header(
                "x-hub-signature-256",
                webhook::sign(hook.secret.as_bytes(), &body),
            )
            .body(body.clone())
            .send()
            .await;
        let logged = match result {
            Ok(response) => {
                eprintln!(
                    "runway: {what} delivered to {target} ({})",
                    response.status()
                );
                let status = response.status();
                let word = if status.is_success() {
                    "OK".to_owned()
                } else {
                    format!("Invalid HTTP Response: {}", status.as_u16())
                };
                (Some(status.as_u16()), word)
            }
            Err(error) => {
                eprintln!("runway: could not deliver the {what}: {error}");
                let word = if error.is_timeout() {
                    "timed out"
                } else {
                    "failed to connect to host"
                };
                (None, word.to_owned())
            }
        };
        let delivery = HookDelivery {
            guid: delivery.clone(),
            delivered_at: chrono::Utc::now(),
            event: event.into(),
            status_code: logged.0,
            status: logged.1,
            redelivery: false,
        };
        if let Err(error) = log_delivery(git_dir, &hook.id, &delivery) {
            eprintln!("runway: could not log the delivery: {error:#}");
        }
    }
    Ok(())
}

async fn push_payload(
    git_dir: &Path,
    before: &str,
    after: &str,
    git_ref: &str,
    pusher: &str,
) -> anyhow::Result<serde_json::Value> {
    let deleted = after == ZERO_SHA;
    let head_commit = if deleted {
        serde_json::Value::Null
    } else {
        commit_json(git_dir, after).await?
    };
    let range = if before == ZERO_SHA {
        after.to_owned()
    } else {
        format!("{before}..{after}")
    };
    let mut commits = Vec::new();
    if !deleted {
        let listing = git(
            Some(git_dir),
            &["rev-list", "--max-count=20", "--reverse", &range],
        )
        .await
        .unwrap_or_default();
        for sha in listing.lines() {
            commits.push(commit_json(git_dir, sha).await?);
        }
    }
    Ok(json!({
        "ref": git_ref,
        "before": before,
        "after": after,
        "created": before == ZERO_SHA,
        "deleted": deleted,
        "forced": false,
        "base_ref": null,
        "compare": "",
        "commits": commits,
        "head_commit": head_commit,
        "repository": repository_json(git_dir).await,
        "pusher": { "name": pusher, "email": null },
        "sender": { "login": pusher },
    }))
}

/// The repository as GitHub's events describe it.
async fn repository_json(git_dir: &Path) -> serde_json::Value {
    let default_branch = default_branch(git_dir).await.unwrap_or_default();
    let name = git_dir
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".git").to_owned())
        .unwrap_or_default();
    json!({
        "id": repo_id(git_dir),
        "name": name,
        "full_name": git_dir.display().to_string(),
        "private": true,
        "clone_url": file_url(git_dir),
        "default_branch": default_branch,
    })
}

async fn default_branch(git_dir: &Path) -> Result<String, ForgeError> {
    git(Some(git_dir), &["symbolic-ref", "--short", "HEAD"])
        .await
        .map(|s| s.trim().to_owned())
}

async fn commit_json(git_dir: &Path, sha: &str) -> anyhow::Result<serde_json::Value> {
    let text = git(
        Some(git_dir),
        &["show", "-s", "--format=%H%x00%B%x00%an%x00%ae%x00%cI", sha],
    )
    .await?;
    let mut parts = text.splitn(5, '\0');
    let mut next = || parts.next().unwrap_or_default().trim().to_owned();
    let (id, message, author, email, timestamp) = (next(), next(), next(), next(), next());
    Ok(json!({
        "id": id,
        "tree_id": null,
        "message": message,
        "timestamp": timestamp,
        "author": { "name": author, "email": email },
        "committer": { "name": author, "email": email },
    }))
}
