//! A fake Cloud Logging API v2, for reading apps' runtime logs with the official
//! `google-cloud-logging-v2` client. Cloud Logging has no emulator, so this follows the
//! documented REST surface field by field, and only as far as Runway uses it:
//!
//! - `POST /v2/entries:list` (`entries.list`): body `resourceNames` (required: one project,
//!   `projects/P`, or a log view of it, `projects/P/locations/L/buckets/B/views/V`, which
//!   holds every entry here since they are all Cloud Run's),
//!   `filter`, `orderBy` (`timestamp asc`, the default, or `timestamp desc`; anything else is
//!   refused), `pageSize` (default 50; negative or over 1000 is refused), `pageToken`; answers
//!   `entries` (`LogEntry`: `logName`, `resource {type, labels}`, `timestamp`,
//!   `receiveTimestamp`, `severity`, `insertId`, `textPayload` or `jsonPayload`) and
//!   `nextPageToken`. The client asks for enums as numbers (`$alt=json;enum-encoding=int`);
//!   `severity` is sent as it asks.
//!
//! What it refuses as Google does:
//! - more than the project's read quota: 60 `entries.list` calls a minute, answered
//!   `429 RESOURCE_EXHAUSTED` with an `ErrorInfo` of reason `RATE_LIMIT_EXCEEDED`;
//! - a filter it cannot parse (`400 INVALID_ARGUMENT`). The fake understands comparisons
//!   (`=`, `!=`, `>`, `>=`, `<`, `<=`) of `resource.type`, `resource.labels.*`, `logName`,
//!   `timestamp` and `severity` against quoted strings, joined by `AND`, and parenthesised
//!   groups joined by `OR`; Cloud Logging understands more, but a filter outside that is
//!   refused here rather than silently matched wrongly.
//!
//! And what it imitates of the world: an entry is readable only some time after its timestamp
//! (`ingestion_delay`, and per entry), so entries arrive late and out of order, as they do.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use http::{Method, StatusCode};
use runway_http::{Request, Response, json, read_body};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::google_rest::{GoogleError, wants_int_enums};

/// Cloud Logging's read quota: `entries.list` calls per minute per project.
pub const READS_PER_MINUTE: usize = 60;

/// One line a Cloud Run container (or Cloud Run itself) wrote.
#[derive(Clone, Debug)]
pub struct FakeEntry {
    pub project: String,
    pub location: String,
    pub service: String,
    pub revision: String,
    /// `stdout`, `stderr` or `varlog/system`.
    pub log: String,
    pub text: String,
    pub timestamp: DateTime<Utc>,
}

impl FakeEntry {
    /// A line on standard output, written now.
    pub fn stdout(
        project: &str,
        location: &str,
        service: &str,
        revision: &str,
        text: &str,
    ) -> Self {
        Self {
            project: project.into(),
            location: location.into(),
            service: service.into(),
            revision: revision.into(),
            log: "stdout".into(),
            text: text.into(),
            timestamp: Utc::now(),
        }
    }

    pub fn on(mut self, log: &str) -> Self {
        self.log = log.into();
        self
    }

    fn log_name(&self) -> String {
        format!(
            "projects/{}/logs/run.googleapis.com%2F{}",
            self.project,
            self.log.replace('/', "%2F")
        )
    }

    /// DEFAULT for standard output, ERROR for standard error, INFO for Cloud Run's own.
    fn severity(&self) -> (&'static str, i64) {
        match self.log.as_str() {
            "stderr" => ("ERROR", 500),
            "varlog/system" => ("INFO", 200),
            _ => ("DEFAULT", 0),
        }
    }
}

struct Stored {
    entry: FakeEntry,
    id: String,
    readable_at: Instant,
}

#[derive(Default)]
struct State {
    entries: Vec<Stored>,
    written: u64,
    ingestion_delay: Duration,
    /// When each project's `entries.list` calls came, within the last minute.
    reads: std::collections::HashMap<String, VecDeque<Instant>>,
    /// How many `entries.list` calls were answered (200) and refused (429).
    answered: usize,
    refused: usize,
}

