//! Verifying JWTs that Google signs (IAP assertions, OIDC tokens from Pub/Sub push and Cloud
//! Scheduler): the signature against Google's published JWKs (fetched and cached), the issuer,
//! the audience and the times, with a little clock skew allowed.
//!
//! The keys are fetched by one request at a time (the others wait for its result), and when a
//! refetch fails the cached keys keep verifying for a while, so a short outage of Google's key
//! endpoint neither floods it nor locks every caller out.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use runway_core::ports::IdentityError;

/// Keys rotate rarely: refetch hourly, or when a token names an unknown key, but at most once a
/// minute so neither forged key ids nor a dead endpoint make us hammer it.
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
const MIN_REFETCH: Duration = Duration::from_secs(60);
/// Keys this old are not used even when they cannot be refreshed. Google publishes a key before
/// it signs with it and keeps it published for days after, so a day-old set still holds the keys
/// in use and an outage of up to a day costs no logins; past that we would rather refuse than go
/// on trusting a key Google may have withdrawn (the reason to refetch at all).
const KEYS_STALE_LIMIT: Duration = Duration::from_secs(24 * 3600);

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
    /// A std lock: held only to read or record, never across an await.
    cache: RwLock<KeyCache>,
    /// Held for the length of a fetch, so that concurrent misses make one request and the others
    /// wait for its result.
    fetching: Mutex<()>,
}

/// What the fetches so far brought.
#[derive(Default)]
struct KeyCache {
    /// The last key set fetched successfully.
    keys: Option<CachedKeys>,
    /// Fetches tried so far: a request that waited for its turn to fetch sees from it that
    /// another fetched meanwhile, and takes that result instead of fetching again.
    attempts: u64,
    /// When the last fetch was tried, whether it succeeded or not: refetches are spaced from it.
    last_attempt: Option<Instant>,
    /// Why the last fetch failed, if it did.
    last_failure: Option<String>,
}

struct CachedKeys {
    set: JwkSet,
    fetched: Instant,
}

impl KeyCache {
    /// Whether a token naming `kid` calls for a fetch: nothing cached yet (every request tries,
    /// one at a time, since without keys it fails anyway), or keys past their age or without
    /// `kid`, at most once per MIN_REFETCH.
    fn wants_fetch(&self, kid: &str) -> bool {
        match &self.keys {
            None => true,
            Some(keys) if keys.fetched.elapsed() < KEYS_MAX_AGE && keys.set.find(kid).is_some() => {
                false
            }
            Some(_) => self
                .last_attempt
                .is_none_or(|tried| tried.elapsed() >= MIN_REFETCH),
        }
    }

    fn record(&mut self, fetched: Result<JwkSet, String>) {
        let now = Instant::now();
        self.attempts += 1;
        self.last_attempt = Some(now);
        match fetched {
            Ok(set) => {
                self.keys = Some(CachedKeys { set, fetched: now });
                self.last_failure = None;
            }
            Err(failure) => self.last_failure = Some(failure),
        }
    }

    /// The cached keys, unless they are too old to be trusted any more.
    fn usable_keys(&self) -> Option<&CachedKeys> {
        self.keys
            .as_ref()
            .filter(|keys| keys.fetched.elapsed() < KEYS_STALE_LIMIT)
    }
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
            cache: RwLock::new(KeyCache::default()),
            fetching: Mutex::new(()),
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

    /// The key named `kid`, fetching the key set first when the cache calls for it.
    async fn key(&self, kid: &str) -> Result<DecodingKey, IdentityError> {
        let attempts_seen = {
            let cache = self.cache.read().expect("keys lock");
            cache.wants_fetch(kid).then_some(cache.attempts)
        };
        if let Some(attempts_seen) = attempts_seen {
            self.fetch_unless_fetched_since(attempts_seen).await;
        }
        self.cached_key(kid)
    }

