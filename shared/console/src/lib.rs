//! The console's pages: server-rendered HTML (askama, escaped by default) over the same records
//! the JSON API serves, with one stylesheet and no frontend build. A page is a view model built
//! from the core's records, so a template never decides anything: which state an app is in,
//! whether a commit links to GitHub, how a duration reads are all settled here, and tested here.

use askama::Template;
use runway_core::domain::{
    AuditEntry, Caller, CommitSha, Cpu, Delivery, Deployment, HookHealth, Memory, MinInstances,
    NotifySummary, Release, ReleaseId, ReleaseState, RepoUrl, Resources, Runtime, Timestamp,
};

/// The forms' plain variables and warm instances (`runtime_fields.html`).
pub struct RuntimeFields {
    /// The variables as `NAME=value` lines.
    pub env_lines: String,
    pub min_instances: u32,
    pub min_choices: Vec<u32>,
    /// What the warm instances cost a month, said.
    pub warm_cost: String,
    /// A warm instance's vCPU-second and GiB-second in dollars, and a month's seconds: the
    /// forms' script says the cost again as the choices change.
    pub idle_rates: (f64, f64, f64),
}

impl RuntimeFields {
    pub fn of(runtime: &Runtime, resources: Resources) -> Self {
        Self {
            env_lines: runtime.env.to_lines(),
            min_instances: runtime.min_instances.count(),
            min_choices: (0..=MinInstances::MAX).collect(),
            warm_cost: runtime.min_instances.describe_cost(resources),
            idle_rates: (
                MinInstances::IDLE_VCPU_SECOND,
                MinInstances::IDLE_GIB_SECOND,
                MinInstances::MONTH_SECONDS,
            ),
        }
    }
}

/// The console's stylesheet, served at `/assets/console.css`.
pub const STYLESHEET: &str = include_str!("../assets/console.css");

/// Who is signed in, shown on every page.
pub struct Nav {
    pub user: String,
    pub admin: bool,
}

impl Nav {
    pub fn of(caller: &Caller) -> Self {
        Self {
            user: caller.email.clone(),
            admin: caller.admin,
        }
    }
}

/// A commit as a page shows it: its short id, linked to the commit on GitHub when it is there.
pub struct CommitView {
    pub short: String,
    pub link: Option<String>,
}

impl CommitView {
    fn of(repo: &RepoUrl, commit: &CommitSha) -> Self {
        let link = match repo {
            RepoUrl::GitHub { owner, name } => {
                Some(format!("https://github.com/{owner}/{name}/commit/{commit}"))
            }
            RepoUrl::Local { .. } => None,
        };
        Self {
            short: commit.short().to_owned(),
            link,
        }
    }
}

/// Who deployed what serves (or was last tried) and when.
pub struct Deployed {
    pub by: String,
    pub at: String,
}

/// An app as the apps list and the top of its page show it.
pub struct AppSummary {
    pub name: String,
    /// `live`, `building`, `failed`, … in words.
    pub state: String,
    /// The CSS class for `state`: `live`, `building`, `failed` or `other`.
    pub state_class: &'static str,
    /// The newest release failed while an older one still serves.
    pub failed_but_serving: bool,
    pub url: Option<String>,
    pub branch: String,
    pub commit: Option<CommitView>,
    pub deployed: Option<Deployed>,
    pub owner: String,
    /// The caller may open it (their own, or they are an admin); else the list shows it only.
    pub manageable: bool,
}

impl AppSummary {
    /// `latest` is the app's newest release; `live` the one that serves, if any.
    pub fn of(deployment: &Deployment, latest: Option<&Release>, live: Option<&Release>) -> Self {
        let serving = deployment.live_release.is_some();
        let (state, state_class) = match latest.map(|release| release.state) {
            None => ("not deployed".to_owned(), "other"),
            Some(ReleaseState::Failed) if serving => ("live".to_owned(), "live"),
            Some(ReleaseState::Superseded) if serving => ("live".to_owned(), "live"),
            Some(state) => (state.as_str().to_owned(), state_class(state)),
        };
        let failed_but_serving =
            serving && latest.is_some_and(|release| release.state == ReleaseState::Failed);
        // What the page names as deployed: the serving release, else the newest attempt.
        let shown = live.or(latest);
        Self {
            name: deployment.app.to_string(),
            state,
            state_class,
            failed_but_serving,
            url: deployment.url.clone(),
            branch: deployment.branch.to_string(),
            commit: shown
                .and_then(|release| release.commit.as_ref())
                .map(|commit| CommitView::of(&deployment.repo, commit)),
            deployed: shown.map(|release| Deployed {
                by: release.actor.clone(),
                at: when(release.finished_at.unwrap_or(release.queued_at)),
            }),
            owner: deployment.owner.clone(),
            manageable: true,
        }
    }
}

