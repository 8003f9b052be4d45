//! GitHub's error answers as `ForgeError`s a person can act on: which credential is wrong, which
//! permission is missing, when the rate limit resets. GitHub's own words (`message`, `errors`)
//! are kept, cut short; credentials never appear (requests carry them in headers only, and
//! callers scrub anything they sent in a body with [`scrub`]).

use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use runway_core::ports::ForgeError;

/// How much of GitHub's message an error keeps.
const MAX_MESSAGE_CHARS: usize = 300;

/// What a request was for, so a failure can say what to do about it.
pub(super) struct Op {
    /// What Runway tried, as in "could not {action}": "read the repository acme/app".
    pub action: String,
    pub needs: Permission,
    /// What a 404 means for this request.
    pub missing: String,
}

/// The least a GitHub App (or token) needs for a request; Runway asks for nothing more.
#[derive(Clone, Copy, Debug)]
pub(super) enum Permission {
    Contents,
    Webhooks,
    /// Deployments and their statuses, and commit statuses: how releases show on GitHub.
    Deployments,
    /// Comments on pull requests: where a preview says where it is.
    PullRequests,
    /// Finding the App's installation and minting its tokens: the App's own key.
    App,
    /// GitHub's public API (`/meta`): no credential at all.
    Public,
}

impl Permission {
    fn describe(self) -> &'static str {
        match self {
            Self::Contents => {
                "the GitHub App needs the repository permission \"Contents: read\" (a \
                 fine-grained token: Contents read-only; a classic token: the repo scope)"
            }
            Self::Webhooks => {
                "the GitHub App needs the repository permission \"Webhooks: read and write\" \
                 (a fine-grained token: Webhooks read and write; a classic token: the \
                 admin:repo_hook scope)"
            }
            Self::Deployments => {
                "the GitHub App needs the repository permissions \"Deployments: read and write\" \
                 and \"Commit statuses: read and write\" (a fine-grained token: the same; a \
                 classic token: the repo_deployment and repo:status scopes)"
            }
            Self::PullRequests => {
                "the GitHub App needs the repository permission \"Pull requests: read and \
                 write\" (a fine-grained token: the same; a classic token: the repo scope)"
            }
            Self::App => "check the GitHub App's id and private key, and that it is installed",
            Self::Public => {
                "this is public on GitHub; check that RUNWAY_GITHUB_API is GitHub's API"
            }
        }
    }
}

/// What to grant so Runway may manage a repository's webhooks.
pub(super) fn webhooks_permission() -> &'static str {
    Permission::Webhooks.describe()
}

/// GitHub's error body: `{"message", "errors", "documentation_url"}`.
#[derive(Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Vec<Value>,
}

/// Classifies a non-success answer from GitHub.
pub(super) fn api_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    op: &Op,
) -> ForgeError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let message = shorten(parsed.message.as_deref().unwrap_or("no message"));
    let action = &op.action;
    if let Some(error) = rate_limited(status, headers, &message, action) {
        return error;
    }
    match status {
        StatusCode::UNAUTHORIZED => ForgeError::Rejected(format!(
            "GitHub refused Runway's credentials (401 {message}) when Runway tried to {action}: \
             the token is invalid or has expired; configure a valid token or GitHub App key"
        )),
        StatusCode::FORBIDDEN => ForgeError::Rejected(format!(
            "Runway's GitHub credentials may not {action} (403 {message}): {}",
            op.needs.describe()
        )),
        StatusCode::NOT_FOUND => ForgeError::NotFound(op.missing.clone()),
        // Not "missing": what GitHub retired (an API version, a disabled feature) stays gone,
        // and Runway must change, not wait.
        StatusCode::GONE => ForgeError::Rejected(format!(
            "GitHub answered 410 Gone when Runway tried to {action} ({message}): GitHub no \
             longer serves this; Runway needs an update"
        )),
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::CONFLICT | StatusCode::BAD_REQUEST => {
            let details = validation_details(&parsed.errors);
            ForgeError::Rejected(format!(
                "GitHub refused to {action} ({} {message}{details})",
                status.as_u16()
            ))
        }
        status if status.is_server_error() => ForgeError::Unavailable(format!(
            "GitHub answered {} when Runway tried to {action}; try again later",
            status.as_u16()
        )),
        status => ForgeError::Other(anyhow::anyhow!(
            "GitHub answered {} when Runway tried to {action}: {message}",
            status.as_u16()
        )),
    }
}

