//! What a store writes, decided from what it read: the one planner both stores (SQLite and
//! Firestore) call inside their transaction, between the reads and the writes. The stores keep
//! only what differs between them: how to read, how to write, how to make it atomic.

use crate::domain::{
    Deployment, NewRelease, Release, ReleaseId, ReleaseState, ReleaseUpdate, Timestamp,
};
use crate::ports::StoreError;

/// Queueing a release: the new release, and the older queued releases of its app it
/// supersedes (a newer commit makes building an older one pointless).
pub struct Queued {
    pub release: Release,
    pub superseded: Vec<Release>,
}

/// Plans queueing `new` as release `id` with sequence number `seq`, given the app's releases
/// that are still queued.
pub fn queue(
    new: NewRelease,
    id: ReleaseId,
    seq: u64,
    older_queued: Vec<Release>,
    now: Timestamp,
) -> Queued {
    let superseded = older_queued
        .into_iter()
        .filter(|older| older.state == ReleaseState::Queued)
        .map(|mut older| {
            older.state = ReleaseState::Superseded;
            older.message = Some(format!("superseded by the newer release {id}"));
            older.updated_at = now;
            older.finished_at = Some(now);
            older
        })
        .collect();
    Queued {
        release: Release::queued(new, id, seq, now),
        superseded,
    }
}

/// A release's move from one state to another, as asked of `Store::transition`.
#[derive(Clone, Debug)]
pub struct Transition {
    pub id: ReleaseId,
    pub from: ReleaseState,
    pub to: ReleaseState,
    pub update: ReleaseUpdate,
}

/// What a transition writes: the release, and for a go-live the app pointing at it.
pub struct Moved {
    pub release: Release,
    pub deployment: Option<Deployment>,
}

impl Transition {
    /// Refuses, before anything is read, a move the release state machine does not allow.
    pub fn new(
        id: &ReleaseId,
        from: ReleaseState,
        to: ReleaseState,
        update: ReleaseUpdate,
    ) -> Result<Self, StoreError> {
        if !from.may_become(to) {
            return Err(StoreError::Conflict(format!(
                "a release cannot move from {from} to {to}"
            )));
        }
        Ok(Self {
            id: id.clone(),
            from,
            to,
            update,
        })
    }

    /// A go-live also reads (and writes) the app, and the release it serves now.
    pub fn goes_live(&self) -> bool {
        self.to == ReleaseState::Live
    }

