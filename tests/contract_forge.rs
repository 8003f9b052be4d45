//! The `Forge` contract: one set of behaviour checks, written once and run against every adapter
//! (local git repositories, and GitHub, by token and as a GitHub App, on the fake GitHub), so both
//! worlds keep the same promises. After the contract, the GitHub-only behaviour: rate limits,
//! refused credentials, validation errors, App token caching, renamed repositories.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use runway_core::domain::{AppName, Branch, CommitSha, HookId, ReleaseId, RepoUrl};
use runway_core::ports::{Forge, ForgeError, Progress, ReleaseReport};
use runway_embedded::GitForge;
use runway_github::{GitHubAuth, GitHubConfig, GitHubForge};
use runway_tests::fake_github::FakeGitHub;
use runway_tests::{GitRepo, git};
use secrecy::SecretString;

const OWNER: &str = "acme";
const TOKEN: &str = "github_pat_contract_1234567890";
const HOOK_URL: &str = "https://runway.example.com/github/webhook";

/// One adapter under test, with what the checks need to arrange repositories and to look behind
/// the adapter (where a hook's secret really ended up).
struct Subject {
    forge: Box<dyn Forge>,
    github: Option<FakeGitHub>,
    dir: tempfile::TempDir,
}

impl Subject {
    async fn local() -> anyhow::Result<Self> {
        Ok(Self {
            // No push happens in these checks, so the hook script's program never runs.
            forge: Box::new(GitForge::new("/usr/bin/true".into())),
            github: None,
            dir: tempfile::tempdir()?,
        })
    }

    async fn github_token() -> anyhow::Result<Self> {
        let github = FakeGitHub::start().await?;
        github.accept_token(TOKEN);
        let forge = token_forge(&github, TOKEN)?;
        Self::on_github(github, forge)
    }

    /// As a GitHub App with no configured installation: it is looked up per repository.
    async fn github_app() -> anyhow::Result<Self> {
        let github = FakeGitHub::start().await?;
        let forge = app_forge(&github, false)?;
        Self::on_github(github, forge)
    }

    fn on_github(github: FakeGitHub, forge: GitHubForge) -> anyhow::Result<Self> {
        Ok(Self {
            forge: Box::new(forge),
            github: Some(github),
            dir: tempfile::tempdir()?,
        })
    }

    fn forge(&self) -> &dyn Forge {
        self.forge.as_ref()
    }

    /// A new repository whose `main` holds `files`: its URL for the forge, and a working clone
    /// to commit and push with.
    fn repo(&self, name: &str, files: &[(&str, &str)]) -> anyhow::Result<(RepoUrl, GitRepo)> {
        let repo = GitRepo::create(&self.dir.path().join(name), files)?;
        let url = match &self.github {
            None => RepoUrl::parse(&repo.url(), true)?,
            Some(github) => {
                github.add_repo(OWNER, name, &repo.bare);
                RepoUrl::parse(&format!("https://github.com/{OWNER}/{name}"), false)?
            }
        };
        Ok((url, repo))
    }

    fn missing_repo(&self) -> anyhow::Result<RepoUrl> {
        Ok(match &self.github {
            None => RepoUrl::parse(&format!("{}/missing.git", self.dir.path().display()), true)?,
            Some(_) => RepoUrl::parse(&format!("https://github.com/{OWNER}/missing"), false)?,
        })
    }

    /// The secret the forge will sign pushes with, read where the forge keeps it.
    fn hook_secret(&self, repo: &GitRepo, hook_id: &str) -> anyhow::Result<Option<String>> {
        match &self.github {
            Some(github) => {
                let name = repo_name(repo)?;
                Ok(github
                    .hooks(OWNER, &name)
                    .into_iter()
                    .find(|hook| hook.id.to_string() == hook_id)
                    .and_then(|hook| hook.secret))
            }
            None => {
                let file = repo
                    .bare
                    .join("runway-webhooks")
                    .join(format!("{hook_id}.json"));
                let Ok(text) = std::fs::read_to_string(file) else {
                    return Ok(None);
                };
                let hook: serde_json::Value = serde_json::from_str(&text)?;
                Ok(hook["secret"].as_str().map(str::to_owned))
            }
        }
    }
}

/// What the forge shows for one app on a commit: its newest release's state, and the app's
/// address once live.
#[derive(Debug, PartialEq, Eq)]
struct Shown {
    seq: u64,
    state: String,
    environment_url: Option<String>,
    /// How many deployments (GitHub) or lines (the note) the app has on the commit.
    copies: usize,
}

impl Subject {
    /// What a person sees of `app` on `commit`: on GitHub the app's deployments of the commit
    /// (the newest, with its last status); locally the commit's note.
    fn shown(
        &self,
        repo: &GitRepo,
        app: &str,
        commit: &CommitSha,
    ) -> anyhow::Result<Option<Shown>> {
        match &self.github {
            Some(github) => {
                let mine: Vec<_> = github
                    .deployments(OWNER, &repo_name(repo)?)
                    .into_iter()
                    .filter(|d| d.environment == app && d.sha == commit.as_str())
                    .collect();
                let Some(newest) = mine.last() else {
                    return Ok(None);
                };
                let last = newest.statuses.last();
                let release = newest.payload["runway_release"]
                    .as_str()
                    .unwrap_or_default();
                Ok(Some(Shown {
                    seq: release.trim_start_matches("r").parse().unwrap_or_default(),
                    state: last.map(|s| s.state.clone()).unwrap_or_default(),
                    environment_url: last.and_then(|s| s.environment_url.clone()),
                    copies: mine.len(),
                }))
            }
            None => {
                let note = std::process::Command::new("git")
                    .arg("-C")
                    .arg(&repo.bare)
                    .args(["notes", "--ref", "runway", "show", commit.as_str()])
                    .output()?;
                let note = String::from_utf8_lossy(&note.stdout).into_owned();
                let prefix = format!("runway/{app} #");
                let lines: Vec<&str> = note.lines().filter(|l| l.starts_with(&prefix)).collect();
                let Some(line) = lines.last() else {
                    return Ok(None);
                };
                // runway/APP #SEQ: STATE — description[ — environment URL][ — console link]
                let (head, rest) = line.split_once(": ").context("a noted line")?;
                let seq = head.rsplit('#').next().unwrap_or_default().parse()?;
                let mut parts = rest.split(" — ");
                let state = parts.next().unwrap_or_default().to_owned();
                let environment_url = parts.nth(1).map(str::to_owned);
                Ok(Some(Shown {
                    seq,
                    state,
                    environment_url,
                    copies: lines.len(),
                }))
            }
        }
    }
}

