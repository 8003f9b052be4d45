//! The `Identity` port's contract, run against every adapter: the people's side
//! (`LocalIdentity` on a laptop, `IapIdentity` behind IAP) and the machines' side (`PushToken`
//! for the local queue and timer, `OidcIdentity` for Pub/Sub push and Cloud Scheduler).
//!
//! Every adapter turns its valid credentials into the right caller and refuses everything else
//! as `Unauthenticated`, with a message that never repeats the credential it was shown. The
//! Google adapters are checked with keys the test generates and serves as Google's JWKs
//! (`support/google_keys.rs`); the per-claim refusals (expired, wrong audience, issuer or
//! algorithm, tampered) are unit tests beside `shared/gcp/src/`.

use http::{HeaderMap, HeaderValue};
use runway_core::domain::Caller;
use runway_core::ports::{Identity, IdentityError};
use runway_embedded::{LocalIdentity, PushToken};
use runway_gcp::{IapConfig, IapIdentity, OidcConfig, OidcIdentity};
use runway_tests::google_keys::GoogleKeys;

const IAP_AUDIENCE: &str = "/projects/123/locations/europe-west1/services/runway-submit";
const OIDC_AUDIENCE: &str = "https://runway-worker-abc-ew.a.run.app";
const PUSHER: &str = "runway-pubsub-push@demo.iam.gserviceaccount.com";

runway_tests::contract! {
    subjects: [
        local_identity => super::local_identity().await,
        push_token => super::push_token().await,
        iap_identity => super::iap_identity().await,
        oidc_identity => super::oidc_identity().await,
    ],
    checks: [the_contract_holds],
}

/// An adapter with credentials it must accept (and whom they name) and ones it must refuse.
struct Fixture {
    identity: Box<dyn Identity>,
    accepted: Vec<(HeaderMap, Caller)>,
    /// (what it is, the headers, the credential that must not be echoed).
    refused: Vec<(&'static str, HeaderMap, String)>,
}

fn headers(name: &'static str, value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(name, HeaderValue::from_str(value).unwrap());
    headers
}

fn bearer(token: &str) -> HeaderMap {
    headers("authorization", &format!("Bearer {token}"))
}

fn caller(email: &str, admin: bool) -> Caller {
    Caller {
        email: email.into(),
        admin,
    }
}

/// Flips one character of the signature: a token whose payload someone changed fails the same.
fn tampered(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

async fn the_contract_holds(fixture: &Fixture) {
    for (headers, expected) in &fixture.accepted {
        let caller = fixture
            .identity
            .caller(headers)
            .await
            .unwrap_or_else(|e| panic!("{expected:?} refused: {e}"));
        assert_eq!(&caller, expected);
    }
    for (what, headers, credential) in &fixture.refused {
        match fixture.identity.caller(headers).await {
            Err(IdentityError::Unauthenticated(message)) => {
                assert!(!message.is_empty(), "{what}: says why");
                assert!(
                    credential.is_empty() || !message.contains(credential.as_str()),
                    "{what}: the message repeats the credential: {message}"
                );
            }
            other => panic!("{what} must be Unauthenticated, got {other:?}"),
        }
    }
}

async fn local_identity() -> Fixture {
    // The laptop's one user, configured at start, is an admin; no header can change who it is.
    Fixture {
        identity: Box::new(LocalIdentity {
            email: "ada@localhost".into(),
        }),
        accepted: vec![
            (HeaderMap::new(), caller("ada@localhost", true)),
            (
                headers("x-goog-iap-jwt-assertion", "someone-else"),
                caller("ada@localhost", true),
            ),
        ],
        refused: vec![],
    }
}

async fn push_token() -> Fixture {
    let token = PushToken::random("runway-queue");
    let wrong = "0123456789abcdef0123456789abcdef".to_owned();
    Fixture {
        accepted: vec![(bearer(token.token()), caller("runway-queue", true))],
        refused: vec![
            ("no credentials", HeaderMap::new(), String::new()),
            ("a wrong token", bearer(&wrong), wrong.clone()),
            (
                "the token without Bearer",
                headers("authorization", token.token()),
                token.token().to_owned(),
            ),
        ],
        identity: Box::new(token),
    }
}

async fn iap_identity() -> Fixture {
    let keys = GoogleKeys::start().await;
    let mut config = IapConfig::new(IAP_AUDIENCE, vec!["admin@example.com".into()]);
    config.keys_url = keys.iap_keys_url.clone();
    let assertion = |email: &str| keys.iap_assertion(IAP_AUDIENCE, email);
    let iap = |value: &str| headers("x-goog-iap-jwt-assertion", value);
    let other_audience = keys.iap_assertion("/projects/123/global/backendServices/9", "ada@x.io");
    let tampered_assertion = tampered(&assertion("ada@example.com"));
    // An OIDC token is a Google-signed JWT too, but not IAP's (issuer, algorithm, key).
    let oidc = keys.oidc_token(IAP_AUDIENCE, "ada@example.com");
    Fixture {
        identity: Box::new(IapIdentity::new(config)),
        accepted: vec![
            (
                iap(&assertion("ada@example.com")),
                caller("ada@example.com", false),
            ),
            (
                iap(&assertion("admin@example.com")),
                caller("admin@example.com", true),
            ),
        ],
        refused: vec![
            ("no assertion", HeaderMap::new(), String::new()),
            (
                "another audience",
                iap(&other_audience),
                other_audience.clone(),
            ),
            (
                "a tampered assertion",
                iap(&tampered_assertion),
                tampered_assertion.clone(),
            ),
            ("an OIDC token", iap(&oidc), oidc.clone()),
            (
                "a bearer token",
                bearer(&assertion("ada@example.com")),
                String::new(),
            ),
        ],
    }
}

async fn oidc_identity() -> Fixture {
    let keys = GoogleKeys::start().await;
    let mut config = OidcConfig::new(OIDC_AUDIENCE, PUSHER);
    config.keys_url = keys.oidc_keys_url.clone();
    let token = keys.oidc_token(OIDC_AUDIENCE, PUSHER);
    let stranger = keys.oidc_token(OIDC_AUDIENCE, "someone@demo.iam.gserviceaccount.com");
    let other_audience = keys.oidc_token("https://elsewhere.a.run.app", PUSHER);
    let tampered_token = tampered(&token);
    let iap = keys.iap_assertion(OIDC_AUDIENCE, PUSHER);
    Fixture {
        identity: Box::new(OidcIdentity::new(config)),
        accepted: vec![(bearer(&token), caller(PUSHER, true))],
        refused: vec![
            ("no token", HeaderMap::new(), String::new()),
            (
                "another service account",
                bearer(&stranger),
                stranger.clone(),
            ),
            (
                "another audience",
                bearer(&other_audience),
                other_audience.clone(),
            ),
            (
                "a tampered token",
                bearer(&tampered_token),
                tampered_token.clone(),
            ),
            ("an IAP assertion", bearer(&iap), iap.clone()),
        ],
    }
}
