//! Who may drive Runway from a browser: only pages Runway served itself.
//!
//! A browser sends cookies (IAP's session on Google Cloud) and reaches loopback (the laptop's
//! `runway`) whatever page asked it to, so two checks stand between a hostile page and the API:
//!
//! - [`same_origin`], on every server: a state-changing request (anything but GET, HEAD and
//!   OPTIONS) that a browser marks as coming from elsewhere — `Sec-Fetch-Site` other than
//!   `same-origin` or `none`, or an `Origin` that is not `scheme://Host` of the request itself —
//!   is refused with 403. `same-site` is refused too: an app at `APP.localhost` is same-site
//!   with the `localhost` API. Requests with neither header are not a browser's (curl, GitHub,
//!   Pub/Sub push) and pass; a browser always sends `Origin` on a cross-site POST.
//! - [`AllowedHosts`], on the laptop: a request whose `Host` is not one of Runway's own names is
//!   refused before anything reads it, so a page whose domain resolves to 127.0.0.1 (DNS
//!   rebinding) cannot make itself same-origin with the API.
//!
//! The HTML form also carries a token matched against a cookie (`submit`'s double-submit
//! check), for browsers that send neither header.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, header};

use crate::ApiError;

/// The cookie the HTML form's token is matched against.
pub const CSRF_COOKIE: &str = "runway_csrf";
/// The form field that carries the token.
pub const CSRF_FIELD: &str = "csrf";

/// A fresh token for the HTML form, and the `Set-Cookie` value that stores it beside: only a
/// page Runway served knows it, and another site can neither read nor set the cookie
/// (`SameSite=Strict`, `HttpOnly`). `Secure` when the request came over HTTPS.
pub fn csrf_token(headers: &HeaderMap) -> (String, String) {
    let token = hex::encode(rand::random::<[u8; 32]>());
    let forwarded = header::HeaderName::from_static("x-forwarded-proto");
    let secure = match text(headers, &forwarded) {
        Some("https") => "; Secure",
        _ => "",
    };
    let cookie = format!("{CSRF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
    (token, cookie)
}

/// Whether `sent` (the form's field) is the token in the request's cookie.
pub fn csrf_matches(headers: &HeaderMap, sent: Option<&str>) -> bool {
    use sha2::{Digest, Sha256};
    let Some(sent) = sent.filter(|sent| !sent.is_empty()) else {
        return false;
    };
    // Compared as digests, so the time taken says nothing about the token.
    let sent = Sha256::digest(sent.as_bytes());
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(CSRF_COOKIE)?.strip_prefix('='))
        .any(|token| Sha256::digest(token.as_bytes()) == sent)
}

/// The value of a header, if it is text.
fn text<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The authority the client asked for: `Host`, or the URI's (HTTP/2).
fn host(request: &Request) -> Option<String> {
    text(request.headers(), &header::HOST)
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()))
        .map(|host| host.to_ascii_lowercase())
}

/// Why a browser's state-changing request is not this server's own page's, if it is not.
pub fn cross_site(request: &Request) -> Option<String> {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return None;
    }
    let headers = request.headers();
    let sec_fetch_site = header::HeaderName::from_static("sec-fetch-site");
    if let Some(site) = text(headers, &sec_fetch_site)
        && !matches!(site, "same-origin" | "none")
    {
        return Some(format!(
            "the browser says this request comes from another site (Sec-Fetch-Site: {site})"
        ));
    }
    let origin = text(headers, &header::ORIGIN)?;
    let own = host(request);
    let from = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .map(str::to_ascii_lowercase);
    if from.is_some() && from == own {
        return None;
    }
    Some(format!(
        "Origin {origin} is not this server's own ({})",
        own.as_deref().unwrap_or("no Host")
    ))
}

/// Middleware: refuses state-changing requests from other sites' pages (403).
pub async fn same_origin(request: Request, next: Next) -> Response {
    match cross_site(&request) {
        None => next.run(request).await,
        Some(why) => {
            tracing::warn!(
                method = %request.method(),
                path = %request.uri().path(),
                %why,
                "cross-site request refused"
            );
            ApiError::Forbidden(format!(
                "{why}: Runway takes changes only from its own pages and from API clients"
            ))
            .into_response()
        }
    }
}