/// Where the fake Cloud Run writes its containers' lines.
#[derive(Clone)]
pub struct LogSink(Arc<Mutex<State>>);

impl LogSink {
    /// Stores `entry`, readable after the ingestion delay.
    pub fn write(&self, entry: FakeEntry) {
        let delay = lock(&self.0).ingestion_delay;
        self.write_late(entry, delay);
    }

    /// Stores `entry`, readable only after `delay`.
    pub fn write_late(&self, entry: FakeEntry, delay: Duration) {
        let mut state = lock(&self.0);
        state.written += 1;
        let id = format!(
            "{:012x}{:04}",
            entry.timestamp.timestamp_micros(),
            state.written
        );
        state.entries.push(Stored {
            entry,
            id,
            readable_at: Instant::now() + delay,
        });
    }
}

/// The fake server; stops when dropped.
pub struct FakeCloudLogging {
    base_url: String,
    sink: LogSink,
    _stop: oneshot::Sender<()>,
}

impl FakeCloudLogging {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let sink = LogSink(Arc::default());
        let shared = sink.clone();
        let stop = crate::serve_until_dropped(listener, move |request: Request, _: SocketAddr| {
            let sink = shared.clone();
            async move { handle(sink, request).await }
        });
        Ok(Self {
            base_url,
            sink,
            _stop: stop,
        })
    }

    pub fn endpoint(&self) -> String {
        self.base_url.clone()
    }

    pub fn sink(&self) -> LogSink {
        self.sink.clone()
    }

    pub fn write(&self, entry: FakeEntry) {
        self.sink.write(entry);
    }

    pub fn write_late(&self, entry: FakeEntry, delay: Duration) {
        self.sink.write_late(entry, delay);
    }

    /// How long every entry written from now on takes to become readable.
    pub fn set_ingestion_delay(&self, delay: Duration) {
        lock(&self.sink.0).ingestion_delay = delay;
    }

    /// `entries.list` calls answered and refused for the quota so far.
    pub fn reads(&self) -> (usize, usize) {
        let state = lock(&self.sink.0);
        (state.answered, state.refused)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

async fn handle(sink: LogSink, request: Request) -> Response {
    let numbers = wants_int_enums(&request);
    if request.method() != Method::POST || request.uri().path() != "/v2/entries:list" {
        let message = format!(
            "the fake serves POST /v2/entries:list only, not {} {}",
            request.method(),
            request.uri().path()
        );
        return GoogleError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message).response();
    }
    let body = match read_body(request, 1 << 20).await {
        Ok(body) => body,
        Err(_) => return GoogleError::invalid("unreadable body").response(),
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return GoogleError::invalid(format!("Invalid JSON payload: {error}")).response();
        }
    };
    match list(&sink, &request, numbers) {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(error) => error.response(),
    }
}