fn state_class(state: ReleaseState) -> &'static str {
    match state {
        ReleaseState::Live => "live",
        ReleaseState::Queued | ReleaseState::Building | ReleaseState::Deploying => "building",
        ReleaseState::Failed => "failed",
        ReleaseState::Superseded => "other",
    }
}

/// A time as pages show it: to the minute, in UTC (the console has no idea of the reader's zone
/// without script, and the JSON twin has the exact instant).
fn when(at: Timestamp) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A duration as people say it: `42 s`, `3 min 5 s`, `1 h 2 min`.
pub fn took(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min {} s", seconds / 60, seconds % 60),
        _ => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
    }
}

/// `text`, cut to at most `max` characters (with an ellipsis): a page shows a bounded part of
/// what Runway recorded, and the JSON twin or the build log has the rest.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", text[..end].trim_end()),
        None => text.to_owned(),
    }
}

/// One page of a long list: its number (from 1) and how many rows a page holds. Lists are cut
/// into pages so that a page stays small however long the list grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub number: usize,
    pub size: usize,
}

impl Page {
    /// Past any list Runway keeps, and small enough that no count of rows overflows.
    const LAST: usize = 1_000_000;

    /// Page `number` as a request asked for it (the first when it did not, or asked for 0).
    pub fn new(number: Option<usize>, size: usize) -> Self {
        Self {
            number: number.unwrap_or(1).clamp(1, Self::LAST),
            size,
        }
    }

    /// How many rows the pages before this one hold.
    pub fn skip(self) -> usize {
        (self.number - 1).saturating_mul(self.size)
    }
}

/// Where a page of a long list stands: the rows it shows, counted over the whole list, and
/// the addresses of the pages before and after it.
#[derive(Debug, PartialEq, Eq)]
pub struct Pager {
    pub first: usize,
    pub last: usize,
    pub previous: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// `page` showing `shown` rows; `more`: a later page has rows. `link` makes the address
    /// of a page from its number.
    pub fn new(page: Page, shown: usize, more: bool, link: impl Fn(usize) -> String) -> Self {
        Self {
            first: page.skip() + 1,
            last: page.skip() + shown,
            previous: (page.number > 1).then(|| link(page.number - 1)),
            next: more.then(|| link(page.number + 1)),
        }
    }

    /// The whole list is on this page.
    pub fn is_whole(&self) -> bool {
        self.previous.is_none() && self.next.is_none()
    }
}

/// The apps page: the apps the caller may see, a page at a time.
#[derive(Template)]
#[template(path = "apps.html")]
pub struct AppsPage {
    pub nav: Nav,
    pub apps: Vec<AppSummary>,
    /// How many apps all pages hold.
    pub total: usize,
    pub pager: Pager,
    /// The team's apps are shown, not only the caller's.
    pub team: bool,
}

/// How much of a release's message its row shows: a failed build's carries the end of its
/// log, which the row links to in full.
const MESSAGE_SHOWN: usize = 400;
/// How much of an audit entry's detail its row shows.
const DETAIL_SHOWN: usize = 200;

/// One release in an app's history.
pub struct ReleaseRow {
    pub id: String,
    pub seq: u64,
    pub state: &'static str,
    pub state_class: &'static str,
    pub commit: Option<CommitView>,
    pub trigger: &'static str,
    /// Built with no cache, as its redeploy asked.
    pub cache_cleared: bool,
    pub actor: String,
    pub queued_at: String,
    pub took: Option<String>,
    pub message: Option<String>,
    /// Where its build log is, for a release that built.
    pub log: Option<String>,
    /// It served once and another serves now: the app can go back to it.
    pub can_roll_back: bool,
}

