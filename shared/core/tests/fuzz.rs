//! Bounded fuzzing of the core's parsers of what arrives from outside: the repository URL, the
//! secrets TOML, the form's other values, and the messages Runway reads from Pub/Sub (a Cloud
//! Build notification, a deploy request). Each target first replays its committed seeds
//! (`tests/corpus/{target}/`, named `ok-…` or `bad-…` for what they must give), then runs a
//! fixed number of generated cases; `PROPTEST_CASES` sets another number, to fuzz longer.

use std::path::Component;

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseResult;
use runway_core::domain::{AppName, Branch, CommitSha, MainFile, Region, RepoUrl, SecretsToml};
use runway_core::messages::{
    BuildEnded, BuildNotification, BuiltImage, CloudBuildStatus, DeployRequest, untagged,
};
use runway_fuzzing::Corpus;
use serde_json::{Value, json};

/// This crate's seeds (`tests/corpus/`) and regressions (`proptest-regressions/fuzz.txt`).
const CORPUS: Corpus = Corpus::new(env!("CARGO_MANIFEST_DIR"));

/// Marks text that must never come back in an error: a URL's credentials, query and fragment,
/// and every value of a secrets TOML.
const MARK: &str = "s3cr3t";

// The repository URL.

fn repo_urls() -> impl Strategy<Value = String> {
    // Mostly well-formed, so that what is near a valid URL is tried the most.
    let scheme = prop_oneof![
        6 => Just("https://"),
        1 => select(&["HTTPS://", "http://", "file://", "/", "", " https://", "https:/", "https:///"][..]),
    ];
    let host = prop_oneof![
        6 => Just("github.com"),
        2 => select(
            &[
                "GitHub.COM",
                "github.com:443",
                "user:s3cr3t@github.com",
                "s3cr3t@github.com",
                "github.com@evil.example",
                "github.com.",
                "www.github.com",
                "g\u{456}thub.com",
                "github\u{ff0e}com",
                " github.com",
                "",
            ][..]
        ),
    ];
    let part = prop_oneof![
        8 => "[A-Za-z0-9][A-Za-z0-9-]{0,8}",
        6 => "[A-Za-z0-9._-]{1,12}",
        1 => "[a-z]{38,41}",
        1 => "[a-z]{99,101}",
        3 => select(
            &[
                "..", ".", "", ".git", "..git", ".git.git", "-o", "o-", "a_b", "%2e%2e", "a b",
                "a\tb", "a\nb", "\u{430}cme", "r\u{200b}", "x:y", "a@b", "\\", "\u{ff0f}",
            ][..]
        )
        .prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    let parts = prop_oneof![
        4 => proptest::collection::vec(part.clone(), 2..=2),
        1 => proptest::collection::vec(part, 0..5),
    ];
    let suffix = prop_oneof![
        6 => select(&["", "/", ".git", ".git/"][..]),
        3 => select(
            &[".git.git", ".git.git/", "//", "?s3cr3t=1", "#s3cr3t", "/?x=s3cr3t", " ", "\n"][..]
        ),
    ];
    prop_oneof![
        8 => (scheme, host, parts, suffix).prop_map(|(scheme, host, parts, suffix)| {
            format!("{scheme}{host}/{}{suffix}", parts.join("/"))
        }),
        1 => "/[a-z./]{0,20}",
        1 => any::<String>(),
    ]
}

fn github_owner_rules(owner: &str) -> bool {
    (1..=39).contains(&owner.len())
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !owner.starts_with('-')
        && !owner.ends_with('-')
}

fn github_name_rules(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && name != "."
        && name != ".."
}

/// What parses is an `https://github.com/OWNER/NAME` (or, where allowed, an absolute local
/// path), reads back the same from how it is shown and stored, and came from an input with
/// nothing else in it; what is refused says why without quoting credentials or a query.
fn check_repo_url(input: &str) -> TestCaseResult {
    for allow_local in [false, true] {
        let url = match RepoUrl::parse(input, allow_local) {
            Ok(url) => url,
            Err(error) => {
                let shown = format!("{error} {error:?}");
                prop_assert_eq!(error.field, "repo_url");
                prop_assert!(!shown.contains(MARK), "{:?} echoed: {}", input, shown);
                prop_assert!(!error.message.contains(char::is_control), "{}", shown);
                continue;
            }
        };
        let shown = url.to_string();
        prop_assert_eq!(
            RepoUrl::parse(&shown, allow_local),
            Ok(url.clone()),
            "{:?} is shown as {:?}",
            input,
            shown
        );
        let stored = serde_json::to_string(&url).unwrap();
        prop_assert_eq!(
            serde_json::from_str::<RepoUrl>(&stored).ok(),
            Some(url.clone())
        );
        match &url {
            RepoUrl::GitHub { owner, name } => {
                prop_assert_eq!(&shown, &format!("https://github.com/{owner}/{name}"));
                prop_assert!(github_owner_rules(owner), "owner {:?}", owner);
                prop_assert!(github_name_rules(name), "name {:?}", name);
                // Only the scheme, the host (in any case) and the path, give or take a `.git`
                // and a trailing slash: no credentials, port, query, fragment or space.
                let rest = input.strip_prefix("https://");
                prop_assert!(rest.is_some(), "{:?}", input);
                let rest = rest.unwrap_or_default();
                prop_assert!(
                    rest.get(..10)
                        .is_some_and(|host| host.eq_ignore_ascii_case("github.com"))
                );
                let path = &rest[10..];
                let forms = ["", "/", ".git", ".git/"].map(|end| format!("/{owner}/{name}{end}"));
                prop_assert!(forms.contains(&path.to_owned()), "{:?}", input);
            }
            RepoUrl::Local { path } => {
                prop_assert!(allow_local, "{:?} is local", input);
                prop_assert!(path.is_absolute());
                prop_assert!(
                    path.components()
                        .all(|part| matches!(part, Component::RootDir | Component::Normal(_))),
                    "{:?}",
                    path
                );
            }
        }
    }
    Ok(())
}

#[test]
fn repo_url() {
    CORPUS.replay("repo_url", |bytes, accepted| {
        let input = std::str::from_utf8(bytes).unwrap();
        prop_assert_eq!(
            RepoUrl::parse(input, false).is_ok(),
            accepted,
            "{:?}",
            input
        );
        check_repo_url(input)
    });
    CORPUS.fuzz(4000, repo_urls(), |input| check_repo_url(&input));
}

// The secrets TOML.

/// Text as a TOML basic string's content.
fn escape_basic(text: &str) -> String {
    let mut escaped = String::new();
    for c in text.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => escaped.push_str(&format!("\\u{:04X}", c as u32)),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A key as written (bare, quoted or literal) and the name it stands for.
fn toml_keys() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        3 => "[A-Za-z0-9_-]{1,10}".prop_map(|key| (key.clone(), key)),
        1 => "[ -~\u{e9}\u{1F600}\t]{0,10}"
            .prop_map(|name| (name.clone(), format!("\"{}\"", escape_basic(&name)))),
        1 => "[ -&(-~\u{e9}]{0,10}".prop_map(|name| (name.clone(), format!("'{name}'"))),
    ]
}