fn list(sink: &LogSink, request: &Value, numbers: bool) -> Result<Value, GoogleError> {
    let names: Vec<&str> = request["resourceNames"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let [resource] = names.as_slice() else {
        return Err(GoogleError::invalid(
            "resourceNames: at least one resource name is required (the fake reads one project)",
        ));
    };
    let path: Vec<&str> = resource.split('/').collect();
    let project = match path.as_slice() {
        ["projects", project] => *project,
        [
            "projects",
            project,
            "locations",
            _,
            "buckets",
            _,
            "views",
            _,
        ] => *project,
        _ => {
            return Err(GoogleError::invalid(format!(
                "Invalid resource name: {resource}"
            )));
        }
    };
    let page_size = match &request["pageSize"] {
        Value::Null => 50,
        size => size
            .as_i64()
            .ok_or_else(|| GoogleError::invalid("pageSize: not a number"))?,
    };
    if !(0..=1000).contains(&page_size) {
        return Err(GoogleError::invalid(format!(
            "pageSize must be between 0 and 1000, got {page_size}"
        )));
    }
    let page_size = if page_size == 0 {
        50
    } else {
        page_size as usize
    };
    let descending = match request["orderBy"].as_str().unwrap_or("") {
        "" | "timestamp asc" => false,
        "timestamp desc" => true,
        other => {
            return Err(GoogleError::invalid(format!(
                "Invalid orderBy: {other:?}; only \"timestamp asc\" and \"timestamp desc\" are supported"
            )));
        }
    };
    let filter = parse(request["filter"].as_str().unwrap_or(""))?;
    let skip: usize = match request["pageToken"].as_str().unwrap_or("") {
        "" => 0,
        token => token
            .strip_prefix("after-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| GoogleError::invalid("Invalid pageToken"))?,
    };

    let mut state = lock(&sink.0);
    let now = Instant::now();
    let reads = state.reads.entry(project.to_owned()).or_default();
    while reads
        .front()
        .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(60))
    {
        reads.pop_front();
    }
    if reads.len() >= READS_PER_MINUTE {
        state.refused += 1;
        return Err(GoogleError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            format!(
                "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per \
                 minute' of service 'logging.googleapis.com' for consumer 'project_number:{}'.",
                crate::fake_cloud_run::PROJECT_NUMBER
            ),
        )
        .with_details(json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "RATE_LIMIT_EXCEEDED",
            "domain": "googleapis.com",
            "metadata": {
                "service": "logging.googleapis.com",
                "quota_metric": "logging.googleapis.com/read_requests",
                "quota_limit": "ReadRequestsPerMinutePerProject",
            },
        }])));
    }
    reads.push_back(now);
    state.answered += 1;

    let mut matching: Vec<&Stored> = Vec::new();
    for stored in state.entries.iter().filter(|s| s.readable_at <= now) {
        if stored.entry.project == project && filter.matches(stored)? {
            matching.push(stored);
        }
    }
    matching.sort_by_key(|stored| stored.entry.timestamp);
    if descending {
        matching.reverse();
    }
    let page: Vec<Value> = matching
        .iter()
        .skip(skip)
        .take(page_size)
        .map(|stored| entry_json(stored, numbers))
        .collect();
    let mut answer = json!({ "entries": page });
    if matching.len() > skip + page_size {
        answer["nextPageToken"] = format!("after-{}", skip + page_size).into();
    }
    Ok(answer)
}

fn entry_json(stored: &Stored, numbers: bool) -> Value {
    let entry = &stored.entry;
    let (severity, number) = entry.severity();
    let time = |at: DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Nanos, true);
    json!({
        "logName": entry.log_name(),
        "resource": {
            "type": "cloud_run_revision",
            "labels": {
                "project_id": entry.project,
                "location": entry.location,
                "service_name": entry.service,
                "revision_name": entry.revision,
                "configuration_name": entry.service,
            },
        },
        "timestamp": time(entry.timestamp),
        "receiveTimestamp": time(entry.timestamp + chrono::TimeDelta::milliseconds(300)),
        "severity": if numbers { json!(number) } else { json!(severity) },
        "insertId": stored.id,
        "labels": { "instanceId": "00f46b9285f1a2b3c4d5e6f7" },
        "textPayload": entry.text,
    })
}

/// A parsed filter: groups that must all match, each matching when any of its comparisons
/// does.
struct Filter(Vec<Vec<Comparison>>);

struct Comparison {
    field: String,
    op: String,
    value: String,
}

