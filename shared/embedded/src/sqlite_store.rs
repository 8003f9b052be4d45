//! `Store` on SQLite (bundled, WAL): one file under the data dir, records kept as JSON documents
//! beside the columns queries filter on, every read-modify-write in a savepoint of its own inside
//! the database thread's immediate transaction (`Database`: group commit).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use crate::database::{Database, Unavailable};
use runway_core::clock::{self, Clock};
use runway_core::domain::{
    AppName, AuditEntry, BuildId, Delivery, Deployment, HookHealth, HookId, NewRelease, Release,
    ReleaseId, ReleaseState, ReleaseUpdate, Timestamp,
};
use runway_core::plan::{self, Transition};
use runway_core::ports::{AppReleases, Pruned, Retention, Store, StoreError};

/// Each entry migrates the schema from version `index` to `index + 1`.

#[derive(Clone)]
pub struct SqliteStore {
    database: Database,
    clock: Arc<dyn Clock>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self::on(Database::open(path)?))
    }

    /// The store on a connection it shares (with the queue, in one process: two connections
    /// to one file would wait on each other's write lock).
    pub(crate) fn on(database: Database) -> Self {
        Self {
            database,
            clock: clock::system(),
        }
    }

    /// The clock the store stamps what it writes with.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Runs `work` in the database, off the async threads.
    async fn with<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        Ok(self.database.with(work).await?)
    }
}

fn other(error: impl Into<anyhow::Error>) -> StoreError {
    StoreError::Other(error.into())
}

/// What goes wrong inside a database closure: SQLite's errors (which `rusqlite` defines and the
/// core cannot know), or the store's own.
#[derive(Debug)]
pub(crate) enum DbError {
    Sqlite(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for DbError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Sqlite(error)
    }
}

impl From<Unavailable> for DbError {
    fn from(error: Unavailable) -> Self {
        Self::Store(if error.full {
            StoreError::Full(error.to_string())
        } else {
            StoreError::Unavailable(error.to_string())
        })
    }
}

impl From<StoreError> for DbError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl From<DbError> for StoreError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Sqlite(error) => store_error(error),
            DbError::Store(error) => error,
        }
    }
}

/// A busy or locked database is worth retrying; a full disk is for a person to mend; anything
/// else is not expected.
pub(crate) fn store_error(error: rusqlite::Error) -> StoreError {
    match error {
        rusqlite::Error::SqliteFailure(code, _)
            if matches!(
                code.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable(error.to_string())
        }
        rusqlite::Error::SqliteFailure(code, _) if code.code == rusqlite::ErrorCode::DiskFull => {
            StoreError::Full(error.to_string())
        }
        error => StoreError::Other(error.into()),
    }
}

fn to_doc(value: &impl serde::Serialize) -> Result<String, DbError> {
    Ok(serde_json::to_string(value).map_err(other)?)
}

fn from_doc<T: serde::de::DeserializeOwned>(doc: String) -> Result<T, DbError> {
    Ok(serde_json::from_str(&doc).map_err(other)?)
}

fn docs<T: serde::de::DeserializeOwned>(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>, DbError> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map(params, |row| row.get::<_, String>(0))?;
    rows.map(|doc| from_doc(doc?)).collect()
}

fn load_release(connection: &Connection, id: &str) -> Result<Option<Release>, DbError> {
    connection
        .prepare_cached("SELECT doc FROM releases WHERE id = ?1")?
        .query_row([id], |row| row.get::<_, String>(0))
        .optional()?
        .map(from_doc)
        .transpose()
}

fn save_release(connection: &Connection, release: &Release) -> Result<(), DbError> {
    connection
        .prepare_cached(
            "INSERT INTO releases (id, app, seq, state, build_id, updated_at, doc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO UPDATE SET state = ?4, build_id = ?5, updated_at = ?6, doc = ?7",
        )?
        .execute(params![
            release.id.as_str(),
            release.app.as_str(),
            release.seq as i64,
            release.state.as_str(),
            release.build_id.as_ref().map(BuildId::as_str),
            release.updated_at.to_rfc3339(),
            to_doc(release)?,
        ])?;
    Ok(())
}

