//! Google's signing keys, as a test holds them: an ES256 key for IAP assertions and an RS256 key
//! for the OIDC tokens Pub/Sub push and Cloud Scheduler send, with their public halves served as
//! JWK sets on loopback (where `RUNWAY_IAP_KEYS_URL` and `RUNWAY_OIDC_KEYS_URL` point).
//!
//! `PushRelay` stands in for the one thing the Pub/Sub emulator does not do: a real push
//! subscription sends `Authorization: Bearer <OIDC token>` for its service account; the emulator
//! sends none. The emulator pushes to the relay, which adds the token and forwards the request
//! unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use runway_http::Request;
use serde_json::{Value, json};

pub const IAP_ISSUER: &str = "https://cloud.google.com/iap";
pub const OIDC_ISSUER: &str = "https://accounts.google.com";

pub struct GoogleKeys {
    iap: EncodingKey,
    oidc: EncodingKey,
    oidc_public: DecodingKey,
    pub iap_keys_url: String,
    pub oidc_keys_url: String,
}

impl GoogleKeys {
    pub async fn start() -> Arc<Self> {
        let signing = loop {
            let mut bytes = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                break key;
            }
        };
        let point = signing.verifying_key().to_encoded_point(false);
        let iap_jwk = json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "iap-test",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        });
        let iap_pem = signing.to_pkcs8_pem(LineEnding::LF).unwrap();

        let rsa = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let oidc_jwk = json!({
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": "oidc-test",
            "n": URL_SAFE_NO_PAD.encode(rsa.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(rsa.e().to_bytes_be()),
        });
        let oidc_pem = rsa.to_pkcs1_pem(LineEnding::LF).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let sets = Arc::new((json!({ "keys": [iap_jwk] }), json!({ "keys": [oidc_jwk] })));
        tokio::spawn(runway_http::serve(
            listener,
            move |request: Request, _| {
                let sets = sets.clone();
                async move {
                    let set = if request.uri().path() == "/iap" {
                        &sets.0
                    } else {
                        &sets.1
                    };
                    runway_http::json(::http::StatusCode::OK, set)
                }
            },
            std::future::pending(),
            runway_http::serve::ServeOptions::default(),
        ));
        Arc::new(Self {
            iap: EncodingKey::from_ec_pem(iap_pem.as_bytes()).unwrap(),
            oidc: EncodingKey::from_rsa_pem(oidc_pem.as_bytes()).unwrap(),
            oidc_public: DecodingKey::from_rsa_components(
                &URL_SAFE_NO_PAD.encode(rsa.n().to_bytes_be()),
                &URL_SAFE_NO_PAD.encode(rsa.e().to_bytes_be()),
            )
            .unwrap(),
            iap_keys_url: format!("{base}/iap"),
            oidc_keys_url: format!("{base}/oidc"),
        })
    }

    /// What IAP puts in `x-goog-iap-jwt-assertion` for a signed-in `email`.
    pub fn iap_assertion(&self, audience: &str, email: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("iap-test".into());
        let claims = json!({
            "iss": IAP_ISSUER, "aud": audience, "sub": format!("accounts.google.com:{email}"),
            "email": email, "iat": now - 5, "exp": now + 600,
        });
        encode(&header, &claims, &self.iap).unwrap()
    }

    /// A Google ID token for a signed-in person, as `gcloud auth print-identity-token
    /// --audiences=AUDIENCE` prints it.
    pub fn id_token(&self, audience: &str, email: &str) -> String {
        self.oidc_token(audience, email)
    }

    /// Checks a Google ID token as Cloud Run and IAP do (signature, issuer, audience, expiry)
    /// and gives its email.
    pub fn verifier(self: &Arc<Self>) -> crate::fake_cloud_run::Verifier {
        let keys = self.clone();
        Arc::new(move |token, audience| {
            let mut validation = Validation::new(Algorithm::RS256);
            validation.set_audience(&[audience]);
            validation.set_issuer(&[OIDC_ISSUER]);
            let claims = decode::<Value>(token, &keys.oidc_public, &validation)
                .ok()?
                .claims;
            claims["email"].as_str().map(str::to_owned)
        })
    }

    /// The OIDC token Pub/Sub push or Cloud Scheduler sends as `service_account`.
    pub fn oidc_token(&self, audience: &str, service_account: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("oidc-test".into());
        let claims: Value = json!({
            "iss": OIDC_ISSUER, "aud": audience, "sub": "1234567890",
            "email": service_account, "email_verified": true,
            "iat": now - 5, "exp": now + 3600,
        });
        encode(&header, &claims, &self.oidc).unwrap()
    }
}

/// Forwards every request to `target` (same path and body) with an OIDC token added, as Pub/Sub
/// pushes with the push service account's token, and keeps each message's last answer.
pub struct PushRelay {
    pub url: String,
    answers: Arc<std::sync::Mutex<BTreeMap<String, u16>>>,
}

impl PushRelay {
    pub async fn start(
        target: String,
        keys: Arc<GoogleKeys>,
        audience: String,
        service_account: String,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let client = reqwest::Client::new();
        let answers = Arc::<std::sync::Mutex<BTreeMap<String, u16>>>::default();
        let context = Arc::new((target, keys, audience, service_account, client));
        let kept = answers.clone();
        tokio::spawn(runway_http::serve(
            listener,
            move |request: Request, _| {
                let context = context.clone();
                let answers = kept.clone();
                async move {
                    let (target, keys, audience, account, client) = &*context;
                    let path = request.uri().path().to_owned();
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    let message =
                        serde_json::from_slice::<Value>(&body)
                            .ok()
                            .and_then(|envelope| {
                                Some(envelope["message"]["messageId"].as_str()?.to_owned())
                            });
                    let token = keys.oidc_token(audience, account);
                    let forwarded = client
                        .post(format!("{target}{path}"))
                        .bearer_auth(token)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    let status = match forwarded {
                        Ok(response) => response.status().as_u16(),
                        Err(_) => 502,
                    };
                    if let Some(message) = message {
                        let mut answers = answers.lock().expect("answers");
                        answers.insert(format!("{path} {message}"), status);
                    }
                    runway_http::json(::http::StatusCode::from_u16(status).unwrap(), &"")
                }
            },
            std::future::pending(),
            runway_http::serve::ServeOptions::default(),
        ));
        Self { url, answers }
    }

    /// The messages whose last push was not acknowledged (`path messageId`, and the answer):
    /// Pub/Sub pushes them again, and on Google Cloud gives them up to the dead-letter topic
    /// after `max_delivery_attempts`.
    pub fn unacknowledged(&self) -> Vec<(String, u16)> {
        self.answers
            .lock()
            .expect("answers")
            .iter()
            .filter(|(_, status)| !(200..300).contains(*status))
            .map(|(message, status)| (message.clone(), *status))
            .collect()
    }
}