impl Filter {
    fn matches(&self, stored: &Stored) -> Result<bool, GoogleError> {
        for group in &self.0 {
            let mut any = false;
            for comparison in group {
                any |= comparison.matches(stored)?;
            }
            if !any {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Comparison {
    fn matches(&self, stored: &Stored) -> Result<bool, GoogleError> {
        let entry = &stored.entry;
        let ordering = match self.field.as_str() {
            "timestamp" => {
                let value = DateTime::parse_from_rfc3339(&self.value).map_err(|_| {
                    GoogleError::invalid(format!("Invalid timestamp: {:?}", self.value))
                })?;
                entry.timestamp.cmp(&value.with_timezone(&Utc))
            }
            field => {
                let actual = match field {
                    "resource.type" => "cloud_run_revision".to_owned(),
                    "resource.labels.service_name" | "resource.labels.configuration_name" => {
                        entry.service.clone()
                    }
                    "resource.labels.location" => entry.location.clone(),
                    "resource.labels.revision_name" => entry.revision.clone(),
                    "resource.labels.project_id" => entry.project.clone(),
                    "logName" => entry.log_name(),
                    "severity" => entry.severity().0.to_owned(),
                    other => {
                        return Err(GoogleError::invalid(format!(
                            "the fake does not know the field {other:?}"
                        )));
                    }
                };
                actual.as_str().cmp(self.value.as_str())
            }
        };
        use std::cmp::Ordering::*;
        Ok(match self.op.as_str() {
            "=" => ordering == Equal,
            "!=" => ordering != Equal,
            ">" => ordering == Greater,
            ">=" => ordering != Less,
            "<" => ordering == Less,
            _ => ordering != Greater,
        })
    }
}

fn unparseable(filter: &str, at: usize) -> GoogleError {
    GoogleError::invalid(format!(
        "Unparseable filter: syntax error at line 1, column {}: {filter}",
        at + 1
    ))
}

/// Parses the subset of the logging query language the module comment names.
fn parse(filter: &str) -> Result<Filter, GoogleError> {
    let mut parser = Parser {
        text: filter,
        at: 0,
    };
    let mut groups = Vec::new();
    parser.space();
    if parser.at == filter.len() {
        return Ok(Filter(groups));
    }
    loop {
        groups.push(parser.group()?);
        parser.space();
        if parser.at == filter.len() {
            return Ok(Filter(groups));
        }
        parser.keyword("AND")?;
    }
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.at = self.text.len() - trimmed.len();
    }

    fn keyword(&mut self, word: &str) -> Result<(), GoogleError> {
        self.space();
        let rest = self.rest();
        if rest.starts_with(word) && rest[word.len()..].starts_with(char::is_whitespace) {
            self.at += word.len();
            Ok(())
        } else {
            Err(unparseable(self.text, self.at))
        }
    }

    fn group(&mut self) -> Result<Vec<Comparison>, GoogleError> {
        self.space();
        if !self.rest().starts_with('(') {
            return Ok(vec![self.comparison()?]);
        }
        self.at += 1;
        let mut group = vec![self.comparison()?];
        loop {
            self.space();
            if self.rest().starts_with(')') {
                self.at += 1;
                return Ok(group);
            }
            self.keyword("OR")?;
            group.push(self.comparison()?);
        }
    }

    fn comparison(&mut self) -> Result<Comparison, GoogleError> {
        self.space();
        let field_len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
            .unwrap_or(self.rest().len());
        if field_len == 0 {
            return Err(unparseable(self.text, self.at));
        }
        let field = self.rest()[..field_len].to_owned();
        self.at += field_len;
        self.space();
        let op = ["!=", ">=", "<=", "=", ">", "<"]
            .into_iter()
            .find(|op| self.rest().starts_with(op))
            .ok_or_else(|| unparseable(self.text, self.at))?;
        self.at += op.len();
        self.space();
        let mut chars = self.rest().char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(unparseable(self.text, self.at));
        }
        let mut value = String::new();
        let mut escaped = false;
        for (index, c) in chars {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    self.at += index + 1;
                    return Ok(Comparison {
                        field,
                        op: op.to_owned(),
                        value,
                    });
                }
                (_, c) => {
                    value.push(c);
                    escaped = false;
                }
            }
        }
        Err(unparseable(self.text, self.text.len()))
    }
}