impl ReleaseRow {
    /// `serving` is the release the app serves now.
    pub fn of(repo: &RepoUrl, release: &Release, serving: Option<&ReleaseId>) -> Self {
        let went_live = release.state == ReleaseState::Live && release.image.is_some();
        let current = serving == Some(&release.id);
        let (state, state_class) = match release.state {
            ReleaseState::Live if !current => ("was live", "other"),
            state => (state.as_str(), state_class(state)),
        };
        Self {
            id: release.id.to_string(),
            seq: release.seq,
            state,
            state_class,
            commit: release
                .commit
                .as_ref()
                .map(|commit| CommitView::of(repo, commit)),
            trigger: release.trigger.as_str(),
            cache_cleared: release.clear_cache,
            actor: release.actor.clone(),
            queued_at: when(release.queued_at),
            took: release
                .finished_at
                .map(|end| took((end - release.queued_at).num_seconds())),
            message: release
                .message
                .as_deref()
                .map(|message| clip(message, MESSAGE_SHOWN)),
            log: release
                .build_id
                .as_ref()
                .map(|build| format!("/api/builds/{build}/log")),
            can_roll_back: went_live && !current,
        }
    }
}

/// One webhook delivery the app's hook received, and what Runway did with it.
pub struct DeliveryRow {
    pub received_at: String,
    pub event: String,
    pub git_ref: String,
    pub commit: String,
    pub outcome: String,
}

impl DeliveryRow {
    pub fn of(delivery: &Delivery) -> Self {
        Self {
            received_at: when(delivery.received_at),
            event: delivery.event.clone(),
            git_ref: delivery.git_ref.clone().unwrap_or_default(),
            commit: delivery
                .commit
                .as_deref()
                .map(|commit| commit.chars().take(7).collect())
                .unwrap_or_default(),
            outcome: delivery.outcome.clone(),
        }
    }
}

/// What cleanup last found of the app's hook on its repository, for its page.
pub struct HookView {
    pub checked_at: String,
    /// Since when the repository cannot be read.
    pub repo_gone_since: Option<String>,
    /// The newest restart of the live app, and why.
    pub incident: Option<(String, String)>,
    pub problem: Option<String>,
    /// When it was set right, and what was wrong.
    pub repaired: Option<(String, String)>,
    /// The deliveries the forge logged as failed, newest first.
    pub failed: Vec<FailedDeliveryRow>,
}

/// A delivery the forge could not hand over, as it logged it.
pub struct FailedDeliveryRow {
    pub delivered_at: String,
    pub event: String,
    /// The receiver's status code, or `—` when it could not be reached.
    pub code: String,
    pub status: String,
}

impl HookView {
    pub fn of(health: &HookHealth) -> Self {
        Self {
            checked_at: when(health.checked_at),
            repo_gone_since: health.repo_gone_since.map(when),
            incident: health
                .incident
                .as_ref()
                .map(|(at, what)| (when(*at), what.clone())),
            problem: health.problem.clone(),
            repaired: health
                .repaired
                .as_ref()
                .map(|(at, what)| (when(*at), what.clone())),
            failed: health
                .failed
                .iter()
                .map(|delivery| FailedDeliveryRow {
                    delivered_at: when(delivery.delivered_at),
                    event: delivery.event.clone(),
                    code: delivery
                        .status_code
                        .map_or_else(|| "—".to_owned(), |code| code.to_string()),
                    status: delivery.status.clone(),
                })
                .collect(),
        }
    }
}

