use std::path::PathBuf;

use async_trait::async_trait;

use super::write_private;
use runway_core::domain::{AppName, SecretsToml};
use runway_core::ports::{SecretRef, SecretStore, SecretStoreError};

/// One 0600 file per app under `<data>/secrets/`, outside every checkout, so the app reads it
/// through `--secrets.files` and it never lands in a build.
#[derive(Clone, Debug)]
pub struct FileSecretStore {
    dir: PathBuf,
}

impl FileSecretStore {
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(Self { dir })
    }

    fn path(&self, app: &AppName) -> PathBuf {
        self.dir.join(format!("{app}.toml"))
    }
}

fn io(error: std::io::Error) -> SecretStoreError {
    SecretStoreError::Other(anyhow::Error::new(error).context("secret file"))
}

#[async_trait]
impl SecretStore for FileSecretStore {
    async fn put(
        &self,
        app: &AppName,
        secrets: &SecretsToml,
    ) -> Result<SecretRef, SecretStoreError> {
        let path = self.path(app);
        write_private(&path, secrets.expose().as_bytes()).map_err(io)?;
        Ok(SecretRef(path.display().to_string()))
    }

    async fn reference(&self, app: &AppName) -> Result<Option<SecretRef>, SecretStoreError> {
        let path = self.path(app);
        Ok(path.exists().then(|| SecretRef(path.display().to_string())))
    }

    async fn delete(&self, app: &AppName) -> Result<(), SecretStoreError> {
        match std::fs::remove_file(self.path(app)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(io(error)),
            _ => Ok(()),
        }
    }
}