/// A string value holding `MARK`, in one of TOML's four string forms.
fn secret_values() -> impl Strategy<Value = String> {
    let text = (
        "[ -~\u{e9}\t\n]{0,8}",
        "[a-zA-Z0-9]{6}",
        "[ -~\u{e9}\t]{0,8}",
    )
        .prop_map(|(before, id, after)| format!("{before}{MARK}{id}{after}"));
    (0..4u8, text).prop_map(|(form, text)| {
        let literal = text.replace('\'', "_");
        match form {
            0 => format!("\"{}\"", escape_basic(&text)),
            1 => format!("'{}'", literal.replace('\n', " ")),
            2 => format!(
                "\"\"\"\n{}\"\"\"",
                text.replace('\\', "\\\\").replace('"', "\\\"")
            ),
            _ => format!("'''{literal}'''"),
        }
    })
}

fn toml_values() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => secret_values(),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => Just("1979-05-27T07:32:00Z".to_owned()),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|entries| {
                let entries: Vec<_> = entries.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", entries.join(", "))
            }),
        ]
    })
}

/// What may stand at a name of the document's top level.
#[derive(Clone, Debug)]
enum TomlItem {
    Value(String),
    Table(Vec<(String, String)>),
    ArrayOfTables(Vec<Vec<(String, String)>>),
}

fn toml_items() -> impl Strategy<Value = TomlItem> {
    let entries = || {
        proptest::collection::btree_map("[a-z]{1,6}", toml_values(), 0..4)
            .prop_map(|entries| entries.into_iter().collect::<Vec<_>>())
    };
    prop_oneof![
        4 => toml_values().prop_map(TomlItem::Value),
        2 => entries().prop_map(TomlItem::Table),
        1 => proptest::collection::vec(entries(), 1..3).prop_map(TomlItem::ArrayOfTables),
    ]
}

