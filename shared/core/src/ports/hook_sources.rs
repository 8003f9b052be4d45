use async_trait::async_trait;
use ipnet::IpNet;

use super::ForgeError;

/// The address ranges a forge sends its webhooks from, as it publishes them (GitHub's `meta`
/// API, `hooks`). The ingress asks only when an operator limits deliveries to them
/// (`RUNWAY_WEBHOOK_SOURCES=github`), and keeps the answer.
#[async_trait]
pub trait HookSources: Send + Sync {
    /// Every range, IPv4 and IPv6.
    async fn hook_ranges(&self) -> Result<Vec<IpNet>, ForgeError>;
}
