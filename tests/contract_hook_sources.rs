//! The `HookSources` contract, on its one adapter: `GitHubMeta` against the fake GitHub's
//! `GET /meta` (the laptop's Runway receives pushes from its own git hooks and has none). It
//! asks without credentials, reads IPv4 and IPv6 ranges, sees GitHub's list change, and never
//! answers an empty list: the ingress would refuse every delivery with it.

use runway_core::ports::{ForgeError, HookSources};
use runway_github::GitHubMeta;
use runway_tests::fake_github::{FakeGitHub, GITHUB_HOOK_SOURCES};

async fn ranges(meta: &GitHubMeta) -> Result<Vec<String>, ForgeError> {
    let ranges = meta.hook_ranges().await?;
    Ok(ranges.iter().map(ToString::to_string).collect())
}

#[tokio::test]
async fn github_lists_its_hook_ranges_ipv4_and_ipv6_and_a_change_is_seen() -> anyhow::Result<()> {
    let github = FakeGitHub::start().await?;
    let meta = GitHubMeta::new(github.api_base())?;

    assert_eq!(ranges(&meta).await?, GITHUB_HOOK_SOURCES);

    github.set_hook_sources(&["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"]);
    assert_eq!(
        ranges(&meta).await?,
        ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32"]
    );
    Ok(())
}

#[tokio::test]
async fn no_ranges_a_used_up_rate_limit_or_no_github_is_an_error() -> anyhow::Result<()> {
    let github = FakeGitHub::start().await?;
    let meta = GitHubMeta::new(github.api_base())?;

    github.set_hook_sources(&[]);
    let none = ranges(&meta).await;
    assert!(
        matches!(&none, Err(ForgeError::Rejected(m)) if m.contains("RUNWAY_WEBHOOK_SOURCES")),
        "{none:?}"
    );

    github.set_hook_sources(&["203.0.113.0/24"]);
    github.exhaust_rate_limit(chrono::Utc::now().timestamp() + 600);
    let limited = ranges(&meta).await;
    assert!(
        matches!(&limited, Err(ForgeError::Unavailable(_))),
        "{limited:?}"
    );

    drop(github);
    let unreachable = GitHubMeta::new("http://127.0.0.1:9/".parse()?)?;
    let gone = ranges(&unreachable).await;
    assert!(matches!(&gone, Err(ForgeError::Unavailable(_))), "{gone:?}");
    Ok(())
}
