//! The console's one origin on Google Cloud, as `infra/lb.tf` builds it: a global external
//! Application Load Balancer whose URL map sends each path to the function that owns it (read
//! from `infra/url_map.json`, the file the Terraform builds the map from), with IAP on the
//! backend services that file lists. What a browser and a script meet there:
//!
//! - **Routing** as Google's URL map does it: the most specific path rule wins (`/a/*` matches
//!   everything below `/a/`, not `/a` itself), anything unmatched goes to the default service;
//!   the query string plays no part.
//! - **IAP** on the backends in `iap`. A script sends `Authorization: Bearer ID_TOKEN` (audience:
//!   IAP's OAuth client id); a wrong token is answered 401. A browser without IAP's cookie is
//!   sent (302) to Google's sign-in (a page of this stand-in on its own origin, signing in
//!   whoever [`LoadBalancer::sign_in_as`] names), which sends it back through IAP's
//!   `/_gcp_gatekeeper/authenticate` to set the cookie; a request marked
//!   `X-Requested-With: XMLHttpRequest` gets 401 instead of the redirect. A signed-in identity
//!   that is not a member gets 403. Let through, the request carries IAP's signed
//!   `x-goog-iap-jwt-assertion` for the backend service's own audience; whatever the client sent
//!   in IAP's headers is dropped.
//! - **Proxying** as the load balancer does: the `Host` the client asked for is kept, the
//!   client's address and the load balancer's own are appended to `X-Forwarded-For` (what the
//!   client sent there is kept before them), `X-Forwarded-Proto` says the scheme the client
//!   used (plain HTTP here), and responses stream (Server-Sent Events arrive as written).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use runway_http::{Request, Response};
use serde::Deserialize;

use crate::google_keys::GoogleKeys;

/// The OAuth client id IAP's tokens name as their audience.
pub const IAP_CLIENT_ID: &str = "123456789012-iap.apps.googleusercontent.com";
/// IAP's session cookie (Google's is `__Host-GCP_IAP_AUTH_TOKEN_…`, which needs HTTPS).
const IAP_COOKIE: &str = "GCP_IAP_AUTH_TOKEN";
const GATEKEEPER: &str = "/_gcp_gatekeeper/authenticate";
/// Headers only IAP may set: a client's own are dropped.
const IAP_HEADERS: [&str; 4] = [
    "x-goog-iap-jwt-assertion",
    "x-goog-authenticated-user-email",
    "x-goog-authenticated-user-id",
    "x-serverless-authorization",
];
/// Hop-by-hop headers (RFC 9110 §7.6.1): never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// `infra/url_map.json`: which function owns which paths, and which are behind IAP.
#[derive(Debug, Clone, Deserialize)]
pub struct UrlMap {
    pub default: String,
    pub paths: BTreeMap<String, Vec<String>>,
    pub iap: BTreeSet<String>,
}

impl UrlMap {
    /// The map the Terraform builds the load balancer's from.
    pub fn of_infra() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/url_map.json");
        serde_json::from_str(&std::fs::read_to_string(&path).expect("infra/url_map.json"))
            .expect("infra/url_map.json parses")
    }

    /// The function that serves `path`: the owner of its most specific rule, else the default.
    pub fn route(&self, path: &str) -> &str {
        let mut best: Option<(usize, &str)> = None;
        for (function, patterns) in &self.paths {
            for pattern in patterns {
                let matched = match pattern.strip_suffix('*') {
                    Some(prefix) => path.starts_with(prefix),
                    None => path == pattern,
                };
                // An exact path is more specific than a prefix of the same length.
                let weight = pattern.len() * 2 + usize::from(!pattern.ends_with('*'));
                if matched && best.is_none_or(|(w, _)| weight > w) {
                    best = Some((weight, function));
                }
            }
        }
        best.map_or(&self.default, |(_, function)| function)
    }
}

struct Inner {
    map: UrlMap,
    /// Where each function listens.
    backends: BTreeMap<String, String>,
    /// The audience IAP signs each guarded backend's assertions for.
    audiences: BTreeMap<String, String>,
    /// Who IAP lets through: e-mails, or `domain:example.com`.
    members: Vec<String>,
    keys: Arc<GoogleKeys>,
    url: String,
    /// The forwarding rule's address, which the load balancer appends to `X-Forwarded-For`.
    address: std::net::IpAddr,
    accounts_url: String,
    /// Who the browser is signed in to Google as.
    signed_in: Mutex<Option<String>>,
    client: reqwest::Client,
}

pub struct LoadBalancer {
    pub url: String,
    inner: Arc<Inner>,
}