/// A report of release `rSEQ` of `app` on `commit`.
fn step(app: &str, seq: u64, commit: &CommitSha, progress: Progress) -> ReleaseReport {
    ReleaseReport {
        app: AppName::parse(app).expect("a valid app name"),
        release: ReleaseId::new(format!("r{seq}")),
        seq,
        commit: commit.clone(),
        progress,
        description: format!("{} step", progress.as_str()),
        log_url: None,
        environment_url: (progress == Progress::Success)
            .then(|| format!("https://{app}.example.com")),
    }
}

fn repo_name(repo: &GitRepo) -> anyhow::Result<String> {
    let dir = repo.bare.parent().and_then(Path::file_name);
    Ok(dir
        .context("a repository folder")?
        .to_string_lossy()
        .into_owned())
}

fn token_forge(github: &FakeGitHub, token: &str) -> anyhow::Result<GitHubForge> {
    GitHubForge::new(GitHubConfig {
        api_base: github.api_base(),
        auth: GitHubAuth::Token(SecretString::from(token)),
    })
}

/// A GitHub App installed on the fake; with `configured`, the forge is told its installation id.
fn app_forge(github: &FakeGitHub, configured: bool) -> anyhow::Result<GitHubForge> {
    let app = github.install_app()?;
    GitHubForge::new(GitHubConfig {
        api_base: github.api_base(),
        auth: GitHubAuth::App {
            app_id: app.app_id,
            private_key: SecretString::from(app.private_key_pem),
            installation_id: configured.then_some(app.installation_id),
        },
    })
}

fn branch(name: &str) -> Branch {
    Branch::parse(name).expect("a valid branch name")
}

fn sha(text: &str) -> anyhow::Result<CommitSha> {
    Ok(CommitSha::parse(text.trim())?)
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text)
}