/// A well-formed secrets TOML, with its top-level names sorted.
fn secrets_documents() -> impl Strategy<Value = (String, Vec<String>)> {
    let items = proptest::collection::vec((toml_keys(), toml_items(), any::<bool>()), 0..6);
    items.prop_map(|items| {
        let mut seen = std::collections::BTreeSet::new();
        let items: Vec<_> = items
            .into_iter()
            .filter(|((name, _), _, _)| seen.insert(name.clone()))
            .collect();
        let mut text = String::new();
        // Values first: after a table's header, a `key = value` belongs to that table.
        for ((_, key), item, comment) in &items {
            if let TomlItem::Value(value) = item {
                text.push_str(&format!("{key} = {value}"));
                text.push_str(if *comment { " # s3cr3t\n" } else { "\n" });
            }
        }
        let lines = |text: &mut String, entries: &[(String, String)]| {
            for (key, value) in entries {
                text.push_str(&format!("{key} = {value}\n"));
            }
        };
        for ((_, key), item, _) in &items {
            match item {
                TomlItem::Value(_) => {}
                TomlItem::Table(entries) => {
                    text.push_str(&format!("\n[{key}]\n"));
                    lines(&mut text, entries);
                }
                TomlItem::ArrayOfTables(tables) => {
                    for entries in tables {
                        text.push_str(&format!("[[{key}]]\n"));
                        lines(&mut text, entries);
                    }
                }
            }
        }
        (text, seen.into_iter().collect())
    })
}

/// One slip of the pen: text cut short, a character added or dropped, or a line twice.
#[derive(Clone, Debug)]
enum Slip {
    Cut(Index),
    Add(Index, char),
    Drop(Index),
    LineTwice(Index),
}

fn slips() -> impl Strategy<Value = Slip> {
    prop_oneof![
        any::<Index>().prop_map(Slip::Cut),
        (
            any::<Index>(),
            select(
                &[
                    '"', '\'', '=', '[', ']', '\n', '\\', '#', ' ', 'x', '{', '}', ',', '.', '\0'
                ][..]
            )
        )
            .prop_map(|(at, c)| Slip::Add(at, c)),
        any::<Index>().prop_map(Slip::Drop),
        any::<Index>().prop_map(Slip::LineTwice),
    ]
}

impl Slip {
    fn apply(&self, text: &str) -> String {
        let boundaries: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let at = |index: &Index| boundaries[index.index(boundaries.len())];
        match self {
            Slip::Cut(index) => text[..at(index)].to_owned(),
            Slip::Add(index, c) => {
                let at = at(index);
                format!("{}{c}{}", &text[..at], &text[at..])
            }
            Slip::Drop(index) => {
                let at = at(index);
                let next = text[at..].chars().next().map_or(0, char::len_utf8);
                format!("{}{}", &text[..at], &text[at + next..])
            }
            Slip::LineTwice(index) => {
                let lines: Vec<&str> = text.lines().collect();
                if lines.is_empty() {
                    return text.to_owned();
                }
                let twice = index.index(lines.len());
                let mut out = Vec::new();
                for (i, line) in lines.iter().enumerate() {
                    out.push(*line);
                    if i == twice {
                        out.push(line);
                    }
                }
                out.join("\n")
            }
        }
    }
}

/// A document is taken exactly when TOML takes it; what is taken names exactly its top-level
/// keys (`keys`, when the document is known well-formed); what is refused says where, and
/// never quotes a value.
fn check_secrets(text: &str, keys: Option<&[String]>) -> TestCaseResult {
    match SecretsToml::parse(text.to_owned()) {
        Ok(secrets) => {
            prop_assert_eq!(secrets.expose(), text);
            prop_assert_eq!(format!("{secrets:?}"), "SecretsToml([REDACTED])");
            let table = text.parse::<toml::Table>();
            prop_assert!(table.is_ok(), "taken but not TOML: {:?}", text);
            let mut top: Vec<String> = table.unwrap_or_default().keys().cloned().collect();
            top.sort();
            prop_assert_eq!(&secrets.keys(), &top);
            if let Some(keys) = keys {
                prop_assert_eq!(&secrets.keys()[..], keys);
            }
        }
        Err(error) => {
            let shown = format!("{error} {error:?}");
            prop_assert!(
                keys.is_none(),
                "a well-formed document was refused: {}",
                shown
            );
            prop_assert_eq!(error.field, "secrets");
            prop_assert!(!shown.contains(MARK), "a value was quoted: {}", shown);
            if text.len() > SecretsToml::MAX_BYTES {
                prop_assert!(error.message.contains("64 KiB"), "{}", shown);
                return Ok(());
            }
            prop_assert!(
                text.parse::<toml::Table>().is_err(),
                "TOML takes {:?}",
                text
            );
            // "not valid TOML at line L, column C: …", with L a line of the text.
            let line = error
                .message
                .strip_prefix("not valid TOML at line ")
                .and_then(|rest| rest.split_once(','))
                .and_then(|(line, _)| line.parse::<usize>().ok());
            prop_assert!(line.is_some(), "{}", shown);
            prop_assert!(line.unwrap_or_default() <= text.matches('\n').count() + 1);
        }
    }
    Ok(())
}