    /// Fetches the keys, unless another request fetched (or tried to) while this one waited for
    /// its turn: then its result stands for this request too.
    async fn fetch_unless_fetched_since(&self, attempts_seen: u64) {
        let _turn = self.fetching.lock().await;
        if self.cache.read().expect("keys lock").attempts != attempts_seen {
            return;
        }
        let fetched = self.fetch().await;
        let mut cache = self.cache.write().expect("keys lock");
        if let Err(failure) = &fetched {
            self.warn_fetch_failed(failure, &cache);
        }
        cache.record(fetched);
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let fetch = async {
            self.http
                .get(&self.rules.keys_url)
                .send()
                .await?
                .error_for_status()?
                .json::<JwkSet>()
                .await
        };
        fetch
            .await
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
    }

    /// Once per failed fetch (so at most once per MIN_REFETCH while keys are cached), saying
    /// whether tokens still verify meanwhile.
    fn warn_fetch_failed(&self, failure: &str, cache: &KeyCache) {
        let (what, keys_url) = (self.rules.what, &self.rules.keys_url);
        match cache.usable_keys() {
            Some(keys) => tracing::warn!(
                what,
                keys_url,
                failure,
                keys_age_secs = keys.fetched.elapsed().as_secs(),
                "could not refresh Google's signing keys: verifying with the cached ones until \
                 they are {} hours old",
                KEYS_STALE_LIMIT.as_secs() / 3600,
            ),
            None => tracing::warn!(
                what,
                keys_url,
                failure,
                "could not fetch Google's signing keys: refusing tokens until a fetch succeeds",
            ),
        }
    }

    /// The cached key named `kid`. A kid the cached set lacks is refused even when the refetch
    /// failed: the token may be forged, and Google publishes keys before signing with them.
    fn cached_key(&self, kid: &str) -> Result<DecodingKey, IdentityError> {
        let cache = self.cache.read().expect("keys lock");
        let keys = cache
            .usable_keys()
            .ok_or_else(|| self.keys_unavailable(&cache))?;
        let jwk = keys
            .set
            .find(kid)
            .ok_or_else(|| self.refused("is signed with an unknown key"))?;
        DecodingKey::from_jwk(jwk).map_err(|e| IdentityError::Other(e.into()))
    }

    fn keys_unavailable(&self, cache: &KeyCache) -> IdentityError {
        let failure = cache
            .last_failure
            .as_deref()
            .unwrap_or("no fetch was tried");
        let (what, url) = (self.rules.what, &self.rules.keys_url);
        IdentityError::Other(anyhow::anyhow!(match &cache.keys {
            None => format!(
                "cannot verify the {what}: fetching Google's signing keys from {url} failed: {failure}"
            ),
            Some(keys) => format!(
                "cannot verify the {what}: Google's signing keys are {} hours old and refreshing them from {url} failed: {failure}",
                keys.fetched.elapsed().as_secs() / 3600
            ),
        }))
    }

    /// Makes the cache's keys and last fetch `by` older, as if that much time had passed.
    #[cfg(test)]
    fn let_time_pass(&self, by: Duration) {
        let earlier = |at: Instant| at.checked_sub(by).expect("the clock goes back that far");
        let mut cache = self.cache.write().expect("keys lock");
        if let Some(keys) = cache.keys.as_mut() {
            keys.fetched = earlier(keys.fetched);
        }
        cache.last_attempt = cache.last_attempt.map(earlier);
    }
}

/// Test doubles for Google's side: its key endpoint and keys to sign tokens with.
#[cfg(test)]
pub(crate) mod fakes {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::EncodingKey;
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    use rand::RngCore;
    use runway_http::{Router, json, serve_router};
    use serde_json::Value;
    use tokio::sync::watch;

    /// Google's key endpoint on loopback: serves a JWK set, counts fetches, and can be made to
    /// fail or to hold its answers until released.
    pub(crate) struct FakeKeyEndpoint {
        pub url: String,
        state: Arc<EndpointState>,
    }

    struct EndpointState {
        fetches: AtomicUsize,
        down: AtomicBool,
        /// Answers wait while this is false.
        open: watch::Sender<bool>,
    }

    impl FakeKeyEndpoint {
        /// How many fetches reached the endpoint (held ones included).
        pub(crate) fn fetches(&self) -> usize {
            self.state.fetches.load(Ordering::SeqCst)
        }