/// The message of a `NotFound`, or why the result was something else.
fn not_found<T: std::fmt::Debug>(result: Result<T, ForgeError>) -> anyhow::Result<String> {
    match result {
        Err(ForgeError::NotFound(message)) => Ok(message),
        other => bail!("expected NotFound, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The contract

async fn reports_a_stable_id_and_the_default_branch_the_repository_names(
    s: &Subject,
) -> anyhow::Result<()> {
    let (url, repo) = s.repo("app", &[("app.py", "print('hi')")])?;
    repo.push("trunk")?;
    git(&repo.bare, &["symbolic-ref", "HEAD", "refs/heads/trunk"])?;
    let (other, _) = s.repo("other", &[("app.py", "")])?;

    let first = s.forge().repository(&url).await?;
    let again = s.forge().repository(&url).await?;
    let different = s.forge().repository(&other).await?;

    ensure!(first.default_branch == branch("trunk"), "{first:?}");
    ensure!(
        first.id == again.id,
        "the id changed: {first:?} then {again:?}"
    );
    ensure!(first.id != different.id, "two repositories share an id");
    ensure!(!first.full_name.is_empty());
    Ok(())
}

async fn resolves_the_head_of_a_branch_that_is_not_the_default(s: &Subject) -> anyhow::Result<()> {
    let (url, repo) = s.repo("app", &[("app.py", "one")])?;
    let main = git(&repo.work, &["rev-parse", "HEAD"])?;
    let feature = repo.commit(&[("app.py", "two")], "on a feature branch")?;
    repo.push("feature/login")?;

    let resolved = s
        .forge()
        .resolve_commit(&url, &branch("feature/login"))
        .await?;
    let resolved_main = s.forge().resolve_commit(&url, &branch("main")).await?;

    ensure!(resolved == sha(&feature)?, "{resolved} is not {feature}");
    ensure!(
        resolved_main == sha(&main)?,
        "{resolved_main} is not {main}"
    );
    Ok(())
}

async fn checks_out_exactly_the_commit_asked_for_not_the_head(s: &Subject) -> anyhow::Result<()> {
    let (url, repo) = s.repo("app", &[("app.py", "one"), ("pages/a.py", "page a")])?;
    std::fs::write(repo.work.join("run.sh"), "#!/bin/sh\n")?;
    std::fs::set_permissions(repo.work.join("run.sh"), PermissionsExt::from_mode(0o755))?;
    std::os::unix::fs::symlink("app.py", repo.work.join("link.py"))?;
    let old = repo.commit(&[], "script and link")?;
    std::fs::remove_file(repo.work.join("pages/a.py"))?;
    repo.commit(&[("app.py", "two")], "the head")?;
    repo.push("main")?;
    let dest = s.dir.path().join("checkout");

    s.forge().checkout(&url, &sha(&old)?, &dest).await?;

    ensure!(std::fs::read_to_string(dest.join("app.py"))? == "one");
    ensure!(std::fs::read_to_string(dest.join("pages/a.py"))? == "page a");
    ensure!(std::fs::read_link(dest.join("link.py"))? == Path::new("app.py"));
    let mode = std::fs::metadata(dest.join("run.sh"))?.permissions().mode();
    ensure!(
        mode & 0o111 != 0,
        "run.sh lost its executable bit: {mode:o}"
    );
    ensure!(!dest.join(".git").exists(), "a checkout is the tree only");
    Ok(())
}

async fn an_unknown_repository_is_not_found(s: &Subject) -> anyhow::Result<()> {
    let missing = s.missing_repo()?;

    not_found(s.forge().repository(&missing).await)?;
    not_found(s.forge().resolve_commit(&missing, &branch("main")).await)?;
    Ok(())
}

async fn an_unknown_branch_is_not_found_and_named(s: &Subject) -> anyhow::Result<()> {
    let (url, _repo) = s.repo("app", &[("app.py", "")])?;

    let message = not_found(s.forge().resolve_commit(&url, &branch("no-such")).await)?;

    ensure!(message.contains("no-such"), "{message}");
    Ok(())
}

async fn checking_out_an_unknown_commit_is_not_found(s: &Subject) -> anyhow::Result<()> {
    let (url, _repo) = s.repo("app", &[("app.py", "")])?;
    let unknown = sha("0123456789abcdef0123456789abcdef01234567")?;

    not_found(
        s.forge()
            .checkout(&url, &unknown, &s.dir.path().join("c"))
            .await,
    )?;
    Ok(())
}

async fn ensuring_a_webhook_twice_keeps_one_hook_with_the_newer_secret(
    s: &Subject,
) -> anyhow::Result<()> {
    let (url, repo) = s.repo("app", &[("app.py", "")])?;

    let first = s
        .forge()
        .ensure_webhook(&url, HOOK_URL, &secret("first-secret"))
        .await?;
    let second = s
        .forge()
        .ensure_webhook(&url, HOOK_URL, &secret("second-secret"))
        .await?;

    ensure!(
        first == second,
        "a second hook was made: {first} and {second}"
    );
    let hooks = s.forge().webhooks(&url).await?;
    ensure!(hooks.len() == 1, "{hooks:?}");
    ensure!(
        hooks[0].id == first && hooks[0].url == HOOK_URL,
        "{hooks:?}"
    );
    let stored = s.hook_secret(&repo, &first)?;
    ensure!(
        stored.as_deref() == Some("second-secret"),
        "the hook signs with {stored:?}"
    );
    Ok(())
}

async fn deleting_a_webhook_removes_it_and_deleting_it_again_is_fine(
    s: &Subject,
) -> anyhow::Result<()> {
    let (url, _repo) = s.repo("app", &[("app.py", "")])?;
    let id = s
        .forge()
        .ensure_webhook(&url, HOOK_URL, &secret("s"))
        .await?;

    s.forge().delete_webhook(&url, &id).await?;
    s.forge().delete_webhook(&url, &id).await?;

    let hooks = s.forge().webhooks(&url).await?;
    ensure!(hooks.is_empty(), "{hooks:?}");
    Ok(())
}

/// A hook says when it was made, so cleanup can leave alone a hook whose app a submit is still
/// recording (its grace period). GitHub reports `created_at`; a fake that dated every hook
/// 2024 made the grace period untestable.
async fn a_new_webhook_is_dated_when_it_was_made(s: &Subject) -> anyhow::Result<()> {
    let (url, _repo) = s.repo("app", &[("app.py", "")])?;
    let before = chrono::Utc::now() - chrono::Duration::seconds(2);
    s.forge()
        .ensure_webhook(&url, HOOK_URL, &secret("a"))
        .await?;

    let hooks = s.forge().webhooks(&url).await?;

    let made = hooks
        .first()
        .and_then(|hook| hook.created_at)
        .context("the hook has a creation time")?;
    ensure!(
        made >= before && made <= chrono::Utc::now() + chrono::Duration::seconds(2),
        "a hook made just now is dated {made}"
    );
    Ok(())
}

/// What cleanup checks a hook against: active, sent `push` as JSON; and its deliveries can be
/// read (none yet, or GitHub's ping), while an unknown hook's cannot.
async fn a_webhook_is_listed_as_runway_set_it_up_and_its_deliveries_read(
    s: &Subject,
) -> anyhow::Result<()> {
    let (url, _repo) = s.repo("app", &[("app.py", "")])?;
    let id = s
        .forge()
        .ensure_webhook(&url, HOOK_URL, &secret("a"))
        .await?;
    let hooks = s.forge().webhooks(&url).await?;
    let hook = hooks
        .iter()
        .find(|hook| hook.id == id)
        .context("the hook")?;
    ensure!(
        hook.active && hook.events == ["pull_request", "push"],
        "{hook:?}"
    );
    ensure!(hook.content_type.as_deref() == Some("json"), "{hook:?}");
    ensure!(hook.drift().is_none(), "{hook:?}");
    let deliveries = s.forge().hook_deliveries(&url, &id).await?;
    ensure!(
        deliveries.iter().all(|delivery| delivery.event == "ping"),
        "{deliveries:?}"
    );
    let unknown = s
        .forge()
        .hook_deliveries(&url, &HookId::new("999999"))
        .await;
    ensure!(
        matches!(unknown, Err(ForgeError::NotFound(_))),
        "{unknown:?}"
    );
    Ok(())
}

async fn lists_every_webhook_with_its_url(s: &Subject) -> anyhow::Result<()> {
    let (url, _repo) = s.repo("app", &[("app.py", "")])?;
    let other_url = "https://other.example.com/hook";
    let a = s
        .forge()
        .ensure_webhook(&url, HOOK_URL, &secret("a"))
        .await?;
    let b = s
        .forge()
        .ensure_webhook(&url, other_url, &secret("b"))
        .await?;

    let mut hooks: Vec<(String, String)> = s
        .forge()
        .webhooks(&url)
        .await?
        .into_iter()
        .map(|hook| (hook.id.to_string(), hook.url))
        .collect();
    hooks.sort();

    let mut expected = vec![
        (a.to_string(), HOOK_URL.to_owned()),
        (b.to_string(), other_url.to_owned()),
    ];
    expected.sort();
    ensure!(hooks == expected, "{hooks:?}");
    Ok(())
}

async fn lists_the_branches_by_name(s: &Subject) -> anyhow::Result<()> {
    let (url, repo) = s.repo("app", &[("app.py", "one")])?;
    repo.commit(&[("app.py", "two")], "elsewhere")?;
    repo.push("feature/login")?;
    repo.push("dev")?;

    let branches = s.forge().branches(&url).await?;

    let names: Vec<&str> = branches.iter().map(Branch::as_str).collect();
    ensure!(names == ["dev", "feature/login", "main"], "{names:?}");
    not_found(s.forge().branches(&s.missing_repo()?).await)?;
    Ok(())
}

async fn tells_a_file_from_a_folder_or_nothing_on_a_branch(s: &Subject) -> anyhow::Result<()> {
    let (url, repo) = s.repo(
        "app",
        &[("streamlit_app.py", "one"), ("pages/report.py", "two")],
    )?;
    repo.commit(&[("app.py", "three")], "only on dev")?;
    repo.push("dev")?;
    let has = |branch_name: &'static str, path: &'static str| {
        let url = url.clone();
        async move { s.forge().has_file(&url, &branch(branch_name), path).await }
    };

    ensure!(has("main", "streamlit_app.py").await?);
    ensure!(has("main", "pages/report.py").await?);
    ensure!(!has("main", "pages").await?, "a folder is not a file");
    ensure!(!has("main", "app.py").await?, "app.py is on dev only");
    ensure!(has("dev", "app.py").await?);
    Ok(())
}

async fn a_release_shows_on_its_commit_as_it_moves(s: &Subject) -> anyhow::Result<()> {
    let (url, repo) = s.repo("app", &[("app.py", "one")])?;
    let commit = s.forge().resolve_commit(&url, &branch("main")).await?;

    for progress in [Progress::Queued, Progress::InProgress] {
        s.forge()
            .report(&url, &step("sales", 3, &commit, progress))
            .await?;
        let shown = s.shown(&repo, "sales", &commit)?.context("shown")?;
        ensure!(shown.state == progress.as_str(), "{shown:?}");
    }
    let live = step("sales", 3, &commit, Progress::Success);
    s.forge().report(&url, &live).await?;
    // A report repeated (a worker that died after reporting) shows nothing twice.
    s.forge().report(&url, &live).await?;

    let shown = s.shown(&repo, "sales", &commit)?;
    let expected = Shown {
        seq: 3,
        state: "success".into(),
        environment_url: Some("https://sales.example.com".into()),
        copies: 1,
    };
    ensure!(shown.as_ref() == Some(&expected), "{shown:?}");
    Ok(())
}

async fn apps_on_one_repository_show_apart_and_a_newer_release_takes_over(
    s: &Subject,
) -> anyhow::Result<()> {
    let (url, repo) = s.repo("app", &[("app.py", "one")])?;
    let commit = s.forge().resolve_commit(&url, &branch("main")).await?;
    s.forge()
        .report(&url, &step("sales", 1, &commit, Progress::Success))
        .await?;
    s.forge()
        .report(&url, &step("finance", 1, &commit, Progress::Failure))
        .await?;
    // The same commit released again (a redeploy).
    s.forge()
        .report(&url, &step("sales", 2, &commit, Progress::InProgress))
        .await?;

    let finance = s.shown(&repo, "finance", &commit)?.context("finance")?;
    ensure!(finance.state == "failure", "{finance:?}");
    let sales = s.shown(&repo, "sales", &commit)?.context("sales")?;
    ensure!(sales.seq == 2 && sales.state == "in_progress", "{sales:?}");
    Ok(())
}

async fn an_inactive_report_of_a_release_never_shown_shows_nothing(
    s: &Subject,
) -> anyhow::Result<()> {
    let (url, repo) = s.repo("app", &[("app.py", "one")])?;
    let commit = s.forge().resolve_commit(&url, &branch("main")).await?;

    s.forge()
        .report(&url, &step("sales", 1, &commit, Progress::Inactive))
        .await?;

    let shown = s.shown(&repo, "sales", &commit)?;
    ensure!(shown.is_none(), "{shown:?}");
    Ok(())
}

async fn a_report_on_a_commit_the_repository_lacks_is_not_found(s: &Subject) -> anyhow::Result<()> {
    let (url, _repo) = s.repo("app", &[("app.py", "one")])?;
    let missing = sha("0123456789abcdef0123456789abcdef01234567")?;

    let result = s
        .forge()
        .report(&url, &step("sales", 1, &missing, Progress::Queued))
        .await;

    let message = not_found(result)?;
    ensure!(message.contains("0123456"), "{message}");
    Ok(())
}

runway_tests::contract! {
    subjects: [
        git_forge => super::Subject::local().await.expect("a local forge"),
        github_token => super::Subject::github_token().await.expect("the fake GitHub, token"),
        github_app => super::Subject::github_app().await.expect("the fake GitHub, App"),
    ],
    checks: [
        reports_a_stable_id_and_the_default_branch_the_repository_names,
        resolves_the_head_of_a_branch_that_is_not_the_default,
        checks_out_exactly_the_commit_asked_for_not_the_head,
        an_unknown_repository_is_not_found,
        an_unknown_branch_is_not_found_and_named,
        checking_out_an_unknown_commit_is_not_found,
        ensuring_a_webhook_twice_keeps_one_hook_with_the_newer_secret,
        deleting_a_webhook_removes_it_and_deleting_it_again_is_fine,
        lists_every_webhook_with_its_url,
        a_new_webhook_is_dated_when_it_was_made,
        a_webhook_is_listed_as_runway_set_it_up_and_its_deliveries_read,
        lists_the_branches_by_name,
        tells_a_file_from_a_folder_or_nothing_on_a_branch,
        a_release_shows_on_its_commit_as_it_moves,
        apps_on_one_repository_show_apart_and_a_newer_release_takes_over,
        an_inactive_report_of_a_release_never_shown_shows_nothing,
        a_report_on_a_commit_the_repository_lacks_is_not_found,
    ]
}

// ---------------------------------------------------------------------------------------------
// GitHub only

mod github {
    use super::*;

    /// A release on GitHub: one deployment of its commit in the app's environment, moving
    /// queued → in_progress → success with the console's link and the app's address, and a
    /// commit status saying the same. The commit is older than main's head and a CI check on it
    /// failed: GitHub's defaults (merge main in first; every status must pass) would refuse it.
    #[tokio::test]
    async fn a_release_is_a_deployment_whose_statuses_follow_it_and_a_commit_status_too()
    -> anyhow::Result<()> {
        let s = Subject::github_app().await?;
        let (url, repo) = s.repo("app", &[("app.py", "one")])?;
        let github = s.github.as_ref().context("on GitHub")?;
        let old = sha(&git(&repo.work, &["rev-parse", "HEAD"])?)?;
        repo.commit(&[("app.py", "two")], "newer")?;
        repo.push("main")?;
        github.add_commit_status(OWNER, "app", old.as_str(), "ci/tests", "failure");

        for progress in [Progress::Queued, Progress::InProgress, Progress::Success] {
            let mut report = step("sales", 7, &old, progress);
            report.log_url = Some("https://runway.example.com/apps/sales#release-7".into());
            s.forge().report(&url, &report).await?;
        }

        let deployments = github.deployments(OWNER, "app");
        ensure!(deployments.len() == 1, "{deployments:?}");
        let deployment = &deployments[0];
        ensure!(deployment.environment == "sales" && deployment.sha == old.as_str());
        ensure!(!deployment.production_environment && !deployment.transient_environment);
        ensure!(
            deployment.states() == ["queued", "in_progress", "success"],
            "{:?}",
            deployment.states()
        );
        let live = deployment.statuses.last().context("a status")?;
        ensure!(live.environment_url.as_deref() == Some("https://sales.example.com"));
        ensure!(live.log_url.as_deref() == Some("https://runway.example.com/apps/sales#release-7"));
        let ours: Vec<(String, Option<String>)> = github
            .commit_statuses(OWNER, "app")
            .into_iter()
            .filter(|status| status.context == "runway/sales")
            .map(|status| (status.state, status.target_url))
            .collect();
        let link = Some("https://runway.example.com/apps/sales#release-7".to_owned());
        ensure!(
            ours == [
                ("pending".to_owned(), link.clone()),
                ("pending".to_owned(), link.clone()),
                ("success".to_owned(), link)
            ],
            "{ours:?}"
        );
        Ok(())
    }

    /// GitHub refuses a status description past 140 characters; a failed build's reason is
    /// often longer, so it is cut, and still shown.
    #[tokio::test]
    async fn a_long_reason_is_cut_to_what_github_keeps() -> anyhow::Result<()> {
        let s = Subject::github_token().await?;
        let (url, _repo) = s.repo("app", &[("app.py", "one")])?;
        let github = s.github.as_ref().context("on GitHub")?;
        let commit = s.forge().resolve_commit(&url, &branch("main")).await?;
        let mut failed = step("sales", 1, &commit, Progress::Failure);
        failed.description = format!(
            "build failure ({}); the previous version keeps serving",
            "x".repeat(200)
        );

        s.forge().report(&url, &failed).await?;

        let deployment = github
            .deployments(OWNER, "app")
            .pop()
            .context("a deployment")?;
        let status = deployment.statuses.last().context("a status")?;
        ensure!(status.state == "failure");
        ensure!(
            status.description.chars().count() == 140,
            "{}",
            status.description
        );
        ensure!(status.description.starts_with("build failure (xxx"));
        Ok(())
    }

    /// Without the Deployments permission, the error says which permissions to grant.
    #[tokio::test]
    async fn without_the_permission_a_report_says_what_to_grant() -> anyhow::Result<()> {
        let s = Subject::github_app().await?;
        let (url, _repo) = s.repo("app", &[("app.py", "one")])?;
        let github = s.github.as_ref().context("on GitHub")?;
        github.forbid_deployments();
        let commit = s.forge().resolve_commit(&url, &branch("main")).await?;

        let result = s
            .forge()
            .report(&url, &step("sales", 1, &commit, Progress::Queued))
            .await;

        match result {
            Err(ForgeError::Rejected(message)) => ensure!(
                message.contains("Deployments: read and write")
                    && message.contains("Commit statuses: read and write"),
                "{message}"
            ),
            other => bail!("expected Rejected, got {other:?}"),
        }
        ensure!(github.deployments(OWNER, "app").is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn listing_hooks_again_unchanged_costs_no_rate_limit_and_a_change_is_seen()
    -> anyhow::Result<()> {
        let s = Subject::github_token().await?;
        let (url, _repo) = s.repo("app", &[("app.py", "")])?;
        let github = s.github.as_ref().context("on GitHub")?;
        let forge = s.forge();
        let first = forge.ensure_webhook(&url, HOOK_URL, &secret("a")).await?;
        let listed = forge.webhooks(&url).await?;

        let used = github.rate_limit_used();
        let again = forge.webhooks(&url).await?;

        ensure!(
            github.rate_limit_used() == used,
            "an unchanged list cost {} requests",
            github.rate_limit_used() - used
        );
        ensure!(again == listed, "{again:?} vs {listed:?}");
        // A hook added since: GitHub's tag no longer matches, and the list shows it.
        let other = forge
            .ensure_webhook(&url, "https://other.example.com/hook", &secret("b"))
            .await?;
        let ids: Vec<HookId> = forge
            .webhooks(&url)
            .await?
            .into_iter()
            .map(|h| h.id)
            .collect();
        ensure!(ids == [first, other], "{ids:?}");
        Ok(())
    }

    #[tokio::test]
    async fn an_exhausted_rate_limit_is_unavailable_and_names_the_reset() -> anyhow::Result<()> {
        let s = Subject::github_token().await?;
        let (url, _repo) = s.repo("app", &[("app.py", "")])?;
        let github = s.github.as_ref().context("on GitHub")?;
        github.exhaust_rate_limit(4_102_444_800); // 2100-01-01T00:00:00Z

        let result = s.forge().repository(&url).await;

        let Err(ForgeError::Unavailable(message)) = result else {
            bail!("expected Unavailable, got {result:?}");
        };
        ensure!(message.contains("rate limit"), "{message}");
        ensure!(message.contains("2100-01-01 00:00:00 UTC"), "{message}");
        Ok(())
    }

    #[tokio::test]
    async fn a_refused_token_says_so_without_showing_it() -> anyhow::Result<()> {
        let github = FakeGitHub::start().await?;
        github.accept_token(TOKEN);
        let wrong = "ghp_wrong_token_0987654321";
        let forge = token_forge(&github, wrong)?;
        let url = RepoUrl::parse("https://github.com/acme/app", false)?;

        let error = forge
            .repository(&url)
            .await
            .expect_err("a wrong token is refused");

        let shown = format!("{error} {error:?} {forge:?}");
        ensure!(matches!(error, ForgeError::Rejected(_)), "{error:?}");
        ensure!(shown.contains("401"), "{shown}");
        ensure!(shown.contains("invalid or has expired"), "{shown}");
        ensure!(!shown.contains(wrong), "the token leaked: {shown}");
        Ok(())
    }

    #[tokio::test]
    async fn configuration_debug_output_shows_no_credentials() -> anyhow::Result<()> {
        let github = FakeGitHub::start().await?;
        let app = github.install_app()?;
        let configs = [
            GitHubAuth::Token(SecretString::from(TOKEN)),
            GitHubAuth::App {
                app_id: app.app_id,
                private_key: SecretString::from(app.private_key_pem.clone()),
                installation_id: None,
            },
        ];
        for auth in configs {
            let config = GitHubConfig {
                api_base: github.api_base(),
                auth,
            };
            let forge = GitHubForge::new(config.clone())?;

            let shown = format!("{config:?} {forge:?}");

            ensure!(!shown.contains(TOKEN), "{shown}");
            ensure!(!shown.contains("PRIVATE KEY"), "{shown}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_hook_url_github_refuses_is_rejected_with_github_s_reason() -> anyhow::Result<()> {
        let s = Subject::github_token().await?;
        let (url, _repo) = s.repo("app", &[("app.py", "")])?;

        let result = s
            .forge()
            .ensure_webhook(
                &url,
                "ftp://runway.example.com/hook",
                &secret("hook-secret"),
            )
            .await;

        let Err(ForgeError::Rejected(message)) = result else {
            bail!("expected Rejected, got {result:?}");
        };
        ensure!(message.contains("422 Validation Failed"), "{message}");
        ensure!(
            message.contains("not a valid HTTP or HTTPS URL"),
            "{message}"
        );
        ensure!(!message.contains("hook-secret"), "{message}");
        Ok(())
    }

    #[tokio::test]
    async fn an_app_mints_one_installation_token_and_reuses_it() -> anyhow::Result<()> {
        let s = Subject::github_app().await?;
        let (url, _repo) = s.repo("app", &[("app.py", "")])?;
        let github = s.github.as_ref().context("on GitHub")?;

        s.forge().repository(&url).await?;
        s.forge().resolve_commit(&url, &branch("main")).await?;
        s.forge().webhooks(&url).await?;

        ensure!(
            github.token_exchanges() == 1,
            "{}",
            github.token_exchanges()
        );
        ensure!(github.installation_lookups() == 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_revoked_installation_token_is_replaced_without_failing_the_call()
    -> anyhow::Result<()> {
        let s = Subject::github_app().await?;
        let (url, _repo) = s.repo("app", &[("app.py", "")])?;
        let github = s.github.as_ref().context("on GitHub")?;
        s.forge().repository(&url).await?;
        github.revoke_installation_tokens();

        s.forge().repository(&url).await?;

        ensure!(
            github.token_exchanges() == 2,
            "{}",
            github.token_exchanges()
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_secondary_rate_limit_names_the_wait_and_is_not_retried_at_once() -> anyhow::Result<()>
    {
        let s = Subject::github_token().await?;
        let (url, _repo) = s.repo("app", &[("app.py", "")])?;
        let github = s.github.as_ref().context("on GitHub")?;
        github.trip_secondary_rate_limit(1, 60);

        let result = s
            .forge()
            .ensure_webhook(&url, HOOK_URL, &secret("whsec-7f3a"))
            .await;

        // Retrying at once is what GitHub warns can get an integration banned: the one refused
        // request must reach the caller, with the wait GitHub named.
        let Err(ForgeError::Unavailable(message)) = result else {
            bail!("expected Unavailable, got {result:?}");
        };
        ensure!(message.contains("secondary rate limit"), "{message}");
        ensure!(message.contains("retry after 60 s"), "{message}");
        ensure!(github.hooks(OWNER, "app").is_empty());
        // Once the limit has passed, the same call succeeds.
        s.forge()
            .ensure_webhook(&url, HOOK_URL, &secret("whsec-7f3a"))
            .await?;
        ensure!(github.hooks(OWNER, "app").len() == 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_permission_is_named() -> anyhow::Result<()> {
        let s = Subject::github_token().await?;
        let (url, _repo) = s.repo("app", &[("app.py", "")])?;
        let github = s.github.as_ref().context("on GitHub")?;
        github.forbid_webhooks();

        let result = s.forge().ensure_webhook(&url, HOOK_URL, &secret("s")).await;

        let Err(ForgeError::Rejected(message)) = result else {
            bail!("expected Rejected, got {result:?}");
        };
        ensure!(
            message.contains("403 Resource not accessible by integration"),
            "{message}"
        );
        ensure!(message.contains("Webhooks: read and write"), "{message}");
        Ok(())
    }

    #[tokio::test]
    async fn an_app_with_a_configured_installation_does_not_look_it_up() -> anyhow::Result<()> {
        let github = FakeGitHub::start().await?;
        let forge = app_forge(&github, true)?;
        let s = Subject::on_github(github, forge)?;
        let (url, _repo) = s.repo("app", &[("app.py", "")])?;
        let github = s.github.as_ref().context("on GitHub")?;

        s.forge().repository(&url).await?;
        s.forge().repository(&url).await?;

        ensure!(github.installation_lookups() == 0);
        ensure!(github.token_exchanges() == 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_token_within_five_minutes_of_expiry_is_replaced() -> anyhow::Result<()> {
        let s = Subject::github_app().await?;
        let (url, _repo) = s.repo("app", &[("app.py", "")])?;
        let github = s.github.as_ref().context("on GitHub")?;
        github.set_installation_token_lifetime(chrono::Duration::minutes(4));

        s.forge().repository(&url).await?;
        s.forge().repository(&url).await?;

        ensure!(
            github.token_exchanges() == 2,
            "{}",
            github.token_exchanges()
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_renamed_repository_keeps_its_id_and_still_answers_by_its_old_name()
    -> anyhow::Result<()> {
        let s = Subject::github_token().await?;
        let (old_url, _repo) = s.repo("app", &[("app.py", "")])?;
        let github = s.github.as_ref().context("on GitHub")?;
        let before = s.forge().repository(&old_url).await?;
        github.rename_repo(OWNER, "app", "dashboard");

        let after = s.forge().repository(&old_url).await?;
        let head = s.forge().resolve_commit(&old_url, &branch("main")).await;
        let hook = s
            .forge()
            .ensure_webhook(&old_url, HOOK_URL, &secret("s"))
            .await;

        ensure!(after.id == before.id, "{before:?} -> {after:?}");
        ensure!(after.full_name == "acme/dashboard", "{after:?}");
        head?;
        hook?;
        ensure!(github.hooks(OWNER, "dashboard").len() == 1);
        Ok(())
    }

    #[tokio::test]
    async fn the_tarball_download_never_carries_credentials_to_codeload() -> anyhow::Result<()> {
        let s = Subject::github_token().await?;
        let (url, repo) = s.repo("app", &[("app.py", "")])?;
        let github = s.github.as_ref().context("on GitHub")?;
        let head = sha(&git(&repo.work, &["rev-parse", "HEAD"])?)?;

        s.forge()
            .checkout(&url, &head, &s.dir.path().join("c"))
            .await?;

        let (downloads, with_credentials) = github.codeload_requests();
        ensure!(downloads == 1, "{downloads}");
        ensure!(with_credentials == 0, "credentials went to codeload");
        Ok(())
    }

    /// GitHub answers 404, not 403, where a credential may not look: a hook delete answered
    /// 404 is not proof the hook is gone. The forge says the permission is missing rather than
    /// reporting success while the hook stays and keeps firing.
    #[tokio::test]
    async fn a_hook_delete_answered_404_for_want_of_permission_is_not_success() -> anyhow::Result<()>
    {
        let s = Subject::github_token().await?;
        let (url, _repo) = s.repo("app", &[("app.py", "")])?;
        let github = s.github.as_ref().context("on GitHub")?;
        let hook = s
            .forge()
            .ensure_webhook(&url, HOOK_URL, &secret("s"))
            .await?;
        github.hide_webhooks();

        let deleted = s.forge().delete_webhook(&url, &hook).await;

        let Err(ForgeError::Rejected(message)) = deleted else {
            bail!("a hidden hook must not read as deleted: {deleted:?}");
        };
        ensure!(message.contains("Webhooks"), "{message}");
        ensure!(
            github.hooks(OWNER, "app").len() == 1,
            "the hook is still there"
        );
        Ok(())
    }

    /// reqwest's default redirect policy compares each hop with the one before, and tower-http
    /// 0.6 replays the original headers on every hop: api → codeload → codeload sends the token
    /// on the last hop. Ours only ever sends it to the API's own origin.
    #[tokio::test]
    async fn credentials_stay_off_codeload_however_many_hops_it_takes() -> anyhow::Result<()> {
        let s = Subject::github_token().await?;
        let (url, repo) = s.repo("app", &[("app.py", "")])?;
        let github = s.github.as_ref().context("on GitHub")?;
        github.codeload_redirects_once();
        let head = sha(&git(&repo.work, &["rev-parse", "HEAD"])?)?;

        s.forge()
            .checkout(&url, &head, &s.dir.path().join("c"))
            .await?;

        let (downloads, with_credentials) = github.codeload_requests();
        ensure!(downloads == 2, "{downloads}");
        ensure!(with_credentials == 0, "credentials went to codeload");
        Ok(())
    }

    #[tokio::test]
    async fn webhooks_follow_github_s_pages() -> anyhow::Result<()> {
        let s = Subject::github_token().await?;
        let (url, _repo) = s.repo("app", &[("app.py", "")])?;
        let github = s.github.as_ref().context("on GitHub")?;
        github.cap_page_size(2);
        for n in 0..5 {
            let hook_url = format!("https://runway{n}.example.com/hook");
            s.forge()
                .ensure_webhook(&url, &hook_url, &secret("s"))
                .await?;
        }

        let hooks = s.forge().webhooks(&url).await?;

        ensure!(hooks.len() == 5, "{hooks:?}");
        ensure!(github.hooks(OWNER, "app").len() == 5);
        Ok(())
    }

    #[tokio::test]
    async fn a_new_hook_is_a_json_push_hook_with_tls_verification() -> anyhow::Result<()> {
        let s = Subject::github_token().await?;
        let (url, _repo) = s.repo("app", &[("app.py", "")])?;
        let github = s.github.as_ref().context("on GitHub")?;

        s.forge()
            .ensure_webhook(&url, HOOK_URL, &secret("s3cret"))
            .await?;

        let hooks = github.hooks(OWNER, "app");
        ensure!(hooks.len() == 1, "{hooks:?}");
        let hook = &hooks[0];
        ensure!(
            hook.events == ["pull_request", "push"] && hook.active,
            "{hook:?}"
        );
        ensure!(
            hook.content_type == "json" && hook.insecure_ssl == "0",
            "{hook:?}"
        );
        ensure!(hook.secret.as_deref() == Some("s3cret"), "{hook:?}");
        Ok(())
    }

    #[tokio::test]
    async fn a_local_repository_is_refused_with_a_reason() -> anyhow::Result<()> {
        let s = Subject::github_token().await?;
        let local = RepoUrl::parse("/srv/repos/app.git", true)?;

        let result = s.forge().repository(&local).await;

        ensure!(
            matches!(&result, Err(ForgeError::Rejected(m)) if m.contains("GitHub repositories only")),
            "{result:?}"
        );
        Ok(())
    }
}

/// Many apps on one local repository get their hooks at once (a team creating apps together):
/// every hook lands, and none is refused because another was being written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_local_forge_writes_many_hooks_of_one_repository_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path(), &[("app.py", "print(1)\n")]).unwrap();
    let url = RepoUrl::parse(&repo.url(), true).unwrap();
    let forge = std::sync::Arc::new(GitForge::new("/usr/bin/true".into()));
    let writes: Vec<_> = (0..32)
        .map(|i| {
            let (forge, url) = (forge.clone(), url.clone());
            tokio::spawn(async move {
                let secret = SecretString::from(format!("secret-{i}"));
                forge
                    .ensure_webhook(&url, &format!("http://127.0.0.1:1/hook/{i}"), &secret)
                    .await
            })
        })
        .collect();
    for (i, write) in writes.into_iter().enumerate() {
        let written = write.await.unwrap();
        assert!(written.is_ok(), "hook {i}: {written:?}");
    }
    assert_eq!(forge.webhooks(&url).await.unwrap().len(), 32);
}

/// What the local forge answers when asked for a hook on `repo`, which must be a refusal.
async fn refusal(repo: &GitRepo) -> anyhow::Result<String> {
    let forge = GitForge::new("/usr/bin/true".into());
    let url = RepoUrl::parse(&repo.url(), true)?;
    match forge.ensure_webhook(&url, HOOK_URL, &secret("s")).await {
        Err(ForgeError::Rejected(message)) => Ok(message),
        other => bail!("expected a refusal, got {other:?}"),
    }
}

fn is_empty(dir: &Path) -> anyhow::Result<bool> {
    Ok(std::fs::read_dir(dir)?.next().is_none())
}

/// A repository whose `core.hooksPath` points elsewhere: git runs its hooks from there, where
/// Runway must not write an executable (a shared folder, another repository's hooks). The
/// refusal says what to change, and nothing is written anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_forge_refuses_a_repository_whose_hooks_path_points_elsewhere()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[("app.py", "print(1)\n")])?;
    let outside = dir.path().join("shared-hooks");
    std::fs::create_dir(&outside)?;
    git(
        &repo.bare,
        &["config", "core.hooksPath", outside.to_str().unwrap()],
    )?;

    let message = refusal(&repo).await?;

    ensure!(
        message.contains("core.hooksPath") && message.contains("--unset"),
        "{message}"
    );
    ensure!(
        is_empty(&outside)?,
        "a hook was written into core.hooksPath"
    );
    ensure!(
        repo.hook_files().is_empty(),
        "a hook that cannot run was kept"
    );
    Ok(())
}

/// A hooks folder or a hook that is a symbolic link: Runway would write where it points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_forge_refuses_hooks_that_are_symbolic_links() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[("app.py", "print(1)\n")])?;
    let outside = dir.path().join("elsewhere");
    std::fs::create_dir(&outside)?;
    let hooks = repo.bare.join("hooks");
    std::fs::remove_dir_all(&hooks)?;
    std::os::unix::fs::symlink(&outside, &hooks)?;

    let message = refusal(&repo).await?;
    ensure!(message.contains("symbolic link"), "{message}");
    ensure!(is_empty(&outside)?, "a hook was written through the link");

    std::fs::remove_file(&hooks)?;
    std::fs::create_dir(&hooks)?;
    std::os::unix::fs::symlink(outside.join("post-receive"), hooks.join("post-receive"))?;
    let message = refusal(&repo).await?;
    ensure!(message.contains("symbolic link"), "{message}");
    ensure!(is_empty(&outside)?, "a hook was written through the link");
    ensure!(
        repo.hook_files().is_empty(),
        "a hook that cannot run was kept"
    );
    Ok(())
}

/// The local forge logs each delivery `runway post-receive` makes, as GitHub logs a hook's
/// recent deliveries: what the receiver answered, newest first, and a receiver that is not
/// there as no status at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_forge_logs_what_each_delivery_was_answered() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[("app.py", "print(1)\n")])?;
    let url = RepoUrl::parse(&repo.url(), true)?;
    let forge = GitForge::new("/usr/bin/true".into());
    // A receiver that refuses everything, as Runway refuses a wrong signature.
    let refusing = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let refusing_url = format!("http://{}/github/webhook/demo", refusing.local_addr()?);
    tokio::spawn(runway_http::serve(
        refusing,
        |_, _| async { runway_http::json(http::StatusCode::UNAUTHORIZED, &"bad signature") },
        std::future::pending(),
        runway_http::serve::ServeOptions::default(),
    ));
    let refused = forge
        .ensure_webhook(&url, &refusing_url, &secret("a"))
        .await?;
    let gone = forge
        .ensure_webhook(&url, "http://127.0.0.1:1/github/webhook/gone", &secret("b"))
        .await?;
    let git_dir = std::fs::canonicalize(&repo.bare)?;
    let head = git(&repo.work, &["rev-parse", "HEAD"])?;
    for _ in 0..2 {
        runway_embedded::deliver_post_receive(
            &git_dir,
            &format!("{} {} refs/heads/main\n", "0".repeat(40), head.trim()),
        )
        .await?;
    }
    let deliveries = forge.hook_deliveries(&url, &refused).await?;
    ensure!(deliveries.len() == 2, "{deliveries:?}");
    ensure!(
        deliveries[0].delivered_at >= deliveries[1].delivered_at,
        "{deliveries:?}"
    );
    ensure!(
        deliveries.iter().all(|d| d.status_code == Some(401)
            && d.status == "Invalid HTTP Response: 401"
            && d.event == "push"
            && !d.succeeded()),
        "{deliveries:?}"
    );
    let unreachable = forge.hook_deliveries(&url, &gone).await?;
    ensure!(
        unreachable.len() == 2 && unreachable.iter().all(|d| d.status_code.is_none()),
        "{unreachable:?}"
    );
    // Deleted, its log goes with it.
    forge.delete_webhook(&url, &refused).await?;
    ensure!(
        matches!(
            forge.hook_deliveries(&url, &refused).await,
            Err(ForgeError::NotFound(_))
        ),
        "a deleted hook's deliveries"
    );
    Ok(())
}