#[test]
fn secrets_toml() {
    CORPUS.replay("secrets_toml", |bytes, accepted| {
        let text = std::str::from_utf8(bytes).unwrap();
        prop_assert_eq!(SecretsToml::parse(text.to_owned()).is_ok(), accepted);
        check_secrets(text, None)
    });
    let inputs = prop_oneof![
        4 => secrets_documents().prop_map(|(text, keys)| (text, Some(keys))),
        4 => (secrets_documents(), slips()).prop_map(|((text, _), slip)| (slip.apply(&text), None)),
        1 => (secrets_documents(), proptest::collection::vec(slips(), 2..6)).prop_map(
            |((text, _), slips)| (slips.iter().fold(text, |text, slip| slip.apply(&text)), None)
        ),
        1 => any::<String>().prop_map(|text| (text, None)),
        1 => (1..3000usize).prop_map(|n| (format!("k{n} = \"{MARK}\"\n").repeat(65536 / 10 + n), None)),
    ];
    CORPUS.fuzz(1000, inputs, |(text, keys)| {
        check_secrets(&text, keys.as_deref())
    });
}

// The form's other values.

/// Each value is taken as typed (a commit id lowercased), keeps the rules its type documents,
/// and reads back the same when stored; a refusal names its field, quotes no control character
/// and stays short.
fn check_values(input: &str) -> TestCaseResult {
    fn refused(error: runway_core::domain::FieldError, field: &str) -> TestCaseResult {
        prop_assert_eq!(error.field, field);
        prop_assert!(
            !error.message.contains(char::is_control),
            "{:?}",
            error.message
        );
        prop_assert!(error.message.chars().count() < 1000, "{:?}", error.message);
        Ok(())
    }
    fn stored<T>(value: &T) -> TestCaseResult
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let json = serde_json::to_string(value).unwrap();
        let back = serde_json::from_str::<T>(&json).ok();
        prop_assert_eq!(back.as_ref(), Some(value));
        Ok(())
    }
    match AppName::parse(input) {
        Ok(name) => {
            prop_assert_eq!(name.as_str(), input);
            prop_assert!((1..=AppName::MAX_LEN).contains(&input.len()));
            prop_assert!(input.starts_with(|c: char| c.is_ascii_lowercase()));
            prop_assert!(!input.ends_with('-') && !input.contains("--"));
            stored(&name)?;
        }
        Err(error) => refused(error, "app_name")?,
    }
    match Branch::parse(input) {
        Ok(branch) => {
            prop_assert_eq!(branch.as_str(), input);
            prop_assert!(
                !input.starts_with('-') && !input.contains("..") && !input.starts_with("refs/")
            );
            prop_assert!(!input.contains(|c: char| c.is_ascii_control() || c == ' '));
            stored(&branch)?;
        }
        Err(error) => refused(error, "branch")?,
    }
    match MainFile::parse(input) {
        Ok(file) => {
            prop_assert_eq!(file.as_str(), input);
            prop_assert!(input.ends_with(".py"));
            prop_assert!(
                file.as_path()
                    .components()
                    .all(|part| matches!(part, Component::Normal(p) if !p.to_string_lossy().starts_with('-'))),
                "{:?}",
                input
            );
            stored(&file)?;
        }
        Err(error) => refused(error, "main_file")?,
    }
    match CommitSha::parse(input) {
        Ok(sha) => {
            prop_assert_eq!(sha.as_str(), input.to_ascii_lowercase());
            prop_assert_eq!(sha.short(), &sha.as_str()[..7]);
            stored(&sha)?;
        }
        Err(error) => refused(error, "commit")?,
    }
    let allowed = ["europe-west1".to_owned(), "us-central1".to_owned()];
    match Region::parse(input, &allowed) {
        Ok(region) => prop_assert!(allowed.contains(&region.as_str().to_owned())),
        Err(error) => refused(error, "region")?,
    }
    Ok(())
}