fn save_deployment(connection: &Connection, deployment: &Deployment) -> Result<(), DbError> {
    connection.execute(
        "INSERT INTO deployments (app, repo_id, doc) VALUES (?1, ?2, ?3)
         ON CONFLICT (app) DO UPDATE SET repo_id = ?2, doc = ?3",
        params![
            deployment.app.as_str(),
            deployment.repo_id as i64,
            to_doc(deployment)?
        ],
    )?;
    Ok(())
}

fn load_deployment(connection: &Connection, app: &str) -> Result<Option<Deployment>, DbError> {
    connection
        .prepare_cached("SELECT doc FROM deployments WHERE app = ?1")?
        .query_row([app], |row| row.get::<_, String>(0))
        .optional()?
        .map(from_doc)
        .transpose()
}

/// Inserts the delivery unless this app's hook received its id before; whether it did.
fn insert_delivery(c: &Connection, delivery: &Delivery) -> Result<bool, DbError> {
    let inserted = c
        .prepare_cached(
            "INSERT INTO deliveries (app, id, repo_id, received_at, doc)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (app, id) DO NOTHING",
        )?
        .execute(params![
            delivery.app.as_ref().map_or("", |app| app.as_str()),
            delivery.id.as_str(),
            delivery.repo_id.map(|id| id as i64),
            delivery.received_at.to_rfc3339(),
            to_doc(delivery)?
        ])?;
    Ok(inserted == 1)
}

