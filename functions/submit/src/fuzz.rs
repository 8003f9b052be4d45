//! Bounded fuzzing of the form and JSON bodies a submit reads (`read_form`, `validate`, then
//! `placement`),
//! here beside them because both are the crate's own. Any body, sent as JSON, as a form or as
//! anything else, is taken or refused with a 4xx, never a panic; a body shaped like the form is
//! refused only for one of its fields, named; and no refusal quotes the secrets sent. The
//! committed seeds (`tests/corpus/form/`: `ok-…` are taken, `bad-…` refused; a `.form` seed is
//! sent form-encoded with the right token, any other as JSON) are replayed first;
//! `PROPTEST_CASES` sets how many generated bodies follow, to fuzz longer.

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseResult;
use runway_fuzzing::{Corpus, OK_BAD};
use serde_json::{Map, Value, json};

use super::*;
use runway_core::domain::RepoAllowlist;

/// The form's fields.
const FIELDS: [&str; 10] = [
    "repo_url",
    "main_file",
    "branch",
    "app_name",
    "region",
    "memory",
    "cpu",
    "access",
    "viewers",
    "secrets",
];

/// In every value of the secrets sent: never to be quoted back.
const MARK: &str = "s3cr3t";

const TOKEN: &str = "9f8e7d6c5b4a";

fn policy() -> Policy {
    Policy {
        allowed_regions: vec!["europe-west1".into(), "us-central1".into()],
        default_region: "europe-west1".into(),
        allow_local_repos: false,
        reserved_prefix: "runway-".into(),
        default_access: Access::Public,
        allowed_repos: Some(RepoAllowlist::parse(["acme/*", "streamlit/demo"]).unwrap()),
    }
}

/// A value for `field`: mostly one near what it takes, sometimes anything.
fn field_values(field: &'static str) -> BoxedStrategy<Value> {
    let near: BoxedStrategy<String> = match field {
        "repo_url" => prop_oneof![
            "https://github\\.com/(acme|streamlit|other)/[a-z.-]{1,8}(\\.git)?",
            Just("https://user:s3cr3t-in-the-url@github.com/acme/x".to_owned()),
        ]
        .boxed(),
        "main_file" => "[a-z/._-]{0,12}(\\.py)?".boxed(),
        "branch" => "[a-z/.@{}~-]{0,10}".boxed(),
        "app_name" => "[a-z][a-z0-9-]{0,12}|runway-[a-z]{1,4}|[A-Z_ ]{1,4}".boxed(),
        "region" => "(europe-west1|us-central1|asia-east1| )".boxed(),
        "memory" => "(512Mi|1Gi|2Gi|4Gi|8Gi|16Gi|1G)".boxed(),
        "cpu" => "(1|2|4|3|0|one)".boxed(),
        "access" => "(public|private|Public| private |secret)".boxed(),
        _ => "[a-z@.:, ]{0,30}".boxed(),
    };
    let string = prop_oneof![
        6 => near.prop_map(Value::from),
        1 => any::<String>().prop_map(Value::from),
        1 => Just(Value::from("  ")),
        1 => Just(Value::Null),
        1 => select(vec![json!(5), json!(true), json!(["main"]), json!({ "name": "x" })]),
    ];
    match field {
        "viewers" => prop_oneof![
            4 => string,
            2 => proptest::collection::vec(
                prop_oneof!["(user:|group:|domain:)?[a-z]{1,5}@[a-z]{1,5}\\.io", "[ -~]{0,8}"],
                0..4
            )
            .prop_map(|viewers| json!(viewers)),
            1 => Just(json!([1, null])),
            1 => Just(json!({ "user": "ada@x.io" })),
        ]
        .boxed(),
        "secrets" => prop_oneof![
            4 => secrets_texts().prop_map(Value::from),
            1 => Just(Value::Null),
            1 => "[ -~]{0,10}".prop_map(|text| json!([format!("{MARK}{text}")])),
            1 => Just(json!({ "token": MARK })),
            1 => Just(json!(12345)),
        ]
        .boxed(),
        _ => string.boxed(),
    }
}

/// Secrets TOML holding `MARK` in its values, well-formed or not.
fn secrets_texts() -> impl Strategy<Value = String> {
    let value = "[ -~]{0,12}".prop_map(|text| {
        format!(
            "\"{MARK}{}\"",
            text.replace('\\', "\\\\").replace('"', "\\\"")
        )
    });
    (
        proptest::collection::btree_map("[a-z_]{1,8}", value, 0..4),
        select(&["", "\"", "\n[x", "= 1", "\\q\""][..]),
    )
        .prop_map(|(entries, slip)| {
            let mut text: String = entries
                .iter()
                .map(|(key, value)| format!("{key} = {value}\n"))
                .collect();
            if !slip.is_empty() {
                let at = text.len() / 2;
                let at = (0..=at)
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                text.insert_str(at, slip);
            }
            text
        })
}

/// The form's fields, or some of them, each a value near what it takes.
fn forms() -> impl Strategy<Value = Map<String, Value>> {
    let fields: Vec<_> = FIELDS
        .iter()
        .map(|field| proptest::option::weighted(0.8, field_values(field)))
        .collect();
    fields.prop_map(|values| {
        FIELDS
            .iter()
            .zip(values)
            .filter_map(|(field, value)| Some(((*field).to_owned(), value?)))
            .collect()
    })
}

