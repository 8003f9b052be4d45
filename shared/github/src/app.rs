//! Authenticating as a GitHub App installation: a short JWT signed with the App's private key
//! (RS256) buys an installation token, which is kept until shortly before it expires so a burst
//! of requests costs one exchange.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::Repo;
use super::api::{Api, Call};
use super::errors::{Op, Permission};
use runway_core::ports::ForgeError;

/// GitHub accepts a JWT up to 10 minutes ahead; 9 leaves room for our clock running fast.
const JWT_LIFETIME: Duration = Duration::minutes(9);
/// GitHub's advice: issued 60 s in the past, against clock drift.
const JWT_BACKDATE: Duration = Duration::seconds(60);
/// A token this close to expiry is replaced: a build may still be downloading with it.
const REFRESH_MARGIN: Duration = Duration::minutes(5);

pub(super) struct AppAuth {
    app_id: u64,
    key: EncodingKey,
    installation_id: Option<u64>,
    /// Installation per repository (`owner/name`, lowercase), when none is configured.
    installations: std::sync::Mutex<HashMap<String, u64>>,
    /// Held across an exchange, so concurrent callers wait for one token instead of each
    /// minting their own.
    tokens: tokio::sync::Mutex<HashMap<u64, InstallationToken>>,
}

#[derive(Clone)]
struct InstallationToken {
    token: SecretString,
    expires_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct Claims {
    iat: i64,
    exp: i64,
    /// The App id, as a number: what GitHub has always accepted.
    iss: u64,
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

#[derive(Deserialize)]
struct AccessToken {
    token: String,
    expires_at: DateTime<Utc>,
}

impl AppAuth {
    pub fn new(
        app_id: u64,
        private_key: &SecretString,
        installation_id: Option<u64>,
    ) -> anyhow::Result<Self> {
        let key =
            EncodingKey::from_rsa_pem(private_key.expose_secret().as_bytes()).map_err(|_| {
                anyhow::anyhow!("the GitHub App private key is not an RSA key in PEM form")
            })?;
        Ok(Self {
            app_id,
            key,
            installation_id,
            installations: Default::default(),
            tokens: Default::default(),
        })
    }

    pub fn app_id(&self) -> u64 {
        self.app_id
    }

    /// An installation token that may act on `repo`.
    pub async fn token(&self, api: &Api, repo: &Repo<'_>) -> Result<SecretString, ForgeError> {
        let installation = self.installation(api, repo).await?;
        let mut tokens = self.tokens.lock().await;
        if let Some(cached) = tokens.get(&installation)
            && Utc::now() < cached.expires_at - REFRESH_MARGIN
        {
            return Ok(cached.token.clone());
        }
        let fresh = self.exchange(api, installation).await?;
        tokens.insert(installation, fresh.clone());
        Ok(fresh.token)
    }

    /// Drops what Runway remembered for `repo` after GitHub refused its token (revoked, or the
    /// App was reinstalled under a new installation id), so the next request starts afresh.
    pub async fn forget(&self, repo: &Repo<'_>) {
        let looked_up = {
            let mut cache = self.installations.lock().unwrap_or_else(|e| e.into_inner());
            cache.remove(&repo.key())
        };
        if let Some(installation) = self.installation_id.or(looked_up) {
            self.tokens.lock().await.remove(&installation);
        }
    }

    fn cached_installation(&self, repo: &Repo<'_>) -> Option<u64> {
        let cache = self.installations.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(&repo.key()).copied()
    }

    /// The configured installation, else the one GitHub names for the repository.
    async fn installation(&self, api: &Api, repo: &Repo<'_>) -> Result<u64, ForgeError> {
        if let Some(id) = self
            .installation_id
            .or_else(|| self.cached_installation(repo))
        {
            return Ok(id);
        }
        let jwt = self.jwt()?;
        let op = Op {
            action: format!("find the GitHub App's installation on {repo}"),
            needs: Permission::App,
            missing: format!(
                "the Runway GitHub App (id {}) is not installed on {repo}, or the repository \
                 does not exist: install the App on it",
                self.app_id
            ),
        };
        let found: Installation = api
            .json(Call {
                if_none_match: None,
                method: Method::GET,
                url: api.url(&["repos", repo.owner, repo.name, "installation"]),
                body: None,
                auth: Some(&jwt),
                op: &op,
            })
            .await?;
        let mut cache = self.installations.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(repo.key(), found.id);
        Ok(found.id)
    }

    async fn exchange(
        &self,
        api: &Api,
        installation: u64,
    ) -> Result<InstallationToken, ForgeError> {
        let jwt = self.jwt()?;
        let id = installation.to_string();
        let op = Op {
            action: format!("get a token for the GitHub App's installation {installation}"),
            needs: Permission::App,
            missing: format!(
                "the GitHub App (id {}) has no installation {installation}: check the \
                 configured installation id",
                self.app_id
            ),
        };
        let answer: AccessToken = api
            .json(Call {
                if_none_match: None,
                method: Method::POST,
                url: api.url(&["app", "installations", &id, "access_tokens"]),
                body: None,
                auth: Some(&jwt),
                op: &op,
            })
            .await?;
        Ok(InstallationToken {
            token: answer.token.into(),
            expires_at: answer.expires_at,
        })
    }

    /// The App's JWT: `iat` a minute back, `exp` nine minutes ahead, `iss` the App id.
    fn jwt(&self) -> Result<SecretString, ForgeError> {
        let now = Utc::now();
        let claims = Claims {
            iat: (now - JWT_BACKDATE).timestamp(),
            exp: (now + JWT_LIFETIME).timestamp(),
            iss: self.app_id,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map(SecretString::from)
            .map_err(|error| {
                ForgeError::Other(anyhow::anyhow!("signing the GitHub App JWT: {error}"))
            })
    }
}
