//! Posts one announcement to one target: the body its kind takes, signed for a webhook.
//!
//! A target is checked again before each post (the operator may since have fenced off private
//! networks), and where private targets are refused the client resolves names itself and
//! drops every address that is not on the public internet, so a name that points inside the
//! network (or is re-pointed there after it was saved) is never reached. Redirects are not
//! followed, for the same reason. No message here holds the URL: reqwest's errors are stripped
//! of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use runway_core::domain::{NotifyKind, NotifyTarget, PrivateTargets, is_global};
use runway_core::notify::{self, ReleaseEvent};
use secrecy::ExposeSecret;

/// How long one post may take, connecting included.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a refusal's body the message quotes (Slack's `no_service`, say).
const QUOTED_BODY: usize = 200;

/// Why a post did not land.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// Worth another try later: the target was slow, down, or asked us to wait.
    Retry(String),
    /// Will never land as it is: the hook is gone, or refuses the post.
    Refused(String),
}

#[derive(Clone)]
pub struct Notifier {
    client: reqwest::Client,
    private: PrivateTargets,
}

impl Notifier {
    pub fn new(private: PrivateTargets) -> Self {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(POST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            // A proxy would resolve names where the check below cannot see.
            .no_proxy()
            .user_agent(concat!("Runway-Notifications/", env!("CARGO_PKG_VERSION")));
        if private == PrivateTargets::Refused {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Self {
            client: builder.build().expect("the notification client builds"),
            private,
        }
    }

    /// Posts `event` to `target`. `delivery` names the message, the same on every retry.
    pub async fn send(
        &self,
        target: &NotifyTarget,
        delivery: &str,
        event: &ReleaseEvent,
    ) -> Result<(), SendError> {
        let key = target.key.as_ref().map(|key| key.expose_secret());
        NotifyTarget::new(
            target.kind,
            target.url.expose_secret(),
            key,
            target.on_success,
            self.private,
            1,
        )
        .map_err(|error| {
            let why = error.message.trim_start_matches("target 1: ");
            SendError::Refused(format!("the target is no longer allowed: {why}"))
        })?;
        let body = notify::body(target.kind, event);
        let mut request = self
            .client
            .post(target.url.expose_secret())
            .header(http::header::CONTENT_TYPE, "application/json");
        if target.kind == NotifyKind::Webhook {
            let key = key.unwrap_or_default();
            request = request
                .header(notify::EVENT_HEADER, event.event.as_str())
                .header(notify::DELIVERY_HEADER, delivery)
                .header(
                    notify::SIGNATURE_HEADER,
                    notify::signature(key.as_bytes(), &body),
                );
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|error| SendError::Retry(error.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let answered = format!("the target answered {status}{}", quoted(&text));
        if status.is_server_error()
            || status == http::StatusCode::TOO_MANY_REQUESTS
            || status == http::StatusCode::REQUEST_TIMEOUT
        {
            Err(SendError::Retry(answered))
        } else if status.is_redirection() {
            Err(SendError::Refused(format!(
                "{answered}: a redirect, which Runway does not follow; give the hook's final URL"
            )))
        } else {
            Err(SendError::Refused(answered))
        }
    }
}

/// `: "body"`, cut short and on one line; nothing for an empty body.
fn quoted(text: &str) -> String {
    let line: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(QUOTED_BODY)
        .collect();
    if line.trim().is_empty() {
        String::new()
    } else {
        format!(": {:?}", line.trim())
    }
}

/// Resolves names to their public addresses only.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public = public_addresses(found);
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address, and this Runway does not post to \
                     private networks"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn public_addresses(found: Vec<SocketAddr>) -> Vec<SocketAddr> {
    found
        .into_iter()
        .filter(|address| is_global(address.ip()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;

    #[test]
    fn only_public_addresses_are_dialled() {
        let found = [
            "127.0.0.1:0",
            "10.0.0.8:0",
            "[fd00::1]:0",
            "8.8.8.8:0",
            "[::1]:0",
        ]
        .map(|a| a.parse().unwrap())
        .to_vec();
        assert_eq!(public_addresses(found), ["8.8.8.8:0".parse().unwrap()]);
    }

    #[tokio::test]
    async fn a_name_that_leads_inside_is_not_resolved() {
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let error = match PublicOnly.resolve(name).await {
            Ok(_) => panic!("localhost resolved"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("no public address"), "{error}");
    }

    #[test]
    fn a_refusals_body_is_quoted_short_and_on_one_line() {
        assert_eq!(quoted("no_service\n"), ": \"no_service\"");
        assert_eq!(quoted("  "), "");
        assert_eq!(quoted(&"x".repeat(500)).len(), QUOTED_BODY + 4);
    }
}
