//! GitHub's `meta` API: the address ranges GitHub sends webhooks from (`hooks`), for an ingress
//! that takes deliveries from GitHub alone. Asked without credentials: the endpoint is public,
//! and the ingress holds none (its one secret is the key the hooks' secrets derive from).

use std::net::IpAddr;

use async_trait::async_trait;
use ipnet::IpNet;
use reqwest::Method;
use serde::Deserialize;
use url::Url;

use super::api::{Api, Call};
use super::errors::{Op, Permission};
use runway_core::ports::{ForgeError, HookSources};

/// `GET /meta` on GitHub's API (or wherever `api_base` points: the tests' fake).
pub struct GitHubMeta {
    api: Api,
}

impl GitHubMeta {
    pub fn new(api_base: Url) -> anyhow::Result<Self> {
        Ok(Self {
            api: Api::new(api_base)?,
        })
    }
}

/// The one field Runway reads of GitHub's answer.
#[derive(Deserialize)]
struct MetaBody {
    #[serde(default)]
    hooks: Vec<String>,
}

/// A `hooks` entry: CIDR notation, or (as GitHub's documented examples show) a bare address.
fn range(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

#[async_trait]
impl HookSources for GitHubMeta {
    #[tracing::instrument(skip_all)]
    async fn hook_ranges(&self) -> Result<Vec<IpNet>, ForgeError> {
        let op = Op {
            action: "read the addresses GitHub sends webhooks from (GET /meta)".into(),
            needs: Permission::Public,
            missing: "GitHub's API has no /meta there: check RUNWAY_GITHUB_API".into(),
        };
        let call = Call {
            method: Method::GET,
            url: self.api.url(&["meta"]),
            body: None,
            auth: None,
            if_none_match: None,
            op: &op,
        };
        let body: MetaBody = self.api.json(call).await?;
        let mut ranges = Vec::with_capacity(body.hooks.len());
        for entry in &body.hooks {
            match range(entry) {
                Some(range) => ranges.push(range),
                None => tracing::warn!(
                    entry,
                    "GitHub's meta API lists a hook address Runway cannot read; left out"
                ),
            }
        }
        if ranges.is_empty() {
            // GitHub Enterprise Server's meta lists none: its hooks come from the server itself.
            return Err(ForgeError::Rejected(
                "GitHub's meta API lists no addresses webhooks come from, so deliveries cannot \
                 be limited to them: unset RUNWAY_WEBHOOK_SOURCES (Terraform webhook_sources)"
                    .into(),
            ));
        }
        Ok(ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_entries_are_ranges_or_single_addresses() {
        let read = |entry: &str| range(entry).map(|range| range.to_string());
        assert_eq!(read("192.30.252.0/22").as_deref(), Some("192.30.252.0/22"));
        assert_eq!(read("2a0a:a440::/29").as_deref(), Some("2a0a:a440::/29"));
        assert_eq!(read("192.0.2.1").as_deref(), Some("192.0.2.1/32"));
        assert_eq!(read("2001:db8::1").as_deref(), Some("2001:db8::1/128"));
        assert_eq!(read("not an address"), None);
    }
}
