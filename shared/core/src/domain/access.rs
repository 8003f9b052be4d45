//! Who may open an app: everyone, or only the people (and groups) named.
//!
//! On Cloud Run "public" is the `roles/run.invoker` binding for `allUsers` (or, where an
//! organization policy forbids `allUsers`, the service's `invokerIamDisabled`), and "private"
//! is Identity-Aware Proxy on the service with `roles/iap.httpsResourceAccessor` for the
//! viewers. The embedded default serves apps on loopback only and does not tell them apart.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::values::{FieldError, shown};

/// How many viewers an app may list; a team is better named by its Google group.
pub const MAX_VIEWERS: usize = 50;

/// One principal an IAM binding names: `user:`, `group:`, `serviceAccount:` and an email, or
/// `domain:` and a Google Workspace domain. A bare email is a user.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Viewer(String);

impl Viewer {
    pub fn parse(input: &str) -> Result<Self, FieldError> {
        let input = input.trim();
        let (kind, principal) = input.split_once(':').unwrap_or(("user", input));
        let refuse = |why: &str| {
            Err(FieldError::new(
                "viewers",
                format!("{} {why}", shown(input)),
            ))
        };
        if matches!(input, "allUsers" | "allAuthenticatedUsers") {
            return refuse("would open the app to everyone: set access to public instead");
        }
        let principal = principal.to_ascii_lowercase();
        let valid = match kind {
            "user" | "group" | "serviceAccount" => is_email(&principal),
            "domain" => is_domain(&principal),
            _ => {
                return refuse(
                    "is not a viewer: give an email (user:, group: or serviceAccount:) \
                     or domain:example.com",
                );
            }
        };
        if !valid {
            return refuse(match kind {
                "domain" => "is not a domain name",
                _ => "is not an email address",
            });
        }
        Ok(Self(format!("{kind}:{principal}")))
    }

    /// As IAM names it, `kind:principal`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_domain(name: &str) -> bool {
    (3..=253).contains(&name.len())
        && name.contains('.')
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_email(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    (1..=64).contains(&local.len())
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._%+-".contains(&b))
        && is_domain(domain)
}

impl fmt::Display for Viewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Viewer> for String {
    fn from(viewer: Viewer) -> Self {
        viewer.0
    }
}

impl TryFrom<String> for Viewer {
    type Error = FieldError;

    fn try_from(value: String) -> Result<Self, FieldError> {
        Self::parse(&value)
    }
}

/// Who may open an app.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Access {
    /// Anyone with the URL.
    #[default]
    Public,
    /// Only the viewers listed (and whoever the project grants IAP access to all apps), each
    /// after signing in with Google.
    Private { viewers: Vec<Viewer> },
}

impl Access {
    /// `mode` is `public` or `private`; `viewers` are separated by commas, spaces or lines,
    /// and only a private app may have them.
    pub fn parse<'a>(
        mode: &str,
        viewers: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, FieldError> {
        let mut listed = viewers
            .into_iter()
            .flat_map(|chunk| chunk.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|viewer| !viewer.is_empty())
            .map(Viewer::parse)
            .collect::<Result<Vec<_>, _>>()?;
        listed.sort();
        listed.dedup();
        match mode.trim() {
            "public" if listed.is_empty() => Ok(Self::Public),
            "public" => Err(FieldError::new(
                "viewers",
                "a public app is open to everyone: set access to private to name its viewers",
            )),
            "private" if listed.len() > MAX_VIEWERS => Err(FieldError::new(
                "viewers",
                format!(
                    "at most {MAX_VIEWERS} viewers (got {}): name a Google group instead",
                    listed.len()
                ),
            )),
            "private" => Ok(Self::Private { viewers: listed }),
            other => Err(FieldError::new(
                "access",
                format!("must be public or private (got {})", shown(other)),
            )),
        }
    }

    pub fn mode(&self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private { .. } => "private",
        }
    }

    pub fn viewers(&self) -> &[Viewer] {
        match self {
            Self::Public => &[],
            Self::Private { viewers } => viewers,
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Public => f.write_str("public"),
            Self::Private { viewers } if viewers.is_empty() => {
                f.write_str("private (the project's IAP accessors only)")
            }
            Self::Private { viewers } => {
                f.write_str("private to ")?;
                for (i, viewer) in viewers.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(viewer.as_str())?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_email_is_a_user_and_kinds_are_kept() {
        let access = Access::parse(
            "private",
            ["Ada@Example.com, group:data@example.com\ndomain:example.org"],
        )
        .unwrap();
        let viewers: Vec<&str> = access.viewers().iter().map(Viewer::as_str).collect();
        assert_eq!(
            viewers,
            [
                "domain:example.org",
                "group:data@example.com",
                "user:ada@example.com"
            ]
        );
        assert_eq!(
            access.to_string(),
            "private to domain:example.org, group:data@example.com, user:ada@example.com"
        );
    }

    #[test]
    fn refuses_what_iam_would_refuse_or_what_would_open_the_app() {
        for (mode, viewers, field) in [
            ("private", "allUsers", "viewers"),
            ("private", "allAuthenticatedUsers", "viewers"),
            ("private", "owner:ada@example.com", "viewers"),
            ("private", "user:not-an-email", "viewers"),
            ("private", "domain:localhost", "viewers"),
            ("public", "ada@example.com", "viewers"),
            ("secret", "", "access"),
        ] {
            let error = Access::parse(mode, [viewers]).unwrap_err();
            assert_eq!(error.field, field, "{mode} {viewers}: {error}");
        }
        let many: Vec<String> = (0..=MAX_VIEWERS).map(|i| format!("u{i}@x.io")).collect();
        let error = Access::parse("private", many.iter().map(String::as_str)).unwrap_err();
        assert!(error.message.contains("Google group"), "{error}");
    }

    #[test]
    fn stored_form_round_trips_and_an_old_record_is_public() {
        let access = Access::parse("private", ["group:ds@x.io"]).unwrap();
        let json = serde_json::to_value(&access).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"mode": "private", "viewers": ["group:ds@x.io"]})
        );
        assert_eq!(serde_json::from_value::<Access>(json).unwrap(), access);
        assert_eq!(Access::default(), Access::Public);
        let smuggled = serde_json::json!({"mode": "private", "viewers": ["allUsers"]});
        assert!(serde_json::from_value::<Access>(smuggled).is_err());
    }
}
