//! `Identity` behind Identity-Aware Proxy: IAP signs every request it lets through with an ES256
//! JWT in `x-goog-iap-jwt-assertion`. We check its signature against Google's published keys
//! (fetched and cached), its issuer, its audience (this backend) and its times, and take the
//! caller's email from it. Without this check anyone who reaches the service directly could
//! claim any identity.

use std::time::Duration;

use async_trait::async_trait;
use http::HeaderMap;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::google_jwt::{GoogleJwtVerifier, JwtRules};
use runway_core::domain::Caller;
use runway_core::ports::{Identity, IdentityError};

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
    verifier: GoogleJwtVerifier,
    admins: Vec<String>,
}

impl IapIdentity {
    pub fn new(config: IapConfig) -> Self {
        Self {
            verifier: GoogleJwtVerifier::new(JwtRules {
                what: "IAP assertion",
                algorithm: Algorithm::ES256,
                keys_url: config.keys_url,
                issuers: vec![config.issuer],
                audience: config.audience,
                leeway: config.leeway,
            }),
            admins: config.admins,
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    email: Option<String>,
}

#[async_trait]
impl Identity for IapIdentity {
    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, IdentityError> {
        let token = headers
            .get(IAP_HEADER)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| {
                IdentityError::Unauthenticated(
                    "no IAP assertion: requests must come through Identity-Aware Proxy".into(),
                )
            })?;
        let claims: Claims = self.verifier.verify(token).await?;
        let email = claims
            .email
            .filter(|email| !email.is_empty())
            .ok_or_else(|| self.verifier.refused("carries no email"))?;
        Ok(Caller {
            admin: self.admins.contains(&email),
            email,
        })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;
    use crate::google_jwt::fakes::{TestKey, es256_key, serve_jwks as key_server};

    const AUDIENCE: &str = "/projects/123/global/backendServices/456";

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn claims() -> serde_json::Value {
        json!({
            "iss": IAP_ISSUER, "aud": AUDIENCE, "sub": "accounts.google.com:1",
            "email": "ada@example.com", "iat": now() - 10, "exp": now() + 600,
        })
    }

    fn sign(keys: &TestKey, kid: &str, claims: &serde_json::Value) -> String {
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
        let keys = es256_key("k1");
        let endpoint = key_server(vec![keys.jwk.clone()]).await;
        let identity = identity(&endpoint.url).await;
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
        assert_eq!(endpoint.fetches(), 1, "keys must be cached");
    }

    #[tokio::test]
    async fn refuses_expired_wrong_audience_wrong_issuer_and_future_assertions() {
        let keys = es256_key("k1");
        let url = key_server(vec![keys.jwk.clone()]).await.url;
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
        let keys = es256_key("k1");
        let url = key_server(vec![keys.jwk.clone()]).await.url;
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
        let (trusted, other) = (es256_key("k1"), es256_key("k2"));
        let url = key_server(vec![trusted.jwk.clone()]).await.url;
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
