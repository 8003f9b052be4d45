//! The decisions of a submit, apart from the I/O around them: who may submit an app, and what
//! its record becomes when it is created or updated.

use crate::domain::{
    Access, AppName, Branch, Caller, Deployment, HookId, MainFile, NotifySummary, Previews, Region,
    RepoUrl, Resources, Runtime, Timestamp,
};

/// Why a submit is refused before anything is done.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitRefused {
    /// Says nobody's name: anyone may try names, and would learn who owns which app.
    #[error("the app name '{app}' is taken; choose another name")]
    Taken { app: AppName, owner: String },
    #[error("the app '{app}' deploys {repo}; delete it first or choose another name")]
    OtherRepository { app: AppName, repo: RepoUrl },
}

/// Whether `caller` may submit `app` from `repo`: a new name is free; an existing app is its
/// owner's (or an admin's) to update, from the repository it already deploys.
pub fn may_submit(
    existing: Option<&Deployment>,
    caller: &Caller,
    app: &AppName,
    repo: &RepoUrl,
) -> Result<(), SubmitRefused> {
    let Some(existing) = existing else {
        return Ok(());
    };
    if !caller.may_manage(existing) {
        return Err(SubmitRefused::Taken {
            app: app.clone(),
            owner: existing.owner.clone(),
        });
    }
    if &existing.repo != repo {
        return Err(SubmitRefused::OtherRepository {
            app: app.clone(),
            repo: existing.repo.clone(),
        });
    }
    Ok(())
}

/// What a submit sets on an app.
#[derive(Clone, Debug)]
pub struct Settings {
    pub app: AppName,
    pub repo: RepoUrl,
    pub repo_id: u64,
    pub branch: Branch,
    pub main_file: MainFile,
    pub region: Region,
    pub resources: Resources,
    pub runtime: Runtime,
    pub access: Access,
    /// Where its releases are announced; `None` when it keeps the app's.
    pub notify: Option<Vec<NotifySummary>>,
    /// The names of the secrets the submit sets; `None` when it keeps the app's.
    pub secret_keys: Option<Vec<String>>,
    /// Whether pull requests get previews; `None` when it keeps the app's.
    pub previews: Option<Previews>,
    /// The push webhook; `None` while a new app's name is claimed and its hook not made yet.
    pub webhook_id: Option<HookId>,
}

/// The app's record after a submit: the settings, on top of what the app already was. An
/// update keeps the owner, the creation time, and the release serving with its URL (only a
/// release going live moves those).
pub fn submitted(
    existing: Option<&Deployment>,
    settings: Settings,
    caller: &Caller,
    now: Timestamp,
) -> Deployment {
    Deployment {
        app: settings.app,
        repo: settings.repo,
        repo_id: settings.repo_id,
        branch: settings.branch,
        main_file: settings.main_file,
        region: settings.region,
        resources: settings.resources,
        runtime: settings.runtime,
        access: settings.access,
        owner: existing.map_or_else(|| caller.email.clone(), |d| d.owner.clone()),
        notify: settings
            .notify
            .or_else(|| existing.map(|d| d.notify.clone()))
            .unwrap_or_default(),
        secret_keys: settings
            .secret_keys
            .or_else(|| existing.and_then(|d| d.secret_keys.clone())),
        previews: settings
            .previews
            .or_else(|| existing.map(|d| d.previews.clone()))
            .unwrap_or_default(),
        pull: None,
        webhook_id: settings.webhook_id,
        live_release: existing.and_then(|d| d.live_release.clone()),
        url: existing.and_then(|d| d.url.clone()),
        created_at: existing.map_or(now, |d| d.created_at),
        updated_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ReleaseId;

    fn at(seconds: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn caller(email: &str, admin: bool) -> Caller {
        Caller {
            email: email.into(),
            admin,
        }
    }

    fn repo(name: &str) -> RepoUrl {
        RepoUrl::parse(&format!("https://github.com/acme/{name}"), false).unwrap()
    }

    fn settings(main_file: &str) -> Settings {
        Settings {
            app: AppName::parse("demo").unwrap(),
            repo: repo("demo"),
            repo_id: 7,
            branch: Branch::parse("main").unwrap(),
            main_file: MainFile::parse(main_file).unwrap(),
            region: Region::try_from("europe-west1".to_owned()).unwrap(),
            resources: Resources::default(),
            runtime: Runtime::default(),
            access: Access::default(),
            notify: None,
            secret_keys: Some(vec!["token".into()]),
            previews: None,
            webhook_id: Some(HookId::new("11")),
        }
    }

    fn existing() -> Deployment {
        let mut app = submitted(None, settings("app.py"), &caller("ada@x.io", false), at(0));
        app.live_release = Some(ReleaseId::new("r1"));
        app.url = Some("https://demo.example".into());
        app
    }

    #[test]
    fn a_new_app_belongs_to_whoever_submits_it() {
        let app = submitted(None, settings("app.py"), &caller("ada@x.io", false), at(5));
        assert_eq!(app.owner, "ada@x.io");
        assert_eq!(app.created_at, at(5));
        assert_eq!(app.live_release, None);
    }

    #[test]
    fn an_update_changes_the_settings_and_keeps_owner_live_release_and_url() {
        let before = existing();
        let after = submitted(
            Some(&before),
            settings("pages/main.py"),
            &caller("root@x.io", true),
            at(60),
        );
        assert_eq!(after.main_file.as_str(), "pages/main.py");
        assert_eq!(after.owner, "ada@x.io");
        assert_eq!(after.live_release, before.live_release);
        assert_eq!(after.url, before.url);
        assert_eq!(after.created_at, at(0));
        assert_eq!(after.updated_at, at(60));
    }

    #[test]
    fn an_update_without_secrets_keeps_the_names_of_the_apps_secrets() {
        let before = existing();
        let kept = Settings {
            secret_keys: None,
            ..settings("app.py")
        };
        let after = submitted(Some(&before), kept, &caller("ada@x.io", false), at(60));
        assert_eq!(after.secret_keys, Some(vec!["token".to_owned()]));
        let replaced = Settings {
            secret_keys: Some(vec!["api_key".into(), "db".into()]),
            ..settings("app.py")
        };
        let after = submitted(Some(&before), replaced, &caller("ada@x.io", false), at(60));
        assert_eq!(after.secret_keys, Some(vec!["api_key".into(), "db".into()]));
    }

    #[test]
    fn only_the_owner_or_an_admin_updates_an_app_and_only_from_its_repository() {
        let app = existing();
        let name = AppName::parse("demo").unwrap();
        assert_eq!(
            may_submit(Some(&app), &caller("bob@x.io", false), &name, &repo("demo")),
            Err(SubmitRefused::Taken {
                app: name.clone(),
                owner: "ada@x.io".into()
            })
        );
        let refused = may_submit(Some(&app), &caller("bob@x.io", false), &name, &repo("demo"));
        let message = refused.unwrap_err().to_string();
        assert!(!message.contains("ada@x.io"), "{message}");
        assert!(may_submit(Some(&app), &caller("ada@x.io", false), &name, &repo("demo")).is_ok());
        assert!(may_submit(Some(&app), &caller("root@x.io", true), &name, &repo("demo")).is_ok());
        assert!(matches!(
            may_submit(
                Some(&app),
                &caller("ada@x.io", false),
                &name,
                &repo("other")
            ),
            Err(SubmitRefused::OtherRepository { .. })
        ));
        assert!(may_submit(None, &caller("bob@x.io", false), &name, &repo("other")).is_ok());
    }
}