/// An app's page: what it runs, its releases and the pushes it received.
#[derive(Template)]
#[template(path = "app.html")]
pub struct AppPage {
    pub nav: Nav,
    pub app: AppSummary,
    pub repo: String,
    pub main_file: String,
    pub region: String,
    pub memory: String,
    pub cpu: String,
    pub access: String,
    pub owner: String,
    /// The settings form's choices and current values; `regions` the status function fills in.
    pub regions: Vec<String>,
    pub memories: Vec<&'static str>,
    pub cpus: Vec<&'static str>,
    pub access_mode: &'static str,
    pub viewers: String,
    /// The app's plain variables, its warm instances and their cost.
    pub runtime: RuntimeFields,
    /// The names of the app's secrets (never a value); `None` when Runway has not kept them.
    pub secret_keys: Option<Vec<String>>,
    /// Where its releases are announced (kinds and hosts; never a URL).
    pub notify: Vec<NotifySummary>,
    pub releases: Vec<ReleaseRow>,
    /// The app has more releases than the page shows: it shows the newest this many.
    pub newest_only: Option<usize>,
    /// The page shows the releases numbered below this one, not the newest.
    pub history_before: Option<u64>,
    /// The address of the page of older releases, when there are any.
    pub older: Option<String>,
    pub deliveries: Vec<DeliveryRow>,
    /// What cleanup last found of its hook; `None` until it looked.
    pub hook: Option<HookView>,
    /// The newest release is still on its way: the page follows its events until it is done.
    pub follow: bool,
    /// `off`, `on` or `forks`: whether its pull requests get previews.
    pub previews_mode: &'static str,
    /// The caller may allow previews of forks (an admin), or they are allowed already.
    pub forks_allowed: bool,
    /// The names of the secrets previews run with (never a value).
    pub preview_secret_keys: Vec<String>,
    /// Its open pull requests' previews (an app's page); the status function fills them in.
    pub previews: Vec<PreviewRow>,
    /// For a preview's page: the pull request it deploys, and whose preview it is.
    pub pull: Option<PullView>,
}

/// One preview on its app's page.
pub struct PreviewRow {
    pub name: String,
    pub pull: PullView,
    pub state: String,
    pub state_class: &'static str,
    pub url: Option<String>,
    pub commit: Option<CommitView>,
}

impl PreviewRow {
    /// `latest` is the preview's newest release; `live` the one that serves, if any.
    pub fn of(
        preview: &Deployment,
        latest: Option<&Release>,
        live: Option<&Release>,
    ) -> Option<Self> {
        let summary = AppSummary::of(preview, latest, live);
        Some(Self {
            name: summary.name,
            pull: PullView::of(preview)?,
            state: summary.state,
            state_class: summary.state_class,
            url: summary.url,
            commit: summary.commit,
        })
    }
}

/// The pull request a preview deploys, as its pages show it.
pub struct PullView {
    pub number: u64,
    pub title: String,
    /// Its page on the forge, when that is a web address.
    pub link: Option<String>,
    pub author: String,
    pub branch: String,
    pub fork: Option<String>,
    /// The app whose preview it is.
    pub app: String,
}

impl PullView {
    pub fn of(preview: &Deployment) -> Option<Self> {
        let pull = preview.pull.as_ref()?;
        let (app, _) = preview.app.preview_of()?;
        Some(Self {
            number: pull.number,
            title: pull.title.clone(),
            link: Some(pull.url.clone()).filter(|url| url.starts_with("https://")),
            author: pull.author.clone(),
            branch: pull.head_branch.clone(),
            fork: pull.fork.clone(),
            app: app.to_string(),
        })
    }
}