    /// Plans the move from what the store read: the release (if it exists), and for a go-live
    /// the app and its live release. Refuses a release that has moved on (compare-and-set), and
    /// a go-live over a newer live release.
    pub fn plan(
        self,
        release: Option<Release>,
        deployment: Option<Deployment>,
        live: Option<&Release>,
        now: Timestamp,
    ) -> Result<Moved, StoreError> {
        let id = &self.id;
        let mut release = release.ok_or_else(|| StoreError::NotFound(format!("release {id}")))?;
        if release.state != self.from {
            return Err(StoreError::Conflict(format!(
                "release {id} is {}, not {}",
                release.state, self.from
            )));
        }
        let deployment = if self.goes_live() {
            let mut deployment =
                deployment.ok_or_else(|| StoreError::NotFound(format!("app {}", release.app)))?;
            if let Some(live) = live
                && deployment.live_release.as_ref() == Some(&live.id)
                && live.seq > release.seq
            {
                return Err(StoreError::Conflict(format!(
                    "the newer release {} is already live",
                    live.id
                )));
            }
            deployment.goes_live(&release, self.update.url.clone(), now);
            Some(deployment)
        } else {
            None
        };
        release.apply(self.to, self.update, now);
        Ok(Moved {
            release,
            deployment,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AppName, Trigger};

    fn now() -> Timestamp {
        chrono::DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn release(id: &str, seq: u64, state: ReleaseState) -> Release {
        crate::testing::release(id, seq, state, now())
    }

    fn deployment(live: Option<&str>) -> Deployment {
        Deployment {
            app: AppName::parse("demo").unwrap(),
            repo: crate::domain::RepoUrl::parse("https://github.com/o/r", false).unwrap(),
            repo_id: 1,
            branch: crate::domain::Branch::parse("main").unwrap(),
            main_file: crate::domain::MainFile::parse("app.py").unwrap(),
            region: crate::domain::Region::try_from("local".to_owned()).unwrap(),
            resources: Default::default(),
            runtime: Default::default(),
            access: Default::default(),
            owner: "ada".into(),
            notify: Vec::new(),
            previews: Default::default(),
            pull: None,
            secret_keys: None,
            webhook_id: None,
            live_release: live.map(ReleaseId::new),
            url: Some("http://old".into()),
            created_at: now(),
            updated_at: now(),
        }
    }

    #[test]
    fn queueing_supersedes_only_what_is_still_queued() {
        let older = vec![
            release("a", 1, ReleaseState::Queued),
            release("b", 2, ReleaseState::Building),
        ];
        let new = release("x", 0, ReleaseState::Queued);
        let new = NewRelease {
            app: new.app,
            trigger: Trigger::Manual,
            actor: "ada".into(),
            commit: None,
            rollback_of: None,
            clear_cache: false,
        };

        let planned = queue(new, ReleaseId::new("c"), 3, older, now());

        assert_eq!(planned.release.seq, 3);
        assert_eq!(planned.release.state, ReleaseState::Queued);
        assert_eq!(planned.superseded.len(), 1);
        assert_eq!(planned.superseded[0].id, "a");
        assert_eq!(planned.superseded[0].state, ReleaseState::Superseded);
        assert_eq!(planned.superseded[0].finished_at, Some(now()));
    }

    #[test]
    fn a_move_the_state_machine_forbids_is_refused_before_any_read() {
        let refused = Transition::new(
            &ReleaseId::new("a"),
            ReleaseState::Live,
            ReleaseState::Building,
            ReleaseUpdate::default(),
        );
        assert!(matches!(refused, Err(StoreError::Conflict(_))));
    }

    #[test]
    fn a_release_that_moved_on_is_a_conflict_and_a_missing_one_not_found() {
        let move_it = || {
            Transition::new(
                &ReleaseId::new("a"),
                ReleaseState::Queued,
                ReleaseState::Building,
                ReleaseUpdate::default(),
            )
            .unwrap()
        };
        let moved_on = release("a", 1, ReleaseState::Building);
        assert!(matches!(
            move_it().plan(Some(moved_on), None, None, now()),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            move_it().plan(None, None, None, now()),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn a_go_live_points_the_app_at_the_release_unless_a_newer_one_serves() {
        let go_live = |id: &str| {
            Transition::new(
                &ReleaseId::new(id),
                ReleaseState::Deploying,
                ReleaseState::Live,
                ReleaseUpdate {
                    url: Some("http://new".into()),
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let newer_live = release("n", 5, ReleaseState::Live);
        let older = release("o", 4, ReleaseState::Deploying);

        let refused = go_live("o").plan(
            Some(older.clone()),
            Some(deployment(Some("n"))),
            Some(&newer_live),
            now(),
        );
        assert!(matches!(refused, Err(StoreError::Conflict(_))));

        let older_live = release("p", 3, ReleaseState::Live);
        let moved = go_live("o")
            .plan(
                Some(older),
                Some(deployment(Some("p"))),
                Some(&older_live),
                now(),
            )
            .unwrap();
        assert_eq!(moved.release.state, ReleaseState::Live);
        assert_eq!(moved.release.finished_at, Some(now()));
        let app = moved.deployment.expect("a go-live writes the app");
        assert_eq!(app.live_release, Some(ReleaseId::new("o")));
        assert_eq!(app.url.as_deref(), Some("http://new"));
    }

    #[test]
    fn other_moves_leave_the_app_alone() {
        let moved = Transition::new(
            &ReleaseId::new("a"),
            ReleaseState::Building,
            ReleaseState::Failed,
            ReleaseUpdate {
                message: Some("the build failed".into()),
                ..Default::default()
            },
        )
        .unwrap()
        .plan(
            Some(release("a", 1, ReleaseState::Building)),
            None,
            None,
            now(),
        )
        .unwrap();
        assert!(moved.deployment.is_none());
        assert_eq!(moved.release.message.as_deref(), Some("the build failed"));
    }
}
