//! Deliveries, as GitHub's Hookshot makes them: after a hook is created GitHub sends it a `ping`
//! ("When you create a new webhook, we'll send you a simple ping event to let you know you've set
//! up the webhook correctly"), and every delivery carries the headers GitHub documents under
//! "Delivery headers". Each delivery is recorded with what the receiver answered, as the hook's
//! "Recent Deliveries" page shows it; GitHub does not retry a failed one.

use std::time::Duration;

use super::*;

/// GitHub gives a receiver 10 seconds to answer a delivery; later counts as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A delivery the fake made, and what the receiver answered.
#[derive(Clone, Debug)]
pub struct FakeDelivery {
    pub guid: String,
    pub event: String,
    pub hook_id: u64,
    /// The receiver's status, or `None` when it could not be reached in time.
    pub status: Option<u16>,
    pub response: String,
    pub delivered_at: DateTime<Utc>,
    /// The repository it was for.
    pub repo_id: u64,
}

impl FakeDelivery {
    /// As `GET /repos/{owner}/{repo}/hooks/{hook_id}/deliveries` lists it: `status_code` 0 and
    /// a word in `status` when the receiver could not be reached, "OK" for a 2xx, else
    /// "Invalid HTTP Response: CODE".
    pub(super) fn json(&self, id: usize) -> Value {
        let (status, code) = match self.status {
            Some(code) if (200..300).contains(&code) => ("OK".to_owned(), code),
            Some(code) => (format!("Invalid HTTP Response: {code}"), code),
            None => ("timed out".to_owned(), 0),
        };
        json!({
            "id": id,
            "guid": self.guid,
            "delivered_at": self.delivered_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "redelivery": false,
            "duration": 0.05,
            "status": status,
            "status_code": code,
            "event": self.event,
            "action": null,
            "installation_id": null,
            "repository_id": self.repo_id,
            "throttled_at": null,
        })
    }
}

/// A delivery decided while the state was locked, sent after the API has answered.
pub(super) struct Outgoing {
    pub(super) hook: FakeHook,
    pub(super) repo_id: u64,
    pub(super) event: &'static str,
    pub(super) payload: Value,
}

/// Queues the `ping` GitHub sends a hook it has just created.
pub(super) fn queue_ping(state: &mut State, repo_id: u64, hook: &FakeHook, default_branch: &str) {
    let Some(repo) = state.repo(repo_id) else {
        return;
    };
    let payload = json!({
        "zen": "Design for failure.",
        "hook_id": hook.id,
        "hook": hook_json(state, repo, hook),
        "repository": repo_json(state, repo, default_branch),
        "sender": { "login": repo.owner, "type": "User" },
    });
    state.outbox.push(Outgoing {
        hook: hook.clone(),
        repo_id,
        event: "ping",
        payload,
    });
}

impl FakeGitHub {
    /// `branch` of `owner/name` moved from `before` to `after` (a `git push`): GitHub delivers
    /// the `push` event to every active hook of the repository that subscribes to it, each its
    /// own delivery with its own GUID and signature. Returns them once every receiver answered.
    pub async fn push(
        &self,
        owner: &str,
        name: &str,
        branch: &str,
        before: &str,
        after: &str,
    ) -> Vec<FakeDelivery> {
        let outgoing: Vec<Outgoing> = {
            let state = self.state();
            let Some(repo) = state.repos.iter().find(|repo| repo.is_named(owner, name)) else {
                return Vec::new();
            };
            let payload =
                crate::github_push_payload(repo.id, &repo.full_name(), branch, before, after);
            repo.hooks
                .iter()
                .filter(|hook| hook.active)
                .filter(|hook| hook.events.iter().any(|e| e == "push" || e == "*"))
                .map(|hook| Outgoing {
                    hook: hook.clone(),
                    repo_id: repo.id,
                    event: "push",
                    payload: payload.clone(),
                })
                .collect()
        };
        let records = futures_util::future::join_all(outgoing.iter().map(deliver)).await;
        self.state().deliveries.extend(records.iter().cloned());
        records
    }
}

/// Sends what is queued, each on its own task, and records what the receivers answer.
pub(super) fn send_outbox(state: &Arc<Mutex<State>>) {
    let outgoing = std::mem::take(&mut lock(state).outbox);
    for delivery in outgoing {
        let state = state.clone();
        tokio::spawn(async move {
            let record = deliver(&delivery).await;
            lock(&state).deliveries.push(record);
        });
    }
}

pub(super) async fn deliver(delivery: &Outgoing) -> FakeDelivery {
    let guid = uuid::Uuid::new_v4().to_string();
    let json_body = delivery.payload.to_string();
    // A hook made with `content_type: form` gets the JSON as the `payload` form field.
    let (content_type, body) = if delivery.hook.content_type == "json" {
        ("application/json", json_body)
    } else {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &json_body)
            .finish();
        ("application/x-www-form-urlencoded", form)
    };
    let mut request = reqwest::Client::new()
        .post(&delivery.hook.url)
        .timeout(DELIVERY_TIMEOUT)
        .header("content-type", content_type)
        .header("user-agent", "GitHub-Hookshot/9a1f2c4")
        .header("x-github-event", delivery.event)
        .header("x-github-delivery", &guid)
        .header("x-github-hook-id", delivery.hook.id.to_string())
        .header(
            "x-github-hook-installation-target-id",
            delivery.repo_id.to_string(),
        )
        .header("x-github-hook-installation-target-type", "repository");
    if let Some(secret) = &delivery.hook.secret {
        let signature = runway_http::webhook::sign(secret.as_bytes(), body.as_bytes());
        request = request.header("x-hub-signature-256", signature);
    }
    let (status, response) = match request.body(body).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (Some(status), response.text().await.unwrap_or_default())
        }
        Err(e) => (None, e.to_string()),
    };
    FakeDelivery {
        guid,
        event: delivery.event.to_owned(),
        hook_id: delivery.hook.id,
        status,
        response,
        delivered_at: Utc::now(),
        repo_id: delivery.repo_id,
    }
}