impl LoadBalancer {
    /// Binds the load balancer's address (known before the functions start: their webhook URL
    /// is on it); [`LoadBalancer::serve`] starts answering.
    pub async fn bind() -> anyhow::Result<(tokio::net::TcpListener, String)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        Ok((listener, url))
    }

    pub async fn serve(
        listener: tokio::net::TcpListener,
        backends: BTreeMap<String, String>,
        audiences: BTreeMap<String, String>,
        members: Vec<String>,
        keys: Arc<GoogleKeys>,
    ) -> anyhow::Result<Self> {
        let address = listener.local_addr()?;
        let url = format!("http://{address}");
        let accounts = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let accounts_url = format!("http://{}", accounts.local_addr()?);
        let map = UrlMap::of_infra();
        for function in map.iap.iter() {
            anyhow::ensure!(
                audiences.contains_key(function),
                "no IAP audience for {function}"
            );
        }
        let inner = Arc::new(Inner {
            map,
            backends,
            audiences,
            members,
            keys,
            url: url.clone(),
            address: address.ip(),
            accounts_url,
            signed_in: Mutex::new(None),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        });
        let front = inner.clone();
        tokio::spawn(runway_http::serve(
            listener,
            move |request: Request, peer: SocketAddr| {
                let inner = front.clone();
                async move { inner.handle(request, peer).await }
            },
            std::future::pending(),
            runway_http::serve::ServeOptions::default(),
        ));
        let google = inner.clone();
        tokio::spawn(runway_http::serve(
            accounts,
            move |request: Request, _| {
                let inner = google.clone();
                async move { inner.google_sign_in(&request) }
            },
            std::future::pending(),
            runway_http::serve::ServeOptions::default(),
        ));
        Ok(Self { url, inner })
    }

    /// The browser is signed in to Google as `email` from now on (`None`: signed out).
    pub fn sign_in_as(&self, email: Option<&str>) {
        *self.inner.signed_in.lock().unwrap() = email.map(str::to_owned);
    }

    /// The function the URL map sends `path` to.
    pub fn route(&self, path: &str) -> &str {
        self.inner.map.route(path)
    }

    /// A script's identity token for IAP (`gcloud auth print-identity-token --audiences=…`).
    pub fn id_token(&self, email: &str) -> String {
        self.inner.keys.id_token(IAP_CLIENT_ID, email)
    }
}

impl Inner {
    async fn handle(&self, request: Request, peer: SocketAddr) -> Response {
        let path = request.uri().path().to_owned();
        if path == GATEKEEPER {
            return self.gatekeeper(&request);
        }
        let function = self.map.route(&path).to_owned();
        let mut assertion = None;
        if self.map.iap.contains(&function) {
            match self.iap(&request) {
                Ok(email) => {
                    assertion = Some(self.keys.iap_assertion(&self.audiences[&function], &email));
                }
                Err(refusal) => return *refusal,
            }
        }
        self.forward(request, peer, &function, assertion).await
    }

    /// Who IAP lets through, or its answer to a request it does not.
    fn iap(&self, request: &Request) -> Result<String, Box<Response>> {
        let headers = request.headers();
        let bearer = text(headers, header::AUTHORIZATION.as_str())
            .and_then(|value| value.strip_prefix("Bearer "));
        let token = match bearer {
            Some(token) => Some(token.to_owned()),
            None => cookie(headers, IAP_COOKIE),
        };
        let Some(token) = token else {
            if text(headers, "x-requested-with") == Some("XMLHttpRequest") {
                return Err(Box::new(plain(StatusCode::UNAUTHORIZED, "Unauthorized")));
            }
            return Err(Box::new(self.to_sign_in(request)));
        };
        let Some(email) = (self.keys.verifier())(&token, IAP_CLIENT_ID) else {
            return Err(Box::new(plain(
                StatusCode::UNAUTHORIZED,
                "Invalid IAP credentials: JWT audience doesn't match this application or the token is not valid",
            )));
        };
        let domain = email.rsplit('@').next().unwrap_or_default();
        let member = self
            .members
            .iter()
            .any(|m| m == &email || m.strip_prefix("domain:") == Some(domain));
        if !member {
            return Err(Box::new(plain(
                StatusCode::FORBIDDEN,
                &format!("You don't have access. {email} is not allowed by IAP's policy."),
            )));
        }
        Ok(email)
    }

    /// 302 to Google's sign-in, which comes back to the gatekeeper with where to go after.
    fn to_sign_in(&self, request: &Request) -> Response {
        let back = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let location = format!(
            "{}/o/oauth2/v2/auth?client_id={IAP_CLIENT_ID}&redirect_uri={}&state={}",
            self.accounts_url,
            encode(&format!("{}{GATEKEEPER}", self.url)),
            encode(&back),
        );
        redirect(&location, None)
    }

    /// Google's sign-in page: hands the signed-in person's ID token back to IAP.
    fn google_sign_in(&self, request: &Request) -> Response {
        let query = query_pairs(request);
        let Some(email) = self.signed_in.lock().unwrap().clone() else {
            return plain(StatusCode::UNAUTHORIZED, "Sign in to Google to continue.");
        };
        let Some(redirect_uri) = query.get("redirect_uri") else {
            return plain(StatusCode::BAD_REQUEST, "redirect_uri is missing");
        };
        if query.get("client_id").map(String::as_str) != Some(IAP_CLIENT_ID) {
            return plain(StatusCode::BAD_REQUEST, "The OAuth client was not found.");
        }
        let token = self.keys.id_token(IAP_CLIENT_ID, &email);
        let state = query.get("state").cloned().unwrap_or_default();
        let location = format!(
            "{redirect_uri}?code={}&state={}",
            encode(&token),
            encode(&state)
        );
        redirect(&location, None)
    }

