//! Where an app's releases are announced: Slack, Google Chat and Teams incoming webhooks, and
//! generic webhooks signed like GitHub's. A target's URL is a credential (anyone holding a Slack
//! hook URL may post to its channel) and a signed webhook's key is one too, so targets are kept
//! whole only in the secret store; the app's record holds their [`NotifySummary`]: the kind,
//! the host and what they hear.

use std::fmt;
use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::values::{FieldError, shown};

const FIELD: &str = "notify";

/// Which service a target is, and so the JSON it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyKind {
    /// A Slack incoming webhook, `https://hooks.slack.com/services/…`.
    Slack,
    /// A Google Chat space's incoming webhook, `https://chat.googleapis.com/v1/spaces/…`.
    Chat,
    /// A Microsoft Teams workflow (or older connector) webhook.
    Teams,
    /// Any HTTPS endpoint, sent Runway's event JSON signed with HMAC-SHA256 as GitHub signs
    /// its deliveries.
    Webhook,
}

impl NotifyKind {
    pub const ALL: [NotifyKind; 4] = [Self::Slack, Self::Chat, Self::Teams, Self::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Chat => "chat",
            Self::Teams => "teams",
            Self::Webhook => "webhook",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Slack => "Slack",
            Self::Chat => "Google Chat",
            Self::Teams => "Microsoft Teams",
            Self::Webhook => "Signed webhook",
        }
    }

    pub fn parse(name: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                FieldError::new(
                    FIELD,
                    format!(
                        "{} is not a kind of target: use slack, chat, teams or webhook",
                        shown(name)
                    ),
                )
            })
    }

    /// Whether the service's hooks live on `host`. A hook URL elsewhere is a mistake (a Slack
    /// URL given as Teams) or a way to make Runway post somewhere it should not.
    fn serves(self, host: &str) -> bool {
        match self {
            Self::Slack => host == "hooks.slack.com",
            Self::Chat => host == "chat.googleapis.com",
            // Workflows (Power Automate) and the older Office 365 connectors.
            Self::Teams => [
                ".webhook.office.com",
                ".logic.azure.com",
                ".api.powerplatform.com",
            ]
            .iter()
            .any(|suffix| host.ends_with(suffix)),
            Self::Webhook => true,
        }
    }

    fn hosts(self) -> &'static str {
        match self {
            Self::Slack => "hooks.slack.com",
            Self::Chat => "chat.googleapis.com",
            Self::Teams => "*.webhook.office.com, *.logic.azure.com or *.api.powerplatform.com",
            Self::Webhook => "any host",
        }
    }
}

impl fmt::Display for NotifyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether targets on private networks may be named: loopback, RFC 1918, link-local (the
/// metadata server), `localhost` and `*.internal`. A laptop's Runway may post to a receiver on
/// the laptop; on Google Cloud that would let anyone who may deploy make Runway post inside
/// its network, so it is refused unless the operator allows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PrivateTargets {
    #[default]
    Refused,
    Allowed,
}

/// One place an app's releases are announced. No `Debug` of the URL or the key.
#[derive(Clone)]
pub struct NotifyTarget {
    /// Stable while the kind and URL stay: a message queued for a target still finds it after
    /// the list is saved again.
    pub id: String,
    pub kind: NotifyKind,
    pub url: SecretString,
    /// A signed webhook's HMAC key.
    pub key: Option<SecretString>,
    /// Also told when a release goes live (failures always are).
    pub on_success: bool,
}

impl fmt::Debug for NotifyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyTarget")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("host", &self.host())
            .field("on_success", &self.on_success)
            .finish_non_exhaustive()
    }
}