#[test]
fn form_values() {
    CORPUS.replay("form_values", |bytes, accepted| {
        let input = std::str::from_utf8(bytes).unwrap();
        let taken = AppName::parse(input).is_ok()
            || Branch::parse(input).is_ok()
            || MainFile::parse(input).is_ok()
            || CommitSha::parse(input).is_ok();
        prop_assert_eq!(taken, accepted, "{:?}", input);
        check_values(input)
    });
    let inputs = prop_oneof![
        2 => "[a-z][a-z0-9-]{0,31}",
        2 => "[a-zA-Z0-9._/@{}~^:?*\\[\\\\ -]{0,40}",
        1 => "[a-z0-9_/.-]{0,20}\\.py",
        1 => "[0-9a-fA-F]{39,41}",
        1 => "[a-z]{0,300}",
        2 => any::<String>(),
    ];
    CORPUS.fuzz(2000, inputs, |input| check_values(&input));
}

// The messages read from Pub/Sub.

const STATUSES: &[&str] = &[
    "STATUS_UNKNOWN",
    "PENDING",
    "QUEUED",
    "WORKING",
    "SUCCESS",
    "FAILURE",
    "INTERNAL_ERROR",
    "TIMEOUT",
    "CANCELLED",
    "EXPIRED",
];

/// JSON of any shape, leaning to what a notification or a request holds.
fn odd_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        3 => select(
            &[
                "id", "status", "logUrl", "results", "images", "name", "digest", "failureInfo",
                "type", "detail", "statusDetail", "tags", "release_id", "app",
            ][..]
        )
        .prop_map(str::to_owned),
        1 => "[a-zA-Z_]{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(STATUSES).prop_map(Value::from),
        "release-[a-z0-9-]{0,12}".prop_map(Value::from),
        "[ -~]{0,16}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A notification as Cloud Build sends it, with some fields odd.
fn notifications() -> impl Strategy<Value = Value> {
    let maybe_odd = |usual: BoxedStrategy<Value>| prop_oneof![4 => usual, 1 => odd_json()].boxed();
    let image_name = "[a-z0-9.:/-]{0,30}(:[a-z0-9]{0,8})?"
        .prop_map(Value::from)
        .boxed();
    let digest = "(sha256:[0-9a-f]{0,64})?".prop_map(Value::from).boxed();
    let image = (maybe_odd(image_name), maybe_odd(digest))
        .prop_map(|(name, digest)| json!({ "name": name, "digest": digest }));
    let status = maybe_odd(select(STATUSES).prop_map(Value::from).boxed());
    let tags = maybe_odd(
        proptest::collection::vec("(release-)?[a-z0-9-]{0,12}".prop_map(Value::from), 0..4)
            .prop_map(Value::Array)
            .boxed(),
    );
    let failure = maybe_odd(
        ("[A-Z_]{0,12}", "[ -~]{0,20}")
            .prop_map(|(kind, detail)| json!({ "type": kind, "detail": detail }))
            .boxed(),
    );
    (
        maybe_odd("[a-z0-9-]{0,12}".prop_map(Value::from).boxed()),
        status,
        proptest::option::of(proptest::collection::vec(image, 0..3)),
        proptest::option::of(failure),
        proptest::option::of(tags),
        any::<bool>(),
    )
        .prop_map(|(id, status, images, failure, tags, drop_id)| {
            let mut build = json!({ "id": id, "status": status });
            if drop_id {
                build.as_object_mut().unwrap().remove("id");
            }
            if let Some(images) = images {
                build["results"] = json!({ "images": images });
            }
            if let Some(failure) = failure {
                build["failureInfo"] = failure;
            }
            if let Some(tags) = tags {
                build["tags"] = tags;
            }
            build
        })
}

