//! `Store` on Firestore (native mode), through firestore-rs.
//!
//! Each record is a document whose `record` field holds the domain's own JSON, the same encoding
//! the SQLite store keeps, so both stores evolve with the records' serde; beside it sit the
//! fields queries filter and order on, with timestamps as native Firestore timestamps (RFC 3339
//! strings of varying precision do not sort). Every read-modify-write runs in a Firestore
//! transaction: its reads are locked until commit, and a commit that lost to a concurrent one is
//! retried from the start, so concurrent workers never lose an update.
//!
//! The composite indexes these queries need are `COMPOSITE_INDEXES`; a test holds
//! `infra/firestore.indexes.json` to them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use firestore::errors::FirestoreError;
use firestore::select_filter_builder::FirestoreQueryFilterBuilder;
use firestore::{
    FirestoreConsistencySelector, FirestoreDb, FirestoreDbOptions, FirestoreQueryDirection,
    FirestoreQueryFilter, FirestoreTimestamp, FirestoreTransaction, FirestoreTransactionId,
    FirestoreTransactionMode, FirestoreTransactionOps, FirestoreTransactionOptions,
    FirestoreWritePrecondition,
};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use runway_core::clock::{self, Clock};
use runway_core::domain::{
    AppName, AuditEntry, BuildId, Delivery, Deployment, HookHealth, HookId, NewRelease, Release,
    ReleaseId, ReleaseState, ReleaseUpdate, Timestamp,
};
use runway_core::plan::{self, Transition};
use runway_core::ports::{AppReleases, Pruned, Retention, Store, StoreError};

const DEPLOYMENTS: &str = "deployments";
const RELEASES: &str = "releases";
const SEQUENCES: &str = "release_sequences";
const DELIVERIES: &str = "deliveries";
const AUDIT: &str = "audit";
const ORPHAN_HOOKS: &str = "orphan_hooks";
/// What cleanup last found of each app's hook, by app name.
const HOOK_HEALTH: &str = "hook_health";

/// A `hook_health` document: the record as JSON, like the other records.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct HookHealthDoc {
    record: String,
}

/// The composite indexes this store's queries need, as (collection, [(field, direction)]).
/// Firestore refuses such a query without its index, but the emulator does not check: a test
/// holds `infra/firestore.indexes.json` (which Terraform applies) to this list.
pub const COMPOSITE_INDEXES: &[(&str, &[(&str, &str)])] = &[
    // `releases`: an app's releases, newest first.
    (RELEASES, &[("app", "ASCENDING"), ("seq", "DESCENDING")]),
    // `releases_in_state`: stale releases for cleanup, oldest first.
    (
        RELEASES,
        &[("state", "ASCENDING"), ("updated_at", "ASCENDING")],
    ),
    // `deliveries_of_app`: an app's deliveries, newest first.
    (
        DELIVERIES,
        &[("app", "ASCENDING"), ("received_at", "DESCENDING")],
    ),
    // `audit` narrowed to one app, newest first.
    (AUDIT, &[("app", "ASCENDING"), ("at", "DESCENDING")]),
];

/// A transaction that lost to a concurrent one is run again this many times before the caller
/// hears `Unavailable`.
const TRANSACTION_ATTEMPTS: u32 = 40;
/// Firestore allows 500 writes per commit; deletions go in chunks below that.
const WRITES_PER_COMMIT: usize = 400;

/// Where the store's database is.
#[derive(Clone, Debug)]
pub struct FirestoreConfig {
    pub project: String,
    /// `(default)` unless the project has several databases.
    pub database: String,
    /// `host:port` of the Firestore emulator; `None` talks to Google with the default
    /// credentials (the function's service account on Cloud Run).
    pub emulator: Option<String>,
    /// `RUNWAY_KEEP_DELIVERIES_DAYS`: how long a webhook delivery is kept. Each delivery's
    /// document carries `expire_at`, received_at plus this, so that Firestore's TTL policy
    /// (infra/firestore.tf) deletes it without Runway reading it. Give `prune` the same: with
    /// a shorter one it deletes deliveries before they expire, with a longer one TTL deletes
    /// them before it would.
    pub keep_deliveries_for: chrono::Duration,
}

#[derive(Clone)]
pub struct FirestoreStore {
    db: FirestoreDb,
    /// One lock per app for this instance's read-modify-writes of that app's releases. Firestore
    /// transactions alone are correct, but contenders that all read a document and then write
    /// it deadlock on its lock until the server aborts them all (the emulator after 2 s); queueing
    /// them here first leaves the transactions to fence off other instances only.
    app_locks: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    clock: Arc<dyn Clock>,
    /// How long after it was received a delivery's document expires (`expire_at`).
    keep_deliveries_for: chrono::Duration,
}