/// Queues a release inside `transaction`: the next per-app sequence, older queued releases
/// superseded.
fn queue_in(transaction: &Connection, new: NewRelease, now: Timestamp) -> Result<Release, DbError> {
    let app = new.app.to_string();
    // The sequence lives apart from the releases, so numbers are never reused after releases
    // are pruned or an app is deleted and created again.
    let seq: i64 = transaction
        .prepare_cached(
            "INSERT INTO release_sequences (app, last) VALUES (?1, 1)
             ON CONFLICT (app) DO UPDATE SET last = last + 1 RETURNING last",
        )?
        .query_row([&app], |row| row.get(0))?;
    let older_queued: Vec<Release> = docs(
        transaction,
        "SELECT doc FROM releases WHERE app = ?1 AND state = 'queued'",
        [&app],
    )?;
    let planned = plan::queue(new, ReleaseId::random(), seq as u64, older_queued, now);
    for older in &planned.superseded {
        save_release(transaction, older)?;
    }
    save_release(transaction, &planned.release)?;
    Ok(planned.release)
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_deployment(&self, deployment: &Deployment) -> Result<(), StoreError> {
        let mut deployment = deployment.clone();
        self.with(move |c| {
            let transaction = c.savepoint()?;
            if let Some(stored) = load_deployment(&transaction, deployment.app.as_str())? {
                deployment.live_release = stored.live_release;
                deployment.url = stored.url;
            }
            save_deployment(&transaction, &deployment)?;
            transaction.commit()?;
            Ok(())
        })
        .await
    }

    async fn insert_deployment(&self, deployment: &Deployment) -> Result<bool, StoreError> {
        let deployment = deployment.clone();
        self.with(move |c| {
            let inserted = c.execute(
                "INSERT INTO deployments (app, repo_id, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT (app) DO NOTHING",
                params![
                    deployment.app.as_str(),
                    deployment.repo_id as i64,
                    to_doc(&deployment)?
                ],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn deployment(&self, app: &AppName) -> Result<Option<Deployment>, StoreError> {
        let app = app.to_string();
        self.with(move |c| load_deployment(c, &app)).await
    }

    async fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        self.with(|c| docs(c, "SELECT doc FROM deployments ORDER BY app", []))
            .await
    }

    async fn deployments_of_repo(&self, repo_id: u64) -> Result<Vec<Deployment>, StoreError> {
        self.with(move |c| {
            docs(
                c,
                "SELECT doc FROM deployments WHERE repo_id = ?1 ORDER BY app",
                [repo_id as i64],
            )
        })
        .await
    }

    async fn delete_deployment(&self, app: &AppName) -> Result<(), StoreError> {
        let app = app.to_string();
        self.with(move |c| {
            let transaction = c.savepoint()?;
            transaction.execute("DELETE FROM releases WHERE app = ?1", [&app])?;
            transaction.execute("DELETE FROM deployments WHERE app = ?1", [&app])?;
            transaction.execute("DELETE FROM hook_health WHERE app = ?1", [&app])?;
            transaction.commit()?;
            Ok(())
        })
        .await
    }

    async fn put_hook_health(&self, app: &AppName, health: &HookHealth) -> Result<(), StoreError> {
        let (app, doc) = (app.to_string(), to_doc(health));
        self.with(move |c| {
            c.execute(
                "INSERT INTO hook_health (app, doc) VALUES (?1, ?2)
                 ON CONFLICT (app) DO UPDATE SET doc = excluded.doc",
                [&app, &doc?],
            )?;
            Ok(())
        })
        .await
    }

    async fn hook_health(&self, app: &AppName) -> Result<Option<HookHealth>, StoreError> {
        let app = app.to_string();
        self.with(move |c| {
            let doc: Option<String> = c
                .query_row(
                    "SELECT doc FROM hook_health WHERE app = ?1",
                    [&app],
                    |row| row.get(0),
                )
                .optional()?;
            doc.map(from_doc).transpose()
        })
        .await
    }

    async fn queue_release(&self, new: NewRelease) -> Result<Release, StoreError> {
        let now = self.clock.now();
        self.with(move |c| {
            let transaction = c.savepoint()?;
            let release = queue_in(&transaction, new, now)?;
            transaction.commit()?;
            Ok(release)
        })
        .await
    }

    async fn release(&self, id: &ReleaseId) -> Result<Option<Release>, StoreError> {
        let id = id.clone();
        self.with(move |c| load_release(c, id.as_str())).await
    }

    async fn releases(&self, app: &AppName, limit: usize) -> Result<Vec<Release>, StoreError> {
        let app = app.to_string();
        self.with(move |c| {
            docs(
                c,
                "SELECT doc FROM releases WHERE app = ?1 ORDER BY seq DESC LIMIT ?2",
                params![app, limit as i64],
            )
        })
        .await
    }

    async fn releases_before(
        &self,
        app: &AppName,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Release>, StoreError> {
        let app = app.to_string();
        // SQLite's integers are signed: a sequence past i64 is past every release.
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |c| {
            docs(
                c,
                "SELECT doc FROM releases WHERE app = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
                params![app, before, limit],
            )
        })
        .await
    }

    async fn newest_and_live(
        &self,
        deployments: &[Deployment],
    ) -> Result<Vec<AppReleases>, StoreError> {
        let apps: Vec<&str> = deployments.iter().map(|d| d.app.as_str()).collect();
        let live: Vec<&str> = deployments
            .iter()
            .filter_map(|d| d.live_release.as_deref())
            .collect();
        // The lists go in as JSON arrays: one statement, whatever their length.
        let (apps, live) = (to_doc(&apps)?, to_doc(&live)?);
        let found = self
            .with(move |c| {
                docs(
                    c,
                    "SELECT r.doc FROM json_each(?1) AS wanted JOIN releases AS r
                       ON r.app = wanted.value
                       AND r.seq = (SELECT MAX(seq) FROM releases WHERE app = wanted.value)
                     UNION ALL
                     SELECT r.doc FROM json_each(?2) AS wanted JOIN releases AS r
                       ON r.id = wanted.value",
                    params![apps, live],
                )
            })
            .await?;
        Ok(AppReleases::pair(deployments, found))
    }

    async fn release_by_build(&self, build_id: &BuildId) -> Result<Option<Release>, StoreError> {
        let build_id = build_id.to_string();
        self.with(move |c| {
            // A rollback reuses its target's build id: the build belongs to the oldest.
            Ok(docs(
                c,
                "SELECT doc FROM releases WHERE build_id = ?1 ORDER BY seq LIMIT 1",
                [build_id],
            )?
            .pop())
        })
        .await
    }

    async fn releases_in_state(
        &self,
        state: ReleaseState,
        before: Timestamp,
    ) -> Result<Vec<Release>, StoreError> {
        self.with(move |c| {
            docs(
                c,
                "SELECT doc FROM releases WHERE state = ?1 AND updated_at < ?2 ORDER BY updated_at",
                params![state.as_str(), before.to_rfc3339()],
            )
        })
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
        let now = self.clock.now();
        self.with(move |c| {
            let transaction = c.savepoint()?;
            let release = load_release(&transaction, transition.id.as_str())?;
            let (mut deployment, mut live) = (None, None);
            if transition.goes_live()
                && let Some(release) = &release
            {
                deployment = load_deployment(&transaction, release.app.as_str())?;
                if let Some(live_id) = deployment.as_ref().and_then(|d| d.live_release.clone()) {
                    live = load_release(&transaction, live_id.as_str())?;
                }
            }
            let moved = transition.plan(release, deployment, live.as_ref(), now)?;
            save_release(&transaction, &moved.release)?;
            if let Some(deployment) = &moved.deployment {
                save_deployment(&transaction, deployment)?;
            }
            transaction.commit()?;
            Ok(moved.release)
        })
        .await
    }

    async fn record_delivery(&self, delivery: &Delivery) -> Result<bool, StoreError> {
        let delivery = delivery.clone();
        self.with(move |c| insert_delivery(c, &delivery)).await
    }

    async fn accept_push(
        &self,
        delivery: &Delivery,
        new: NewRelease,
    ) -> Result<Option<Release>, StoreError> {
        let now = self.clock.now();
        let delivery = delivery.clone();
        self.with(move |c| {
            let transaction = c.savepoint()?;
            // A replay writes nothing: the transaction is dropped, so rolled back.
            if !insert_delivery(&transaction, &delivery)? {
                return Ok(None);
            }
            let release = queue_in(&transaction, new, now)?;
            transaction.commit()?;
            Ok(Some(release))
        })
        .await
    }

    async fn deliveries_of_app(
        &self,
        app: &AppName,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let app = app.to_string();
        self.with(move |c| {
            docs(
                c,
                "SELECT doc FROM deliveries WHERE app = ?1 ORDER BY received_at DESC LIMIT ?2",
                params![app, limit as i64],
            )
        })
        .await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let entry = entry.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO audit (app, doc) VALUES (?1, ?2)",
                params![entry.app, to_doc(&entry)?],
            )?;
            Ok(())
        })
        .await
    }

    async fn audit(
        &self,
        app: Option<&AppName>,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let app = app.map(ToString::to_string);
        let (skip, limit) = (skip as i64, limit as i64);
        self.with(move |c| match app {
            Some(app) => docs(
                c,
                "SELECT doc FROM audit WHERE app = ?1 ORDER BY seq DESC LIMIT ?2 OFFSET ?3",
                params![app, limit, skip],
            ),
            None => docs(
                c,
                "SELECT doc FROM audit ORDER BY seq DESC LIMIT ?1 OFFSET ?2",
                [limit, skip],
            ),
        })
        .await
    }

    async fn add_orphan_hook(&self, repo: &str, hook_id: &HookId) -> Result<(), StoreError> {
        let (repo, hook_id) = (repo.to_owned(), hook_id.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO orphan_hooks (repo, hook_id) VALUES (?1, ?2)",
                [repo, hook_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn orphan_hooks(&self) -> Result<Vec<(String, HookId)>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare("SELECT repo, hook_id FROM orphan_hooks")?;
            let rows = statement.query_map([], |row| {
                Ok((row.get(0)?, HookId::new(row.get::<_, String>(1)?)))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn remove_orphan_hook(&self, repo: &str, hook_id: &HookId) -> Result<(), StoreError> {
        let (repo, hook_id) = (repo.to_owned(), hook_id.to_string());
        self.with(move |c| {
            c.execute(
                "DELETE FROM orphan_hooks WHERE repo = ?1 AND hook_id = ?2",
                [repo, hook_id],
            )?;
            Ok(())
        })
        .await
    }

    /// One savepoint: the deliveries by their `received_at` index, the releases by each app's
    /// rank by `seq`, with the deployments' live releases read in the same savepoint (no
    /// release can go live between that read and the deletion).
    async fn prune(&self, retention: &Retention, now: Timestamp) -> Result<Pruned, StoreError> {
        // `received_at` is `to_rfc3339()` of a UTC time, and so is the cut: the same
        // `+00:00` suffix, and fractions that chrono writes only when not zero, in 3, 6 or 9
        // digits. Such strings sort as their times do (`+` sorts below every digit, so a
        // shorter fraction sorts first exactly when it is smaller), which lets the index
        // find the old ones; `sqlite_store::tests` holds the format to that.
        let cut = retention.deliveries_cut(now).map(|cut| cut.to_rfc3339());
        let kept = i64::try_from(retention.releases_kept).unwrap_or(i64::MAX);
        let finished: Vec<&str> = ReleaseState::ALL
            .into_iter()
            .filter(|state| state.is_terminal())
            .map(ReleaseState::as_str)
            .collect();
        let finished = to_doc(&finished)?;
        let at_most = Pruned::AT_MOST as i64;
        self.with(move |c| {
            let transaction = c.savepoint()?;
            let deliveries = match &cut {
                Some(cut) => transaction.execute(
                    "DELETE FROM deliveries WHERE rowid IN (
                       SELECT rowid FROM deliveries WHERE received_at < ?1
                       ORDER BY received_at LIMIT ?2)",
                    params![cut, at_most],
                )?,
                None => 0,
            };
            let releases = transaction.execute(
                "DELETE FROM releases WHERE id IN (
                   SELECT id FROM (
                     SELECT id, app, seq, state,
                            ROW_NUMBER() OVER (PARTITION BY app ORDER BY seq DESC) AS newer
                     FROM releases)
                   WHERE newer > ?1
                     AND state IN (SELECT value FROM json_each(?2))
                     AND id NOT IN (
                       SELECT json_extract(doc, '$.live_release') FROM deployments
                       WHERE json_extract(doc, '$.live_release') IS NOT NULL)
                   ORDER BY app, seq LIMIT ?3)",
                params![kept, finished, at_most],
            )?;
            transaction.commit()?;
            Ok(Pruned {
                deliveries,
                releases,
            })
        })
        .await
    }
}

/// The behaviour every `Store` shares is checked by the contract suite in
/// `tests/contract_store.rs`; what is SQLite's own is checked here.
#[cfg(test)]
mod tests {
    use super::*;
    use runway_core::domain::Trigger;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("runway.db")).unwrap();
        (dir, store)
    }

    fn app() -> AppName {
        AppName::parse("demo").unwrap()
    }

    fn new_release() -> NewRelease {
        NewRelease {
            app: app(),
            trigger: Trigger::Push,
            actor: "ada".into(),
            commit: None,
            rollback_of: None,
            clear_cache: false,
        }
    }

    /// `received_at` is compared as text: chrono writes a fraction of a second only when it
    /// is not zero, in 3, 6 or 9 digits, and each of those must still sort as its time does.
    #[tokio::test]
    async fn deliveries_are_pruned_by_time_whatever_digits_their_seconds_have() {
        use chrono::{TimeZone, Utc};
        use runway_core::ports::{Pruned, Retention};

        let (_dir, store) = store();
        let second = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let at = |nanos: i64| second + chrono::Duration::nanoseconds(nanos);
        // The cut: 12:00:00.5, written "…00.500+00:00".
        let retention = Retention::new(chrono::Duration::days(30), 100);
        let now = at(500_000_000) + retention.deliveries_for;
        let received = [
            ("whole-second", at(0), true),
            ("nine-digits-below", at(499_999_999), true),
            ("six-digits-below", at(499_999_000), true),
            ("the-cut-itself", at(500_000_000), false),
            ("six-digits-above", at(500_001_000), false),
            ("nine-digits-above", at(500_000_001), false),
            ("next-second", at(1_000_000_000), false),
        ];
        for (id, received_at, _) in received {
            let delivery = Delivery {
                id: id.into(),
                app: Some(app()),
                event: "push".into(),
                repo_id: Some(7),
                git_ref: None,
                commit: None,
                received_at,
                outcome: String::new(),
            };
            assert!(store.record_delivery(&delivery).await.unwrap());
        }

        let pruned = store.prune(&retention, now).await.unwrap();

        let mut kept: Vec<String> = store
            .deliveries_of_app(&app(), 100)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id.to_string())
            .collect();
        kept.sort();
        let mut expected: Vec<String> = received
            .iter()
            .filter(|(_, _, gone)| !gone)
            .map(|(id, _, _)| id.to_string())
            .collect();
        expected.sort();
        assert_eq!(kept, expected);
        assert_eq!(
            pruned,
            Pruned {
                deliveries: 3,
                releases: 0
            }
        );
    }

    #[tokio::test]
    async fn records_survive_reopening_the_database() {
        let (dir, store) = store();
        let release = store.queue_release(new_release()).await.unwrap();
        drop(store);
        let reopened = SqliteStore::open(&dir.path().join("runway.db")).unwrap();
        assert_eq!(reopened.release(&release.id).await.unwrap().unwrap().seq, 1);
        assert_eq!(reopened.queue_release(new_release()).await.unwrap().seq, 2);
    }
}