        /// From now on every fetch gets a 500.
        pub(crate) fn go_down(&self) {
            self.state.down.store(true, Ordering::SeqCst);
        }

        pub(crate) fn come_back(&self) {
            self.state.down.store(false, Ordering::SeqCst);
        }

        /// Fetches wait for `release_answers` before they are answered.
        pub(crate) fn hold_answers(&self) {
            self.state.open.send_replace(false);
        }

        pub(crate) fn release_answers(&self) {
            self.state.open.send_replace(true);
        }
    }

    /// Serves `jwks` as a JWK set, answering at once until told otherwise.
    pub(crate) async fn serve_jwks(jwks: Vec<Value>) -> FakeKeyEndpoint {
        let state = Arc::new(EndpointState {
            fetches: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            open: watch::Sender::new(true),
        });
        let set = serde_json::json!({ "keys": jwks });
        let answering = state.clone();
        let router = Router::new().route(
            "/jwk",
            axum::routing::get(move || {
                let (state, set) = (answering.clone(), set.clone());
                async move {
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    let _ = state.open.subscribe().wait_for(|open| *open).await;
                    if state.down.load(Ordering::SeqCst) {
                        json(http::StatusCode::INTERNAL_SERVER_ERROR, &"down")
                    } else {
                        json(http::StatusCode::OK, &set)
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwk", listener.local_addr().unwrap());
        tokio::spawn(serve_router(router, listener, std::future::pending()));
        FakeKeyEndpoint { url, state }
    }

    /// An ES256 key as IAP signs with: the private half to sign, the public half as a JWK.
    pub(crate) struct TestKey {
        pub encoding: EncodingKey,
        pub jwk: Value,
    }

    pub(crate) fn es256_key(kid: &str) -> TestKey {
        let signing = loop {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                break key;
            }
        };
        let pem = signing.to_pkcs8_pem(LineEnding::LF).unwrap();
        let point = signing.verifying_key().to_encoded_point(false);
        TestKey {
            encoding: EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jsonwebtoken::{Header, encode};
    use tokio::sync::Semaphore;
    use tokio::task::JoinSet;

    use super::fakes::{FakeKeyEndpoint, TestKey, es256_key, serve_jwks};
    use super::*;

    const AUDIENCE: &str = "runway-tests";
    const ISSUER: &str = "https://issuer.example";

    fn verifier(endpoint: &FakeKeyEndpoint) -> GoogleJwtVerifier {
        GoogleJwtVerifier::new(JwtRules {
            what: "test token",
            algorithm: Algorithm::ES256,
            keys_url: endpoint.url.clone(),
            issuers: vec![ISSUER.into()],
            audience: AUDIENCE.into(),
            leeway: Duration::from_secs(30),
        })
    }

    fn token(key: &TestKey, kid: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims =
            serde_json::json!({ "iss": ISSUER, "aud": AUDIENCE, "iat": now - 5, "exp": now + 600 });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        encode(&header, &claims, &key.encoding).unwrap()
    }

    async fn check(verifier: &GoogleJwtVerifier, token: &str) -> Result<(), IdentityError> {
        verifier.verify::<serde_json::Value>(token).await.map(drop)
    }

    /// Twenty verifications at once on an empty cache, all of them waiting for the keys before
    /// the endpoint answers.
    async fn twenty_at_once(
        endpoint: &FakeKeyEndpoint,
        token: &str,
    ) -> Vec<Result<(), IdentityError>> {
        endpoint.hold_answers();
        let verifier = Arc::new(verifier(endpoint));
        // Each task says it started just before it first awaits. `#[tokio::test]` runs on one
        // thread, so a task runs until it waits (for the keys) before the next one starts:
        // once all twenty said so, all twenty are waiting.
        let started = Arc::new(Semaphore::new(0));
        let mut verifications = JoinSet::new();
        for _ in 0..20 {
            let (verifier, token, started) = (verifier.clone(), token.to_owned(), started.clone());
            verifications.spawn(async move {
                started.add_permits(1);
                check(&verifier, &token).await
            });
        }
        let _all_started = started.acquire_many(20).await.unwrap();
        endpoint.release_answers();
        verifications.join_all().await
    }

    #[tokio::test]
    async fn concurrent_misses_fetch_the_keys_once() {
        let key = es256_key("k1");
        let endpoint = serve_jwks(vec![key.jwk.clone()]).await;
        for outcome in twenty_at_once(&endpoint, &token(&key, "k1")).await {
            outcome.unwrap();
        }
        assert_eq!(endpoint.fetches(), 1);
    }

    #[tokio::test]
    async fn concurrent_misses_share_a_failed_fetch() {
        let key = es256_key("k1");
        let endpoint = serve_jwks(vec![key.jwk.clone()]).await;
        endpoint.go_down();
        for outcome in twenty_at_once(&endpoint, &token(&key, "k1")).await {
            assert!(matches!(outcome, Err(IdentityError::Other(_))));
        }
        assert_eq!(
            endpoint.fetches(),
            1,
            "those waiting take the fetch's failure, not a fetch each"
        );
    }

    #[tokio::test]
    async fn keys_past_their_age_keep_working_while_the_endpoint_is_down() {
        let key = es256_key("k1");
        let endpoint = serve_jwks(vec![key.jwk.clone()]).await;
        let verifier = verifier(&endpoint);
        let token = token(&key, "k1");
        check(&verifier, &token).await.unwrap();

        endpoint.go_down();
        verifier.let_time_pass(KEYS_MAX_AGE + MIN_REFETCH);
        check(&verifier, &token)
            .await
            .expect("stale keys verify while the endpoint is down");
        assert_eq!(endpoint.fetches(), 2, "a refetch was tried");
        check(&verifier, &token).await.unwrap();
        assert_eq!(
            endpoint.fetches(),
            2,
            "a failed refetch is not retried within MIN_REFETCH"
        );
        verifier.let_time_pass(MIN_REFETCH);
        check(&verifier, &token).await.unwrap();
        assert_eq!(endpoint.fetches(), 3, "but it is retried after it");

        verifier.let_time_pass(KEYS_STALE_LIMIT);
        let error = check(&verifier, &token).await.unwrap_err();
        assert!(matches!(error, IdentityError::Other(_)), "{error}");
        assert!(error.to_string().contains("signing keys are"), "{error}");

        endpoint.come_back();
        verifier.let_time_pass(MIN_REFETCH);
        check(&verifier, &token)
            .await
            .expect("fresh keys once the endpoint is back");
    }

    #[tokio::test]
    async fn an_unknown_key_is_refused_while_the_endpoint_is_down() {
        let (known, unknown) = (es256_key("k1"), es256_key("k2"));
        let endpoint = serve_jwks(vec![known.jwk.clone()]).await;
        let verifier = verifier(&endpoint);
        check(&verifier, &token(&known, "k1")).await.unwrap();

        endpoint.go_down();
        // Keys still fresh, then past their age: either way the unknown key makes us try a
        // refetch, which fails, and the token is refused as signed with an unknown key.
        for age in [MIN_REFETCH, KEYS_MAX_AGE] {
            verifier.let_time_pass(age);
            let error = check(&verifier, &token(&unknown, "k2")).await.unwrap_err();
            assert!(
                matches!(&error, IdentityError::Unauthenticated(m) if m.contains("unknown key")),
                "{error}"
            );
            check(&verifier, &token(&known, "k1"))
                .await
                .expect("the known key still verifies");
        }
        assert_eq!(endpoint.fetches(), 3);
    }

    #[tokio::test]
    async fn with_no_keys_a_dead_endpoint_is_a_clear_error() {
        let key = es256_key("k1");
        let endpoint = serve_jwks(vec![key.jwk.clone()]).await;
        endpoint.go_down();
        let verifier = verifier(&endpoint);
        for _ in 0..2 {
            let error = check(&verifier, &token(&key, "k1")).await.unwrap_err();
            assert!(matches!(error, IdentityError::Other(_)), "{error}");
            assert!(
                error.to_string().contains("fetching Google's signing keys"),
                "{error}"
            );
        }
        assert_eq!(
            endpoint.fetches(),
            2,
            "with nothing to fall back on, each request tries"
        );
    }
}
