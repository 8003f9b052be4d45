//! Parse-once domain values ("parse, don't validate").
//!
//! Each type's constructor is the only way in, so holding a value proves it is
//! valid; code past the trust boundary never re-checks. Serde goes through the
//! same constructors, so stored or received JSON cannot smuggle in bad values.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// A rejected input, named by its JSON field so clients can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Quotes input for an error message: escaped (no control characters reach
/// logs) and cut short (a pasted blob cannot flood them).
pub(super) fn shown(input: &str) -> String {
    const MAX_CHARS: usize = 64;
    match input.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{:?}...", &input[..end]),
        None => format!("{input:?}"),
    }
}

/// Wires `Display` and serde's string conversions to `as_str` and `parse`.
macro_rules! string_value {
    ($ty:ty) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<$ty> for String {
            fn from(value: $ty) -> Self {
                value.as_str().to_owned()
            }
        }
    };
    ($ty:ty, parse) => {
        string_value!($ty);

        impl TryFrom<String> for $ty {
            type Error = FieldError;

            fn try_from(value: String) -> Result<Self, FieldError> {
                Self::parse(&value)
            }
        }
    };
}

/// A Cloud Run service name. Capped at 30 characters (Cloud Run allows 49) so a
/// traffic tag plus the name stays within Cloud Run's 46-character limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

impl AppName {
    pub const MAX_LEN: usize = 30;

    /// An app's name, or a preview's (`APP--prN`, see [`AppName::preview`]): stored records
    /// and URLs name both. A name a person picks for a new app is also checked with
    /// [`AppName::check_not_preview`].
    pub fn parse(input: &str) -> Result<Self, FieldError> {
        if let Some((parent, number)) = input.rsplit_once(PREVIEW_MARK)
            && let Some(number) = preview_number(number)
            && let Ok(parent) = Self::parse(parent)
            && parent.preview_of().is_none()
        {
            return Ok(Self::preview(&parent, number));
        }
        let fail = |message: String| Err(FieldError::new("app_name", message));
        let valid_chars = input
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if input.is_empty() {
            return fail("must not be empty".into());
        }
        if !input.starts_with(|c: char| c.is_ascii_lowercase()) || !valid_chars {
            return fail(format!(
                "must start with a lowercase letter and contain only a-z, 0-9 and '-' (got {})",
                shown(input)
            ));
        }
        if input.len() > Self::MAX_LEN {
            return fail(format!(
                "must be at most {} characters (got {})",
                Self::MAX_LEN,
                input.len()
            ));
        }
        if input.ends_with('-') {
            return fail(format!("must not end with '-' (got {})", shown(input)));
        }
        // Keeps names unambiguous inside Cloud Run's `TAG---NAME-...` tag URLs.
        if input.contains("--") {
            return fail(format!("must not contain \"--\" (got {})", shown(input)));
        }
        Ok(Self(input.to_owned()))
    }

    /// Refuses a name Runway's own services use: apps are Cloud Run services in Runway's own
    /// project, beside `{prefix}submit`, `{prefix}worker`, … (`prefix` is the installation's
    /// `name_prefix` and a `-`).
    pub fn check_not_reserved(&self, prefix: &str) -> Result<(), FieldError> {
        let name = self.as_str();
        if !prefix.is_empty() && (name == prefix.trim_end_matches('-') || name.starts_with(prefix))
        {
            return Err(FieldError::new(
                "app_name",
                format!("must not start with \"{prefix}\": Runway's own services are named so"),
            ));
        }
        Ok(())
    }

    /// The preview of pull request `number` of `parent`: `PARENT--prN`. No app a person names
    /// contains `--`, so it is never someone's app, and it is a hostname label (at most 30 +
    /// 4 + 20 characters) for the local proxy's `http://PARENT--prN.localhost:PORT/`.
    pub fn preview(parent: &AppName, number: u64) -> Self {
        Self(format!("{parent}{PREVIEW_MARK}{number}"))
    }

    /// The app and pull request whose preview this is; `None` for an app.
    pub fn preview_of(&self) -> Option<(AppName, u64)> {
        let (parent, number) = self.0.rsplit_once(PREVIEW_MARK)?;
        Some((Self(parent.to_owned()), preview_number(number)?))
    }

    /// Whether this is a preview of `app`.
    pub fn is_preview_of(&self, app: &AppName) -> bool {
        self.preview_of().is_some_and(|(parent, _)| &parent == app)
    }

    /// Where the secrets `self`'s previews run with are kept: the secret store's key
    /// `APP--previews` (Secret Manager's `runway-app-APP--previews`, inside the prefix Runway's
    /// grants cover). Not an app's name: no app or preview is named so, and it is only ever
    /// handed to the secret store.
    pub fn previews_secrets(&self) -> Self {
        Self(format!("{}--previews", self.0))
    }

