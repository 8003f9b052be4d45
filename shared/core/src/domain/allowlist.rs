//! Which GitHub repositories an installation deploys. Runway's GitHub credential can read more
//! than any one user should deploy (every repository of the organizations it is installed on),
//! and everyone behind IAP may submit; so the operator names the owners (`acme/*`) and
//! repositories (`acme/tool`) that may be deployed, once, in Terraform. A repository outside
//! the list is refused before GitHub is asked anything, so the answer never tells whether a
//! private repository exists.

use std::fmt;

use super::{FieldError, RepoUrl};

/// `owner/*` or `owner/repo`, compared without case, as GitHub compares names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoAllowlist(Vec<(String, Option<String>)>);

impl RepoAllowlist {
    /// Parses the operator's list; each entry is `owner/*` or `owner/repo`.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut allowed = Vec::new();
        for entry in entries {
            let entry = entry.trim();
            let parsed = entry
                .split_once('/')
                .filter(|(owner, name)| {
                    !owner.is_empty() && !name.is_empty() && !name.contains('/') && *owner != "*"
                })
                .map(|(owner, name)| {
                    let name = (name != "*").then(|| name.to_ascii_lowercase());
                    (owner.to_ascii_lowercase(), name)
                });
            match parsed {
                Some(pattern) => allowed.push(pattern),
                None => return Err(format!("{entry:?} is not OWNER/* or OWNER/REPO")),
            }
        }
        Ok(Self(allowed))
    }

    /// Whether `repo` may be deployed. Local repositories (the laptop's own) always may.
    pub fn permits(&self, repo: &RepoUrl) -> bool {
        let RepoUrl::GitHub { owner, name } = repo else {
            return true;
        };
        let (owner, name) = (owner.to_ascii_lowercase(), name.to_ascii_lowercase());
        self.0.iter().any(|(allowed_owner, allowed_name)| {
            *allowed_owner == owner && allowed_name.as_ref().is_none_or(|n| *n == name)
        })
    }

    /// The refusal for a repository outside the list: which ones may be deployed, and nothing
    /// about the one asked for.
    pub fn refusal(&self) -> FieldError {
        FieldError::new(
            "repo_url",
            format!(
                "this installation deploys only repositories of {self}; ask an admin to add \
                 yours (allowed_repositories in Terraform)"
            ),
        )
    }
}

impl fmt::Display for RepoAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(none)");
        }
        let shown: Vec<String> = self
            .0
            .iter()
            .map(|(owner, name)| format!("{owner}/{}", name.as_deref().unwrap_or("*")))
            .collect();
        f.write_str(&shown.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(url: &str) -> RepoUrl {
        RepoUrl::parse(url, true).unwrap()
    }

    #[test]
    fn owners_and_repositories_are_matched_without_case_and_nothing_else() {
        let allowed = RepoAllowlist::parse(["Acme/*", "bob/Tool"]).unwrap();
        assert!(allowed.permits(&repo("https://github.com/acme/anything")));
        assert!(allowed.permits(&repo("https://github.com/ACME/x")));
        assert!(allowed.permits(&repo("https://github.com/bob/tool")));
        assert!(!allowed.permits(&repo("https://github.com/bob/other")));
        assert!(!allowed.permits(&repo("https://github.com/acme-evil/x")));
        assert!(!allowed.permits(&repo("https://github.com/eve/tool")));
        assert!(allowed.permits(&repo("/srv/git/local.git")));
        assert!(
            !RepoAllowlist::parse([])
                .unwrap()
                .permits(&repo("https://github.com/a/b"))
        );
        let refusal = allowed.refusal().to_string();
        assert!(refusal.contains("acme/*, bob/tool"), "{refusal}");
    }

    #[test]
    fn entries_that_are_not_owner_slash_something_are_refused() {
        for bad in ["acme", "*/*", "acme/", "/x", "a/b/c"] {
            assert!(RepoAllowlist::parse([bad]).is_err(), "{bad}");
        }
    }
}
