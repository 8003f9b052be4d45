//! The one SQLite file the embedded store and queue live in: opening it (WAL, foreign keys, a
//! busy timeout), the one list of migrations both need, and running work on a connection off
//! the async threads.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rusqlite::{Connection, TransactionBehavior};

/// Every schema change, in order; `PRAGMA user_version` counts those applied.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE deployments (
        app      TEXT PRIMARY KEY,
        repo_id  INTEGER NOT NULL,
        doc      TEXT NOT NULL
    );
    CREATE INDEX deployments_by_repo ON deployments (repo_id);
    CREATE TABLE releases (
        id         TEXT PRIMARY KEY,
        app        TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        state      TEXT NOT NULL,
        build_id   TEXT,
        updated_at TEXT NOT NULL,
        doc        TEXT NOT NULL,
        UNIQUE (app, seq)
    );
    CREATE INDEX releases_by_state ON releases (state, updated_at);
    CREATE INDEX releases_by_build ON releases (build_id);
    CREATE TABLE release_sequences (
        app  TEXT PRIMARY KEY,
        last INTEGER NOT NULL
    );
    CREATE TABLE deliveries (
        id          TEXT PRIMARY KEY,
        repo_id     INTEGER,
        received_at TEXT NOT NULL,
        doc         TEXT NOT NULL
    );
    CREATE INDEX deliveries_by_repo ON deliveries (repo_id, received_at);
    CREATE TABLE audit (
        seq  INTEGER PRIMARY KEY AUTOINCREMENT,
        app  TEXT,
        doc  TEXT NOT NULL
    );
    CREATE TABLE orphan_hooks (
        repo    TEXT NOT NULL,
        hook_id TEXT NOT NULL,
        PRIMARY KEY (repo, hook_id)
    );
"#,
    // The queue's table. IF NOT EXISTS: databases from before this list held it already.
    r#"
    CREATE TABLE IF NOT EXISTS queue_messages (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        topic           TEXT NOT NULL,
        data            BLOB NOT NULL,
        attributes      TEXT NOT NULL,
        ordering_key    TEXT,
        publish_time    TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        dead            INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT
    );
    CREATE INDEX IF NOT EXISTS queue_due ON queue_messages (dead, next_attempt_ms);
"#,
    // A delivery is known by the app whose hook received it and its id: GitHub sends one id
    // per event to every hook. Deliveries recorded before keep an empty app.
    r#"
    CREATE TABLE deliveries_by_app (
        app         TEXT NOT NULL,
        id          TEXT NOT NULL,
        repo_id     INTEGER,
        received_at TEXT NOT NULL,
        doc         TEXT NOT NULL,
        PRIMARY KEY (app, id)
    );
    INSERT INTO deliveries_by_app (app, id, repo_id, received_at, doc)
        SELECT '', id, repo_id, received_at, doc FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_by_app RENAME TO deliveries;
    CREATE INDEX deliveries_by_repo ON deliveries (repo_id, received_at);
"#,
    // An app's status shows the deliveries its own hook received, not its repository's.
    r#"
    DROP INDEX deliveries_by_repo;
    CREATE INDEX deliveries_by_app_newest ON deliveries (app, received_at);
"#,
];

/// Opens (creating and migrating) the database at `path`, shared by the store and the queue.
fn open_database(path: &Path) -> anyhow::Result<Connection> {
    // Created 0600 before SQLite opens it (its -wal and -shm files take the same mode).
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))?;
    }
    let mut connection =
        Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        transaction
            .execute_batch(migration)
            .with_context(|| format!("migrating the store to version {}", index + 1))?;
    }
    transaction.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    transaction.commit()?;
    Ok(connection)
}

/// The database could not run the work at all (a poisoned lock, a task that died).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unavailable(String);

/// One connection to the database, used by one task at a time.
#[derive(Clone)]
pub(crate) struct Database {
    connection: Arc<Mutex<Connection>>,
}

impl Database {
    /// Opens (creating and migrating) the database at `path`.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            connection: Arc::new(Mutex::new(open_database(path)?)),
        })
    }

    /// Runs `work` on the connection on this thread: for setting up, before any task uses it.
    pub(crate) fn now<T>(&self, work: impl FnOnce(&mut Connection) -> T) -> anyhow::Result<T> {
        let mut connection = self
            .connection
            .lock()
            .map_err(|_| anyhow::anyhow!("the database's lock was poisoned"))?;
        Ok(work(&mut connection))
    }

    /// Runs `work` on the connection off the async threads.
    pub(crate) async fn with<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Unavailable> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection
                .lock()
                .map_err(|_| Unavailable("the database's lock was poisoned".into()))?;
            work(&mut connection)
        })
        .await
        .map_err(|error| Unavailable(format!("a database task failed: {error}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_database_gets_every_migration_and_reopening_applies_none_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runway.db");

        Database::open(&path).unwrap();
        Database::open(&path).unwrap();

        assert_eq!(version(&path), MIGRATIONS.len() as i64);
    }

    /// Before the queue's table was a migration, the queue created it itself beside version 1.
    #[test]
    fn a_database_from_before_the_queue_migration_opens_and_keeps_its_messages_and_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runway.db");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(MIGRATIONS[0]).unwrap();
            old.execute_batch(MIGRATIONS[1]).unwrap();
            old.pragma_update(None, "user_version", 1).unwrap();
            old.execute(
                "INSERT INTO queue_messages (topic, data, attributes, publish_time, next_attempt_ms)
                 VALUES ('t', x'00', '{}', 'now', 0)",
                [],
            )
            .unwrap();
            old.execute(
                "INSERT INTO deliveries (id, repo_id, received_at, doc) VALUES ('d', 1, 'now', '{}')",
                [],
            )
            .unwrap();
        }

        let database = Database::open(&path).unwrap();

        let kept: i64 = database
            .now(|c| c.query_row("SELECT COUNT(*) FROM queue_messages", [], |r| r.get(0)))
            .unwrap()
            .unwrap();
        assert_eq!(kept, 1);
        let deliveries: Vec<(String, String)> = database
            .now(|c| {
                let mut statement = c.prepare("SELECT app, id FROM deliveries").unwrap();
                statement
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            })
            .unwrap();
        assert_eq!(deliveries, [(String::new(), "d".to_owned())]);
        assert_eq!(version(&path), MIGRATIONS.len() as i64);
    }
}
