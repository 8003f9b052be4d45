//! Identity-Aware Proxy in front of `submit` and `status`, as a script meets it: a request with
//! `Authorization: Bearer ID_TOKEN` (a Google identity token whose audience is IAP's OAuth
//! client id) is forwarded with IAP's signed `x-goog-iap-jwt-assertion` for the token's email;
//! a request without one is answered 401, as IAP answers programmatic clients. The
//! `Authorization` header is not passed on. Everything else (method, path, query, body,
//! content type) is.

use std::sync::Arc;

use http::StatusCode;
use http_body_util::BodyExt;
use runway_http::Request;

use crate::google_keys::GoogleKeys;

/// The OAuth client id a script's token must name as its audience.
pub const IAP_CLIENT_ID: &str = "123456789012-iap.apps.googleusercontent.com";

pub struct IapProxy {
    pub url: String,
}

impl IapProxy {
    /// Fronts `target`, signing assertions for `assertion_audience` (the service's
    /// `RUNWAY_IAP_AUDIENCE`).
    pub async fn start(target: String, keys: Arc<GoogleKeys>, assertion_audience: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let context = Arc::new((target, keys, assertion_audience, client));
        tokio::spawn(runway_http::serve(
            listener,
            move |request: Request, _| {
                let context = context.clone();
                async move {
                    let (target, keys, audience, client) = &*context;
                    let email = request
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.strip_prefix("Bearer "))
                        .and_then(|token| (keys.verifier())(token, IAP_CLIENT_ID));
                    let Some(email) = email else {
                        return runway_http::json(
                            StatusCode::UNAUTHORIZED,
                            &"Invalid IAP credentials: empty token",
                        );
                    };
                    let method =
                        reqwest::Method::from_bytes(request.method().as_str().as_bytes()).unwrap();
                    let path = request
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str().to_owned())
                        .unwrap_or_default();
                    let content_type = request.headers().get(http::header::CONTENT_TYPE).cloned();
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    let mut forward = client
                        .request(method, format!("{target}{path}"))
                        .header(
                            "x-goog-iap-jwt-assertion",
                            keys.iap_assertion(audience, &email),
                        )
                        .body(body);
                    if let Some(content_type) = content_type {
                        forward = forward.header("content-type", content_type.as_bytes());
                    }
                    match forward.send().await {
                        Ok(response) => {
                            let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
                            let content_type = response
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("application/json")
                                .to_owned();
                            let bytes = response.bytes().await.unwrap_or_default();
                            http::Response::builder()
                                .status(status)
                                .header("content-type", content_type)
                                .body(runway_http::full(bytes))
                                .unwrap()
                        }
                        Err(_) => runway_http::json(StatusCode::BAD_GATEWAY, &"upstream failed"),
                    }
                }
            },
            std::future::pending(),
            runway_http::serve::ServeOptions::default(),
        ));
        Self { url }
    }
}
