//! One HTTP client for GitHub's REST API: the headers GitHub asks for, redirects followed by
//! hand so credentials only ever go to the configured API origin, and failures classified.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use super::errors::{Op, api_error, deprecation_notice};
use runway_core::ports::ForgeError;

/// GitHub answers a renamed repository with 301/307 and a tarball with 302 to codeload; a few
/// hops are normal, more is a loop.
const MAX_REDIRECTS: usize = 5;
const API_VERSION: &str = "2022-11-28";

pub(super) struct Api {
    http: reqwest::Client,
    base: Url,
}

/// A request to send: kept as parts so a redirect can send it again.
pub(super) struct Call<'a> {
    pub method: Method,
    pub url: Url,
    pub body: Option<&'a Value>,
    /// `Bearer` credential; sent only to the API's own origin.
    pub auth: Option<&'a SecretString>,
    /// An `ETag` from an earlier answer: GitHub then answers 304 while nothing changed, which
    /// costs no rate limit.
    pub if_none_match: Option<&'a str>,
    pub op: &'a Op,
}

impl Api {
    pub fn new(base: Url) -> anyhow::Result<Self> {
        anyhow::ensure!(
            matches!(base.scheme(), "https" | "http") && base.host().is_some(),
            "the GitHub API base must be an http(s) URL, not {base}"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "x-github-api-version",
            HeaderValue::from_static(API_VERSION),
        );
        let http = reqwest::Client::builder()
            .user_agent(concat!("runway/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            // Per read, not per request: a large tarball may take minutes, a stalled one may not.
            .read_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self { http, base })
    }

    /// The API URL for `segments`, each percent-encoded; the base's own path (GitHub Enterprise's
    /// `/api/v3`) is kept.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends `call`, following redirects, and returns the first answer that is not one, whatever
    /// its status: callers look at it (a 401 drops a cached token) before [`Api::check`].
    pub async fn send(&self, call: Call<'_>) -> Result<reqwest::Response, ForgeError> {
        let (mut method, mut url, mut body) = (call.method, call.url, call.body);
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(token) = call.auth.filter(|_| self.same_origin(&url)) {
                request = request.bearer_auth(token.expose_secret());
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(etag) = call.if_none_match {
                request = request.header(header::IF_NONE_MATCH, etag);
            }
            let response = request.send().await.map_err(|e| unreachable(&url, e))?;
            if let Some(notice) = deprecation_notice(response.headers(), &call.op.action) {
                tracing::warn!(%notice, "GitHub API deprecation");
            }
            let status = response.status();
            let Some(next) = redirect_target(&response, &url) else {
                return Ok(response);
            };
            // Like browsers and reqwest: 303, and 301/302 after a non-GET, become a GET.
            let keeps_method = matches!(
                status,
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
            ) || (method == Method::GET && status != StatusCode::SEE_OTHER);
            if !keeps_method {
                method = Method::GET;
                body = None;
            }
            url = next;
        }
        Err(ForgeError::Other(anyhow::anyhow!(
            "GitHub redirected more than {MAX_REDIRECTS} times when Runway tried to {}",
            call.op.action
        )))
    }

    /// The answer if it is a success, else the `ForgeError` that says what to do.
    pub async fn check(
        &self,
        response: reqwest::Response,
        op: &Op,
    ) -> Result<reqwest::Response, ForgeError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        Err(api_error(status, &headers, &bytes, op))
    }

    /// Reads a successful answer's JSON as `T`.
    pub async fn read_json<T: DeserializeOwned>(
        &self,
        response: reqwest::Response,
        op: &Op,
    ) -> Result<T, ForgeError> {
        let url = response.url().clone();
        let bytes = response.bytes().await.map_err(|e| unreachable(&url, e))?;
        serde_json::from_slice(&bytes).map_err(|error| {
            ForgeError::Other(anyhow::anyhow!(
                "GitHub's answer when Runway tried to {} was not what its API documents: {error}",
                op.action
            ))
        })
    }

    /// Sends `call` and reads the JSON of its successful answer.
    pub async fn json<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T, ForgeError> {
        let op = call.op;
        let response = self.send(call).await?;
        let response = self.check(response, op).await?;
        self.read_json(response, op).await
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }
}

/// Where a 3xx answer points, resolved against the URL that was asked.
fn redirect_target(response: &reqwest::Response, from: &Url) -> Option<Url> {
    if !response.status().is_redirection() {
        return None;
    }
    let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
    from.join(location).ok()
}

/// A transport failure. reqwest's message names the URL, which for a tarball can carry a
/// short-lived download token, so only the host is kept.
fn unreachable(url: &Url, error: reqwest::Error) -> ForgeError {
    let host = url.host_str().unwrap_or("GitHub");
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    ForgeError::Unavailable(format!(
        "a request to {host} {what}: {}",
        error.without_url()
    ))
}

/// The `rel="next"` URL of a `Link` header, as GitHub paginates lists.
pub(super) fn next_page(headers: &HeaderMap) -> Option<Url> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|param| param.trim().replace(' ', "") == "rel=\"next\"");
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| Url::parse(target).ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_next_page_in_a_link_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LINK,
            HeaderValue::from_static(
                "<https://api.github.com/repositories/1/hooks?page=3>; rel=\"next\", \
                 <https://api.github.com/repositories/1/hooks?page=9>; rel=\"last\"",
            ),
        );

        let next = next_page(&headers).unwrap();

        assert_eq!(
            next.as_str(),
            "https://api.github.com/repositories/1/hooks?page=3"
        );
    }

    #[test]
    fn the_last_page_has_no_next() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LINK,
            HeaderValue::from_static("<https://api.github.com/x?page=1>; rel=\"first\""),
        );

        assert!(next_page(&headers).is_none());
    }

    #[test]
    fn urls_keep_an_enterprise_base_path_and_encode_segments() {
        let api = Api::new(Url::parse("https://ghe.example.com/api/v3/").unwrap()).unwrap();

        let url = api.url(&["repos", "acme", "a b", "branches", "feature", "x"]);

        assert_eq!(
            url.as_str(),
            "https://ghe.example.com/api/v3/repos/acme/a%20b/branches/feature/x"
        );
    }
}