impl AppPage {
    /// `releases` newest first; `deliveries` newest first.
    pub fn of(
        caller: &Caller,
        deployment: &Deployment,
        releases: &[Release],
        deliveries: &[Delivery],
    ) -> Self {
        let latest = releases.first();
        let live = deployment
            .live_release
            .as_ref()
            .and_then(|id| releases.iter().find(|release| &release.id == id));
        let follow = latest.is_some_and(|release| !release.state.is_terminal());
        Self {
            nav: Nav::of(caller),
            app: AppSummary::of(deployment, latest, live),
            repo: deployment.repo.to_string(),
            main_file: deployment.main_file.to_string(),
            region: deployment.region.to_string(),
            memory: deployment.resources.memory().as_str().to_owned(),
            cpu: deployment.resources.cpu().as_str().to_owned(),
            access: deployment.access.to_string(),
            owner: deployment.owner.clone(),
            regions: vec![deployment.region.to_string()],
            memories: Memory::ALL.iter().map(|m| m.as_str()).collect(),
            cpus: Cpu::ALL.iter().map(|c| c.as_str()).collect(),
            access_mode: deployment.access.mode(),
            viewers: deployment
                .access
                .viewers()
                .iter()
                .map(|viewer| viewer.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            runtime: RuntimeFields::of(&deployment.runtime, deployment.resources),
            secret_keys: deployment.secret_keys.clone(),
            notify: deployment.notify.clone(),
            releases: releases
                .iter()
                .map(|release| {
                    let mut row =
                        ReleaseRow::of(&deployment.repo, release, deployment.live_release.as_ref());
                    // A preview follows its pull request's head: nothing to roll back to.
                    row.can_roll_back &= deployment.pull.is_none();
                    row
                })
                .collect(),
            newest_only: None,
            history_before: None,
            older: None,
            deliveries: deliveries.iter().map(DeliveryRow::of).collect(),
            hook: None,
            follow,
            previews_mode: match (deployment.previews.enabled, deployment.previews.forks) {
                (false, _) => "off",
                (true, false) => "on",
                (true, true) => "forks",
            },
            forks_allowed: caller.admin || deployment.previews.forks,
            preview_secret_keys: deployment.previews.secret_keys.clone(),
            previews: Vec::new(),
            pull: PullView::of(deployment),
        }
    }

    /// Shows `releases` (newest first), the app's releases numbered below `before`, in place
    /// of its newest.
    pub fn show_history(&mut self, deployment: &Deployment, before: u64, releases: &[Release]) {
        self.history_before = Some(before);
        self.newest_only = None;
        self.releases = releases
            .iter()
            .map(|release| {
                ReleaseRow::of(&deployment.repo, release, deployment.live_release.as_ref())
            })
            .collect();
    }
}

/// One entry of the audit trail.
pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub action: &'static str,
    pub app: Option<String>,
    pub detail: String,
}

impl AuditRow {
    pub fn of(entry: &AuditEntry) -> Self {
        Self {
            at: when(entry.at),
            actor: entry.actor.clone(),
            action: entry.action.as_str(),
            app: entry.app.clone(),
            detail: clip(&entry.detail, DETAIL_SHOWN),
        }
    }
}

/// The audit trail (admins), narrowed by app and by who acted.
#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub nav: Nav,
    pub app_filter: String,
    pub actor_filter: String,
    /// Which entries of the trail (narrowed to the app) this page holds, before the actor
    /// filter picks among them.
    pub pager: Pager,
    pub entries: Vec<AuditRow>,
}

/// The new-app form; its script posts the JSON API and then opens the app's page.
#[derive(Template)]
#[template(path = "new.html")]
pub struct NewAppPage<'a> {
    pub nav: Nav,
    pub regions: &'a [String],
    pub default_region: &'a str,
    pub memories: Vec<&'static str>,
    pub default_memory: &'static str,
    pub cpus: Vec<&'static str>,
    pub default_cpu: &'static str,
    pub default_access: &'static str,
    pub default_viewers: String,
    /// A new app starts with no variables and no warm instance.
    pub runtime: RuntimeFields,
    /// The form's token; its cookie goes with the page.
    pub csrf: String,
    /// A new app's previews: off, and no secrets for them.
    pub previews_mode: &'static str,
    /// An admin may allow previews of forks from the start.
    pub forks_allowed: bool,
    pub preview_secret_keys: Vec<String>,
}

#[cfg(test)]
mod tests {
    use runway_core::domain::{AppName, Branch, MainFile, NewRelease, Region, Resources, Trigger};

    use super::*;

    fn deployment(repo: &str) -> Deployment {
        let now = chrono::Utc::now();
        Deployment {
            app: AppName::parse("demo").unwrap(),
            repo: RepoUrl::parse(repo, true).unwrap(),
            repo_id: 1,
            branch: Branch::parse("main").unwrap(),
            main_file: MainFile::parse("app.py").unwrap(),
            region: Region::try_from("local".to_owned()).unwrap(),
            resources: Resources::default(),
            runtime: Default::default(),
            access: Default::default(),
            owner: "ada@example.com".into(),
            notify: Vec::new(),
            previews: Default::default(),
            pull: None,
            secret_keys: None,
            webhook_id: None,
            live_release: None,
            url: None,
            created_at: now,
            updated_at: now,
        }
    }