/// The primary limit (`x-ratelimit-remaining: 0`, on 403 or 429) names when it resets; a
/// secondary limit (429, or 403 with `retry-after`) names how long to wait.
fn rate_limited(
    status: StatusCode,
    headers: &HeaderMap,
    message: &str,
    action: &str,
) -> Option<ForgeError> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("x-ratelimit-remaining") == Some("0") {
        let reset = header("x-ratelimit-reset")
            .and_then(|v| v.trim().parse::<i64>().ok())
            .and_then(|epoch| DateTime::<Utc>::from_timestamp(epoch, 0));
        let when = match reset {
            Some(reset) => format!("it resets at {}", describe_reset(reset, Utc::now())),
            None => "GitHub did not say when it resets".to_owned(),
        };
        return Some(ForgeError::Unavailable(format!(
            "GitHub's API rate limit for Runway's credentials is used up, so Runway could not \
             {action}; {when}"
        )));
    }
    let retry_after = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
    let secondary = status == StatusCode::TOO_MANY_REQUESTS
        || retry_after.is_some()
        || message
            .to_ascii_lowercase()
            .contains("secondary rate limit");
    secondary.then(|| {
        let wait = retry_after.map_or_else(
            || "wait a minute".to_owned(),
            |seconds| format!("retry after {seconds} s"),
        );
        ForgeError::Unavailable(format!(
            "GitHub's secondary rate limit stopped Runway from trying to {action} ({message}); \
             {wait}"
        ))
    })
}

/// GitHub's notice that an API Runway calls is going away (`Deprecation`, `Sunset`), for the
/// log: the operator then hears of it before it answers 410.
pub(super) fn deprecation_notice(headers: &HeaderMap, action: &str) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (deprecation, sunset) = (header("deprecation"), header("sunset"));
    if deprecation.is_none() && sunset.is_none() {
        return None;
    }
    Some(format!(
        "GitHub marks the API Runway used to {action} as deprecated{}{}",
        deprecation.map_or(String::new(), |at| format!(" (since {at})")),
        sunset.map_or(String::new(), |at| format!("; it stops answering on {at}")),
    ))
}

/// "2030-01-01 00:00:00 UTC (in 12 minutes)".
fn describe_reset(reset: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let at = reset.format("%Y-%m-%d %H:%M:%S UTC");
    let seconds = (reset - now).num_seconds();
    if (1..86_400).contains(&seconds) {
        let minutes = (seconds + 59) / 60;
        let unit = if minutes == 1 { "minute" } else { "minutes" };
        format!("{at} (in {minutes} {unit})")
    } else {
        at.to_string()
    }
}