    /// Refuses a preview's name for an app a person creates: previews are made by their pull
    /// requests.
    pub fn check_not_preview(&self) -> Result<(), FieldError> {
        match self.preview_of() {
            Some(_) => Err(FieldError::new(
                "app_name",
                format!(
                    "must not contain \"--\" (got {}): names like that are pull-request previews",
                    shown(&self.0)
                ),
            )),
            None => Ok(()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const PREVIEW_MARK: &str = "--pr";

/// A pull request's number as a preview's name carries it: digits, no leading zero.
fn preview_number(digits: &str) -> Option<u64> {
    let plain = !digits.is_empty()
        && !digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit());
    plain.then(|| digits.parse().ok()).flatten()
}

string_value!(AppName, parse);

/// Where an app's code comes from: a public GitHub repository, or (for local
/// runs and tests only) an absolute path on this machine.
///
/// Build it with [`RepoUrl::parse`]; the variants are public for matching.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RepoUrl {
    GitHub { owner: String, name: String },
    Local { path: PathBuf },
}

const GITHUB_FORM: &str = "https://github.com/OWNER/REPO";

impl RepoUrl {
    /// Error messages never quote the whole input: URLs can carry tokens.
    pub fn parse(input: &str, allow_local: bool) -> Result<Self, FieldError> {
        if let Some(rest) = input.strip_prefix("https://") {
            return Self::parse_github(rest);
        }
        let local = input
            .strip_prefix("file://")
            .or_else(|| input.starts_with('/').then_some(input));
        match local {
            Some(path) if allow_local => Self::parse_local(path),
            Some(_) => Err(repo_error(format!(
                "only GitHub https URLs ({GITHUB_FORM}) are accepted, not local paths"
            ))),
            None if allow_local => Err(repo_error(format!(
                "must be a GitHub https URL ({GITHUB_FORM}), a file:/// URL or an absolute path"
            ))),
            None => Err(repo_error(format!(
                "must be a GitHub https URL ({GITHUB_FORM})"
            ))),
        }
    }

    fn parse_github(rest: &str) -> Result<Self, FieldError> {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(repo_error(format!(
                "must not contain credentials; use the public URL {GITHUB_FORM}"
            )));
        }
        if !authority.eq_ignore_ascii_case("github.com") {
            return Err(repo_error(format!("must be on github.com ({GITHUB_FORM})")));
        }
        if path.contains(['?', '#']) {
            return Err(repo_error(format!(
                "must not contain a query string or fragment ({GITHUB_FORM})"
            )));
        }
        let path = path.strip_suffix('/').unwrap_or(path);
        let path = path.strip_suffix(".git").unwrap_or(path);
        let Some((owner, name)) = path.split_once('/').filter(|(_, name)| !name.contains('/'))
        else {
            return Err(repo_error(format!(
                "must name exactly an owner and a repository ({GITHUB_FORM})"
            )));
        };
        // GitHub's own limits for user/org and repository names.
        let owner_ok = (1..=39).contains(&owner.len())
            && owner
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !owner.starts_with('-')
            && !owner.ends_with('-');
        if !owner_ok {
            return Err(repo_error(format!(
                "owner must be 1-39 characters of A-Z, a-z, 0-9 and '-', not starting or ending with '-' (got {})",
                shown(owner)
            )));
        }
        let name_ok = (1..=100).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && name != "."
            && name != "..";
        if !name_ok {
            return Err(repo_error(format!(
                "repository must be 1-100 characters of A-Z, a-z, 0-9, '.', '_' and '-', and not \".\" or \"..\" (got {})",
                shown(name)
            )));
        }
        // One `.git` was taken off above: a name still ending in it would be shown, and
        // stored, as a URL that reads back as another repository.
        if name.ends_with(".git") {
            return Err(repo_error(format!(
                "repository must not end in \".git\" once the URL's own \".git\" is taken off (got {})",
                shown(name)
            )));
        }
        Ok(Self::GitHub {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }

    fn parse_local(path: &str) -> Result<Self, FieldError> {
        let path = Path::new(path);
        if !path.is_absolute() {
            return Err(repo_error("a local repository must be an absolute path"));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(repo_error(
                "a local repository path must not contain \"..\"",
            ));
        }
        // Collecting the components drops "." parts, repeated and trailing '/'.
        Ok(Self::Local {
            path: path.components().collect(),
        })
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local { .. })
    }

    /// `owner/name`, the form GitHub's API and webhooks use.
    pub fn github_full_name(&self) -> Option<String> {
        match self {
            Self::GitHub { owner, name } => Some(format!("{owner}/{name}")),
            Self::Local { .. } => None,
        }
    }
}

fn repo_error(message: impl Into<String>) -> FieldError {
    FieldError::new("repo_url", message)
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::GitHub { owner, name } => write!(f, "https://github.com/{owner}/{name}"),
            Self::Local { path } => write!(f, "file://{}", path.display()),
        }
    }
}

impl TryFrom<String> for RepoUrl {
    type Error = FieldError;

    /// Stored values may be local ones written by the local runner.
    fn try_from(value: String) -> Result<Self, FieldError> {
        Self::parse(&value, true)
    }
}

impl From<RepoUrl> for String {
    fn from(value: RepoUrl) -> Self {
        value.to_string()
    }
}

/// A short git branch name. Follows `git check-ref-format --branch`, so git can
/// always check it out and it can never be mistaken for a command-line option.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Branch(String);

impl Branch {
    pub const MAX_BYTES: usize = 255;

