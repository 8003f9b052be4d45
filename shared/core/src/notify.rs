//! Release announcements: what happened ([`ReleaseEvent`]), one queued message per target
//! ([`NotifyMessage`] on `Topic::Notifications`), and the JSON each kind of target is sent.
//!
//! Announcing never holds up a release: the worker publishes and goes on; the notifications
//! subscription posts each message, and a target that is down is tried again with backoff
//! (Pub/Sub's retry policy, or the local queue's). Nothing here carries a secret: the event
//! holds what the app's page shows, and a message names its target by id (the URL, which is a
//! credential, is read from the secret store only where it is posted to).

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::domain::{Deployment, NotifyKind, Release, RepoUrl, Timestamp};
use crate::ports::OutboundMessage;

/// What became of a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// It serves.
    #[serde(rename = "release.live")]
    Live,
    /// It failed; the one serving before keeps serving.
    #[serde(rename = "release.failed")]
    Failed,
    /// The live app stopped or stopped answering, and the platform restarted it.
    #[serde(rename = "app.unhealthy")]
    Unhealthy,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "release.live",
            Self::Failed => "release.failed",
            Self::Unhealthy => "app.unhealthy",
        }
    }
}

/// A release's outcome as announced: what its app page says, with links.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseEvent {
    pub event: EventKind,
    pub app: String,
    pub release: String,
    pub seq: u64,
    /// `push`, `manual` or `rollback`.
    pub trigger: String,
    /// Who pushed, or who deployed from the console.
    pub actor: String,
    pub repository: String,
    pub branch: String,
    pub commit: Option<String>,
    /// The commit on GitHub; none for a local repository.
    pub commit_url: Option<String>,
    /// Why it failed, in one line.
    pub reason: Option<String>,
    /// Where the app serves, once live.
    pub app_url: Option<String>,
    /// The release's row on Runway's console.
    pub console_url: Option<String>,
    pub at: Timestamp,
}

impl ReleaseEvent {
    pub fn new(
        event: EventKind,
        release: &Release,
        deployment: &Deployment,
        reason: Option<&str>,
        console: Option<String>,
        at: Timestamp,
    ) -> Self {
        let commit = release.commit.as_ref().map(ToString::to_string);
        let commit_url = match (&deployment.repo, &commit) {
            (RepoUrl::GitHub { owner, name }, Some(sha)) => {
                Some(format!("https://github.com/{owner}/{name}/commit/{sha}"))
            }
            _ => None,
        };
        Self {
            event,
            app: release.app.to_string(),
            release: release.id.to_string(),
            seq: release.seq,
            trigger: release.trigger.as_str().to_owned(),
            actor: release.actor.clone(),
            repository: deployment.repo.to_string(),
            branch: deployment.branch.to_string(),
            commit,
            commit_url,
            reason: reason.map(|reason| cut(reason.lines().next().unwrap_or_default(), 500)),
            app_url: match event {
                EventKind::Live => release.url.clone().or_else(|| deployment.url.clone()),
                EventKind::Failed | EventKind::Unhealthy => deployment.url.clone(),
            },
            console_url: console,
            at,
        }
    }

    /// One line a person reads first.
    pub fn headline(&self) -> String {
        match self.event {
            EventKind::Live => format!("{} release #{} is live", self.app, self.seq),
            EventKind::Failed => format!("{} release #{} failed", self.app, self.seq),
            EventKind::Unhealthy => format!("{} turned unhealthy", self.app),
        }
    }

    fn short_commit(&self) -> Option<&str> {
        self.commit.as_deref().map(|sha| &sha[..sha.len().min(7)])
    }

    /// Who did what to which commit, in words.
    fn origin(&self) -> String {
        let what = match self.trigger.as_str() {
            "push" => format!("pushed by {} to {}", self.actor, self.branch),
            "rollback" => format!("rolled back by {}", self.actor),
            _ => format!("deployed by {} from {}", self.actor, self.branch),
        };
        match self.short_commit() {
            Some(commit) => format!("Commit {commit}, {what}"),
            None => what,
        }
    }
}

/// Cuts `text` to `max` characters, marking the cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// One event for one target: the body of a message on `Topic::Notifications`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotifyMessage {
    pub target: String,
    pub event: ReleaseEvent,
}

impl NotifyMessage {
    pub fn to_message(&self) -> OutboundMessage {
        OutboundMessage {
            data: serde_json::to_vec(self).expect("a notification serializes"),
            attributes: BTreeMap::from([
                ("app".to_owned(), self.event.app.clone()),
                ("releaseId".to_owned(), self.event.release.clone()),
                ("event".to_owned(), self.event.event.as_str().to_owned()),
            ]),
            // Each target on its own: one that is down holds up nobody else's.
            ordering_key: None,
        }
    }
}

