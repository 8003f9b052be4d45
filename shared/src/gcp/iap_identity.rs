//! `Identity` behind Identity-Aware Proxy: IAP signs every request it lets through with an ES256
//! JWT in `x-goog-iap-jwt-assertion`. We check its signature against Google's published keys
//! (fetched and cached), its issuer, its audience (this backend) and its times, and take the
//! caller's email from it. Without this check anyone who reaches the service directly could
//! claim any identity.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use crate::domain::Caller;
use crate::ports::{Identity, IdentityError};

pub const IAP_HEADER: &str = "x-goog-iap-jwt-assertion";
pub const IAP_KEYS_URL: &str = "https://www.gstatic.com/iap/verify/public_key-jwk";
pub const IAP_ISSUER: &str = "https://cloud.google.com/iap";

#[derive(Clone, Debug)]
pub struct IapConfig {
    /// `/projects/NUMBER/global/backendServices/ID` (or `/projects/NUMBER/apps/PROJECT`).
    pub audience: String,
    pub keys_url: String,
    pub issuer: String,
    /// Callers with these emails are admins; everyone else IAP admits is a deployer.
    pub admins: Vec<String>,
    /// Clock skew tolerated on `exp` and `iat`.
    pub leeway: Duration,
}

impl IapConfig {
    pub fn new(audience: impl Into<String>, admins: Vec<String>) -> Self {
        Self {
            audience: audience.into(),
            keys_url: IAP_KEYS_URL.into(),
            issuer: IAP_ISSUER.into(),
            admins,
            leeway: Duration::from_secs(30),
        }
    }
}

pub struct IapIdentity {
    config: IapConfig,
    http: reqwest::Client,
    keys: RwLock<Option<CachedKeys>>,
}

struct CachedKeys {
    set: JwkSet,
    fetched: Instant,
}

/// Google rotates IAP keys rarely; refetch hourly, or when a token names an unknown key (but at
/// most once a minute, so forged key ids cannot make us hammer the endpoint).
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
const MIN_REFETCH: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct Claims {
    email: Option<String>,
    iat: u64,
}

fn refused(message: &str) -> IdentityError {
    IdentityError::Unauthenticated(message.to_owned())
}

