//! The one SQLite file the embedded store and queue live in: opening it (WAL, foreign keys, a
//! busy timeout), the one list of migrations both need, and running work on a connection off
//! the async threads.

use std::path::Path;
use std::sync::mpsc;

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
    // Pruning finds the oldest deliveries of every app at once, without reading them all.
    r#"
    CREATE INDEX deliveries_oldest ON deliveries (received_at);
"#,
    // What cleanup last found of each app's hook.
    r#"
    CREATE TABLE hook_health (
        app TEXT PRIMARY KEY,
        doc TEXT NOT NULL
    );
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
    // The store's and the queue's statements, kept prepared (`prepare_cached`).
    connection.set_prepared_statement_cache_capacity(64);
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

/// The database could not run the work at all (a poisoned lock, a task that died), or could
/// not keep it (the commit failed).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{why}")]
pub(crate) struct Unavailable {
    why: String,
    /// The disk is full: a person must make room, retrying soon does not help.
    pub full: bool,
}

impl Unavailable {
    fn new(why: impl Into<String>) -> Self {
        Self {
            why: why.into(),
            full: false,
        }
    }

    fn sqlite(what: &str, error: &rusqlite::Error) -> Self {
        Self {
            why: format!("{what}: {error}"),
            full: error.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
        }
    }
}

/// The most jobs one transaction takes.
const BATCH: usize = 256;

/// Work for the connection's thread: run inside the thread's transaction, answered once that
/// transaction is committed (or refused when it cannot begin).
trait Job: Send {
    fn run(self: Box<Self>, connection: &mut Connection) -> Done;
    fn refuse(self: Box<Self>, why: Unavailable);
}

/// A job that ran: whether its work succeeded (its writes are undone if not), and its answer,
/// given once the batch's commit has succeeded or failed.
struct Done {
    ok: bool,
    answer: Box<dyn FnOnce(Result<(), Unavailable>) + Send>,
}

struct Work<T, E, F> {
    work: F,
    reply: Box<dyn FnOnce(Result<T, E>) + Send>,
}

impl<T, E, F> Job for Work<T, E, F>
where
    T: Send + 'static,
    E: From<Unavailable> + Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, E> + Send,
{
    fn run(self: Box<Self>, connection: &mut Connection) -> Done {
        let result = (self.work)(connection);
        let reply = self.reply;
        Done {
            ok: result.is_ok(),
            answer: Box::new(move |committed| match committed {
                Ok(()) => reply(result),
                Err(why) => reply(Err(E::from(why))),
            }),
        }
    }

    fn refuse(self: Box<Self>, why: Unavailable) {
        (self.reply)(Err(E::from(why)));
    }
}

/// One connection to the database, owned by a thread of its own that runs the work sent to it
/// in order. A thread per connection, not `spawn_blocking` per call: under a webhook flood each
/// call took a pool thread that then waited on the connection's lock, and handing work between
/// those threads cost more than the work (a third of the ingress's time, in `perf`).
///
/// The work waiting when the thread is free runs in one immediate transaction, each job in a
/// savepoint of its own (a job whose work fails is undone alone), and every job is answered
/// after the one commit: group commit, so a flood of deliveries pays for one transaction per
/// batch, not per delivery. Work takes its own savepoints (`Connection::savepoint`), never a
/// transaction, for what must be atomic.
#[derive(Clone)]
pub(crate) struct Database {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Database {
    /// Opens (creating and migrating) the database at `path`, and starts its thread; the thread
    /// ends, closing the connection, when the last clone is dropped.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        let connection = open_database(path)?;
        let (jobs, work) = mpsc::channel::<Box<dyn Job>>();
        std::thread::Builder::new()
            .name("runway-sqlite".into())
            .spawn(move || serve(connection, &work))
            .context("starting the database's thread")?;
        Ok(Self { jobs })
    }

    fn send<T, E, F>(&self, work: F, reply: Box<dyn FnOnce(Result<T, E>) + Send>) -> bool
    where
        T: Send + 'static,
        E: From<Unavailable> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        self.jobs.send(Box::new(Work { work, reply })).is_ok()
    }

    /// Runs `work` on the connection and waits for it: for setting up, before any task uses it.
    pub(crate) fn now<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        let sent = self.send(
            move |connection| Ok::<T, Unavailable>(work(connection)),
            Box::new(move |result| {
                let _ = reply.send(result);
            }),
        );
        anyhow::ensure!(sent, "the database's thread has stopped");
        answer
            .recv()
            .map_err(|_| anyhow::anyhow!("a database task failed"))?
            .map_err(|error| anyhow::anyhow!("{error}"))
    }

    /// Runs `work` on the connection's thread, off the async threads.
    pub(crate) async fn with<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Unavailable> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = self.send(
            work,
            Box::new(move |result| {
                let _ = reply.send(result);
            }),
        );
        if !sent {
            return Err(E::from(Unavailable::new(
                "the database's thread has stopped",
            )));
        }
        answer
            .await
            .map_err(|_| Unavailable::new("a database task failed"))?
    }
}