    /// IAP's gatekeeper: sets the session cookie from Google's answer and goes back.
    fn gatekeeper(&self, request: &Request) -> Response {
        let query = query_pairs(request);
        let token = query.get("code").cloned().unwrap_or_default();
        if (self.keys.verifier())(&token, IAP_CLIENT_ID).is_none() {
            return plain(StatusCode::UNAUTHORIZED, "Invalid IAP credentials");
        }
        // Only a path on this origin: never an open redirect.
        let back = query
            .get("state")
            .filter(|state| state.starts_with('/') && !state.starts_with("//"))
            .cloned()
            .unwrap_or_else(|| "/".to_owned());
        let cookie = format!("{IAP_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax");
        redirect(&back, Some(&cookie))
    }

    async fn forward(
        &self,
        request: Request,
        peer: SocketAddr,
        function: &str,
        assertion: Option<String>,
    ) -> Response {
        let (parts, body) = request.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return plain(StatusCode::BAD_REQUEST, "the request body did not arrive");
        };
        let target = format!(
            "{}{}",
            self.backends[function],
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &parts.headers {
            let name = name.as_str();
            let consumed = assertion.is_some() && name == header::AUTHORIZATION.as_str();
            if HOP_BY_HOP.contains(&name)
                || IAP_HEADERS.contains(&name)
                || name == "x-forwarded-proto"
                || consumed
            {
                continue;
            }
            headers.append(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                reqwest::header::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        // Google's: "<what the client sent>, <client>, <forwarding rule's address>".
        let appended = format!("{}, {}", peer.ip(), self.address);
        let forwarded_for = match text(&parts.headers, "x-forwarded-for") {
            Some(earlier) => format!("{earlier}, {appended}"),
            None => appended,
        };
        headers.insert("x-forwarded-for", forwarded_for.parse().unwrap());
        headers.insert("x-forwarded-proto", "http".parse().unwrap());
        headers.insert("via", "1.1 google".parse().unwrap());
        if let Some(assertion) = assertion {
            headers.insert("x-goog-iap-jwt-assertion", assertion.parse().unwrap());
        }
        let sent = self
            .client
            .request(method, target)
            .headers(headers)
            .body(body)
            .send()
            .await;
        let upstream = match sent {
            Ok(upstream) => upstream,
            Err(error) => {
                return plain(
                    StatusCode::BAD_GATEWAY,
                    &format!("upstream connect error or disconnect/reset before headers: {error}"),
                );
            }
        };
        let mut response = http::Response::builder()
            .status(StatusCode::from_u16(upstream.status().as_u16()).unwrap());
        for (name, value) in upstream.headers() {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                response = response.header(name.as_str(), value.as_bytes());
            }
        }
        let chunks = futures_util::stream::unfold(upstream, |mut upstream| async move {
            match upstream.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), upstream)),
                Ok(None) => None,
                Err(error) => Some((Err(error), upstream)),
            }
        });
        response
            .body(axum::body::Body::from_stream(chunks))
            .unwrap()
    }
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}

fn query_pairs(request: &Request) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn plain(status: StatusCode, message: &str) -> Response {
    http::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(runway_http::full(message.to_owned()))
        .unwrap()
}

fn redirect(location: &str, cookie: Option<&str>) -> Response {
    let mut response = http::Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, location);
    if let Some(cookie) = cookie {
        response = response.header(header::SET_COOKIE, HeaderValue::from_str(cookie).unwrap());
    }
    response.body(axum::body::Body::empty()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::UrlMap;

    #[test]
    fn the_most_specific_rule_routes_and_the_rest_goes_to_the_default() {
        let map = UrlMap::of_infra();
        for (path, function) in [
            ("/", "status"),
            ("/apps/demo", "status"),
            ("/apps/demo/events", "status"),
            ("/audit", "status"),
            ("/assets/console.css", "status"),
            ("/api/apps/demo", "status"),
            ("/api/builds/b-1/log", "status"),
            ("/api/audit", "status"),
            ("/new", "submit"),
            ("/new/secrets-check", "submit"),
            ("/api/deployments", "submit"),
            ("/api/deployments/demo", "submit"),
            ("/api/deployments/demo/rollback", "submit"),
            ("/github/webhook/demo", "github-webhook"),
            // Not below a rule's folder: the default's.
            ("/newer", "status"),
            ("/api/deploymentsx", "status"),
            ("/pubsub/deploy-requests", "status"),
            ("/cleanup/run", "status"),
        ] {
            assert_eq!(map.route(path), function, "{path}");
        }
    }
}
