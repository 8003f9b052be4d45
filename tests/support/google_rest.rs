//! Google's REST conventions, shared by the fakes of its APIs (Cloud Build, Cloud Run Admin):
//! the error envelope (AIP-193), long-running operations (AIP-151) with their payloads packed
//! as `google.protobuf.Any`, and query strings. Each fake keeps only its API's own surface and
//! behaviour.

use std::collections::BTreeMap;

use http::StatusCode;
use runway_http::{Request, Response, json};
use serde_json::{Value, json};

/// A failure as Google's REST APIs answer it: `{"error": {"code", "message", "status"}}`.
#[derive(Debug)]
pub struct GoogleError {
    pub http: StatusCode,
    /// The canonical code's name: `NOT_FOUND`, `INVALID_ARGUMENT`, …
    pub status: String,
    pub message: String,
    /// `error.details`, when the API sends any (`RetryInfo`, `ErrorInfo`, …).
    pub details: Option<Value>,
}

impl GoogleError {
    pub fn new(http: StatusCode, status: &str, message: impl Into<String>) -> Self {
        Self {
            http,
            status: status.to_owned(),
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Resource '{what}' was not found"),
        )
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }

    pub fn response(&self) -> Response {
        let mut body = json!({
            "error": { "code": self.http.as_u16(), "message": self.message, "status": self.status }
        });
        if let Some(details) = &self.details {
            body["error"]["details"] = details.clone();
        }
        json(self.http, &body)
    }
}

/// `value` packed into a `google.protobuf.Any` of `type_url`.
pub fn any(type_url: &str, value: &Value) -> Value {
    let mut packed = json!({ "@type": type_url });
    if let (Value::Object(packed), Value::Object(fields)) = (&mut packed, value) {
        packed.extend(fields.clone());
    }
    packed
}

/// A long-running operation: running while `outcome` is `None`; done with its response, or
/// with an error (a gRPC code and a message).
pub fn operation(
    name: &str,
    metadata: Value,
    outcome: Option<Result<Value, (i64, &str)>>,
) -> Value {
    let mut operation = json!({ "name": name, "metadata": metadata, "done": outcome.is_some() });
    match outcome {
        None => {}
        Some(Ok(response)) => operation["response"] = response,
        Some(Err((code, message))) => {
            operation["error"] = json!({ "code": code, "message": message });
        }
    }
    operation
}

/// The query string's parameters.
pub fn query(request: &Request) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// Whether the client asked for enums as numbers (`$alt=json;enum-encoding=int`), as Google's
/// Rust clients do.
pub fn wants_int_enums(request: &Request) -> bool {
    query(request)
        .get("$alt")
        .is_some_and(|alt| alt.contains("enum-encoding=int"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_is_running_until_it_has_an_outcome() {
        let running = operation("ops/1", json!({}), None);
        assert_eq!(running["done"], false);
        assert!(running.get("response").is_none() && running.get("error").is_none());

        let failed = operation("ops/1", json!({}), Some(Err((2, "it broke"))));
        assert_eq!(failed["done"], true);
        assert_eq!(failed["error"], json!({ "code": 2, "message": "it broke" }));
    }

    #[test]
    fn any_carries_its_type_beside_the_fields() {
        assert_eq!(
            any("type.googleapis.com/x.Y", &json!({ "a": 1 })),
            json!({ "@type": "type.googleapis.com/x.Y", "a": 1 })
        );
    }
}