impl IapIdentity {
    pub fn new(config: IapConfig) -> Self {
        Self {
            config,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client builds"),
            keys: RwLock::new(None),
        }
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, IdentityError> {
        let refetch = {
            let cached = self.keys.read().expect("keys lock");
            match cached.as_ref() {
                Some(keys)
                    if keys.fetched.elapsed() < KEYS_MAX_AGE && keys.set.find(kid).is_some() =>
                {
                    return DecodingKey::from_jwk(keys.set.find(kid).expect("found"))
                        .map_err(|e| IdentityError::Other(e.into()));
                }
                Some(keys) => keys.fetched.elapsed() >= MIN_REFETCH,
                None => true,
            }
        };
        if refetch {
            let set: JwkSet = self
                .http
                .get(&self.config.keys_url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| IdentityError::Other(anyhow::anyhow!("fetching IAP keys: {e}")))?
                .json()
                .await
                .map_err(|e| IdentityError::Other(anyhow::anyhow!("IAP keys: {e}")))?;
            *self.keys.write().expect("keys lock") = Some(CachedKeys {
                set,
                fetched: Instant::now(),
            });
        }
        let cached = self.keys.read().expect("keys lock");
        let jwk = cached
            .as_ref()
            .and_then(|keys| keys.set.find(kid))
            .ok_or_else(|| refused("the IAP assertion is signed with an unknown key"))?;
        DecodingKey::from_jwk(jwk).map_err(|e| IdentityError::Other(e.into()))
    }
}

#[async_trait]
impl Identity for IapIdentity {
    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, IdentityError> {
        let token = headers
            .get(IAP_HEADER)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| {
                refused("no IAP assertion: requests must come through Identity-Aware Proxy")
            })?;
        let header = decode_header(token).map_err(|_| refused("the IAP assertion is not a JWT"))?;
        if header.alg != Algorithm::ES256 {
            return Err(refused("the IAP assertion must be signed with ES256"));
        }
        let kid = header
            .kid
            .ok_or_else(|| refused("the IAP assertion names no key"))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[&self.config.audience]);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
        validation.leeway = self.config.leeway.as_secs();
        let claims = decode::<Claims>(token, &key, &validation)
            .map_err(|error| {
                refused(match error.kind() {
                    ErrorKind::ExpiredSignature => "the IAP assertion has expired",
                    ErrorKind::InvalidAudience => "the IAP assertion is for another audience",
                    ErrorKind::InvalidIssuer => "the IAP assertion has the wrong issuer",
                    ErrorKind::InvalidSignature => "the IAP assertion's signature does not verify",
                    _ => "the IAP assertion is not valid",
                })
            })?
            .claims;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if claims.iat > now + self.config.leeway.as_secs() {
            return Err(refused("the IAP assertion was issued in the future"));
        }
        let email = claims
            .email
            .filter(|email| !email.is_empty())
            .ok_or_else(|| refused("the IAP assertion carries no email"))?;
        Ok(Caller {
            admin: self.config.admins.contains(&email),
            email,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use http::Method;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    use rand::RngCore;
    use serde_json::json;

    use super::*;
    use crate::http::{Router, json as json_response, serve_router};

    const AUDIENCE: &str = "/projects/123/global/backendServices/456";

    struct Keys {
        encoding: EncodingKey,
        jwk: serde_json::Value,
    }

    fn keys(kid: &str) -> Keys {
        let signing = loop {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                break key;
            }
        };
        let pem = signing.to_pkcs8_pem(LineEnding::LF).unwrap();
        let point = signing.verifying_key().to_encoded_point(false);
        Keys {
            encoding: EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
            }),
        }
    }

    /// Serves a JWK set on loopback, counting fetches.
    async fn key_server(jwks: Vec<serde_json::Value>) -> (String, Arc<AtomicUsize>) {
        let fetches = Arc::new(AtomicUsize::new(0));
        let set = json!({ "keys": jwks });
        let router = Router::new().route(
            Method::GET,
            "/jwk",
            (fetches.clone(), set),
            |(fetches, set): (Arc<AtomicUsize>, serde_json::Value), _, _| async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                Ok(json_response(http::StatusCode::OK, &set))
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwk", listener.local_addr().unwrap());
        tokio::spawn(serve_router(router, listener, std::future::pending()));
        (url, fetches)
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn claims() -> serde_json::Value {
        json!({
            "iss": IAP_ISSUER, "aud": AUDIENCE, "sub": "accounts.google.com:1",
            "email": "ada@example.com", "iat": now() - 10, "exp": now() + 600,
        })
    }

    fn sign(keys: &Keys, kid: &str, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        encode(&header, claims, &keys.encoding).unwrap()
    }

    async fn identity(url: &str) -> IapIdentity {
        let mut config = IapConfig::new(AUDIENCE, vec!["admin@example.com".into()]);
        config.keys_url = url.into();
        IapIdentity::new(config)
    }

    async fn check(identity: &IapIdentity, token: &str) -> Result<Caller, String> {
        let mut headers = HeaderMap::new();
        headers.insert(IAP_HEADER, token.parse().unwrap());
        identity.caller(&headers).await.map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn accepts_a_valid_assertion_and_takes_the_email_from_it() {
        let keys = keys("k1");
        let (url, fetches) = key_server(vec![keys.jwk.clone()]).await;
        let identity = identity(&url).await;
        let caller = check(&identity, &sign(&keys, "k1", &claims()))
            .await
            .unwrap();
        assert_eq!(
            caller,
            Caller {
                email: "ada@example.com".into(),
                admin: false
            }
        );
        let mut admin = claims();
        admin["email"] = json!("admin@example.com");
        assert!(
            check(&identity, &sign(&keys, "k1", &admin))
                .await
                .unwrap()
                .admin
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "keys must be cached");
    }

    #[tokio::test]
    async fn refuses_expired_wrong_audience_wrong_issuer_and_future_assertions() {
        let keys = keys("k1");
        let (url, _) = key_server(vec![keys.jwk.clone()]).await;
        let identity = identity(&url).await;
        let cases = [
            ("exp", json!(now() - 120), "expired"),
            (
                "aud",
                json!("/projects/999/global/backendServices/1"),
                "another audience",
            ),
            ("iss", json!("https://accounts.google.com"), "wrong issuer"),
            ("iat", json!(now() + 3600), "future"),
            ("email", json!(""), "no email"),
        ];
        for (claim, value, expected) in cases {
            let mut claims = claims();
            claims[claim] = value;
            let error = check(&identity, &sign(&keys, "k1", &claims))
                .await
                .unwrap_err();
            assert!(error.contains(expected), "{claim}: {error}");
        }
    }

    #[tokio::test]
    async fn tolerates_a_little_clock_skew() {
        let keys = keys("k1");
        let (url, _) = key_server(vec![keys.jwk.clone()]).await;
        let mut claims = claims();
        claims["exp"] = json!(now() - 10);
        claims["iat"] = json!(now() + 10);
        assert!(
            check(&identity(&url).await, &sign(&keys, "k1", &claims))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn refuses_a_tampered_assertion_another_key_and_another_algorithm() {
        let (trusted, other) = (keys("k1"), keys("k2"));
        let (url, _) = key_server(vec![trusted.jwk.clone()]).await;
        let identity = identity(&url).await;

        let token = sign(&trusted, "k1", &claims());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut forged = claims();
        forged["email"] = json!("admin@example.com");
        parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
        let error = check(&identity, &parts.join(".")).await.unwrap_err();
        assert!(error.contains("does not verify"), "{error}");

        // Signed by a key IAP does not publish, whatever kid it claims.
        let error = check(&identity, &sign(&other, "k1", &claims()))
            .await
            .unwrap_err();
        assert!(error.contains("does not verify"), "{error}");
        let error = check(&identity, &sign(&other, "k2", &claims()))
            .await
            .unwrap_err();
        assert!(error.contains("unknown key"), "{error}");

        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let hs = encode(&header, &claims(), &EncodingKey::from_secret(b"guess")).unwrap();
        let error = check(&identity, &hs).await.unwrap_err();
        assert!(error.contains("ES256"), "{error}");

        let error = identity
            .caller(&HeaderMap::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("Identity-Aware Proxy"), "{error}");
        assert!(check(&identity, "not.a.jwt").await.is_err());
    }
}