    fn release(seq: u64, state: ReleaseState, commit: char) -> Release {
        let new = NewRelease {
            app: AppName::parse("demo").unwrap(),
            trigger: Trigger::Push,
            actor: "grace@example.com".into(),
            commit: Some(CommitSha::parse(&commit.to_string().repeat(40)).unwrap()),
            rollback_of: None,
            clear_cache: false,
        };
        let mut release = Release::queued(
            new,
            ReleaseId::new(format!("r{seq}")),
            seq,
            chrono::Utc::now(),
        );
        release.state = state;
        release
    }

    fn caller() -> Caller {
        Caller {
            email: "ada@example.com".into(),
            admin: false,
        }
    }

    #[test]
    fn an_app_whose_newest_release_failed_while_an_older_serves_is_live_with_a_badge() {
        let mut app = deployment("https://github.com/acme/dash");
        let live = release(1, ReleaseState::Live, 'a');
        app.live_release = Some(live.id.clone());
        let failed = release(2, ReleaseState::Failed, 'b');

        let summary = AppSummary::of(&app, Some(&failed), Some(&live));

        assert_eq!(
            (summary.state.as_str(), summary.state_class),
            ("live", "live")
        );
        assert!(summary.failed_but_serving);
        let commit = summary.commit.expect("the serving commit");
        assert_eq!(commit.short, "aaaaaaa");
        assert_eq!(
            commit.link.as_deref(),
            Some("https://github.com/acme/dash/commit/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
        );
    }

    #[test]
    fn an_app_on_its_way_is_building_and_a_local_commit_links_nowhere() {
        let app = deployment("/srv/git/dash.git");
        let building = release(1, ReleaseState::Deploying, 'c');

        let summary = AppSummary::of(&app, Some(&building), None);

        assert_eq!(
            (summary.state.as_str(), summary.state_class),
            ("deploying", "building")
        );
        assert!(!summary.failed_but_serving);
        assert_eq!(summary.commit.and_then(|c| c.link), None);
        let never = AppSummary::of(&app, None, None);
        assert_eq!(never.state, "not deployed");
    }

    #[test]
    fn every_value_a_page_shows_is_escaped() {
        let app = deployment("https://github.com/acme/dash");
        let mut shown = release(1, ReleaseState::Failed, 'd');
        shown.message = Some("<script>alert('release')</script>".into());
        let delivery = Delivery {
            id: "d-1".into(),
            app: Some(app.app.clone()),
            event: "push".into(),
            repo_id: Some(1),
            git_ref: Some("refs/heads/<img src=x onerror=alert(1)>".into()),
            commit: Some("e".repeat(40)),
            received_at: chrono::Utc::now(),
            outcome: "ignored: no app deploys branch <b>x</b>".into(),
        };
        let mut caller = caller();
        caller.email = "<i>mallory</i>@example.com".into();

        let html = AppPage::of(&caller, &app, &[shown], &[delivery])
            .render()
            .unwrap();

        for raw in ["<script>alert", "<img src=x", "<b>x</b>", "<i>mallory"] {
            assert!(!html.contains(raw), "{raw} reached the page unescaped");
        }
        assert!(html.contains("&#60;script&#62;alert") || html.contains("&lt;script&gt;alert"));
    }

    #[test]
    fn a_page_follows_a_release_only_while_it_is_on_its_way() {
        let app = deployment("https://github.com/acme/dash");
        let building = AppPage::of(
            &caller(),
            &app,
            &[release(1, ReleaseState::Building, 'f')],
            &[],
        );
        let done = AppPage::of(&caller(), &app, &[release(1, ReleaseState::Live, 'f')], &[]);

        assert!(building.follow && building.render().unwrap().contains("/apps/demo/events"));
        assert!(!done.follow && !done.render().unwrap().contains("/apps/demo/events"));
    }

    #[test]
    fn the_apps_page_says_what_to_do_when_there_is_nothing() {
        let html = AppsPage {
            nav: Nav::of(&caller()),
            apps: Vec::new(),
            total: 0,
            pager: Pager::new(Page::new(None, 50), 0, false, |n| format!("/?page={n}")),
            team: false,
        }
        .render()
        .unwrap();

        assert!(html.contains("No apps yet") && html.contains("href=\"/new\""));
    }

    #[test]
    fn a_long_list_is_paged_with_links_to_the_pages_beside() {
        let link = |n: usize| format!("/?page={n}");
        let first = Pager::new(Page::new(None, 50), 50, true, link);
        let middle = Pager::new(Page::new(Some(2), 50), 50, true, link);
        let last = Pager::new(Page::new(Some(3), 50), 7, false, link);
        let whole = Pager::new(Page::new(Some(0), 50), 7, false, link);

        assert_eq!((first.first, first.last), (1, 50));
        assert_eq!(
            (first.previous, first.next.as_deref()),
            (None, Some("/?page=2"))
        );
        assert_eq!(middle.previous.as_deref(), Some("/?page=1"));
        assert_eq!(middle.next.as_deref(), Some("/?page=3"));
        assert_eq!((last.first, last.last, last.next), (101, 107, None));
        assert!(whole.is_whole() && whole.first == 1);
        let far = Pager::new(Page::new(Some(usize::MAX), 50), 0, false, link);
        assert!(far.previous.is_some() && far.first > 1);
    }

    #[test]
    fn the_apps_page_names_the_apps_it_shows_of_how_many() {
        let app = AppSummary::of(&deployment("https://github.com/acme/dash"), None, None);
        let html = AppsPage {
            nav: Nav::of(&caller()),
            apps: vec![app],
            total: 51,
            pager: Pager::new(Page::new(Some(2), 50), 1, false, |n| format!("/?page={n}")),
            team: false,
        }
        .render()
        .unwrap();

        assert!(html.contains("Apps 51–51 of 51"), "{html}");
        assert!(html.contains("href=\"/?page=1\" rel=\"prev\""), "{html}");
        assert!(!html.contains("rel=\"next\""));
    }

    #[test]
    fn clipped_text_ends_at_a_whole_character_with_an_ellipsis() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("ééééé", 3), "ééé…");
        assert_eq!(clip("a b c", 2), "a…");
    }

    #[test]
    fn a_release_row_shows_the_start_of_a_long_message_and_links_its_log() {
        let app = deployment("https://github.com/acme/dash");
        let mut failed = release(1, ReleaseState::Failed, 'a');
        failed.build_id = Some("b-1".into());
        failed.message = Some(format!("build failure. Log:\n{}", "x".repeat(5000)));

        let row = ReleaseRow::of(&app.repo, &failed, None);

        let message = row.message.unwrap();
        assert!(message.starts_with("build failure. Log:") && message.ends_with('…'));
        assert_eq!(message.chars().count(), MESSAGE_SHOWN + 1);
        assert_eq!(row.log.as_deref(), Some("/api/builds/b-1/log"));
    }

    #[test]
    fn only_an_earlier_release_that_served_offers_a_rollback() {
        let mut app = deployment("https://github.com/acme/dash");
        let mut old = release(1, ReleaseState::Live, 'a');
        old.image = Some("repo/demo@sha256:1".into());
        let mut current = release(2, ReleaseState::Live, 'b');
        current.image = Some("repo/demo@sha256:2".into());
        let failed = release(3, ReleaseState::Failed, 'c');
        app.live_release = Some(current.id.clone());

        let page = AppPage::of(&caller(), &app, &[failed, current, old], &[]);

        let rows: Vec<_> = page
            .releases
            .iter()
            .map(|row| (row.seq, row.state, row.can_roll_back))
            .collect();
        assert_eq!(
            rows,
            [
                (3, "failed", false),
                (2, "live", false),
                (1, "was live", true)
            ]
        );
        let html = page.render().unwrap();
        assert_eq!(html.matches("data-rollback=").count(), 1);
        assert!(html.contains("data-rollback=\"r1\""));
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(took(42), "42 s");
        assert_eq!(took(185), "3 min 5 s");
        assert_eq!(took(3720), "1 h 2 min");
        assert_eq!(took(-3), "0 s");
    }
}