impl NotifyTarget {
    /// Checks a target as a person gave it. Messages name the target by its place in the list
    /// and its host, never its URL or key.
    pub fn new(
        kind: NotifyKind,
        url: &str,
        key: Option<&str>,
        on_success: bool,
        private: PrivateTargets,
        place: usize,
    ) -> Result<Self, FieldError> {
        let refuse = |why: String| FieldError::new(FIELD, format!("target {place}: {why}"));
        let (scheme, host) = scheme_and_host(url).map_err(refuse)?;
        let private_host = is_private(&host);
        match (private_host, private) {
            (true, PrivateTargets::Refused) => {
                return Err(refuse(format!(
                    "{host} is on a private network, which this Runway does not post to"
                )));
            }
            (true, PrivateTargets::Allowed) => {}
            (false, _) => {
                if scheme != "https" {
                    return Err(refuse("the URL must start with https://".into()));
                }
                if !kind.serves(&host) {
                    return Err(refuse(format!(
                        "a {} hook is on {}, not {host}",
                        kind.label(),
                        kind.hosts()
                    )));
                }
            }
        }
        let key = match (kind, key.map(str::trim).filter(|key| !key.is_empty())) {
            (NotifyKind::Webhook, None) => {
                return Err(refuse(
                    "a signed webhook needs its key: add secret=… (16 characters or more), \
                     which its receiver checks X-Runway-Signature-256 with"
                        .into(),
                ));
            }
            (NotifyKind::Webhook, Some(key)) if key.len() < 16 || key.len() > 256 => {
                return Err(refuse(
                    "a signed webhook's key must be 16 to 256 characters".into(),
                ));
            }
            (NotifyKind::Webhook, Some(key)) => Some(SecretString::from(key.to_owned())),
            (kind, Some(_)) => {
                return Err(refuse(format!(
                    "{} hooks are not signed: secret=… is for webhook targets",
                    kind.label()
                )));
            }
            (_, None) => None,
        };
        Ok(Self {
            id: target_id(kind, url),
            kind,
            url: SecretString::from(url.to_owned()),
            key,
            on_success,
        })
    }

    /// The URL's host, which is not a secret (the path of a hook URL is).
    pub fn host(&self) -> String {
        scheme_and_host(self.url.expose_secret())
            .map(|(_, host)| host)
            .unwrap_or_default()
    }

    pub fn summary(&self) -> NotifySummary {
        NotifySummary {
            id: self.id.clone(),
            kind: self.kind,
            host: self.host(),
            on_success: self.on_success,
        }
    }
}

/// `sha256(kind, url)`, shortened: names a target without saying anything of its URL.
fn target_id(kind: NotifyKind, url: &str) -> String {
    let digest = Sha256::new()
        .chain_update(kind.as_str())
        .chain_update([0])
        .chain_update(url)
        .finalize();
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The URL's scheme and lower-cased host; refused if it is not an absolute http(s) URL, holds
/// a user name or password, or is too long for any hook.
fn scheme_and_host(url: &str) -> Result<(String, String), String> {
    if url.len() > 2048 {
        return Err("the URL is longer than 2,048 characters".into());
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|_| "the URL is not a URL (expected https://host/path)".to_owned())?;
    let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return Err("the URL must start with https://".into());
    }
    let authority = uri
        .authority()
        .ok_or_else(|| "the URL has no host".to_owned())?;
    if authority.as_str().contains('@') {
        return Err(
            "the URL holds a user name or password: a signed webhook's key goes in secret=…".into(),
        );
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    Ok((scheme, host))
}

/// Names and addresses that lead inside a network rather than to a service on the internet.
pub fn is_private(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if host == "localhost"
        || host.ends_with(".localhost")
        || host.ends_with(".internal")
        || host.ends_with(".local")
    {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| !is_global(ip))
}

/// Whether an address is on the public internet (what a notification may reach unless private
/// targets are allowed).
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            !(ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_documentation()
                || ip.is_multicast()
                || a == 0
                // Carrier-grade NAT, 100.64.0.0/10.
                || (a == 100 && (64..128).contains(&b))
                // Reserved, 240.0.0.0/4.
                || a >= 240)
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_global(IpAddr::V4(v4));
            }
            let first = ip.segments()[0];
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                // Unique local fc00::/7 and link-local fe80::/10.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// An app's targets. At most [`NotifyTargets::MAX`].
#[derive(Clone, Debug, Default)]
pub struct NotifyTargets(Vec<NotifyTarget>);

/// How targets are kept in the secret store.
#[derive(Serialize, Deserialize)]
struct Kept {
    id: String,
    kind: NotifyKind,
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default)]
    on_success: bool,
}

impl NotifyTargets {
    pub const MAX: usize = 10;

