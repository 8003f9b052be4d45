//! Bounded fuzzing of the wire formats that arrive over HTTP: the Pub/Sub push envelope (and the
//! messages inside it, read as the worker reads them) and GitHub's webhook signature. Each
//! target first replays its committed seeds (`tests/corpus/{target}/`, named `ok-…` or `bad-…`
//! for what they must give), then runs a fixed number of generated cases; `PROPTEST_CASES` sets
//! another number, to fuzz longer.

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseResult;
use runway_core::messages::{BuildNotification, DeployRequest};
use runway_fuzzing::Corpus;
use runway_http::push::{PushEnvelope, PushMessage};
use runway_http::webhook::{self, PushEvent};
use runway_http::{ApiError, parse_json};
use serde_json::{Value, json};

/// This crate's seeds (`tests/corpus/`) and regressions (`proptest-regressions/fuzz.txt`).
const CORPUS: Corpus = Corpus::new(env!("CARGO_MANIFEST_DIR"));

// The Pub/Sub push envelope.

/// JSON values of every kind, the odd numbers included.
fn odd_values() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,16}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{0,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// What a message carries: a build notification or deploy request, or any bytes.
fn payloads() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            select(&["SUCCESS", "FAILURE", "WORKING", "NEW_ONE"][..]),
            "[a-z0-9-]{0,12}"
        )
            .prop_map(|(status, id)| {
                json!({ "id": id, "status": status, "tags": [format!("release-{id}")] })
                    .to_string()
                    .into_bytes()
            }),
        "[A-Z0-9]{0,26}".prop_map(|id| json!({ "release_id": id, "app": "demo" })
            .to_string()
            .into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Base64 as Pub/Sub sends it, or spoiled: padding dropped or doubled, URL-safe letters, a
/// line break, a space, a character changed, or none of it base64.
fn data_fields() -> impl Strategy<Value = Value> {
    let spoiled = (payloads(), 0..7u8, any::<Index>()).prop_map(|(payload, how, at)| {
        let data = PushMessage::encode(&payload);
        let mut chars: Vec<char> = data.chars().collect();
        let at = at.index(chars.len() + 1);
        match how {
            0 => data.trim_end_matches('=').to_owned(),
            1 => format!("{data}="),
            2 => data.replace('+', "-").replace('/', "_"),
            3 => {
                chars.insert(at, '\n');
                chars.into_iter().collect()
            }
            4 => {
                chars.insert(at, ' ');
                chars.into_iter().collect()
            }
            5 => {
                if let Some(c) = chars.get_mut(at) {
                    *c = if *c == 'A' { 'B' } else { 'A' };
                }
                chars.into_iter().collect()
            }
            _ => format!("{data}%"),
        }
    });
    prop_oneof![
        3 => payloads().prop_map(|payload| Value::from(PushMessage::encode(&payload))),
        3 => spoiled.prop_map(Value::from),
        1 => "[A-Za-z0-9+/=]{0,40}".prop_map(Value::from),
        1 => odd_values(),
    ]
}

fn envelopes() -> impl Strategy<Value = Value> {
    let usual_or_odd = |usual: BoxedStrategy<Value>| prop_oneof![5 => usual, 1 => odd_values()];
    let attributes = usual_or_odd(
        proptest::collection::btree_map("[a-zA-Z]{1,8}", "[ -~]{0,8}", 0..3)
            .prop_map(|map| json!(map))
            .boxed(),
    );
    let attempt = prop_oneof![
        Just(json!(1)),
        any::<u32>().prop_map(Value::from),
        Just(json!(u64::from(u32::MAX) + 1)),
        Just(json!(-1)),
        Just(json!(1.5)),
        Just(json!("3")),
    ];
    let message = (
        data_fields(),
        attributes,
        usual_or_odd("[0-9]{1,16}".prop_map(Value::from).boxed()),
        usual_or_odd(Just(json!("2026-11-23T09:00:00.123Z")).boxed()),
        proptest::option::of(usual_or_odd("[a-z-]{0,10}".prop_map(Value::from).boxed())),
        any::<[bool; 4]>(),
    )
        .prop_map(|(data, attributes, id, time, ordering_key, drop)| {
            let mut message = json!({
                "data": data, "attributes": attributes, "messageId": id, "message_id": id,
                "publishTime": time, "publish_time": time,
            });
            if let Some(key) = ordering_key {
                message["orderingKey"] = key;
            }
            let fields = message.as_object_mut().unwrap();
            for (field, dropped) in ["data", "attributes", "messageId", "publishTime"]
                .iter()
                .zip(drop)
            {
                if dropped {
                    fields.remove(*field);
                }
            }
            message
        });
    (
        usual_or_odd(message.boxed()),
        usual_or_odd(Just(json!("projects/p/subscriptions/runway-builds")).boxed()),
        proptest::option::of(attempt),
    )
        .prop_map(|(message, subscription, attempt)| {
            let mut envelope = json!({ "message": message, "subscription": subscription });
            if let Some(attempt) = attempt {
                envelope["deliveryAttempt"] = attempt;
            }
            envelope
        })
}

/// An envelope either decodes, and reads back as what it was sent as, or is the sender's
/// mistake (400); a payload decodes only from canonical base64 (so one payload has one
/// spelling); and what it carries is read as the worker reads it, without panicking.
fn check_envelope(body: &[u8]) -> TestCaseResult {
    let envelope = match parse_json::<PushEnvelope>(body) {
        Ok(envelope) => envelope,
        Err(error) => {
            prop_assert!(matches!(error, ApiError::BadRequest { .. }), "{:?}", error);
            prop_assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
            return Ok(());
        }
    };
    let sent: Value = serde_json::from_slice(body).unwrap();
    prop_assert_eq!(
        &sent["message"]["messageId"],
        &json!(envelope.message.message_id)
    );
    let attempt = envelope.delivery_attempt.map(Value::from);
    prop_assert_eq!(
        sent.get("deliveryAttempt")
            .filter(|attempt| !attempt.is_null()),
        attempt.as_ref()
    );
    let again = serde_json::to_vec(&envelope).unwrap();
    let reread = parse_json::<PushEnvelope>(&again).map(|e| serde_json::to_value(e).unwrap());
    prop_assert_eq!(reread.ok(), Some(serde_json::to_value(&envelope).unwrap()));
    if let Ok(payload) = envelope.message.payload() {
        prop_assert_eq!(PushMessage::encode(&payload), envelope.message.data.clone());
        let _ = serde_json::from_slice::<BuildNotification>(&payload).map(|build| build.ended());
        let _ = serde_json::from_slice::<DeployRequest>(&payload);
    }
    Ok(())
}

#[test]
fn pubsub_push() {
    CORPUS.replay("pubsub_push", |bytes, accepted| {
        let envelope = parse_json::<PushEnvelope>(bytes);
        let decoded = envelope.is_ok_and(|envelope| envelope.message.payload().is_ok());
        prop_assert_eq!(decoded, accepted);
        check_envelope(bytes)
    });
    let bodies = prop_oneof![
        6 => envelopes().prop_map(|envelope| envelope.to_string().into_bytes()),
        1 => odd_values().prop_map(|value| value.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..200),
    ];
    CORPUS.fuzz(2000, bodies, |body| check_envelope(&body));
}

// GitHub's webhook signature.

/// A signature header that is not the body's HMAC under the secret, in the ways one goes
/// wrong: another secret, another body, one digit changed, cut short, padded, another scheme,
/// or anything at all.
fn wrong_signatures(secret: &[u8], body: &[u8], how: u8, at: Index, text: &str) -> String {
    let right = webhook::sign(secret, body);
    match how {
        0 => webhook::sign(&[secret, b"x"].concat(), body),
        1 => webhook::sign(secret, &[body, b" "].concat()),
        2 => {
            let mut digits: Vec<char> = right.chars().collect();
            let at = 7 + at.index(64);
            digits[at] = if digits[at] == '0' { '1' } else { '0' };
            digits.into_iter().collect()
        }
        3 => right[..at.index(right.len())].to_owned(),
        4 => format!("{right} "),
        5 => right.replacen("sha256=", "sha1=", 1),
        6 => format!(" {right}"),
        _ => text.to_owned(),
    }
}

/// A header verifies exactly when it is `sha256=` and the body's HMAC under the secret in hex
/// (either case); any other, however near, is refused. A push payload is read without panics.
fn check_signature(secret: &[u8], body: &[u8], header: &str) -> TestCaseResult {
    let right = webhook::sign(secret, body);
    prop_assert!(webhook::verify(secret, body, &right));
    prop_assert!(webhook::verify(
        secret,
        body,
        &right.to_ascii_uppercase().replacen("SHA256=", "sha256=", 1)
    ));
    let matches = header.len() == right.len()
        && header.starts_with("sha256=")
        && header.eq_ignore_ascii_case(&right);
    prop_assert_eq!(
        webhook::verify(secret, body, header),
        matches,
        "{:?}",
        header
    );
    let _ = serde_json::from_slice::<PushEvent>(body);
    Ok(())
}

#[test]
fn webhook_signature() {
    CORPUS.replay("webhook_signature", |body, accepted| {
        let secret = b"It's a Secret to Everybody";
        let event = serde_json::from_slice::<PushEvent>(body);
        prop_assert_eq!(event.is_ok(), accepted, "{:?}", event.err());
        check_signature(secret, body, &webhook::sign(secret, body))?;
        check_signature(secret, body, "sha256=")
    });
    let cases = (
        proptest::collection::vec(any::<u8>(), 0..48),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            odd_values().prop_map(|value| value.to_string().into_bytes()),
        ],
        0..8u8,
        any::<Index>(),
        prop_oneof![any::<String>(), "sha256=[0-9a-fA-F]{62,66}"],
    );
    CORPUS.fuzz(2000, cases, |(secret, body, how, at, text)| {
        let header = wrong_signatures(&secret, &body, how, at, &text);
        check_signature(&secret, &body, &header)
    });
}