    pub fn parse(input: &str) -> Result<Self, FieldError> {
        let problem = if input.is_empty() {
            "must not be empty"
        } else if input.len() > Self::MAX_BYTES {
            "must be at most 255 bytes"
        } else if input.starts_with("refs/") {
            "must be a short branch name like \"main\", not a full ref"
        } else if input
            .chars()
            .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c))
        {
            "must not contain spaces, control characters or any of ~ ^ : ? * [ \\"
        } else if input == "@" || input.contains("@{") {
            "must not be \"@\" or contain \"@{\""
        } else if input.contains("..") {
            "must not contain \"..\""
        } else if input.starts_with('-') {
            "must not start with '-'"
        } else if input.starts_with('/') || input.ends_with('/') || input.contains("//") {
            "must not start or end with '/' or contain \"//\""
        } else if input.ends_with('.') {
            "must not end with '.'"
        } else if input
            .split('/')
            .any(|part| part.starts_with('.') || part.ends_with(".lock"))
        {
            "must not have a '/'-separated part starting with '.' or ending with \".lock\""
        } else {
            return Ok(Self(input.to_owned()));
        };
        Err(FieldError::new(
            "branch",
            format!("{problem} (got {})", shown(input)),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_value!(Branch, parse);

/// The Streamlit entry point, relative to the repository root. Kept strictly
/// inside the checkout, and passed on a command line, so no part may look like
/// an option.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MainFile(String);

impl MainFile {
    pub const MAX_BYTES: usize = 255;

    pub fn parse(input: &str) -> Result<Self, FieldError> {
        let problem = if input.is_empty() {
            "must not be empty"
        } else if input.len() > Self::MAX_BYTES {
            "must be at most 255 bytes"
        } else if !input.ends_with(".py") {
            "must be a Python file ending in \".py\""
        } else if input.starts_with('/') {
            "must be relative to the repository root, not start with '/'"
        } else if input.chars().any(|c| c == '\\' || c.is_control()) {
            "must use '/' as separator and contain no control characters"
        } else if input
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            "must not have empty, \".\" or \"..\" path parts"
        } else if input.split('/').any(|part| part.starts_with('-')) {
            "must not have a path part starting with '-'"
        } else {
            return Ok(Self(input.to_owned()));
        };
        Err(FieldError::new(
            "main_file",
            format!("{problem} (got {})", shown(input)),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }
}

string_value!(MainFile, parse);

/// A Cloud Run region from the deployment's configured list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);

impl Region {
    pub fn parse(input: &str, allowed: &[String]) -> Result<Self, FieldError> {
        if allowed.iter().any(|region| region == input) {
            return Ok(Self(input.to_owned()));
        }
        let choices = match allowed {
            [] => "(none configured)".to_owned(),
            _ => allowed.join(", "),
        };
        Err(FieldError::new(
            "region",
            format!("must be one of: {choices} (got {})", shown(input)),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_value!(Region);

impl TryFrom<String> for Region {
    type Error = FieldError;

    /// Checks only the shape: the allowed list is configuration and may change
    /// after a value was stored. Use [`Region::parse`] on incoming requests.
    fn try_from(value: String) -> Result<Self, FieldError> {
        let shaped = (1..=63).contains(&value.len())
            && value.starts_with(|c: char| c.is_ascii_lowercase())
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if shaped {
            Ok(Self(value))
        } else {
            Err(FieldError::new(
                "region",
                format!(
                    "must be a region name like \"europe-west1\" (got {})",
                    shown(&value)
                ),
            ))
        }
    }
}

/// Memory per Cloud Run instance; only the sizes we offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Memory {
    Mi512,
    Gi1,
    Gi2,
    Gi4,
    Gi8,
}

impl Memory {
    pub const ALL: [Self; 5] = [Self::Mi512, Self::Gi1, Self::Gi2, Self::Gi4, Self::Gi8];

    pub fn parse(input: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|memory| memory.as_str() == input)
            .ok_or_else(|| {
                FieldError::new(
                    "memory",
                    format!(
                        "must be one of {} (got {})",
                        Self::ALL.map(Self::as_str).join(", "),
                        shown(input)
                    ),
                )
            })
    }

    /// The Cloud Run / Kubernetes quantity string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mi512 => "512Mi",
            Self::Gi1 => "1Gi",
            Self::Gi2 => "2Gi",
            Self::Gi4 => "4Gi",
            Self::Gi8 => "8Gi",
        }
    }

    pub fn mebibytes(self) -> u32 {
        match self {
            Self::Mi512 => 512,
            Self::Gi1 => 1024,
            Self::Gi2 => 2048,
            Self::Gi4 => 4096,
            Self::Gi8 => 8192,
        }
    }
}

string_value!(Memory, parse);

/// vCPUs per Cloud Run instance; only the counts we offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Cpu {
    One,
    Two,
    Four,
}

impl Cpu {
    pub const ALL: [Self; 3] = [Self::One, Self::Two, Self::Four];

    pub fn parse(input: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|cpu| cpu.as_str() == input)
            .ok_or_else(|| {
                FieldError::new(
                    "cpu",
                    format!(
                        "must be one of {} (got {})",
                        Self::ALL.map(Self::as_str).join(", "),
                        shown(input)
                    ),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::One => "1",
            Self::Two => "2",
            Self::Four => "4",
        }
    }

    pub fn count(self) -> u32 {
        match self {
            Self::One => 1,
            Self::Two => 2,
            Self::Four => 4,
        }
    }
}

string_value!(Cpu, parse);

/// A memory/CPU pair Cloud Run will accept. Fields are private so every value
/// has passed Cloud Run's pairing rules, including deserialized ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "ResourcesFields")]
pub struct Resources {
    memory: Memory,
    cpu: Cpu,
}

impl Resources {
    pub fn new(memory: Memory, cpu: Cpu) -> Result<Self, FieldError> {
        if memory.mebibytes() > 4096 && cpu.count() < 2 {
            return Err(FieldError::new(
                "memory",
                format!(
                    "{} needs at least 2 CPUs on Cloud Run (got {}); use 4Gi or less, or more CPUs",
                    memory.as_str(),
                    cpu.as_str()
                ),
            ));
        }
        if cpu.count() == 4 && memory.mebibytes() < 2048 {
            return Err(FieldError::new(
                "cpu",
                format!(
                    "4 CPUs need at least 2Gi of memory on Cloud Run (got {}); use fewer CPUs or more memory",
                    memory.as_str()
                ),
            ));
        }
        Ok(Self { memory, cpu })
    }

    pub fn memory(self) -> Memory {
        self.memory
    }

    pub fn cpu(self) -> Cpu {
        self.cpu
    }
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            memory: Memory::Gi1,
            cpu: Cpu::One,
        }
    }
}

/// Serde's view of [`Resources`] before the pairing rules are applied.
#[derive(Deserialize)]
struct ResourcesFields {
    memory: Memory,
    cpu: Cpu,
}

impl TryFrom<ResourcesFields> for Resources {
    type Error = FieldError;

    fn try_from(fields: ResourcesFields) -> Result<Self, FieldError> {
        Self::new(fields.memory, fields.cpu)
    }
}

/// The app's `secrets.toml`. Held as a secret (zeroed on drop, redacted in
/// `Debug`) and never serialized or displayed, so it can't leak into logs or
/// responses. Checked as TOML up front so a typo fails the submit, not the app.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct SecretsToml(SecretString);

impl SecretsToml {
    pub const MAX_BYTES: usize = 64 * 1024;

    /// Takes ownership so the only copy of the text ends up inside the secret.
    pub fn parse(input: String) -> Result<Self, FieldError> {
        let secret = SecretString::from(input);
        let text = secret.expose_secret();
        if text.len() > Self::MAX_BYTES {
            return Err(FieldError::new(
                "secrets",
                format!(
                    "must be at most 64 KiB ({} bytes) (got {} bytes)",
                    Self::MAX_BYTES,
                    text.len()
                ),
            ));
        }
        if let Err(error) = text.parse::<toml::Table>() {
            return Err(FieldError::new("secrets", toml_error_message(text, &error)));
        }
        Ok(Self(secret))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The names at its top level (keys and tables), sorted: what the app's page may show of
    /// its secrets, never a value.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .expose()
            .parse::<toml::Table>()
            .map(|table| table.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    pub fn len(&self) -> usize {
        self.expose().len()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl TryFrom<String> for SecretsToml {
    type Error = FieldError;

    fn try_from(value: String) -> Result<Self, FieldError> {
        Self::parse(value)
    }
}

impl fmt::Debug for SecretsToml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsToml([REDACTED])")
    }
}

/// Position plus toml's bare message. toml's `Display` quotes the offending
/// source line, which here would be a secret.
fn toml_error_message(text: &str, error: &toml::de::Error) -> String {
    match error.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!(
                "not valid TOML at line {line}, column {column}: {}",
                error.message()
            )
        }
        None => format!("not valid TOML: {}", error.message()),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    for (_, c) in text.char_indices().take_while(|&(i, _)| i < offset) {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// A full git commit SHA-1, lowercase so equal commits compare equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommitSha(String);

impl CommitSha {
    pub fn parse(input: &str) -> Result<Self, FieldError> {
        if input.len() == 40 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Self(input.to_ascii_lowercase()));
        }
        Err(FieldError::new(
            "commit",
            format!(
                "must be a full 40-character hexadecimal commit SHA (got {})",
                shown(input)
            ),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 7-character form git and GitHub show to people.
    pub fn short(&self) -> &str {
        &self.0[..7]
    }
}

string_value!(CommitSha, parse);

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> Vec<String> {
        vec!["europe-west1".into(), "us-central1".into()]
    }

    // FieldError

    #[test]
    fn field_error_displays_the_field_then_the_message() {
        // Arrange
        let error = FieldError::new("branch", "must not be empty");

        // Act
        let text = error.to_string();

        // Assert
        assert_eq!(text, "branch: must not be empty");
    }

    // AppName

    #[test]
    fn accepts_app_names_following_the_service_name_rules() {
        for input in ["a", "my-app", "app2", "a-1-b", &"a".repeat(30)] {
            // Act
            let name = AppName::parse(input);

            // Assert
            assert_eq!(name.map(|n| n.to_string()).as_deref(), Ok(input));
        }
    }

    #[test]
    fn rejects_app_names_that_could_replace_runways_own_services() {
        for input in ["runway", "runway-submit", "runway-worker", "runway-x"] {
            // Act
            let error = AppName::parse(input)
                .unwrap()
                .check_not_reserved("runway-")
                .unwrap_err();

            // Assert
            assert_eq!(error.field, "app_name");
            assert!(
                error.message.contains("runway-"),
                "{input}: {}",
                error.message
            );
        }
        // A name merely containing the word is fine.
        let free = |name: &str| AppName::parse(name).unwrap().check_not_reserved("runway-");
        assert!(free("runways").is_ok());
        assert!(free("my-runway-app").is_ok());
        // An installation named otherwise reserves its own prefix, not Runway's.
        let acme = |name: &str| AppName::parse(name).unwrap().check_not_reserved("acme-");
        assert!(acme("acme-submit").is_err());
        assert!(acme("runway-submit").is_ok());
    }

    #[test]
    fn a_preview_is_named_after_its_app_and_pull_request_and_no_one_can_pick_its_name() {
        // Arrange
        let parent = AppName::parse("sales").unwrap();

        // Act
        let preview = AppName::preview(&parent, 42);
        let parsed = AppName::parse("sales--pr42").unwrap();

        // Assert
        assert_eq!(preview.as_str(), "sales--pr42");
        assert_eq!(parsed, preview);
        assert_eq!(preview.preview_of(), Some((parent.clone(), 42)));
        assert_eq!(parent.preview_of(), None);
        assert!(parent.check_not_preview().is_ok());
        let refused = preview.check_not_preview().unwrap_err();
        assert!(
            refused.message.contains("pull-request previews"),
            "{refused}"
        );
        for not_a_preview in [
            "sales--pr3--pr4",
            "sales--pr",
            "sales--pr0",
            "sales--pr01",
            "sales--prx",
            "--pr3",
        ] {
            assert!(AppName::parse(not_a_preview).is_err(), "{not_a_preview}");
        }
        assert!(AppName::parse(&format!("{}--pr7", "a".repeat(31))).is_err());
    }

    #[test]
    fn rejects_an_app_name_with_uppercase() {
        // Act
        let error = AppName::parse("My_App").unwrap_err();

        // Assert
        assert_eq!(error.field, "app_name");
        assert_eq!(
            error.message,
            "must start with a lowercase letter and contain only a-z, 0-9 and '-' (got \"My_App\")"
        );
    }

    #[test]
    fn rejects_app_names_breaking_the_service_name_rules() {
        let bad = [
            "", " app", "app ", "1app", "-app", "app-", "my--app", "my_app", "my.app", "äpp",
        ];
        for input in bad {
            // Act
            let result = AppName::parse(input);

            // Assert
            assert_eq!(result.unwrap_err().field, "app_name", "input {input:?}");
        }
    }

    #[test]
    fn rejects_an_app_name_longer_than_30_characters() {
        // Arrange
        let input = "a".repeat(31);

        // Act
        let error = AppName::parse(&input).unwrap_err();

        // Assert
        assert_eq!(error.message, "must be at most 30 characters (got 31)");
    }

    // RepoUrl

    #[test]
    fn accepts_a_github_url_with_dot_git_or_trailing_slash() {
        let forms = [
            "https://github.com/streamlit/demo",
            "https://github.com/streamlit/demo.git",
            "https://github.com/streamlit/demo/",
            "https://github.com/streamlit/demo.git/",
        ];
        for input in forms {
            // Act
            let url = RepoUrl::parse(input, false).unwrap();

            // Assert
            assert_eq!(
                url,
                RepoUrl::GitHub {
                    owner: "streamlit".into(),
                    name: "demo".into()
                }
            );
            assert_eq!(url.to_string(), "https://github.com/streamlit/demo");
        }
    }

    #[test]
    fn accepts_github_names_at_their_limits() {
        // Arrange
        let owner = format!("a{}z", "-".repeat(37));
        let name = format!("{}.x_y-z", "r".repeat(93));
        let input = format!("https://github.com/{owner}/{name}");

        // Act
        let url = RepoUrl::parse(&input, false).unwrap();

        // Assert
        assert_eq!(url.github_full_name(), Some(format!("{owner}/{name}")));
    }

    #[test]
    fn rejects_urls_that_are_not_a_github_repository_root() {
        let long_owner = format!("https://github.com/{}/r", "o".repeat(40));
        let long_name = format!("https://github.com/o/{}", "r".repeat(101));
        let bad = [
            "",
            "github.com/o/r",
            "http://github.com/o/r",
            "ssh://git@github.com/o/r",
            "git@github.com:o/r.git",
            "https://gitlab.com/o/r",
            "https://github.com:443/o/r",
            "https://github.com",
            "https://github.com/o",
            "https://github.com/o/r/tree/main",
            "https://github.com/o/r//",
            "https://github.com//r",
            "https://github.com/-o/r",
            "https://github.com/o-/r",
            "https://github.com/o_x/r",
            "https://github.com/o/..",
            "https://github.com/o/.",
            "https://github.com/o/.git",
            "https://github.com/o/r x",
            "https://github.com/o/r#readme",
            &long_owner,
            &long_name,
        ];
        for input in bad {
            // Act
            let result = RepoUrl::parse(input, true);

            // Assert
            assert_eq!(result.unwrap_err().field, "repo_url", "input {input:?}");
        }
    }

    /// Found by fuzzing: `r.git.git` was taken as the repository `r.git`, shown (and stored) as
    /// `…/r.git`, and read back as `r`, another repository.
    #[test]
    fn rejects_a_repository_name_still_ending_in_dot_git() {
        for input in [
            "https://github.com/o/r.git.git",
            "https://github.com/o/r.git.git/",
            "https://github.com/o/.git.git",
        ] {
            // Act
            let error = RepoUrl::parse(input, false).unwrap_err();

            // Assert
            assert_eq!(error.field, "repo_url", "input {input:?}");
            assert!(error.message.contains(".git"), "{error}");
        }
    }

    #[test]
    fn rejects_a_url_with_credentials_without_echoing_them() {
        // Arrange
        let input = "https://user:ghp_secret123@github.com/o/r";

        // Act
        let error = RepoUrl::parse(input, false).unwrap_err();

        // Assert
        assert!(error.message.contains("credentials"), "{error}");
        assert!(!error.to_string().contains("ghp_secret123"));
        assert!(!error.to_string().contains("user"));
    }

    #[test]
    fn rejects_a_url_with_a_query_string_without_echoing_it() {
        // Act
        let error =
            RepoUrl::parse("https://github.com/o/r?token=ghp_secret123", false).unwrap_err();

        // Assert
        assert!(error.message.contains("query string"), "{error}");
        assert!(!error.to_string().contains("ghp_secret123"));
    }

    #[test]
    fn accepts_local_paths_when_allowed() {
        for input in ["file:///srv/repos/app", "/srv/repos/app"] {
            // Act
            let url = RepoUrl::parse(input, true).unwrap();

            // Assert
            assert_eq!(
                url,
                RepoUrl::Local {
                    path: "/srv/repos/app".into()
                }
            );
            assert_eq!(url.to_string(), "file:///srv/repos/app");
            assert!(url.is_local());
        }
    }

    #[test]
    fn normalizes_a_local_path() {
        // Act
        let url = RepoUrl::parse("/srv//repos/./app/", true).unwrap();

        // Assert
        assert_eq!(url.to_string(), "file:///srv/repos/app");
    }

    #[test]
    fn rejects_local_paths_when_not_allowed_saying_only_github_is_accepted() {
        for input in ["file:///srv/app", "/srv/app"] {
            // Act
            let error = RepoUrl::parse(input, false).unwrap_err();

            // Assert
            assert!(
                error.message.starts_with("only GitHub https URLs"),
                "{error}"
            );
        }
    }

    #[test]
    fn rejects_relative_and_parent_directory_local_paths() {
        let bad = [
            "srv/app",
            "./app",
            "file://srv/app",
            "/srv/../etc",
            "file:///srv/..",
        ];
        for input in bad {
            // Act
            let result = RepoUrl::parse(input, true);

            // Assert
            assert_eq!(result.unwrap_err().field, "repo_url", "input {input:?}");
        }
    }

    #[test]
    fn gives_a_github_full_name_only_for_github_urls() {
        // Arrange
        let github = RepoUrl::parse("https://github.com/Owner/Repo.js", false).unwrap();
        let local = RepoUrl::parse("/srv/app", true).unwrap();

        // Act / Assert
        assert_eq!(github.github_full_name().as_deref(), Some("Owner/Repo.js"));
        assert!(!github.is_local());
        assert_eq!(local.github_full_name(), None);
    }

    #[test]
    fn repo_urls_round_trip_through_serde_as_canonical_strings() {
        for input in ["https://github.com/o/r.git", "/srv/app"] {
            // Arrange
            let url = RepoUrl::parse(input, true).unwrap();

            // Act
            let json = serde_json::to_string(&url).unwrap();
            let back: RepoUrl = serde_json::from_str(&json).unwrap();

            // Assert
            assert_eq!(json, format!("\"{url}\""));
            assert_eq!(back, url);
        }
    }

    // Branch

    #[test]
    fn accepts_branch_names_git_accepts() {
        let good = [
            "main",
            "feature/x",
            "release-1.2",
            "v1.0.0",
            "a@b",
            "über",
            "x.lockx",
        ];
        for input in good {
            // Act
            let branch = Branch::parse(input);

            // Assert
            assert_eq!(branch.map(|b| b.to_string()).as_deref(), Ok(input));
        }
    }

    #[test]
    fn rejects_branch_names_git_would_refuse() {
        let bad = [
            "",
            "has space",
            "tab\there",
            "del\x7f",
            "a~1",
            "a^1",
            "a:b",
            "a?",
            "a*",
            "a[b",
            "a\\b",
            "a..b",
            "a@{1}",
            "@",
            "-main",
            "/main",
            "main/",
            "a//b",
            "main.",
            ".hidden",
            "a/.b",
            "x.lock",
            "a/x.lock/b",
        ];
        for input in bad {
            // Act
            let result = Branch::parse(input);

            // Assert
            assert_eq!(result.unwrap_err().field, "branch", "input {input:?}");
        }
    }

    #[test]
    fn rejects_a_full_ref_name() {
        // Act
        let error = Branch::parse("refs/heads/main").unwrap_err();

        // Assert
        assert!(error.message.contains("short branch name"), "{error}");
    }

    #[test]
    fn rejects_a_branch_longer_than_255_bytes() {
        // Arrange
        let ok = "b".repeat(255);
        let too_long = "b".repeat(256);

        // Act / Assert
        assert!(Branch::parse(&ok).is_ok());
        assert!(
            Branch::parse(&too_long)
                .unwrap_err()
                .message
                .contains("255 bytes")
        );
    }

    #[test]
    fn escapes_and_shortens_input_quoted_in_messages() {
        // Arrange
        let input = format!("a\u{1b}[31m{}", "x".repeat(100));

        // Act
        let error = Branch::parse(&input).unwrap_err();

        // Assert
        assert!(error.message.contains(r"\u{1b}"), "{error}");
        assert!(!error.message.contains('\u{1b}'));
        assert!(error.message.ends_with("...)"), "{error}");
    }

    // MainFile

    #[test]
    fn accepts_relative_python_paths() {
        for input in [
            "app.py",
            "src/app.py",
            "apps/my app/streamlit_app.py",
            ".streamlit/x.py",
        ] {
            // Act
            let file = MainFile::parse(input).unwrap();

            // Assert
            assert_eq!(file.as_str(), input);
            assert_eq!(file.as_path(), Path::new(input));
        }
    }

    #[test]
    fn rejects_main_files_that_are_not_safe_relative_python_paths() {
        let long = format!("{}.py", "a".repeat(253));
        let bad = [
            "",
            "app",
            "app.pyc",
            "/app.py",
            "src\\app.py",
            "a\0.py",
            "a\n.py",
            "a//b.py",
            "./app.py",
            "src/../app.py",
            "../app.py",
            "-app.py",
            "--server.port/app.py",
            &long,
        ];
        for input in bad {
            // Act
            let result = MainFile::parse(input);

            // Assert
            assert_eq!(result.unwrap_err().field, "main_file", "input {input:?}");
        }
    }

    // Region

    #[test]
    fn accepts_an_allowed_region() {
        // Act
        let region = Region::parse("us-central1", &regions()).unwrap();

        // Assert
        assert_eq!(region.as_str(), "us-central1");
    }

    #[test]
    fn rejects_a_region_not_in_the_allowed_list_and_lists_them() {
        // Act
        let error = Region::parse("asia-east1", &regions()).unwrap_err();

        // Assert
        assert_eq!(error.field, "region");
        assert_eq!(
            error.message,
            "must be one of: europe-west1, us-central1 (got \"asia-east1\")"
        );
    }

    #[test]
    fn deserializing_a_region_checks_only_its_shape() {
        // Act
        let stored: Result<Region, _> = serde_json::from_str("\"asia-east1\"");
        let garbage: Result<Region, _> = serde_json::from_str("\"Asia East\"");

        // Assert
        assert_eq!(stored.unwrap().as_str(), "asia-east1");
        assert!(garbage.unwrap_err().to_string().contains("region"));
    }

    // Memory, Cpu, Resources

    #[test]
    fn parses_every_memory_size_with_its_mebibytes() {
        let sizes = [
            ("512Mi", 512),
            ("1Gi", 1024),
            ("2Gi", 2048),
            ("4Gi", 4096),
            ("8Gi", 8192),
        ];
        for (input, mebibytes) in sizes {
            // Act
            let memory = Memory::parse(input).unwrap();

            // Assert
            assert_eq!(memory.as_str(), input);
            assert_eq!(memory.mebibytes(), mebibytes);
        }
    }

    #[test]
    fn rejects_unknown_memory_sizes_listing_the_allowed_ones() {
        for input in ["", "1G", "1gi", "16Gi", "1024Mi", " 1Gi"] {
            // Act
            let error = Memory::parse(input).unwrap_err();

            // Assert
            assert_eq!(error.field, "memory");
            assert!(
                error.message.contains("512Mi, 1Gi, 2Gi, 4Gi, 8Gi"),
                "{error}"
            );
        }
    }

    #[test]
    fn parses_every_cpu_count() {
        for (input, count) in [("1", 1), ("2", 2), ("4", 4)] {
            // Act
            let cpu = Cpu::parse(input).unwrap();

            // Assert
            assert_eq!(cpu.as_str(), input);
            assert_eq!(cpu.count(), count);
        }
    }

    #[test]
    fn rejects_unknown_cpu_counts_listing_the_allowed_ones() {
        for input in ["", "0", "3", "8", "1.0", "one"] {
            // Act
            let error = Cpu::parse(input).unwrap_err();

            // Assert
            assert_eq!(error.field, "cpu");
            assert!(error.message.contains("1, 2, 4"), "{error}");
        }
    }

    #[test]
    fn default_resources_are_1gi_and_1_cpu() {
        // Act
        let resources = Resources::default();

        // Assert
        assert_eq!(resources.memory(), Memory::Gi1);
        assert_eq!(resources.cpu(), Cpu::One);
        assert_eq!(Resources::new(Memory::Gi1, Cpu::One), Ok(resources));
    }

    #[test]
    fn accepts_every_pair_cloud_run_allows() {
        for memory in Memory::ALL {
            for cpu in Cpu::ALL {
                // Arrange
                let allowed = !matches!(
                    (memory, cpu),
                    (Memory::Gi8, Cpu::One) | (Memory::Mi512 | Memory::Gi1, Cpu::Four)
                );

                // Act
                let result = Resources::new(memory, cpu);

                // Assert
                assert_eq!(result.is_ok(), allowed, "{memory} / {cpu}");
            }
        }
    }

    #[test]
    fn rejects_more_than_4gi_with_a_single_cpu() {
        // Act
        let error = Resources::new(Memory::Gi8, Cpu::One).unwrap_err();

        // Assert
        assert_eq!(error.field, "memory");
        assert!(error.message.contains("at least 2 CPUs"), "{error}");
    }

    #[test]
    fn rejects_4_cpus_with_less_than_2gi() {
        for memory in [Memory::Mi512, Memory::Gi1] {
            // Act
            let error = Resources::new(memory, Cpu::Four).unwrap_err();

            // Assert
            assert_eq!(error.field, "cpu");
            assert!(error.message.contains("at least 2Gi"), "{error}");
        }
    }

    #[test]
    fn resources_serialize_as_strings_and_deserialize_through_the_pairing_rules() {
        // Arrange
        let resources = Resources::new(Memory::Gi8, Cpu::Two).unwrap();

        // Act
        let json = serde_json::to_string(&resources).unwrap();
        let back: Resources = serde_json::from_str(&json).unwrap();
        let invalid = serde_json::from_str::<Resources>(r#"{"memory":"8Gi","cpu":"1"}"#);

        // Assert
        assert_eq!(json, r#"{"memory":"8Gi","cpu":"2"}"#);
        assert_eq!(back, resources);
        assert!(invalid.unwrap_err().to_string().contains("at least 2 CPUs"));
    }

    // SecretsToml

    #[test]
    fn accepts_empty_and_valid_secrets_toml() {
        for input in ["", "api_key = \"abc\"\n[db]\nurl = \"postgres://x\"\n"] {
            // Act
            let secrets = SecretsToml::parse(input.to_owned()).unwrap();

            // Assert
            assert_eq!(secrets.expose(), input);
            assert_eq!(secrets.len(), input.len());
            assert_eq!(secrets.is_empty(), input.is_empty());
        }
    }

    #[test]
    fn rejects_invalid_toml_with_its_position_but_without_echoing_the_secret() {
        // Arrange
        let input = r#"api_key = "sk-live-abcdef"#.to_owned();

        // Act
        let error = SecretsToml::parse(input).unwrap_err();

        // Assert
        assert_eq!(error.field, "secrets");
        assert!(
            error
                .message
                .starts_with("not valid TOML at line 1, column "),
            "{error}"
        );
        assert!(!error.to_string().contains("sk-live"), "{error}");
        assert!(!error.to_string().contains("abcdef"), "{error}");
    }

    #[test]
    fn names_the_top_level_keys_and_tables_of_secrets_but_no_value() {
        let secrets = SecretsToml::parse(
            "token = \"s3cret\"\n[connections.db]\nurl = \"postgres://u:p@h\"\n".to_owned(),
        )
        .unwrap();
        let keys = secrets.keys();
        assert_eq!(keys, ["connections", "token"]);
        assert!(!keys.concat().contains("s3cret"));
    }

    #[test]
    fn reports_the_line_and_column_of_a_toml_error_on_a_later_line() {
        // Arrange
        let input = "a = \"ü\"\nb = \"ok\"\nc = = 3\n".to_owned();

        // Act
        let error = SecretsToml::parse(input).unwrap_err();

        // Assert
        assert!(
            error
                .message
                .starts_with("not valid TOML at line 3, column 5: "),
            "{error}"
        );
    }

    #[test]
    fn counts_columns_in_characters_not_bytes() {
        // Act
        let position = line_column("x\nüü=", 6);

        // Assert
        assert_eq!(position, (2, 3));
    }

    #[test]
    fn rejects_secrets_larger_than_64_kib() {
        // Arrange
        let at_limit = format!("k = \"{}\"", "x".repeat(SecretsToml::MAX_BYTES - 6));
        let over_limit = format!("{at_limit} ");

        // Act
        let ok = SecretsToml::parse(at_limit);
        let error = SecretsToml::parse(over_limit).unwrap_err();

        // Assert
        assert!(ok.is_ok());
        assert!(error.message.contains("64 KiB"), "{error}");
    }

    #[test]
    fn redacts_secrets_in_debug_output() {
        // Arrange
        let secrets = SecretsToml::parse("token = \"hunter2\"".to_owned()).unwrap();

        // Act
        let debug = format!("{secrets:?}");

        // Assert
        assert_eq!(debug, "SecretsToml([REDACTED])");
    }

    #[test]
    fn deserializing_secrets_validates_the_toml() {
        // Act
        let good: SecretsToml = serde_json::from_str(r#""k = 1""#).unwrap();
        let bad = serde_json::from_str::<SecretsToml>(r#""k = ""#);

        // Assert
        assert_eq!(good.expose(), "k = 1");
        assert!(bad.unwrap_err().to_string().contains("not valid TOML"));
    }

    // CommitSha

    #[test]
    fn accepts_a_full_sha_and_lowercases_it() {
        // Arrange
        let input = "ABCDEF0123456789abcdef0123456789ABCDEF01";

        // Act
        let sha = CommitSha::parse(input).unwrap();

        // Assert
        assert_eq!(sha.as_str(), input.to_ascii_lowercase());
        assert_eq!(sha.short(), "abcdef0");
    }

    #[test]
    fn rejects_short_or_non_hex_shas() {
        let bad = [
            "",
            "abcdef0",
            "abcdef0123456789abcdef0123456789abcdef0",
            "abcdef0123456789abcdef0123456789abcdef012",
            "gbcdef0123456789abcdef0123456789abcdef01",
            " abcdef0123456789abcdef0123456789abcdef0",
        ];
        for input in bad {
            // Act
            let result = CommitSha::parse(input);

            // Assert
            assert_eq!(result.unwrap_err().field, "commit", "input {input:?}");
        }
    }

    // Serde for the plain string values

    #[test]
    fn string_values_serialize_as_plain_strings() {
        // Arrange
        let sha = "0123456789abcdef0123456789abcdef01234567";

        // Act
        let json = serde_json::to_string(&(
            AppName::parse("my-app").unwrap(),
            Branch::parse("main").unwrap(),
            MainFile::parse("app.py").unwrap(),
            Memory::Mi512,
            Cpu::Four,
            CommitSha::parse(sha).unwrap(),
        ))
        .unwrap();

        // Assert
        assert_eq!(
            json,
            format!(r#"["my-app","main","app.py","512Mi","4","{sha}"]"#)
        );
    }

    #[test]
    fn deserializing_goes_through_parse() {
        // Act
        let app = serde_json::from_str::<AppName>(r#""My_App""#);
        let branch = serde_json::from_str::<Branch>(r#""refs/heads/x""#);
        let main_file = serde_json::from_str::<MainFile>(r#""../x.py""#);
        let repo = serde_json::from_str::<RepoUrl>(r#""http://github.com/o/r""#);
        let sha =
            serde_json::from_str::<CommitSha>(r#""ABCDEF0123456789abcdef0123456789ABCDEF01""#);

        // Assert
        assert!(app.unwrap_err().to_string().contains("app_name:"));
        assert!(branch.unwrap_err().to_string().contains("branch:"));
        assert!(main_file.unwrap_err().to_string().contains("main_file:"));
        assert!(repo.unwrap_err().to_string().contains("repo_url:"));
        assert_eq!(sha.unwrap().short(), "abcdef0");
    }
}