    pub fn new(targets: Vec<NotifyTarget>) -> Result<Self, FieldError> {
        if targets.len() > Self::MAX {
            return Err(FieldError::new(
                FIELD,
                format!(
                    "{} targets is more than the {} an app may have",
                    targets.len(),
                    Self::MAX
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (place, target) in targets.iter().enumerate() {
            if !seen.insert(&target.id) {
                return Err(FieldError::new(
                    FIELD,
                    format!("target {} is named twice: each hook once", place + 1),
                ));
            }
        }
        Ok(Self(targets))
    }

    /// The form's lines, `KIND URL [success] [secret=KEY]`: blank lines and `#` comments are
    /// skipped. `success` also announces releases that go live.
    pub fn parse_lines(text: &str, private: PrivateTargets) -> Result<Self, FieldError> {
        let mut targets = Vec::new();
        let lines = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'));
        for (index, line) in lines.enumerate() {
            let place = index + 1;
            let mut words = line.split_whitespace();
            let kind = NotifyKind::parse(words.next().unwrap_or_default()).map_err(|error| {
                FieldError::new(FIELD, format!("target {place}: {}", error.message))
            })?;
            let Some(url) = words.next() else {
                return Err(FieldError::new(
                    FIELD,
                    format!("target {place}: a {kind} line needs the hook's URL after {kind}"),
                ));
            };
            let (mut on_success, mut key) = (false, None);
            for word in words {
                match word.split_once('=') {
                    None if word.eq_ignore_ascii_case("success") => on_success = true,
                    Some(("secret", value)) => key = Some(value),
                    _ => {
                        // Not echoed: it may be a key with its `secret=` mistyped.
                        return Err(FieldError::new(
                            FIELD,
                            format!(
                                "target {place}: after the URL, only success and secret=… \
                                 may follow"
                            ),
                        ));
                    }
                }
            }
            targets.push(NotifyTarget::new(
                kind, url, key, on_success, private, place,
            )?);
        }
        Self::new(targets)
    }

    pub fn iter(&self) -> impl Iterator<Item = &NotifyTarget> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&NotifyTarget> {
        self.0.iter().find(|target| target.id == id)
    }

    pub fn summaries(&self) -> Vec<NotifySummary> {
        self.0.iter().map(NotifyTarget::summary).collect()
    }

    /// As the secret store keeps them: JSON, a secret as a whole.
    pub fn to_json(&self) -> SecretString {
        let kept: Vec<Kept> = self
            .0
            .iter()
            .map(|target| Kept {
                id: target.id.clone(),
                kind: target.kind,
                url: target.url.expose_secret().to_owned(),
                key: target.key.as_ref().map(|k| k.expose_secret().to_owned()),
                on_success: target.on_success,
            })
            .collect();
        SecretString::from(serde_json::to_string(&kept).expect("targets serialize"))
    }

    /// Reads what `to_json` wrote. Not checked again: the rules may have changed since, and a
    /// target the operator has since fenced off is refused where it is sent.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        let kept: Vec<Kept> = serde_json::from_str(json)?;
        Ok(Self(
            kept.into_iter()
                .map(|kept| NotifyTarget {
                    id: kept.id,
                    kind: kept.kind,
                    url: SecretString::from(kept.url),
                    key: kept.key.map(SecretString::from),
                    on_success: kept.on_success,
                })
                .collect(),
        ))
    }
}

/// What the app's record and page say of a target: nothing that lets anyone post to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifySummary {
    pub id: String,
    pub kind: NotifyKind,
    pub host: String,
    #[serde(default)]
    pub on_success: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLACK: &str = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX";

    fn lines(text: &str) -> Result<NotifyTargets, FieldError> {
        NotifyTargets::parse_lines(text, PrivateTargets::Refused)
    }

    #[test]
    fn reads_each_kind_from_the_form_lines() {
        let targets = lines(&format!(
            "# the team\nslack {SLACK}\n\nchat https://chat.googleapis.com/v1/spaces/AAA/messages?key=k&token=t success\n\
             teams https://prod-01.westeurope.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=s\n\
             webhook https://ops.example.com/runway secret=0123456789abcdef success"
        ))
        .unwrap();
        let summaries = targets.summaries();
        let kinds: Vec<_> = summaries.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, NotifyKind::ALL);
        assert_eq!(summaries[0].host, "hooks.slack.com");
        assert!(!summaries[0].on_success);
        assert!(summaries[1].on_success && summaries[3].on_success);
        assert_eq!(summaries[3].host, "ops.example.com");
        assert_eq!(
            targets
                .iter()
                .nth(3)
                .unwrap()
                .key
                .as_ref()
                .unwrap()
                .expose_secret(),
            "0123456789abcdef"
        );
    }

    #[test]
    fn a_target_keeps_its_id_while_its_url_stays() {
        let once = lines(&format!("slack {SLACK}")).unwrap();
        let again = lines(&format!("slack {SLACK} success")).unwrap();
        let other = lines(&format!("slack {SLACK}Y")).unwrap();
        assert_eq!(once.summaries()[0].id, again.summaries()[0].id);
        assert_ne!(once.summaries()[0].id, other.summaries()[0].id);
        assert!(!once.summaries()[0].id.contains("hooks"));
    }

    #[test]
    fn refusals_name_the_target_and_never_its_url_or_key() {
        let cases = [
            (
                "slack http://hooks.slack.com/services/T/B/SECRETPATH",
                "https://",
            ),
            (
                "slack https://hooks.slack.com.evil.example/SECRETPATH",
                "hooks.slack.com, not",
            ),
            (
                "teams https://hooks.slack.com/services/SECRETPATH",
                "Microsoft Teams hook",
            ),
            ("chat https://example.com/SECRETPATH", "chat.googleapis.com"),
            ("webhook https://example.com/SECRETPATH", "needs its key"),
            (
                "webhook https://example.com/SECRETPATH secret=SECRETSHORT",
                "16 to 256",
            ),
            (
                &format!("slack {SLACK} secret=SECRETKEYSECRETKEY"),
                "not signed",
            ),
            (
                "webhook https://user:SECRETPW@example.com/x secret=0123456789abcdef",
                "user name",
            ),
            (
                "webhook https://127.0.0.1/SECRETPATH secret=0123456789abcdef",
                "private network",
            ),
            (
                "webhook https://169.254.169.254/SECRETPATH secret=0123456789abcdef",
                "private network",
            ),
            (
                "webhook https://[::1]:8080/SECRETPATH secret=0123456789abcdef",
                "private network",
            ),
            (
                "webhook https://metadata.google.internal/SECRETPATH secret=0123456789abcdef",
                "private",
            ),
            ("slack", "needs the hook's URL"),
            (
                &format!("slack {SLACK} sekret=SECRETKEY"),
                "only success and secret",
            ),
            (
                "discord https://discord.com/api/webhooks/SECRETPATH",
                "not a kind",
            ),
            ("slack not-a-url", "must start with https://"),
        ];
        for (line, expected) in cases {
            let error = lines(&format!("slack {SLACK}\n{line}")).unwrap_err();
            assert_eq!(error.field, "notify");
            assert!(error.message.starts_with("target 2: "), "{line}: {error}");
            assert!(error.message.contains(expected), "{line}: {error}");
            assert!(!error.message.contains("SECRET"), "{line} leaked: {error}");
        }
        let too_many = vec![format!("slack {SLACK}"); 1]
            .into_iter()
            .chain((0..NotifyTargets::MAX).map(|i| format!("slack {SLACK}{i}")))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            lines(&too_many)
                .unwrap_err()
                .message
                .contains("more than the 10")
        );
        let twice = format!("slack {SLACK}\nslack {SLACK} success");
        assert!(lines(&twice).unwrap_err().message.contains("named twice"));
    }