/// The connection's thread: takes the work waiting, a batch at a time, until every handle is
/// dropped.
fn serve(mut connection: Connection, work: &mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = work.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match work.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut connection, batch);
    }
}

/// Runs one of the batch's own statements, kept prepared: they run several times a job.
fn run(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(drop)
}

fn run_batch(connection: &mut Connection, batch: Vec<Box<dyn Job>>) {
    if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
        for job in batch {
            job.refuse(Unavailable::sqlite("the database is unavailable", &error));
        }
        return;
    }
    let mut answers = Vec::with_capacity(batch.len());
    for job in batch {
        let kept = run(connection, "SAVEPOINT job");
        // A job that panics is undone and drops its answer: its caller hears the task failed.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(connection)));
        let ok = matches!(&ran, Ok(done) if done.ok);
        if kept.is_ok() {
            if !ok {
                let _ = run(connection, "ROLLBACK TO job");
            }
            let _ = run(connection, "RELEASE job");
        }
        if let Ok(done) = ran {
            answers.push(done.answer);
        }
    }
    let committed = connection
        .execute_batch("COMMIT")
        .map_err(|error| Unavailable::sqlite("the database did not commit", &error));
    if committed.is_err() && !connection.is_autocommit() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    for answer in answers {
        answer(committed.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum TestError {
        Refused,
        Sql,
        Unavailable(String),
    }

    impl From<Unavailable> for TestError {
        fn from(error: Unavailable) -> Self {
            Self::Unavailable(error.why)
        }
    }

    impl From<rusqlite::Error> for TestError {
        fn from(_: rusqlite::Error) -> Self {
            Self::Sql
        }
    }

    fn ids(database: &Database) -> Vec<String> {
        database
            .now(|c| {
                let mut statement = c
                    .prepare("SELECT id FROM deliveries WHERE app = 'demo' ORDER BY id")
                    .unwrap();
                statement
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<Vec<String>, _>>()
                    .unwrap()
            })
            .unwrap()
    }

    /// Work waiting together runs in one transaction: a job that fails or panics after writing
    /// is undone alone, and every other job's writes are committed and answered.
    #[tokio::test]
    async fn a_job_that_fails_or_panics_is_undone_alone_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let database = Database::open(&dir.path().join("runway.db")).unwrap();
        // Hold the thread so that the jobs below wait, and then run as one batch.
        let (go, wait) = mpsc::channel::<()>();
        let held = tokio::spawn({
            let database = database.clone();
            async move {
                database
                    .with(move |_| {
                        wait.recv().ok();
                        Ok::<(), TestError>(())
                    })
                    .await
            }
        });
        let job = |id: &'static str, outcome: &'static str| {
            let database = database.clone();
            tokio::spawn(async move {
                database
                    .with(move |c| {
                        c.execute(
                            "INSERT INTO deliveries (app, id, repo_id, received_at, doc) \
                             VALUES ('demo', ?1, 1, 'now', '{}')",
                            [id],
                        )?;
                        match outcome {
                            "fails" => Err(TestError::Refused),
                            "panics" => panic!("a job that panics"),
                            _ => Ok(()),
                        }
                    })
                    .await
            })
        };
        let jobs = [
            job("a", "ok"),
            job("b", "fails"),
            job("c", "panics"),
            job("d", "ok"),
        ];
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        go.send(()).unwrap();
        held.await.unwrap().unwrap();
        let mut answers = Vec::new();
        for job in jobs {
            answers.push(job.await.unwrap());
        }

        assert!(answers[0].is_ok() && answers[3].is_ok(), "{answers:?}");
        assert!(matches!(answers[1], Err(TestError::Refused)), "{answers:?}");
        assert!(
            matches!(&answers[2], Err(TestError::Unavailable(why)) if why.contains("failed")),
            "{answers:?}"
        );
        assert_eq!(ids(&database), ["a", "d"]);
    }

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
