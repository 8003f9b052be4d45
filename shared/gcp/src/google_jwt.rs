//! Verifying JWTs that Google signs (IAP assertions, OIDC tokens from Pub/Sub push and Cloud
//! Scheduler): the signature against Google's published JWKs (fetched and cached), the issuer,
//! the audience and the times, with a little clock skew allowed.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::de::DeserializeOwned;

use runway_core::ports::IdentityError;

/// Keys rotate rarely: refetch hourly, or when a token names an unknown key, but at most once a
/// minute so forged key ids cannot make us hammer the endpoint.
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
const MIN_REFETCH: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct JwtRules {
    /// What the token is called in messages ("IAP assertion", "OIDC token").
    pub what: &'static str,
    pub algorithm: Algorithm,
    pub keys_url: String,
    pub issuers: Vec<String>,
    pub audience: String,
    pub leeway: Duration,
}

pub struct GoogleJwtVerifier {
    rules: JwtRules,
    http: reqwest::Client,
    keys: RwLock<Option<CachedKeys>>,
}

struct CachedKeys {
    set: JwkSet,
    fetched: Instant,
}

#[derive(serde::Deserialize)]
struct IssuedAt {
    iat: u64,
}

impl GoogleJwtVerifier {
    pub fn new(rules: JwtRules) -> Self {
        Self {
            rules,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client builds"),
            keys: RwLock::new(None),
        }
    }

    pub fn refused(&self, problem: &str) -> IdentityError {
        IdentityError::Unauthenticated(format!("the {} {problem}", self.rules.what))
    }

    /// The token's claims, if it passes every check.
    pub async fn verify<C: DeserializeOwned>(&self, token: &str) -> Result<C, IdentityError> {
        let header = decode_header(token).map_err(|_| self.refused("is not a JWT"))?;
        if header.alg != self.rules.algorithm {
            return Err(self.refused(&format!("must be signed with {:?}", self.rules.algorithm)));
        }
        let kid = header.kid.ok_or_else(|| self.refused("names no key"))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(self.rules.algorithm);
        validation.set_audience(&[&self.rules.audience]);
        validation.set_issuer(&self.rules.issuers);
        validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
        validation.leeway = self.rules.leeway.as_secs();
        let verified = |error: jsonwebtoken::errors::Error| {
            self.refused(match error.kind() {
                ErrorKind::ExpiredSignature => "has expired",
                ErrorKind::InvalidAudience => "is for another audience",
                ErrorKind::InvalidIssuer => "has the wrong issuer",
                ErrorKind::InvalidSignature => "has a signature that does not verify",
                _ => "is not valid",
            })
        };
        let issued = decode::<IssuedAt>(token, &key, &validation).map_err(verified)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if issued.claims.iat > now + self.rules.leeway.as_secs() {
            return Err(self.refused("was issued in the future"));
        }
        Ok(decode::<C>(token, &key, &validation)
            .map_err(verified)?
            .claims)
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, IdentityError> {
        let refetch = match self.keys.read().expect("keys lock").as_ref() {
            Some(keys) if keys.fetched.elapsed() < KEYS_MAX_AGE && keys.set.find(kid).is_some() => {
                false
            }
            Some(keys) => {
                keys.fetched.elapsed() >= MIN_REFETCH || keys.fetched.elapsed() >= KEYS_MAX_AGE
            }
            None => true,
        };
        if refetch {
            let fetch = async {
                self.http
                    .get(&self.rules.keys_url)
                    .send()
                    .await?
                    .error_for_status()?
                    .json::<JwkSet>()
                    .await
            };
            let set = fetch.await.map_err(|e| {
                IdentityError::Other(anyhow::anyhow!("fetching {}: {e}", self.rules.keys_url))
            })?;
            *self.keys.write().expect("keys lock") = Some(CachedKeys {
                set,
                fetched: Instant::now(),
            });
        }
        let cached = self.keys.read().expect("keys lock");
        let jwk = cached
            .as_ref()
            .and_then(|keys| keys.set.find(kid))
            .ok_or_else(|| self.refused("is signed with an unknown key"))?;
        DecodingKey::from_jwk(jwk).map_err(|e| IdentityError::Other(e.into()))
    }
}

/// Serves `jwks` as a JWK set on loopback, counting fetches: Google's key endpoint, for tests.
#[cfg(test)]
pub(crate) async fn serve_jwks(
    jwks: Vec<serde_json::Value>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use runway_http::{Router, json, serve_router};

    let fetches = Arc::new(AtomicUsize::new(0));
    let set = serde_json::json!({ "keys": jwks });
    let counter = fetches.clone();
    let router = Router::new().route(
        "/jwk",
        axum::routing::get(move || async move {
            counter.fetch_add(1, Ordering::SeqCst);
            json(http::StatusCode::OK, &set)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwk", listener.local_addr().unwrap());
    tokio::spawn(serve_router(router, listener, std::future::pending()));
    (url, fetches)
}
