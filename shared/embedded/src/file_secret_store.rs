use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::write_private;
use runway_core::domain::{AppName, NotifyTargets, SecretsToml};
use runway_core::ports::{SecretRef, SecretStore, SecretStoreError};
use secrecy::ExposeSecret;

/// One 0600 file per version of an app's secrets, `<data>/secrets/{app}/v{n}.toml`, outside
/// every checkout, so the app reads it through `--secrets.files` and it never lands in a build.
/// Each put is a new file and changes none: a running app keeps reading the version it started
/// with (a failed update leaves no new secrets under the old code), and a rollback starts with
/// the version its release ran with. `retire` removes the versions no release uses.
#[derive(Clone, Debug)]
pub struct FileSecretStore {
    dir: PathBuf,
    /// Puts number versions one at a time.
    numbering: Arc<tokio::sync::Mutex<()>>,
}

impl FileSecretStore {
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(Self {
            dir,
            numbering: Arc::default(),
        })
    }

    fn app_dir(&self, app: &AppName) -> PathBuf {
        self.dir.join(app.as_str())
    }

    /// The app's notification targets, one 0600 JSON file beside its secrets.
    fn notify_file(&self, app: &AppName) -> PathBuf {
        self.app_dir(app).join("notify.json")
    }

    /// Where the store kept an app's one file before versions.
    fn legacy(&self, app: &AppName) -> PathBuf {
        self.dir.join(format!("{app}.toml"))
    }

    /// The app's versions, oldest first, as (number, path).
    fn versions(&self, app: &AppName) -> Result<Vec<(u64, PathBuf)>, SecretStoreError> {
        let entries = match std::fs::read_dir(self.app_dir(app)) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io(error)),
        };
        let mut versions: Vec<(u64, PathBuf)> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let number = name.to_str()?.strip_prefix('v')?.strip_suffix(".toml")?;
                Some((number.parse().ok()?, entry.path()))
            })
            .collect();
        versions.sort();
        Ok(versions)
    }
}

fn io(error: std::io::Error) -> SecretStoreError {
    SecretStoreError::Other(anyhow::Error::new(error).context("secret file"))
}

fn reference(path: &Path) -> SecretRef {
    SecretRef(path.display().to_string())
}

#[async_trait]
impl SecretStore for FileSecretStore {
    async fn put(
        &self,
        app: &AppName,
        secrets: &SecretsToml,
    ) -> Result<SecretRef, SecretStoreError> {
        let _numbering = self.numbering.lock().await;
        let dir = self.app_dir(app);
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io)?;
        let next = self
            .versions(app)?
            .last()
            .map_or(1, |(number, _)| number + 1);
        let path = dir.join(format!("v{next}.toml"));
        write_private(&path, secrets.expose().as_bytes()).map_err(io)?;
        Ok(reference(&path))
    }

    async fn reference(&self, app: &AppName) -> Result<Option<SecretRef>, SecretStoreError> {
        if let Some((_, newest)) = self.versions(app)?.last() {
            return Ok(Some(reference(newest)));
        }
        let legacy = self.legacy(app);
        Ok(legacy.exists().then(|| reference(&legacy)))
    }

    async fn retire(&self, app: &AppName, keep: &[SecretRef]) -> Result<(), SecretStoreError> {
        let _numbering = self.numbering.lock().await;
        let mut versions = self.versions(app)?;
        versions.pop();
        for (_, path) in versions {
            if keep.iter().all(|kept| kept.0 != path.display().to_string()) {
                match std::fs::remove_file(&path) {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io(error));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    async fn put_notifications(
        &self,
        app: &AppName,
        targets: &NotifyTargets,
    ) -> Result<(), SecretStoreError> {
        let _numbering = self.numbering.lock().await;
        let path = self.notify_file(app);
        if targets.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(io(error)),
                _ => Ok(()),
            };
        }
        let dir = self.app_dir(app);
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io)?;
        write_private(&path, targets.to_json().expose_secret().as_bytes()).map_err(io)
    }

    async fn notifications(&self, app: &AppName) -> Result<NotifyTargets, SecretStoreError> {
        let json = match std::fs::read_to_string(self.notify_file(app)) {
            Ok(json) => json,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(NotifyTargets::default());
            }
            Err(error) => return Err(io(error)),
        };
        NotifyTargets::from_json(&json).map_err(|error| {
            SecretStoreError::Other(anyhow::anyhow!(
                "the notification targets of {app} do not read: {error}"
            ))
        })
    }

    async fn delete(&self, app: &AppName) -> Result<(), SecretStoreError> {
        let _numbering = self.numbering.lock().await;
        match std::fs::remove_dir_all(self.app_dir(app)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(io(error)),
            _ => {}
        }
        match std::fs::remove_file(self.legacy(app)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(io(error)),
            _ => Ok(()),
        }
    }
}