/// The names a server on the laptop answers to: `localhost`, `127.0.0.1` and `[::1]` on its
/// port, and any the operator adds.
#[derive(Clone, Debug)]
pub struct AllowedHosts {
    hosts: Vec<String>,
}

impl AllowedHosts {
    /// Loopback on `port`, plus `extra` (`host` or `host:port`, as a `Host` header carries it).
    pub fn loopback(port: u16, extra: &[String]) -> Self {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .map(|name| format!("{name}:{port}"))
            .collect();
        hosts.extend(extra.iter().map(|host| host.to_ascii_lowercase()));
        Self { hosts }
    }

    /// Whether a request with this `Host` is for us.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// The refusal for any other `Host` (403), naming the ones we answer to.
    pub fn refuse(&self, host: &str) -> Response {
        tracing::warn!(host, "request for another host refused");
        ApiError::Forbidden(format!(
            "Host {host:?} is not a name this Runway answers to ({}); add it to \
             RUNWAY_ALLOWED_HOSTS if it is yours",
            self.hosts.join(", ")
        ))
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, headers: &[(&str, &str)]) -> Request {
        let mut builder = http::Request::builder()
            .method(method)
            .uri("/api/deployments");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn a_post_from_another_origin_or_site_is_refused() {
        let host = ("host", "127.0.0.1:8080");
        let refused = [
            vec![host, ("origin", "https://evil.example")],
            vec![host, ("origin", "null")],
            vec![host, ("origin", "http://127.0.0.1:9999")],
            vec![host, ("sec-fetch-site", "cross-site")],
            // An app at APP.localhost is the same site as the API at localhost.
            vec![
                ("host", "localhost:8080"),
                ("sec-fetch-site", "same-site"),
                ("origin", "http://app.localhost:8080"),
            ],
        ];
        for headers in refused {
            let why = cross_site(&request(Method::POST, &headers));
            assert!(why.is_some(), "{headers:?} was let through");
        }
        let why = cross_site(&request(
            Method::DELETE,
            &[host, ("origin", "https://evil.example")],
        ))
        .unwrap();
        assert!(why.contains("evil.example"), "{why}");
    }

    #[test]
    fn its_own_pages_api_clients_and_reads_pass() {
        let host = ("host", "127.0.0.1:8080");
        let allowed = [
            (Method::POST, vec![host]),
            (
                Method::POST,
                vec![
                    host,
                    ("origin", "http://127.0.0.1:8080"),
                    ("sec-fetch-site", "same-origin"),
                ],
            ),
            (
                Method::POST,
                vec![
                    ("host", "runway-submit-abc.a.run.app"),
                    ("origin", "https://runway-submit-abc.a.run.app"),
                ],
            ),
            (Method::POST, vec![host, ("sec-fetch-site", "none")]),
            (Method::GET, vec![host, ("origin", "https://evil.example")]),
        ];
        for (method, headers) in allowed {
            assert_eq!(cross_site(&request(method, &headers)), None, "{headers:?}");
        }
    }

    #[test]
    fn the_forms_token_must_be_the_cookies() {
        let (token, cookie) = csrf_token(&HeaderMap::new());
        assert_eq!(token.len(), 64);
        assert!(cookie.contains("SameSite=Strict") && cookie.contains("HttpOnly"));
        assert!(!cookie.contains("Secure"));
        let mut https = HeaderMap::new();
        https.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(csrf_token(&https).1.ends_with("; Secure"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            format!("other=1; {CSRF_COOKIE}={token}").parse().unwrap(),
        );
        assert!(csrf_matches(&headers, Some(&token)));
        assert!(!csrf_matches(&headers, Some("forged")));
        assert!(!csrf_matches(&headers, None));
        assert!(!csrf_matches(&HeaderMap::new(), Some(&token)));
    }

    #[test]
    fn only_loopback_names_on_our_port_and_the_ones_added_are_ours() {
        let hosts = AllowedHosts::loopback(8080, &["runway.lan:8080".into()]);
        for host in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "RUNWAY.lan:8080",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
        for host in ["evil.example:8080", "localhost:9090", "127.0.0.1", ""] {
            assert!(!hosts.allows(host), "{host}");
        }
    }
}
