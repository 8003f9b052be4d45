//! `RuntimeLog` on Cloud Run: what an app's service writes to standard output and error (and
//! Cloud Run's own lines about its instances), read from Cloud Logging with the official
//! `google-cloud-logging-v2` client (`entries.list`).
//!
//! Two rules of the real service shape it:
//! - **Reads are scarce.** A project may make 60 `entries.list` calls a minute, shared with
//!   everyone reading its logs. So one instance reads each app at most once per
//!   `follow_every`, however many pages follow it: the newest entries of each followed app are
//!   kept here, and every page's read is answered from them when they are fresh. A refusal
//!   (429) is passed on as `Throttled`, with the wait.
//! - **Entries arrive late.** An entry becomes readable seconds after its timestamp, and not
//!   in order. Each look asks again for the last `LOOKBACK` before the newest entry seen and
//!   drops those already seen by their `insertId`; a page's cursor carries the newest time it
//!   has and the ids it got within `LOOKBACK` of it, so it gets each entry once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::Code;
use google_cloud_logging_v2::client::LoggingServiceV2;
use google_cloud_logging_v2::model::LogEntry;

use runway_core::domain::{AppName, Region};
use runway_core::ports::{LogError, LogLine, LogRead, RuntimeLog};

use super::has_code;

/// How far before the newest entry seen each look asks again, for entries that arrived late.
const LOOKBACK: TimeDelta = TimeDelta::seconds(10);
/// The most entries one call may ask for (a larger `pageSize` is refused).
const PAGE_AT_MOST: usize = 1000;
/// How many of each followed app's newest entries are kept.
const KEPT: usize = 1000;
/// An app nobody has read for this long is no longer kept.
const FORGET_AFTER: Duration = Duration::from_secs(300);
/// The wait a refusal names when Google gives none.
const THROTTLED_WAIT: Duration = Duration::from_secs(20);
/// The logs of a Cloud Run service Runway shows: the container's output and Cloud Run's own
/// lines about starting and stopping instances (why a revision never got ready).
const LOGS: [(&str, &str); 3] = [
    ("run.googleapis.com%2Fstdout", "stdout"),
    ("run.googleapis.com%2Fstderr", "stderr"),
    ("run.googleapis.com%2Fvarlog%2Fsystem", "system"),
];

#[derive(Clone, Debug)]
pub struct CloudLoggingConfig {
    pub project: String,
    /// What is read: a log view (`projects/P/locations/global/buckets/_Default/views/V`, which
    /// infra gives status access to and nothing more), or the whole project (`projects/P`).
    pub resource: String,
    /// Cloud Logging API base URL; `None` for Google's.
    pub endpoint: Option<String>,
    /// Send no credentials (tests only); otherwise Application Default Credentials.
    pub anonymous: bool,
    /// How often a page following an app's log looks, and how long the entries read for one
    /// app answer every page before they are read again.
    pub follow_every: Duration,
}

impl CloudLoggingConfig {
    /// Every 5 s: twelve reads a minute per app followed, of the project's sixty.
    pub fn new(project: impl Into<String>) -> Self {
        let project = project.into();
        Self {
            resource: format!("projects/{project}"),
            project,
            endpoint: None,
            anonymous: false,
            follow_every: Duration::from_secs(5),
        }
    }
}

#[derive(Clone)]
pub struct CloudLogging {
    client: LoggingServiceV2,
    config: Arc<CloudLoggingConfig>,
    /// The kept entries of each app followed here, by app and region.
    followed: Arc<Mutex<HashMap<(String, String), Shared>>>,
}

type Shared = Arc<tokio::sync::Mutex<Followed>>;

/// One entry as kept: the line, and what tells it from the others.
#[derive(Clone, Debug)]
struct Entry {
    id: String,
    line: LogLine,
}

/// The newest entries of one app, oldest first, as read for every page following it.
#[derive(Default)]
struct Followed {
    entries: VecDeque<Entry>,
    /// Whether `entries` holds the app's newest `KEPT` (a tail was read), so that older
    /// entries than the first are not missing from it.
    complete: bool,
    read_at: Option<Instant>,
    used_at: Option<Instant>,
}