impl FirestoreStore {
    pub async fn connect(config: &FirestoreConfig) -> Result<Self, StoreError> {
        let options = FirestoreDbOptions::new(config.project.clone())
            .with_database_id(config.database.clone());
        let db = match &config.emulator {
            Some(host) => {
                // The emulator's own credentials ("Bearer owner"), given explicitly so that no
                // process-wide FIRESTORE_EMULATOR_HOST is needed: tests run several stores.
                let options = options.with_firebase_api_url(format!("http://{host}"));
                FirestoreDb::with_options_auth(options, emulator_credentials()).await
            }
            None => FirestoreDb::with_options(options).await,
        }
        .map_err(|error| {
            StoreError::Unavailable(format!(
                "cannot reach Firestore for project {}: {error}",
                config.project
            ))
        })?;
        Ok(Self {
            db,
            app_locks: Arc::default(),
            clock: clock::system(),
            keep_deliveries_for: config.keep_deliveries_for,
        })
    }

    async fn lock_app(&self, app: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self
                .app_locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            locks.entry(app.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Whether Firestore answers: a cheap read of one document.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.get::<SequenceDoc>(SEQUENCES, "runway-readiness-probe")
            .await
            .map(|_| ())
    }

    async fn get<T>(&self, collection: &str, id: &str) -> Result<Option<T>, StoreError>
    where
        for<'de> T: Deserialize<'de> + Send,
    {
        get_in(&self.db, collection, id).await.map_err(store_error)
    }

    /// Reads the documents `ids` of `collection` in one batch: those that exist, by id.
    async fn get_many<T>(
        &self,
        collection: &str,
        ids: &[String],
    ) -> Result<HashMap<String, T>, StoreError>
    where
        for<'de> T: Deserialize<'de> + Send,
    {
        if ids.is_empty() {
            return Ok(HashMap::new()); // Firestore refuses a batch of none.
        }
        self.db
            .fluent()
            .select()
            .by_id_in(collection)
            .obj::<T>()
            .batch_with_errors(ids)
            .await
            .map_err(store_error)?
            .try_filter_map(|(id, doc)| async move { Ok(doc.map(|doc| (id, doc))) })
            .try_collect()
            .await
            .map_err(store_error)
    }

    /// Runs `work` in a transaction: it reads through the `FirestoreDb` it is given (bound to
    /// the transaction) and returns its result with the writes to commit. Lost races are run
    /// again, with a growing, jittered pause.
    /// The clock the store stamps what it writes with.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Writes `doc` as `collection/id` only if no such document exists: whether it wrote.
    /// Firestore refuses the second of two creates.
    async fn create_if_absent<T>(
        &self,
        collection: &str,
        id: &str,
        doc: &T,
    ) -> Result<bool, StoreError>
    where
        T: Serialize + for<'de> Deserialize<'de> + Send + Sync,
    {
        let created = self
            .db
            .fluent()
            .update()
            .in_col(collection)
            .precondition(FirestoreWritePrecondition::Exists(false))
            .document_id(id)
            .object(doc)
            .execute::<()>()
            .await;
        match created {
            Ok(()) => Ok(true),
            Err(FirestoreError::DataConflictError(_)) => Ok(false),
            Err(FirestoreError::DatabaseError(error))
                if error.public.code == "FailedPrecondition" =>
            {
                Ok(false)
            }
            Err(error) => Err(store_error(error)),
        }
    }

    async fn transact<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        F: Fn(FirestoreDb) -> Fut,
        Fut: Future<Output = Result<(T, Vec<Write>), Attempt>>,
    {
        let mut pause = Duration::from_millis(5);
        let mut lost: Option<FirestoreTransactionId> = None;
        for _ in 0..TRANSACTION_ATTEMPTS {
            // A retry names the transaction it retries, so Firestore can give it priority.
            let mode = match lost.take() {
                Some(id) => FirestoreTransactionMode::ReadWriteRetry(id),
                None => FirestoreTransactionMode::ReadWrite,
            };
            let options = FirestoreTransactionOptions::new().with_mode(mode);
            let mut transaction = self
                .db
                .begin_transaction_with_options(options)
                .await
                .map_err(store_error)?;
            let id = transaction.transaction_id().clone();
            let bound =
                self.db
                    .clone_with_consistency_selector(FirestoreConsistencySelector::Transaction(
                        transaction.transaction_id().clone(),
                    ));
            let outcome = match work(bound).await {
                Ok((value, writes)) => match apply(&mut transaction, writes) {
                    Ok(()) => transaction
                        .commit()
                        .await
                        .map(|_| value)
                        .map_err(Attempt::from),
                    Err(error) => {
                        transaction.rollback().await.ok();
                        Err(error)
                    }
                },
                Err(error) => {
                    transaction.rollback().await.ok();
                    Err(error)
                }
            };
            match outcome {
                Ok(value) => return Ok(value),
                Err(Attempt::Failed(error)) => return Err(error),
                Err(Attempt::LostRace) => {
                    lost = Some(id);
                    let jitter = rand::random_range(0..=pause.as_millis() as u64);
                    tokio::time::sleep(pause + Duration::from_millis(jitter)).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "a Firestore transaction lost to concurrent ones {TRANSACTION_ATTEMPTS} times"
        )))
    }

    async fn query_releases(
        &self,
        filter: impl Fn(FirestoreQueryFilterBuilder) -> Option<FirestoreQueryFilter> + Send + Sync,
        order: (&'static str, FirestoreQueryDirection),
        limit: Option<u32>,
    ) -> Result<Vec<Release>, StoreError> {
        let mut query = self
            .db
            .fluent()
            .select()
            .from(RELEASES)
            .filter(filter)
            .order(|o| o.fields([o.field(order.0).direction(order.1.clone())]));
        if let Some(limit) = limit {
            query = query.limit(limit);
        }
        let docs: Vec<ReleaseDoc> = query.obj().query().await.map_err(store_error)?;
        docs.into_iter().map(ReleaseDoc::into_record).collect()
    }

    /// Deletes up to `Pruned::AT_MOST` deliveries received before `cut`, oldest first. TTL
    /// deletes those with an `expire_at` on its own, within a day of it; this deletes the
    /// deliveries recorded before documents carried one, and on the emulator, which has no TTL.
    async fn prune_deliveries(&self, cut: Timestamp) -> Result<usize, StoreError> {
        let old: Vec<DocId> = self
            .db
            .fluent()
            .select()
            .fields(["received_at"])
            .from(DELIVERIES)
            .filter(|q| q.field("received_at").less_than(timestamp(cut)))
            .order(|o| o.fields([o.field("received_at").asc()]))
            .limit(Pruned::AT_MOST as u32)
            .obj()
            .query()
            .await
            .map_err(store_error)?;
        let mut pruned = 0;
        // A delivery is never written again once recorded, so the deletes need no reads: a
        // replay of one deleted meanwhile is recorded anew, as after any retention.
        for chunk in old.chunks(WRITES_PER_COMMIT) {
            pruned += self
                .transact(|_| async move {
                    let writes: Vec<Write> = chunk
                        .iter()
                        .map(|doc| Write::Delete(DELIVERIES, doc.id.clone()))
                        .collect();
                    Ok((writes.len(), writes))
                })
                .await?;
        }
        Ok(pruned)
    }

    /// Deletes up to `budget` of `app`'s finished releases numbered below `below`, except
    /// the one its deployment serves.
    async fn prune_releases_of(
        &self,
        app: &str,
        below: i64,
        budget: usize,
    ) -> Result<usize, StoreError> {
        let _app = self.lock_app(app).await;
        // Found outside the transaction: a query inside it would lock every release it scans
        // (see `queue_in`). The states read here are final: a finished release never changes
        // again, and none of those left out (queued, building, deploying) is deleted.
        let mut doomed = Vec::new();
        let mut cursor = below;
        while doomed.len() < budget {
            let page: Vec<ReleaseHead> = self
                .db
                .fluent()
                .select()
                .fields(["id", "seq", "state"])
                .from(RELEASES)
                .filter(|q| q.for_all([q.field("app").eq(app), q.field("seq").less_than(cursor)]))
                // The direction of the (app ASC, seq DESC) index: the other needs one more.
                .order(|o| o.fields([o.field("seq").desc()]))
                .limit(WRITES_PER_COMMIT as u32)
                .obj()
                .query()
                .await
                .map_err(store_error)?;
            let Some(last) = page.last() else { break };
            cursor = last.seq;
            let full = page.len() == WRITES_PER_COMMIT;
            doomed.extend(
                page.into_iter()
                    .filter(|head| {
                        ReleaseState::parse(&head.state).is_some_and(|s| s.is_terminal())
                    })
                    .map(|head| head.id),
            );
            if !full {
                break;
            }
        }
        doomed.truncate(budget);
        let mut pruned = 0;
        for chunk in doomed.chunks(WRITES_PER_COMMIT) {
            pruned += self
                .transact(|db| async move {
                    // Read in the transaction, after the states above: a release that went
                    // live since (it was deploying, so it is not in `chunk`) is what this sees,
                    // and one going live before the commit makes this transaction retry.
                    let live = get_in::<DeploymentDoc>(&db, DEPLOYMENTS, app)
                        .await?
                        .map(|doc| decode::<Deployment>(&doc.record))
                        .transpose()?
                        .and_then(|deployment| deployment.live_release);
                    let writes: Vec<Write> = chunk
                        .iter()
                        .filter(|id| live.as_ref().is_none_or(|live| live.as_str() != *id))
                        .map(|id| Write::Delete(RELEASES, id.clone()))
                        .collect();
                    Ok((writes.len(), writes))
                })
                .await?;
        }
        Ok(pruned)
    }
}

/// How one transaction attempt ended, when it did not commit.
enum Attempt {
    /// Firestore aborted it for a concurrent transaction: run it again.
    LostRace,
    Failed(StoreError),
}

impl From<StoreError> for Attempt {
    fn from(error: StoreError) -> Self {
        Attempt::Failed(error)
    }
}

impl From<FirestoreError> for Attempt {
    fn from(error: FirestoreError) -> Self {
        match &error {
            FirestoreError::DatabaseError(database) if database.public.code == "Aborted" => {
                Attempt::LostRace
            }
            _ => Attempt::Failed(store_error(error)),
        }
    }
}

fn store_error(error: FirestoreError) -> StoreError {
    match &error {
        FirestoreError::DatabaseError(database) if database.retry_possible => {
            StoreError::Unavailable(format!("Firestore: {error}"))
        }
        FirestoreError::DataNotFoundError(_) => StoreError::NotFound(error.to_string()),
        FirestoreError::DataConflictError(_) => StoreError::Conflict(error.to_string()),
        _ => StoreError::Other(anyhow::anyhow!("Firestore: {error}")),
    }
}

fn encode<T: Serialize>(record: &T) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|error| StoreError::Other(error.into()))
}