    #[test]
    fn private_targets_are_taken_only_where_the_operator_allows_them() {
        let local = "slack http://127.0.0.1:9000/services/T/B/X\nwebhook http://localhost:9/x secret=0123456789abcdef";
        assert!(lines(local).is_err());
        let targets = NotifyTargets::parse_lines(local, PrivateTargets::Allowed).unwrap();
        assert_eq!(targets.summaries()[0].host, "127.0.0.1");
        // Allowing private targets does not loosen the rules for public hosts.
        let public = "slack http://hooks.slack.com/services/T/B/X";
        assert!(NotifyTargets::parse_lines(public, PrivateTargets::Allowed).is_err());
    }

    #[test]
    fn what_is_kept_reads_back_whole_and_debug_shows_no_secret() {
        let targets = lines(&format!(
            "slack {SLACK} success\nwebhook https://ops.example.com/x secret=0123456789abcdef"
        ))
        .unwrap();
        let json = targets.to_json();
        let back = NotifyTargets::from_json(json.expose_secret()).unwrap();
        assert_eq!(back.summaries(), targets.summaries());
        let first = back.iter().next().unwrap();
        assert_eq!(first.url.expose_secret(), SLACK);
        let debug = format!("{back:?}");
        assert!(
            !debug.contains("XXXX") && !debug.contains("0123456789abcdef"),
            "{debug}"
        );
    }

    #[test]
    fn addresses_on_the_internet_are_global_and_the_rest_are_not() {
        for ip in ["8.8.8.8", "2001:4860:4860::8888", "142.250.0.1"] {
            assert!(is_global(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_global(ip.parse().unwrap()), "{ip}");
        }
    }
}