impl Followed {
    fn fresh(&self, every: Duration) -> bool {
        self.read_at.is_some_and(|at| at.elapsed() < every)
    }

    /// Adds what a read found that is not kept yet, keeping the newest `KEPT` in time order.
    fn add(&mut self, found: Vec<Entry>) {
        let known: HashSet<&str> = self.entries.iter().map(|e| e.id.as_str()).collect();
        let new: Vec<Entry> = found
            .into_iter()
            .filter(|entry| !known.contains(entry.id.as_str()))
            .collect();
        self.entries.extend(new);
        // Stable: entries of one time keep the order Cloud Logging gave them.
        self.entries
            .make_contiguous()
            .sort_by_key(|entry| entry.line.at);
        while self.entries.len() > KEPT {
            self.entries.pop_front();
            self.complete = false;
        }
    }

    fn newest(&self) -> Option<DateTime<Utc>> {
        self.entries.back().map(|entry| entry.line.at)
    }
}

/// Where a page is in an app's log: the newest time it has, and the ids of the entries it got
/// within `LOOKBACK` of that time. Written `TIME ID ID …` (ids never hold spaces).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Cursor {
    newest: Option<DateTime<Utc>>,
    seen: HashSet<String>,
}

impl Cursor {
    fn parse(text: &str) -> Self {
        let mut parts = text.split(' ');
        let newest = parts
            .next()
            .and_then(|time| DateTime::parse_from_rfc3339(time).ok())
            .map(|time| time.with_timezone(&Utc));
        Self {
            newest,
            seen: parts
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// The cursor after `lines` were read from `kept` past `self`.
    fn after(&self, kept: &VecDeque<Entry>) -> Self {
        let newest = kept.back().map(|entry| entry.line.at).or(self.newest);
        let seen = match newest {
            Some(newest) => kept
                .iter()
                .filter(|entry| entry.line.at >= newest - LOOKBACK)
                .map(|entry| entry.id.clone())
                .collect(),
            None => HashSet::new(),
        };
        Self { newest, seen }
    }

    /// Whether the page has `entry` already.
    fn has(&self, entry: &Entry) -> bool {
        match self.newest {
            None => false,
            Some(newest) if entry.line.at < newest - LOOKBACK => true,
            Some(_) => self.seen.contains(&entry.id),
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(newest) = self.newest {
            write!(f, "{}", newest.to_rfc3339_opts(SecondsFormat::Nanos, true))?;
        }
        let mut seen: Vec<&String> = self.seen.iter().collect();
        seen.sort();
        for id in seen {
            write!(f, " {id}")?;
        }
        Ok(())
    }
}

impl CloudLogging {
    /// Builds the client once; keep it for the life of the process.
    pub async fn new(config: CloudLoggingConfig) -> anyhow::Result<Self> {
        let mut builder = LoggingServiceV2::builder();
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if config.anonymous {
            builder = builder.with_credentials(super::anonymous_credentials());
        }
        let client = builder
            .build()
            .await
            .context("building the Cloud Logging client")?;
        Ok(Self {
            client,
            config: Arc::new(config),
            followed: Arc::default(),
        })
    }

    /// The kept entries of `app` in `region`, forgetting apps nobody reads.
    fn followed(&self, app: &AppName, region: &Region) -> Shared {
        let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        followed.retain(|_, kept| {
            kept.try_lock().map_or(true, |kept| {
                kept.used_at.is_some_and(|at| at.elapsed() < FORGET_AFTER)
            })
        });
        followed
            .entry((app.to_string(), region.to_string()))
            .or_default()
            .clone()
    }

    /// The filter for the app's service in `region`, from `since` on when given.
    fn filter(&self, app: &AppName, region: &Region, since: Option<DateTime<Utc>>) -> String {
        let logs: Vec<String> = LOGS
            .iter()
            .map(|(log, _)| format!("logName=\"projects/{}/logs/{log}\"", self.config.project))
            .collect();
        let mut filter = format!(
            "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"{app}\" \
             AND resource.labels.location=\"{region}\" AND ({})",
            logs.join(" OR ")
        );
        if let Some(since) = since {
            filter.push_str(&format!(
                " AND timestamp>=\"{}\"",
                since.to_rfc3339_opts(SecondsFormat::Nanos, true)
            ));
        }
        filter
    }

    /// One `entries.list` call: the newest `max` (`since` absent), or from `since` on.
    async fn list(
        &self,
        app: &AppName,
        region: &Region,
        since: Option<DateTime<Utc>>,
        max: usize,
    ) -> Result<Vec<Entry>, LogError> {
        let order = match since {
            Some(_) => "timestamp asc",
            None => "timestamp desc",
        };
        let response = self
            .client
            .list_log_entries()
            .set_resource_names([self.config.resource.clone()])
            .set_filter(self.filter(app, region, since))
            .set_order_by(order)
            .set_page_size(max.min(PAGE_AT_MOST) as i32)
            .send()
            .await
            .map_err(|error| self.log_error(error))?;
        let mut entries: Vec<Entry> = response.entries.into_iter().filter_map(entry).collect();
        if since.is_none() {
            entries.reverse();
        }
        Ok(entries)
    }

    fn log_error(&self, error: GaxError) -> LogError {
        if has_code(&error, Code::ResourceExhausted) || error.http_status_code() == Some(429) {
            let retry_after = retry_delay(&error).unwrap_or(THROTTLED_WAIT);
            return LogError::Throttled {
                message: format!(
                    "Cloud Logging refuses more reads for now (a project may read its logs 60 \
                     times a minute); the app's log goes on in {} s",
                    retry_after.as_secs().max(1)
                ),
                retry_after,
            };
        }
        if has_code(&error, Code::PermissionDenied) {
            return LogError::Unavailable(format!(
                "reading {} in Cloud Logging was denied; the status function's service account \
                 needs roles/logging.viewAccessor on it (infra/service_accounts.tf)",
                self.config.resource
            ));
        }
        LogError::Unavailable(format!("reading Cloud Logging: {error}"))
    }

    /// Brings the kept entries up to date when they are older than `follow_every`.
    async fn refresh(
        &self,
        kept: &mut Followed,
        app: &AppName,
        region: &Region,
    ) -> Result<(), LogError> {
        kept.used_at = Some(Instant::now());
        if kept.fresh(self.config.follow_every) {
            return Ok(());
        }
        let found = match kept.newest() {
            Some(newest) if kept.complete => {
                self.list(app, region, Some(newest - LOOKBACK), PAGE_AT_MOST)
                    .await?
            }
            _ => {
                let tail = self.list(app, region, None, KEPT).await?;
                kept.complete = true;
                tail
            }
        };
        kept.add(found);
        kept.read_at = Some(Instant::now());
        Ok(())
    }
}

/// The wait a refusal's `RetryInfo` names, when it has one.
fn retry_delay(error: &GaxError) -> Option<Duration> {
    use google_cloud_gax::error::rpc::StatusDetails;
    error
        .status()?
        .details
        .iter()
        .find_map(|detail| match detail {
            StatusDetails::RetryInfo(info) => {
                let delay = info.retry_delay.as_ref()?;
                Some(Duration::new(
                    u64::try_from(delay.seconds()).ok()?,
                    u32::try_from(delay.nanos()).ok()?,
                ))
            }
            _ => None,
        })
}

/// An entry as a line: its text (a structured entry's `message`, else its JSON), time,
/// revision and log. One without a time or id is no line.
fn entry(entry: LogEntry) -> Option<Entry> {
    let at = entry.timestamp.as_ref()?;
    let at = DateTime::from_timestamp(at.seconds(), u32::try_from(at.nanos()).ok()?)?;
    let stream = LOGS
        .iter()
        .find(|(log, _)| entry.log_name.ends_with(&format!("/logs/{log}")))
        .map_or("stdout", |(_, stream)| stream);
    let text = if let Some(text) = entry.text_payload() {
        text.clone()
    } else if let Some(json) = entry.json_payload() {
        match json.get("message").and_then(|m| m.as_str()) {
            Some(message) => message.to_owned(),
            None => serde_json::to_string(json.as_ref()).ok()?,
        }
    } else {
        return None;
    };
    let revision = entry
        .resource
        .as_ref()
        .and_then(|resource| resource.labels.get("revision_name"))
        .cloned()
        .unwrap_or_default();
    (!entry.insert_id.is_empty()).then(|| Entry {
        id: entry.insert_id.clone(),
        line: LogLine {
            at,
            revision,
            stream: stream.to_owned(),
            text: text.trim_end_matches(['\n', '\r']).to_owned(),
        },
    })
}

fn lines(entries: impl IntoIterator<Item = Entry>) -> Vec<LogLine> {
    entries.into_iter().map(|entry| entry.line).collect()
}

#[async_trait]
impl RuntimeLog for CloudLogging {
    async fn tail(&self, app: &AppName, region: &Region, max: usize) -> Result<LogRead, LogError> {
        let followed = self.followed(app, region);
        let mut kept = followed.lock().await;
        if !kept.complete {
            kept.read_at = None;
        }
        self.refresh(&mut kept, app, region).await?;
        let cursor = Cursor::default().after(&kept.entries);
        let newest = kept
            .entries
            .iter()
            .skip(kept.entries.len().saturating_sub(max));
        Ok(LogRead {
            lines: lines(newest.cloned()),
            cursor: cursor.to_string(),
        })
    }

    async fn after(
        &self,
        app: &AppName,
        region: &Region,
        cursor: &str,
        max: usize,
    ) -> Result<LogRead, LogError> {
        let cursor = Cursor::parse(cursor);
        let followed = self.followed(app, region);
        let mut kept = followed.lock().await;
        self.refresh(&mut kept, app, region).await?;
        let mut new: Vec<Entry> = kept
            .entries
            .iter()
            .filter(|entry| !cursor.has(entry))
            .cloned()
            .collect();
        // A page that fell further behind skips to the newest `max`.
        new.drain(..new.len().saturating_sub(max));
        let next = match new.is_empty() {
            true => cursor,
            false => cursor.after(&kept.entries),
        };
        Ok(LogRead {
            lines: lines(new),
            cursor: next.to_string(),
        })
    }

    fn follow_every(&self) -> Duration {
        self.config.follow_every
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + second, 0).unwrap()
    }

    fn kept(entries: &[(&str, i64)]) -> VecDeque<Entry> {
        entries
            .iter()
            .map(|(id, second)| Entry {
                id: (*id).into(),
                line: LogLine {
                    at: at(*second),
                    revision: "hello-00001-abc".into(),
                    stream: "stdout".into(),
                    text: format!("line {id}"),
                },
            })
            .collect()
    }

    #[test]
    fn a_cursor_remembers_what_it_got_near_its_newest_time_and_reads_back() {
        let entries = kept(&[("a", 0), ("b", 15), ("c", 20), ("d", 20)]);

        let cursor = Cursor::default().after(&entries);

        assert_eq!(cursor.newest, Some(at(20)));
        let expected: HashSet<String> = ["b", "c", "d"].map(String::from).into();
        assert_eq!(cursor.seen, expected, "the entries within ten seconds");
        assert_eq!(Cursor::parse(&cursor.to_string()), cursor);
        assert_eq!(Cursor::parse("nonsense"), Cursor::default());
    }

    #[test]
    fn an_entry_that_arrived_late_is_new_to_a_page_and_old_ones_are_not() {
        let cursor = Cursor::default().after(&kept(&[("a", 0), ("c", 20)]));
        let later = kept(&[("a", 0), ("late", 15), ("c", 20), ("e", 21)]);

        let new: Vec<&str> = later
            .iter()
            .filter(|entry| !cursor.has(entry))
            .map(|entry| entry.id.as_str())
            .collect();

        assert_eq!(new, ["late", "e"]);
    }

    #[test]
    fn kept_entries_stay_in_time_order_without_duplicates() {
        let mut followed = Followed::default();
        followed.add(kept(&[("a", 0), ("c", 20)]).into());
        followed.add(kept(&[("c", 20), ("b", 10)]).into());

        let ids: Vec<&str> = followed.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }
}