fn decode<T: for<'de> Deserialize<'de>>(record: &str) -> Result<T, StoreError> {
    serde_json::from_str(record).map_err(|error| {
        StoreError::Other(anyhow::anyhow!("a stored record does not decode: {error}"))
    })
}

fn timestamp(at: Timestamp) -> FirestoreTimestamp {
    // Firestore keeps microseconds; chrono's are exact, so this cannot fail for real times.
    let instant =
        firestore::FirestoreInstant::from_microsecond(at.timestamp_micros()).unwrap_or_default();
    FirestoreTimestamp(instant)
}

/// Reads one document. Firestore's own error is kept, so that inside a transaction an ABORTED
/// read (it lost to a concurrent transaction) becomes `Attempt::LostRace` and is retried like an
/// aborted commit, not reported as the store being unavailable.
async fn get_in<T>(
    db: &FirestoreDb,
    collection: &str,
    id: &str,
) -> Result<Option<T>, FirestoreError>
where
    for<'de> T: Deserialize<'de> + Send,
{
    db.fluent()
        .select()
        .by_id_in(collection)
        .obj()
        .one(id)
        .await
}

/// A write queued for a transaction's commit.
enum Write {
    Deployment(DeploymentDoc),
    Release(ReleaseDoc),
    Sequence(String, SequenceDoc),
    Delivery(String, DeliveryDoc),
    Delete(&'static str, String),
}

fn apply(transaction: &mut FirestoreTransaction<'_>, writes: Vec<Write>) -> Result<(), Attempt> {
    let no_transforms = Vec::new;
    for write in writes {
        let result = match write {
            Write::Deployment(doc) => transaction
                .update_object(DEPLOYMENTS, &doc.app, &doc, None, None, no_transforms())
                .map(|_| ()),
            Write::Release(doc) => transaction
                .update_object(RELEASES, &doc.id, &doc, None, None, no_transforms())
                .map(|_| ()),
            Write::Sequence(app, doc) => transaction
                .update_object(SEQUENCES, &app, &doc, None, None, no_transforms())
                .map(|_| ()),
            Write::Delivery(id, doc) => transaction
                .update_object(DELIVERIES, &id, &doc, None, None, no_transforms())
                .map(|_| ()),
            Write::Delete(collection, id) => {
                transaction.delete_by_id(collection, &id, None).map(|_| ())
            }
        };
        result.map_err(|error| Attempt::Failed(store_error(error)))?;
    }
    Ok(())
}

/// Only a document's id, for queries that need nothing else (with a projection of one small
/// field, so the record is not sent).
#[derive(Debug, Deserialize)]
struct DocId {
    #[serde(alias = "_firestore_id")]
    id: String,
}

/// What pruning reads of a release.
#[derive(Debug, Deserialize)]
struct ReleaseHead {
    id: String,
    seq: i64,
    state: String,
}

/// What pruning reads of an app's sequence: its name (the document's id) and its last number.
#[derive(Debug, Deserialize)]
struct SequenceHead {
    #[serde(alias = "_firestore_id")]
    app: String,
    last: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct DeploymentDoc {
    app: String,
    repo_id: i64,
    record: String,
}

impl DeploymentDoc {
    fn of(deployment: &Deployment) -> Result<Self, StoreError> {
        Ok(Self {
            app: deployment.app.to_string(),
            repo_id: deployment.repo_id as i64,
            record: encode(deployment)?,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ReleaseDoc {
    id: String,
    app: String,
    seq: i64,
    state: String,
    build_id: Option<String>,
    updated_at: FirestoreTimestamp,
    record: String,
}

impl ReleaseDoc {
    fn of(release: &Release) -> Result<Self, StoreError> {
        Ok(Self {
            id: release.id.to_string(),
            app: release.app.to_string(),
            seq: release.seq as i64,
            state: release.state.as_str().to_owned(),
            build_id: release.build_id.as_ref().map(BuildId::to_string),
            updated_at: timestamp(release.updated_at),
            record: encode(release)?,
        })
    }

    fn into_record(self) -> Result<Release, StoreError> {
        decode(&self.record)
    }
}

/// The last sequence number given to an app's releases: kept apart from the releases so that
/// numbers are never reused after an app is deleted and created again.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SequenceDoc {
    last: i64,
    /// The id of the release numbered `last`, so a list of apps finds each one's newest release
    /// in one batch read (absent on sequences numbered before it was kept).
    #[serde(default)]
    newest: Option<String>,
}

impl DeliveryDoc {
    /// The document of `delivery`, expiring `keep_for` after it was received.
    fn of(delivery: &Delivery, keep_for: chrono::Duration) -> Result<Self, StoreError> {
        Ok(Self {
            app: delivery.app.as_ref().map(AppName::to_string),
            repo_id: delivery.repo_id.map(|id| id as i64),
            received_at: timestamp(delivery.received_at),
            expire_at: delivery
                .received_at
                .checked_add_signed(keep_for)
                .map(timestamp),
            record: encode(delivery)?,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct DeliveryDoc {
    /// The app whose hook received it (absent on deliveries recorded before apps were).
    #[serde(default)]
    app: Option<String>,
    repo_id: Option<i64>,
    received_at: FirestoreTimestamp,
    /// When Firestore's TTL policy on `deliveries.expire_at` (infra/firestore.tf) may delete
    /// it (absent on deliveries recorded before, which `prune` deletes itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expire_at: Option<FirestoreTimestamp>,
    record: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct AuditDoc {
    app: Option<String>,
    at: FirestoreTimestamp,
    record: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct OrphanHookDoc {
    repo: String,
    hook_id: String,
}

/// Document ids may not contain `/`; a repository's name does.
/// A delivery's document id: the app and the delivery id, hashed (a delivery id is whatever
/// the sender put in a header; a document id may not hold `/`).
/// Queues a release inside the transaction `db` is bound to: the next per-app sequence, older
/// queued releases superseded. The release and the writes that make it.
async fn queue_in(
    db: FirestoreDb,
    outside: &FirestoreDb,
    new: NewRelease,
    clock: Arc<dyn Clock>,
) -> Result<(Release, Vec<Write>), Attempt> {
    let app = new.app.to_string();
    let sequence: SequenceDoc = get_in(&db, SEQUENCES, &app).await?.unwrap_or_default();
    let seq = sequence.last + 1;
    // The app's queued releases are found outside the transaction and then read inside it by
    // id. A query inside it would lock the releases it scans, and on the emulator the whole
    // collection: two apps' pushes (one push reaches every hook of its repository at once)
    // then waited on each other past the ingress's deadline. Same-app queueing stays
    // serialized by the sequence document both read and write; a release queued after the
    // query by a transaction that committed first makes this one retry, and the retry's query
    // sees it.
    let candidates: Vec<ReleaseDoc> = outside
        .fluent()
        .select()
        .from(RELEASES)
        .filter(|q| {
            q.for_all([
                q.field("app").eq(app.as_str()),
                q.field("state").eq(ReleaseState::Queued.as_str()),
            ])
        })
        .obj()
        .query()
        .await?;
    let mut older_queued = Vec::new();
    for candidate in candidates {
        let Some(current) = get_in::<ReleaseDoc>(&db, RELEASES, &candidate.id).await? else {
            continue;
        };
        let current = current.into_record()?;
        if current.state == ReleaseState::Queued {
            older_queued.push(current);
        }
    }
    let planned = plan::queue(
        new,
        ReleaseId::random(),
        seq as u64,
        older_queued,
        clock.now(),
    );
    let release = planned.release;
    let sequence = SequenceDoc {
        last: seq,
        newest: Some(release.id.to_string()),
    };
    let mut writes = vec![Write::Sequence(app, sequence)];
    for older in &planned.superseded {
        writes.push(Write::Release(ReleaseDoc::of(older)?));
    }
    writes.push(Write::Release(ReleaseDoc::of(&release)?));
    Ok((release, writes))
}

/// Firestore's `limit` is an int32: "all of them" is its largest value.
fn query_limit(limit: usize) -> u32 {
    limit.min(i32::MAX as usize) as u32
}

fn delivery_doc_id(delivery: &Delivery) -> String {
    let app = delivery.app.as_ref().map_or("", |app| app.as_str());
    let digest = Sha256::digest(format!("{app}\n{}", delivery.id).as_bytes());
    format!("delivery-{}", hex::encode(digest))
}

fn orphan_hook_id(repo: &str, hook_id: &str) -> String {
    let digest = Sha256::digest(format!("{repo}\n{hook_id}"));
    hex::encode(&digest[..16])
}

fn emulator_credentials() -> google_cloud_auth::credentials::Credentials {
    google_cloud_auth::credentials::Credentials::from(EmulatorOwner)
}

/// The emulator accepts `Bearer owner` as the administrator, bypassing security rules.
#[derive(Debug)]
struct EmulatorOwner;

impl google_cloud_auth::credentials::CredentialsProvider for EmulatorOwner {
    async fn headers(
        &self,
        _extensions: http::Extensions,
    ) -> Result<
        google_cloud_auth::credentials::CacheableResource<http::HeaderMap>,
        google_cloud_auth::errors::CredentialsError,
    > {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer owner"),
        );
        Ok(google_cloud_auth::credentials::CacheableResource::New {
            entity_tag: google_cloud_auth::credentials::EntityTag::new(),
            data: headers,
        })
    }

    async fn universe_domain(&self) -> Option<String> {
        None
    }
}

#[async_trait]
impl Store for FirestoreStore {
    async fn put_deployment(&self, deployment: &Deployment) -> Result<(), StoreError> {
        let _app = self.lock_app(deployment.app.as_str()).await;
        self.transact(|db| {
            let mut deployment = deployment.clone();
            async move {
                let stored = get_in::<DeploymentDoc>(&db, DEPLOYMENTS, deployment.app.as_str())
                    .await?
                    .map(|doc| decode::<Deployment>(&doc.record))
                    .transpose()?;
                if let Some(stored) = stored {
                    deployment.live_release = stored.live_release;
                    deployment.url = stored.url;
                }
                Ok(((), vec![Write::Deployment(DeploymentDoc::of(&deployment)?)]))
            }
        })
        .await
    }

    async fn insert_deployment(&self, deployment: &Deployment) -> Result<bool, StoreError> {
        let doc = DeploymentDoc::of(deployment)?;
        self.create_if_absent(DEPLOYMENTS, &doc.app, &doc).await
    }

    async fn deployment(&self, app: &AppName) -> Result<Option<Deployment>, StoreError> {
        let doc: Option<DeploymentDoc> = self.get(DEPLOYMENTS, app.as_str()).await?;
        doc.map(|doc| decode(&doc.record)).transpose()
    }

    async fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        let docs: Vec<DeploymentDoc> = self
            .db
            .fluent()
            .select()
            .from(DEPLOYMENTS)
            .order(|o| o.fields([o.field("app").asc()]))
            .obj()
            .query()
            .await
            .map_err(store_error)?;
        docs.iter().map(|doc| decode(&doc.record)).collect()
    }

    async fn deployments_of_repo(&self, repo_id: u64) -> Result<Vec<Deployment>, StoreError> {
        let mut docs: Vec<DeploymentDoc> = self
            .db
            .fluent()
            .select()
            .from(DEPLOYMENTS)
            .filter(|q| q.field("repo_id").eq(repo_id as i64))
            .obj()
            .query()
            .await
            .map_err(store_error)?;
        // Sorted here: ordering by `app` in the query would need a composite index.
        docs.sort_by(|a, b| a.app.cmp(&b.app));
        docs.iter().map(|doc| decode(&doc.record)).collect()
    }

    async fn delete_deployment(&self, app: &AppName) -> Result<(), StoreError> {
        let _app = self.lock_app(app.as_str()).await;
        let app = app.to_string();
        loop {
            let app = app.clone();
            let done = self
                .transact(move |db| {
                    let app = app.clone();
                    async move {
                        let releases: Vec<ReleaseDoc> = db
                            .fluent()
                            .select()
                            .from(RELEASES)
                            .filter(|q| q.field("app").eq(app.as_str()))
                            .limit(WRITES_PER_COMMIT as u32)
                            .obj()
                            .query()
                            .await?;
                        let last_chunk = releases.len() < WRITES_PER_COMMIT;
                        let mut writes: Vec<Write> = releases
                            .into_iter()
                            .map(|release| Write::Delete(RELEASES, release.id))
                            .collect();
                        if last_chunk {
                            writes.push(Write::Delete(HOOK_HEALTH, app.clone()));
                            writes.push(Write::Delete(DEPLOYMENTS, app));
                        }
                        Ok((last_chunk, writes))
                    }
                })
                .await?;
            if done {
                return Ok(());
            }
        }
    }

    async fn queue_release(&self, new: NewRelease) -> Result<Release, StoreError> {
        let _app = self.lock_app(new.app.as_str()).await;
        self.transact(|db| queue_in(db, &self.db, new.clone(), self.clock.clone()))
            .await
    }

    async fn release(&self, id: &ReleaseId) -> Result<Option<Release>, StoreError> {
        let doc: Option<ReleaseDoc> = self.get(RELEASES, id.as_str()).await?;
        doc.map(ReleaseDoc::into_record).transpose()
    }

    async fn releases(&self, app: &AppName, limit: usize) -> Result<Vec<Release>, StoreError> {
        let app = app.to_string();
        self.query_releases(
            |q| q.field("app").eq(app.as_str()),
            ("seq", FirestoreQueryDirection::Descending),
            Some(query_limit(limit)),
        )
        .await
    }

    async fn releases_before(
        &self,
        app: &AppName,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Release>, StoreError> {
        let app = app.to_string();
        // Firestore's integers are signed 64-bit: a sequence past that is past every release.
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        self.query_releases(
            |q| {
                q.for_all([
                    q.field("app").eq(app.as_str()),
                    q.field("seq").less_than(before),
                ])
            },
            ("seq", FirestoreQueryDirection::Descending),
            Some(query_limit(limit)),
        )
        .await
    }

    /// Two batch reads: the apps' sequences, which name each one's newest release, then those
    /// releases and the live ones.
    async fn newest_and_live(
        &self,
        deployments: &[Deployment],
    ) -> Result<Vec<AppReleases>, StoreError> {
        let apps: Vec<String> = deployments.iter().map(|d| d.app.to_string()).collect();
        let sequences: HashMap<String, SequenceDoc> = self.get_many(SEQUENCES, &apps).await?;
        let mut ids: Vec<String> = deployments
            .iter()
            .filter_map(|d| d.live_release.as_ref().map(ToString::to_string))
            .collect();
        let mut found = Vec::new();
        for deployment in deployments {
            match sequences.get(deployment.app.as_str()) {
                Some(SequenceDoc {
                    newest: Some(id), ..
                }) => ids.push(id.clone()),
                // Numbered before sequences named their newest release: ask the app itself.
                Some(_) => found.extend(self.releases(&deployment.app, 1).await?),
                None => {} // Never released.
            }
        }
        // Each document once: the newest is often the live one.
        ids.sort();
        ids.dedup();
        let releases: HashMap<String, ReleaseDoc> = self.get_many(RELEASES, &ids).await?;
        for doc in releases.into_values() {
            found.push(doc.into_record()?);
        }
        Ok(AppReleases::pair(deployments, found))
    }

    async fn release_by_build(&self, build_id: &BuildId) -> Result<Option<Release>, StoreError> {
        let build_id = build_id.as_str();
        let docs: Vec<ReleaseDoc> = self
            .db
            .fluent()
            .select()
            .from(RELEASES)
            .filter(|q| q.field("build_id").eq(build_id))
            .obj()
            .query()
            .await
            .map_err(store_error)?;
        // A rollback reuses its target's build id: the build belongs to the oldest.
        docs.into_iter()
            .min_by_key(|doc| doc.seq)
            .map(ReleaseDoc::into_record)
            .transpose()
    }

    async fn releases_in_state(
        &self,
        state: ReleaseState,
        before: Timestamp,
    ) -> Result<Vec<Release>, StoreError> {
        let before = timestamp(before);
        self.query_releases(
            |q| {
                q.for_all([
                    q.field("state").eq(state.as_str()),
                    q.field("updated_at").less_than(before),
                ])
            },
            ("updated_at", FirestoreQueryDirection::Ascending),
            None,
        )
        .await
    }

    async fn transition(
        &self,
        id: &ReleaseId,
        from: ReleaseState,
        to: ReleaseState,
        update: ReleaseUpdate,
    ) -> Result<Release, StoreError> {
        let transition = Transition::new(id, from, to, update)?;
        // A release never changes app, so its app can be read before the transaction.
        let app = self
            .release(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("release {id}")))?
            .app;
        let _app = self.lock_app(app.as_str()).await;
        self.transact(|db| {
            let (transition, clock) = (transition.clone(), self.clock.clone());
            async move {
                let release = get_in::<ReleaseDoc>(&db, RELEASES, transition.id.as_str())
                    .await?
                    .map(ReleaseDoc::into_record)
                    .transpose()?;
                let (mut deployment, mut live) = (None, None);
                if transition.goes_live()
                    && let Some(release) = &release
                {
                    deployment = get_in::<DeploymentDoc>(&db, DEPLOYMENTS, release.app.as_str())
                        .await?
                        .map(|doc| decode::<Deployment>(&doc.record))
                        .transpose()?;
                    if let Some(live_id) = deployment.as_ref().and_then(|d| d.live_release.clone())
                    {
                        live = get_in::<ReleaseDoc>(&db, RELEASES, live_id.as_str())
                            .await?
                            .map(ReleaseDoc::into_record)
                            .transpose()?;
                    }
                }
                let moved = transition.plan(release, deployment, live.as_ref(), clock.now())?;
                let mut writes = vec![Write::Release(ReleaseDoc::of(&moved.release)?)];
                if let Some(deployment) = &moved.deployment {
                    writes.push(Write::Deployment(DeploymentDoc::of(deployment)?));
                }
                Ok((moved.release, writes))
            }
        })
        .await
    }

    async fn record_delivery(&self, delivery: &Delivery) -> Result<bool, StoreError> {
        let doc = DeliveryDoc::of(delivery, self.keep_deliveries_for)?;
        // Keyed by the app and GitHub's delivery GUID (one per event, the same for every
        // hook), so a replay to the same hook finds it.
        self.create_if_absent(DELIVERIES, &delivery_doc_id(delivery), &doc)
            .await
    }

    async fn accept_push(
        &self,
        delivery: &Delivery,
        new: NewRelease,
    ) -> Result<Option<Release>, StoreError> {
        let _app = self.lock_app(new.app.as_str()).await;
        let id = delivery_doc_id(delivery);
        let doc = DeliveryDoc::of(delivery, self.keep_deliveries_for)?;
        self.transact(|db| {
            let (id, doc, new, clock) = (id.clone(), doc.clone(), new.clone(), self.clock.clone());
            let outside = self.db.clone();
            async move {
                // Read in the transaction, so a replay racing this one makes one of them retry.
                let seen: Option<DeliveryDoc> = get_in(&db, DELIVERIES, &id).await?;
                if seen.is_some() {
                    return Ok((None, Vec::new()));
                }
                let (release, mut writes) = queue_in(db, &outside, new, clock).await?;
                writes.push(Write::Delivery(id, doc));
                Ok((Some(release), writes))
            }
        })
        .await
    }

    async fn deliveries_of_app(
        &self,
        app: &AppName,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let docs: Vec<DeliveryDoc> = self
            .db
            .fluent()
            .select()
            .from(DELIVERIES)
            .filter(|q| q.field("app").eq(app.as_str()))
            .order(|o| o.fields([o.field("received_at").desc()]))
            .limit(query_limit(limit))
            .obj()
            .query()
            .await
            .map_err(store_error)?;
        docs.iter().map(|doc| decode(&doc.record)).collect()
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let doc = AuditDoc {
            app: entry.app.clone(),
            at: timestamp(entry.at),
            record: encode(entry)?,
        };
        self.db
            .fluent()
            .insert()
            .into(AUDIT)
            .generate_document_id()
            .object(&doc)
            .execute::<()>()
            .await
            .map_err(store_error)
    }

    async fn audit(
        &self,
        app: Option<&AppName>,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let app = app.map(ToString::to_string);
        let docs: Vec<AuditDoc> = self
            .db
            .fluent()
            .select()
            .from(AUDIT)
            .filter(|q| app.as_ref().and_then(|app| q.field("app").eq(app.as_str())))
            .order(|o| o.fields([o.field("at").desc()]))
            .offset(query_limit(skip))
            .limit(query_limit(limit))
            .obj()
            .query()
            .await
            .map_err(store_error)?;
        docs.iter().map(|doc| decode(&doc.record)).collect()
    }

    async fn put_hook_health(&self, app: &AppName, health: &HookHealth) -> Result<(), StoreError> {
        let doc = HookHealthDoc {
            record: encode(health)?,
        };
        self.db
            .fluent()
            .update()
            .in_col(HOOK_HEALTH)
            .document_id(app.as_str())
            .object(&doc)
            .execute::<()>()
            .await
            .map_err(store_error)
    }

    async fn hook_health(&self, app: &AppName) -> Result<Option<HookHealth>, StoreError> {
        let doc: Option<HookHealthDoc> = self
            .db
            .fluent()
            .select()
            .by_id_in(HOOK_HEALTH)
            .obj()
            .one(app.as_str())
            .await
            .map_err(store_error)?;
        doc.map(|doc| decode(&doc.record)).transpose()
    }

    async fn add_orphan_hook(&self, repo: &str, hook_id: &HookId) -> Result<(), StoreError> {
        let hook_id = hook_id.as_str();
        let doc = OrphanHookDoc {
            repo: repo.to_owned(),
            hook_id: hook_id.to_owned(),
        };
        self.db
            .fluent()
            .update()
            .in_col(ORPHAN_HOOKS)
            .document_id(orphan_hook_id(repo, hook_id))
            .object(&doc)
            .execute::<()>()
            .await
            .map_err(store_error)
    }

    async fn orphan_hooks(&self) -> Result<Vec<(String, HookId)>, StoreError> {
        let docs: Vec<OrphanHookDoc> = self
            .db
            .fluent()
            .select()
            .from(ORPHAN_HOOKS)
            .obj()
            .query()
            .await
            .map_err(store_error)?;
        Ok(docs
            .into_iter()
            .map(|doc| (doc.repo, HookId::new(doc.hook_id)))
            .collect())
    }

    async fn remove_orphan_hook(&self, repo: &str, hook_id: &HookId) -> Result<(), StoreError> {
        let hook_id = hook_id.as_str();
        self.db
            .fluent()
            .delete()
            .from(ORPHAN_HOOKS)
            .document_id(orphan_hook_id(repo, hook_id))
            .execute()
            .await
            .map_err(store_error)
    }

    /// The deliveries by their `received_at` (Firestore's own single-field index); the
    /// releases app by app, each app found by its sequence document, whose `last` numbers its
    /// newest release. A number is given in the transaction that creates its release, and
    /// releases go only all at once with their app, or here from below the newest kept: so an
    /// app's releases are numbered without gaps up to `last`, its newest `releases_kept` are
    /// those numbered above `last - releases_kept`, and finding where the older ones start
    /// costs no read of the newer ones (an offset would bill every one it skips, each run).
    async fn prune(&self, retention: &Retention, now: Timestamp) -> Result<Pruned, StoreError> {
        let deliveries = match retention.deliveries_cut(now) {
            Some(cut) => self.prune_deliveries(cut).await?,
            None => 0,
        };
        let sequences: Vec<SequenceHead> = self
            .db
            .fluent()
            .select()
            .fields(["last"])
            .from(SEQUENCES)
            .obj()
            .query()
            .await
            .map_err(store_error)?;
        let kept = i64::try_from(retention.releases_kept).unwrap_or(i64::MAX);
        let mut releases = 0;
        for sequence in sequences {
            let below = sequence.last.saturating_sub(kept).saturating_add(1);
            if below <= 1 {
                continue; // Numbers start at 1: it has no more than it keeps.
            }
            let budget = Pruned::AT_MOST - releases;
            if budget == 0 {
                break;
            }
            releases += self.prune_releases_of(&sequence.app, below, budget).await?;
        }
        Ok(Pruned {
            deliveries,
            releases,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infra_creates_every_composite_index_the_queries_need() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../infra/firestore.indexes.json"
        );
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let declared: Vec<(String, Vec<(String, String)>)> = file["indexes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|index| {
                let fields = index["fields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| {
                        let text = |key: &str| f[key].as_str().unwrap().to_owned();
                        (text("fieldPath"), text("order"))
                    })
                    .collect();
                (
                    index["collectionGroup"].as_str().unwrap().to_owned(),
                    fields,
                )
            })
            .collect();
        for (collection, fields) in COMPOSITE_INDEXES {
            let wanted: Vec<(String, String)> = fields
                .iter()
                .map(|(field, order)| (field.to_string(), order.to_string()))
                .collect();
            assert!(
                declared.contains(&(collection.to_string(), wanted.clone())),
                "{path} lacks the index {collection} {wanted:?}"
            );
        }
        assert_eq!(
            declared.len(),
            COMPOSITE_INDEXES.len(),
            "an index nothing uses"
        );
    }
}
