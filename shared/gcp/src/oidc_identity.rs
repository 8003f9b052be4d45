//! `Identity` for the private functions (`worker`, `cleanup`): Pub/Sub push and Cloud Scheduler
//! call them with `Authorization: Bearer <OIDC token>`, signed by Google for the service account
//! configured on the subscription or job. We accept exactly that account, for exactly our URL.

use std::time::Duration;

use async_trait::async_trait;
use http::HeaderMap;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::google_jwt::{GoogleJwtVerifier, JwtRules};
use runway_core::domain::Caller;
use runway_core::ports::{Identity, IdentityError, bearer_token};

pub const GOOGLE_CERTS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// The audience set on the push subscription or job (by default the endpoint URL).
    pub audience: String,
    /// The only service account allowed to call.
    pub service_account: String,
    pub keys_url: String,
    pub leeway: Duration,
}

impl OidcConfig {
    pub fn new(audience: impl Into<String>, service_account: impl Into<String>) -> Self {
        Self {
            audience: audience.into(),
            service_account: service_account.into(),
            keys_url: GOOGLE_CERTS_URL.into(),
            leeway: Duration::from_secs(30),
        }
    }
}

pub struct OidcIdentity {
    verifier: GoogleJwtVerifier,
    service_account: String,
}

#[derive(Deserialize)]
struct Claims {
    email: Option<String>,
    #[serde(default)]
    email_verified: bool,
}

impl OidcIdentity {
    pub fn new(config: OidcConfig) -> Self {
        Self {
            verifier: GoogleJwtVerifier::new(JwtRules {
                what: "OIDC token",
                algorithm: Algorithm::RS256,
                keys_url: config.keys_url,
                issuers: vec![
                    "https://accounts.google.com".into(),
                    "accounts.google.com".into(),
                ],
                audience: config.audience,
                leeway: config.leeway,
            }),
            service_account: config.service_account,
        }
    }
}

#[async_trait]
impl Identity for OidcIdentity {
    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, IdentityError> {
        let token = bearer_token(headers).ok_or_else(|| {
            IdentityError::Unauthenticated("a Google OIDC bearer token is required".into())
        })?;
        let claims: Claims = self.verifier.verify(token).await?;
        match claims.email {
            Some(email) if claims.email_verified && email == self.service_account => {
                Ok(Caller { email, admin: true })
            }
            _ => Err(self
                .verifier
                .refused("is not for the expected service account")),
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
    use rsa::traits::PublicKeyParts;
    use serde_json::json;

    use super::*;
    use crate::google_jwt::fakes::serve_jwks;

    const AUDIENCE: &str = "https://worker-abc-ew.a.run.app/pubsub/deploy-requests";
    const PUSHER: &str = "pubsub-push@project.iam.gserviceaccount.com";

    fn rsa_key(kid: &str) -> (EncodingKey, serde_json::Value) {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pem = key.to_pkcs1_pem(LineEnding::LF).unwrap();
        let jwk = json!({
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        });
        (EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(), jwk)
    }

    fn claims() -> serde_json::Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": "https://accounts.google.com", "aud": AUDIENCE, "sub": "1",
            "email": PUSHER, "email_verified": true, "iat": now - 5, "exp": now + 3600,
        })
    }

    async fn check(identity: &OidcIdentity, token: &str) -> Result<Caller, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        identity.caller(&headers).await.map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn accepts_only_the_configured_service_account_for_our_audience() {
        let (key, jwk) = rsa_key("g1");
        let url = serve_jwks(vec![jwk]).await.url;
        let mut config = OidcConfig::new(AUDIENCE, PUSHER);
        config.keys_url = url;
        let identity = OidcIdentity::new(config);
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("g1".into());
        let sign = |claims: &serde_json::Value| encode(&header, claims, &key).unwrap();

        assert_eq!(
            check(&identity, &sign(&claims())).await.unwrap().email,
            PUSHER
        );
        let cases = [
            (
                "email",
                json!("someone-else@project.iam.gserviceaccount.com"),
                "service account",
            ),
            ("email_verified", json!(false), "service account"),
            ("aud", json!("https://other.run.app/"), "another audience"),
            ("iss", json!("https://cloud.google.com/iap"), "wrong issuer"),
            (
                "exp",
                json!(chrono::Utc::now().timestamp() - 300),
                "expired",
            ),
        ];
        for (claim, value, expected) in cases {
            let mut claims = claims();
            claims[claim] = value;
            let error = check(&identity, &sign(&claims)).await.unwrap_err();
            assert!(error.contains(expected), "{claim}: {error}");
        }
        let es = Header::new(Algorithm::HS256);
        let forged = encode(&es, &claims(), &EncodingKey::from_secret(b"x")).unwrap();
        assert!(
            check(&identity, &forged)
                .await
                .unwrap_err()
                .contains("RS256")
        );
        let error = identity
            .caller(&HeaderMap::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("bearer token"), "{error}");
    }
}
