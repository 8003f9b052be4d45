//! GitHub webhook signatures (`X-Hub-Signature-256`) and the parts of the push payload Runway
//! reads, shared by the ingress (which verifies) and the local git hook (which signs).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The secret the app's push webhook is signed with: HMAC-SHA256 of the app's name under the
/// installation's key. Every app's hook has a secret of its own, none is stored anywhere, and a
/// leaked hook secret reveals neither the key nor another app's secret.
pub fn app_secret(
    key: &secrecy::SecretString,
    app: &runway_core::domain::AppName,
) -> secrecy::SecretString {
    use secrecy::ExposeSecret;
    let mut mac =
        HmacSha256::new_from_slice(key.expose_secret().as_bytes()).expect("any key length");
    mac.update(b"runway-webhook:");
    mac.update(app.as_str().as_bytes());
    secrecy::SecretString::from(hex::encode(mac.finalize().into_bytes()))
}

/// Where GitHub delivers the app's pushes: the ingress URL with the app's name appended, so the
/// ingress knows which secret to check before it reads the body.
pub fn app_hook_url(ingress: &str, app: &runway_core::domain::AppName) -> String {
    format!("{}/{app}", ingress.trim_end_matches('/'))
}

/// `sha256=` + hex HMAC-SHA256 of the raw body.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a `X-Hub-Signature-256` header value in constant time.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(digest) = hex::decode(hex_digest) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

/// A `push` event, as much of it as Runway uses (GitHub sends much more, skipped unread: the
/// commits and `head_commit` are most of a push's body, and building them as JSON values showed
/// in the ingress's profile).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushEvent {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub before: String,
    pub after: String,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub deleted: bool,
    pub repository: PushRepository,
    #[serde(default)]
    pub pusher: Option<Pusher>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushRepository {
    pub id: u64,
    pub full_name: String,
    #[serde(default)]
    pub clone_url: Option<String>,
    #[serde(default)]
    pub default_branch: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pusher {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
}

/// The fields of a `pull_request` event Runway reads (GitHub's webhook payload).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PullRequestEvent {
    pub action: String,
    pub number: u64,
    pub pull_request: PullRequestBody,
    /// The base repository: the one the hook is on.
    pub repository: PushRepository,
    #[serde(default)]
    pub sender: Option<Sender>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PullRequestBody {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub html_url: String,
    /// `open` or `closed`.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub merged: bool,
    #[serde(default)]
    pub user: Option<Sender>,
    pub head: PullRequestEnd,
    pub base: PullRequestEnd,
}

/// A pull request's head or base: a branch of a repository at a commit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PullRequestEnd {
    #[serde(rename = "ref")]
    pub branch: String,
    pub sha: String,
    /// `null` for the head of a pull request whose fork was deleted.
    #[serde(default)]
    pub repo: Option<PushRepository>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sender {
    pub login: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_against_the_same_body_and_secret() {
        let signature = sign(b"s3cret", b"{\"zen\":\"hi\"}");
        assert!(verify(b"s3cret", b"{\"zen\":\"hi\"}", &signature));
    }

    #[test]
    fn a_signature_fails_for_another_body_secret_or_format() {
        let signature = sign(b"s3cret", b"body");
        assert!(!verify(b"s3cret", b"bodY", &signature));
        assert!(!verify(b"other", b"body", &signature));
        assert!(!verify(
            b"s3cret",
            b"body",
            signature.trim_start_matches("sha256=")
        ));
        assert!(!verify(b"s3cret", b"body", "sha256=zz"));
        assert!(!verify(b"s3cret", b"body", ""));
    }

    #[test]
    fn matches_githubs_documented_example() {
        // From GitHub's "Validating webhook deliveries" page.
        let signature = sign(b"It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(
            signature,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