/// GitHub's `errors` list: objects (`resource`, `field`, `code`, `message`) or plain strings.
fn validation_details(errors: &[Value]) -> String {
    let parts: Vec<String> = errors
        .iter()
        .filter_map(|error| match error {
            Value::String(text) => Some(text.clone()),
            Value::Object(fields) => {
                let text = |key: &str| fields.get(key).and_then(Value::as_str);
                text("message").map(str::to_owned).or_else(|| {
                    let field = text("field").unwrap_or("a field");
                    Some(format!("{field} is {}", text("code").unwrap_or("invalid")))
                })
            }
            _ => None,
        })
        .map(|part| shorten(&part))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join("; "))
    }
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// Replaces `secret` wherever it appears in the error's message: a last guard for values Runway
/// sent in a body (a webhook secret) in case GitHub ever echoes them back.
pub(super) fn scrub(error: ForgeError, secret: &str) -> ForgeError {
    if secret.is_empty() {
        return error;
    }
    let clean = |text: String| text.replace(secret, "[redacted]");
    match error {
        ForgeError::NotFound(text) => ForgeError::NotFound(clean(text)),
        ForgeError::Rejected(text) => ForgeError::Rejected(clean(text)),
        ForgeError::Unavailable(text) => ForgeError::Unavailable(clean(text)),
        ForgeError::Other(error) => {
            let text = format!("{error:#}");
            if text.contains(secret) {
                ForgeError::Other(anyhow::anyhow!(clean(text)))
            } else {
                ForgeError::Other(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> Op {
        Op {
            action: "list the webhooks of acme/app".into(),
            needs: Permission::Webhooks,
            missing: "repository acme/app not found".into(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn gone_is_not_missing() {
        let body = br#"{"message":"This API version is no longer supported."}"#;

        let error = api_error(StatusCode::GONE, &headers(&[]), body, &op());

        let ForgeError::Rejected(message) = error else {
            panic!("410 must not read as 'not found': {error:?}");
        };
        assert!(message.contains("410 Gone"), "{message}");
        assert!(message.contains("no longer supported"), "{message}");
    }

    #[test]
    fn deprecation_and_sunset_headers_make_a_notice() {
        assert_eq!(deprecation_notice(&headers(&[]), "list hooks"), None);
        let notice = deprecation_notice(
            &headers(&[
                ("deprecation", "@1767225600"),
                ("sunset", "Wed, 01 Jul 2026 00:00:00 GMT"),
            ]),
            "list hooks",
        )
        .unwrap();
        assert!(notice.contains("since @1767225600"), "{notice}");
        assert!(notice.contains("Wed, 01 Jul 2026"), "{notice}");
    }

    #[test]
    fn an_exhausted_rate_limit_is_retryable_and_names_the_reset() {
        let headers = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "4102444800"),
        ]);
        let body = br#"{"message":"API rate limit exceeded for installation ID 1."}"#;

        let error = api_error(StatusCode::FORBIDDEN, &headers, body, &op());

        let ForgeError::Unavailable(message) = error else {
            panic!("expected Unavailable, got {error:?}");
        };
        assert!(message.contains("2100-01-01 00:00:00 UTC"), "{message}");
    }

    #[test]
    fn too_many_requests_with_retry_after_says_how_long_to_wait() {
        let headers = headers(&[("retry-after", "30")]);

        let error = api_error(StatusCode::TOO_MANY_REQUESTS, &headers, b"{}", &op());

        assert!(
            matches!(&error, ForgeError::Unavailable(m) if m.contains("retry after 30 s")),
            "{error:?}"
        );
    }

    #[test]
    fn a_reset_soon_is_counted_in_minutes() {
        let now = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap();
        let reset = now + chrono::Duration::seconds(125);

        assert_eq!(
            describe_reset(reset, now),
            "1970-01-12 13:48:45 UTC (in 3 minutes)"
        );
    }

    #[test]
    fn a_plain_forbidden_names_the_permission_to_grant() {
        let body = br#"{"message":"Resource not accessible by integration"}"#;

        let error = api_error(StatusCode::FORBIDDEN, &HeaderMap::new(), body, &op());

        let ForgeError::Rejected(message) = error else {
            panic!("expected Rejected, got {error:?}");
        };
        assert!(message.contains("Resource not accessible by integration"));
        assert!(message.contains("Webhooks: read and write"), "{message}");
    }

    #[test]
    fn unauthorized_says_the_token_is_invalid_or_expired() {
        let error = api_error(
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            br#"{"message":"Bad credentials"}"#,
            &op(),
        );

        assert!(
            matches!(&error, ForgeError::Rejected(m) if m.contains("invalid or has expired")),
            "{error:?}"
        );
    }

    #[test]
    fn not_found_uses_the_operation_s_own_words() {
        let error = api_error(StatusCode::NOT_FOUND, &HeaderMap::new(), b"", &op());

        assert!(matches!(&error, ForgeError::NotFound(m) if m == "repository acme/app not found"));
    }

    #[test]
    fn validation_failures_keep_github_s_message_and_errors() {
        let body = br#"{"message":"Validation Failed","errors":[
            {"resource":"Hook","code":"custom","message":"Hook already exists on this repository"},
            {"resource":"Hook","field":"url","code":"invalid"},
            "plain text"]}"#;

        let error = api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &HeaderMap::new(),
            body,
            &op(),
        );

        let ForgeError::Rejected(message) = error else {
            panic!("expected Rejected, got {error:?}");
        };
        assert_eq!(
            message,
            "GitHub refused to list the webhooks of acme/app (422 Validation Failed: Hook \
             already exists on this repository; url is invalid; plain text)"
        );
    }

    #[test]
    fn server_errors_are_retryable() {
        let error = api_error(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>", &op());

        assert!(matches!(error, ForgeError::Unavailable(_)));
    }

    #[test]
    fn scrub_removes_a_secret_from_every_kind_of_error() {
        let errors = [
            ForgeError::Rejected("bad s3cret".into()),
            ForgeError::Other(anyhow::anyhow!("bad s3cret")),
        ];
        for error in errors {
            let text = format!("{:?} {}", scrub(error, "s3cret"), "");
            assert!(!text.contains("s3cret"), "{text}");
        }
    }
}