/// Escapes what Slack's mrkdwn (and Google Chat's text) reads as markup: `&`, `<` and `>`.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `<url|text>`, the link both Slack and Google Chat read. A URL holding `|` or `>` would end
/// the link early, so it is shown as text instead.
fn link(url: &str, text: &str) -> String {
    if url.contains(['|', '>', '<']) {
        escaped(text)
    } else {
        format!("<{url}|{}>", escaped(text))
    }
}

/// The lines Slack and Google Chat show, in the markup both read.
fn chat_lines(event: &ReleaseEvent) -> Vec<String> {
    let mark = match event.event {
        EventKind::Live => "✅",
        EventKind::Failed => "❌",
        EventKind::Unhealthy => "⚠️",
    };
    let mut lines = vec![format!("{mark} *{}*", escaped(&event.headline()))];
    if let Some(reason) = &event.reason {
        lines.push(escaped(reason));
    }
    let origin = escaped(&event.origin());
    lines.push(match (&event.commit_url, event.short_commit()) {
        (Some(url), Some(commit)) => origin.replacen(commit, &link(url, commit), 1),
        _ => origin,
    });
    let mut links = Vec::new();
    if let Some(url) = &event.app_url {
        links.push(link(url, "Open the app"));
    }
    if let Some(url) = &event.console_url {
        links.push(link(url, "Release on Runway"));
    }
    if !links.is_empty() {
        lines.push(links.join(" · "));
    }
    lines
}

/// A Slack incoming webhook's body: `text` (what notifications and old clients show) and the
/// same as one `section` block.
pub fn slack(event: &ReleaseEvent) -> Value {
    let text = chat_lines(event).join("\n");
    json!({
        "text": text,
        "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": text } }],
    })
}

/// A Google Chat incoming webhook's body: a text message.
pub fn google_chat(event: &ReleaseEvent) -> Value {
    json!({ "text": chat_lines(event).join("\n") })
}

/// A Teams workflow webhook's body: a message with one Adaptive Card (what the "Post to a
/// channel when a webhook request is received" workflow and the older connectors both take).
pub fn teams(event: &ReleaseEvent) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": true,
        "color": match event.event {
            EventKind::Live => "Good",
            EventKind::Failed => "Attention",
            EventKind::Unhealthy => "Warning",
        },
        "text": event.headline(),
    })];
    if let Some(reason) = &event.reason {
        body.push(json!({ "type": "TextBlock", "wrap": true, "text": reason }));
    }
    body.push(
        json!({ "type": "TextBlock", "wrap": true, "isSubtle": true, "text": event.origin() }),
    );
    let mut actions = Vec::new();
    for (url, title) in [
        (&event.app_url, "Open the app"),
        (&event.console_url, "Release on Runway"),
        (&event.commit_url, "Commit"),
    ] {
        if let Some(url) = url {
            actions.push(json!({ "type": "Action.OpenUrl", "title": title, "url": url }));
        }
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions,
            },
        }],
    })
}

/// The body a target of `kind` is sent: the service's own shape, or, for a signed webhook,
/// the event itself.
pub fn body(kind: NotifyKind, event: &ReleaseEvent) -> Vec<u8> {
    let value = match kind {
        NotifyKind::Slack => slack(event),
        NotifyKind::Chat => google_chat(event),
        NotifyKind::Teams => teams(event),
        NotifyKind::Webhook => serde_json::to_value(event).expect("an event serializes"),
    };
    serde_json::to_vec(&value).expect("a body serializes")
}

/// The header a signed webhook's body is signed in, as GitHub's `X-Hub-Signature-256`.
pub const SIGNATURE_HEADER: &str = "X-Runway-Signature-256";
/// The header naming the event (`release.failed`).
pub const EVENT_HEADER: &str = "X-Runway-Event";
/// The header naming the delivery: the same on every retry of one message, so a receiver can
/// drop a repeat.
pub const DELIVERY_HEADER: &str = "X-Runway-Delivery";