/// How a body is sent.
#[derive(Clone, Debug)]
enum Sent {
    Json(Vec<u8>),
    /// Form-encoded, with the form's token (`right`: the one in the cookie).
    Form {
        pairs: Vec<(String, String)>,
        right: bool,
    },
    /// Any bytes, as this content type.
    Other(&'static str, Vec<u8>),
}

/// The form as an HTML form posts it: every value text.
fn pairs(form: &Map<String, Value>) -> Vec<(String, String)> {
    form.iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (key.clone(), text)
        })
        .collect()
}

fn bodies() -> impl Strategy<Value = Sent> {
    let odd_form = (forms(), "[a-z_]{1,8}", any::<String>()).prop_map(|(mut form, key, value)| {
        form.insert(key, Value::from(value));
        form
    });
    let content_types = select(
        &[
            "",
            "application/json",
            "application/json; charset=utf-8",
            "application/x-www-form-urlencoded",
            "text/plain",
            "multipart/form-data; boundary=x",
        ][..],
    );
    prop_oneof![
        6 => forms().prop_map(|form| Sent::Json(Value::Object(form).to_string().into_bytes())),
        1 => odd_form.prop_map(|form| Sent::Json(Value::Object(form).to_string().into_bytes())),
        3 => (forms(), proptest::bool::weighted(0.8))
            .prop_map(|(form, right)| Sent::Form { pairs: pairs(&form), right }),
        1 => (content_types, proptest::collection::vec(any::<u8>(), 0..120))
            .prop_map(|(content_type, body)| Sent::Other(content_type, body)),
    ]
}

impl Sent {
    fn request(&self) -> (HeaderMap, Vec<u8>) {
        let mut headers = HeaderMap::new();
        let mut typed = |content_type: &str| {
            if !content_type.is_empty() {
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_str(content_type).unwrap(),
                );
            }
        };
        match self {
            Sent::Json(body) => {
                typed("application/json");
                (headers, body.clone())
            }
            Sent::Form { pairs, right } => {
                typed("application/x-www-form-urlencoded");
                headers.insert(
                    http::header::COOKIE,
                    http::HeaderValue::from_str(&format!("runway_csrf={TOKEN}")).unwrap(),
                );
                let token = if *right { TOKEN } else { "0123" };
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .append_pair(CSRF_FIELD, token)
                    .finish();
                (headers, body.into_bytes())
            }
            Sent::Other(content_type, body) => {
                typed(content_type);
                (headers, body.clone())
            }
        }
    }

    /// Whether it is the form: the form's fields only (of any type), and for a form-encoded
    /// one, the right token.
    fn is_the_form(&self) -> bool {
        match self {
            Sent::Json(body) => serde_json::from_slice::<Map<String, Value>>(body)
                .is_ok_and(|form| form.keys().all(|key| FIELDS.contains(&key.as_str()))),
            Sent::Form { pairs, right } => {
                *right && pairs.iter().all(|(key, _)| FIELDS.contains(&key.as_str()))
            }
            Sent::Other(..) => false,
        }
    }
}

/// The body read as a submit of a new app reads it, up to where the store is first asked.
fn read(headers: &HeaderMap, body: &[u8]) -> Result<Validated, ApiError> {
    let form = read_form(headers, body)?.validate(&policy(), PrivateTargets::Refused)?;
    form.placement(None, &policy())?;
    Ok(form)
}

/// Taken or refused with a 4xx; the form refused only for a field it names; a form-encoded
/// body without the page's token refused as forbidden; the secrets never quoted.
fn check_body(sent: &Sent) -> TestCaseResult {
    let (headers, body) = sent.request();
    let error = match read(&headers, &body) {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    let shown = format!("{error} {error:?}");
    prop_assert!(error.status().is_client_error(), "{}", shown);
    prop_assert!(!shown.contains(MARK), "the secrets were quoted: {}", shown);
    if let Sent::Form { right: false, .. } = sent {
        prop_assert!(matches!(error, ApiError::Forbidden(_)), "{}", shown);
    }
    if sent.is_the_form() {
        let named = match &error {
            ApiError::BadRequest {
                field: Some(field), ..
            } => Some(*field),
            _ => None,
        };
        prop_assert!(
            named.is_some_and(|field| FIELDS.contains(&field)),
            "{}",
            shown
        );
    }
    Ok(())
}

/// This crate's seeds (`tests/corpus/`) and regressions (`proptest-regressions/fuzz.txt`).
const CORPUS: Corpus = Corpus::new(env!("CARGO_MANIFEST_DIR"));

#[test]
fn form() {
    CORPUS.replay_as("form", OK_BAD, |name, body, taken| {
        let sent = if name.ends_with(".form") {
            let pairs = url::form_urlencoded::parse(&body).into_owned().collect();
            Sent::Form { pairs, right: true }
        } else {
            Sent::Json(body)
        };
        let (headers, body) = sent.request();
        match read(&headers, &body) {
            Ok(_) => prop_assert!(taken, "was taken"),
            Err(error) => prop_assert!(!taken, "{:?}", error),
        }
        check_body(&sent)
    });
    CORPUS.fuzz(2000, bodies(), |sent| check_body(&sent));
}