/// Numbers JSON allows and Rust's types do not hold, put in place of one of a message's values.
fn huge_numbers() -> impl Strategy<Value = Vec<u8>> {
    let number = select(
        &[
            "1e999",
            "-1e999",
            "18446744073709551616",
            "-9223372036854775809",
            "-0",
            "0.5e-400",
            "123456789012345678901234567890",
            "1E400",
        ][..],
    );
    let field = select(
        &[
            "id",
            "status",
            "tags",
            "results",
            "release_id",
            "app",
            "logUrl",
        ][..],
    );
    (field, number).prop_map(|(field, number)| {
        format!(r#"{{"id":"b","status":"SUCCESS","release_id":"r","app":"a","{field}":{number}}}"#)
            .into_bytes()
    })
}

/// `REPO/NAME@DIGEST`: the name without its tag (a registry's port kept), then the digest.
fn check_reference(image: &BuiltImage) -> TestCaseResult {
    let reference = image.reference();
    if image.digest.is_empty() {
        prop_assert_eq!(&reference, &image.name);
        return Ok(());
    }
    let repo = untagged(&image.name);
    prop_assert_eq!(&reference, &format!("{repo}@{}", image.digest));
    prop_assert!(image.name.starts_with(repo));
    let tag = &image.name[repo.len()..];
    prop_assert!(
        tag.is_empty() || (tag.starts_with(':') && !tag.contains('/')),
        "{:?}",
        image.name
    );
    let last = repo.rsplit('/').next().unwrap_or_default();
    prop_assert!(!last.contains(':'), "{:?} kept its tag", image.name);
    Ok(())
}

/// Whatever decodes is published again as the same message, and means what its status says;
/// anything else is an error, not a panic.
fn check_messages(bytes: &[u8]) -> TestCaseResult {
    if let Ok(build) = serde_json::from_slice::<BuildNotification>(bytes) {
        let message = build.to_message("demo");
        let published = serde_json::from_slice::<BuildNotification>(&message.data).ok();
        prop_assert_eq!(published.as_ref(), Some(&build));
        prop_assert_eq!(&message.attributes["buildId"], &build.id);
        prop_assert_eq!(message.attributes["status"].as_str(), build.status.as_str());
        prop_assert_eq!(
            CloudBuildStatus::parse(build.status.as_str()),
            build.status.clone()
        );
        let running = matches!(
            build.status,
            CloudBuildStatus::Queued | CloudBuildStatus::Working | CloudBuildStatus::Pending
        );
        let images = build
            .results
            .as_ref()
            .map(|r| &r.images[..])
            .unwrap_or_default();
        for image in images {
            check_reference(image)?;
        }
        match build.ended() {
            None => prop_assert!(running),
            Some(BuildEnded::Succeeded { image }) => {
                prop_assert_eq!(&build.status, &CloudBuildStatus::Success);
                prop_assert_eq!(image, images.first().map(BuiltImage::reference));
            }
            Some(BuildEnded::Failed { status, detail }) => {
                prop_assert!(!running && status != CloudBuildStatus::Success);
                prop_assert_eq!(status, build.status.clone());
                prop_assert!(!detail.is_empty());
            }
        }
        let tagged = build.tags.iter().find(|tag| tag.starts_with("release-"));
        let release_tag = build.release_id().map(|id| format!("release-{id}"));
        prop_assert_eq!(release_tag.as_ref(), tagged);
    }
    if let Ok(request) = serde_json::from_slice::<DeployRequest>(bytes) {
        let message = request.to_message();
        let published = serde_json::from_slice::<DeployRequest>(&message.data).ok();
        prop_assert_eq!(published.as_ref(), Some(&request));
        prop_assert_eq!(&message.attributes["app"], &request.app);
        prop_assert_eq!(
            message.attributes["releaseId"].as_str(),
            request.release_id.as_str()
        );
        prop_assert_eq!(message.ordering_key.as_ref(), Some(&request.app));
    }
    if let Ok(name) = std::str::from_utf8(bytes) {
        let status = CloudBuildStatus::parse(name);
        prop_assert!(status.as_str() == name || status == CloudBuildStatus::StatusUnknown);
    }
    Ok(())
}

#[test]
fn pubsub_messages() {
    CORPUS.replay("pubsub_messages", |bytes, accepted| {
        let decoded = serde_json::from_slice::<BuildNotification>(bytes).is_ok()
            || serde_json::from_slice::<DeployRequest>(bytes).is_ok();
        prop_assert_eq!(decoded, accepted);
        check_messages(bytes)
    });
    let inputs = prop_oneof![
        4 => notifications().prop_map(|json| json.to_string().into_bytes()),
        2 => odd_json().prop_map(|json| json.to_string().into_bytes()),
        1 => huge_numbers(),
        1 => proptest::collection::vec(any::<u8>(), 0..200),
    ];
    CORPUS.fuzz(2000, inputs, |bytes| check_messages(&bytes));
}