/// `sha256=HEX`: HMAC-SHA256 of the body under the target's key.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Trigger;
    use crate::domain::{AppName, CommitSha, ReleaseState};

    fn release(trigger: Trigger) -> Release {
        let mut release =
            crate::testing::release("r1", 7, ReleaseState::Failed, chrono::Utc::now());
        release.app = AppName::parse("sales").unwrap();
        release.trigger = trigger;
        release.actor = "octocat".into();
        release.commit =
            Some(CommitSha::parse("0123456789abcdef0123456789abcdef01234567").unwrap());
        release
    }

    fn event(kind: EventKind, reason: Option<&str>) -> ReleaseEvent {
        let repo = RepoUrl::parse("https://github.com/acme/sales", false).unwrap();
        let mut app = crate::testing::deployment("sales", repo, 1, "ada@example.com");
        app.url = Some("https://sales-abc.a.run.app".into());
        ReleaseEvent::new(
            kind,
            &release(Trigger::Push),
            &app,
            reason,
            Some("https://runway.example.com/apps/sales#release-7".into()),
            chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        )
    }

    #[test]
    fn an_event_says_who_pushed_which_commit_and_why_it_failed() {
        let event = event(
            EventKind::Failed,
            Some("pip could not install pandas==9\nmore"),
        );
        assert_eq!(event.headline(), "sales release #7 failed");
        assert_eq!(
            event.reason.as_deref(),
            Some("pip could not install pandas==9")
        );
        assert_eq!(event.trigger, "push");
        assert_eq!(
            event.commit_url.as_deref(),
            Some("https://github.com/acme/sales/commit/0123456789abcdef0123456789abcdef01234567")
        );
        let text = slack(&event)["text"].as_str().unwrap().to_owned();
        assert!(
            text.starts_with("❌ *sales release #7 failed*\npip could not install"),
            "{text}"
        );
        assert!(text.contains("Commit <https://github.com/acme/sales/commit/0123456789abcdef0123456789abcdef01234567|0123456>, pushed by octocat to main"), "{text}");
        assert!(
            text.contains("<https://runway.example.com/apps/sales#release-7|Release on Runway>"),
            "{text}"
        );
        assert_eq!(slack(&event)["blocks"][0]["text"]["text"], text);
        assert_eq!(google_chat(&event)["text"], text);
    }

    #[test]
    fn an_unhealthy_app_is_announced_with_what_happened() {
        let event = event(
            EventKind::Unhealthy,
            Some("its process stopped (signal: 9); restarted"),
        );
        assert_eq!(event.headline(), "sales turned unhealthy");
        assert_eq!(
            event.app_url.as_deref(),
            Some("https://sales-abc.a.run.app")
        );
        let text = slack(&event)["text"].as_str().unwrap().to_owned();
        assert!(
            text.starts_with("⚠️ *sales turned unhealthy*\nits process stopped"),
            "{text}"
        );
        assert_eq!(
            teams(&event)["attachments"][0]["content"]["body"][0]["color"],
            "Warning"
        );
        assert!(
            String::from_utf8_lossy(&body(NotifyKind::Webhook, &event))
                .contains(r#""event":"app.unhealthy""#)
        );
    }

    #[test]
    fn markup_in_a_reason_is_shown_as_text() {
        let event = event(EventKind::Failed, Some("<!channel> & <https://evil|click>"));
        let text = google_chat(&event)["text"].as_str().unwrap().to_owned();
        assert!(
            text.contains("&lt;!channel&gt; &amp; &lt;https://evil|click&gt;"),
            "{text}"
        );
    }

    #[test]
    fn teams_gets_an_adaptive_card_with_links() {
        let card = teams(&event(EventKind::Live, None));
        let attachment = &card["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(attachment["content"]["type"], "AdaptiveCard");
        assert_eq!(
            attachment["content"]["body"][0]["text"],
            "sales release #7 is live"
        );
        let titles: Vec<_> = attachment["content"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, ["Open the app", "Release on Runway", "Commit"]);
    }

    #[test]
    fn a_webhook_gets_the_event_signed_as_github_signs() {
        let event = event(EventKind::Failed, Some("no"));
        let body = body(NotifyKind::Webhook, &event);
        let back: ReleaseEvent = serde_json::from_slice(&body).unwrap();
        assert_eq!(back, event);
        assert!(String::from_utf8_lossy(&body).contains(r#""event":"release.failed""#));
        // GitHub's documented example: key "It's a Secret to Everybody", body "Hello, World!".
        assert_eq!(
            signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn a_message_names_its_target_and_no_url() {
        let message = NotifyMessage {
            target: "abc".into(),
            event: event(EventKind::Failed, Some("x")),
        };
        let out = message.to_message();
        assert_eq!(out.attributes["event"], "release.failed");
        let back: NotifyMessage = serde_json::from_slice(&out.data).unwrap();
        assert_eq!(back, message);
    }
}
