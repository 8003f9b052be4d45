//! A push endpoint on loopback, standing where the worker stands: it records every Pub/Sub push
//! envelope it is sent, and answers 503 to the first `fail_first` pushes so that redelivery can
//! be seen.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runway_http::Request;
use runway_http::push::PushEnvelope;

#[derive(Clone, Debug)]
pub struct Push {
    pub envelope: PushEnvelope,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// What the endpoint answered.
    pub status: u16,
}

#[derive(Clone, Default)]
pub struct PushReceiver {
    pushes: Arc<Mutex<Vec<Push>>>,
    pub url: String,
}

impl PushReceiver {
    pub async fn start(fail_first: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/push", listener.local_addr().unwrap());
        let receiver = Self {
            pushes: Arc::default(),
            url,
        };
        let pushes = receiver.pushes.clone();
        tokio::spawn(runway_http::serve(
            listener,
            move |request: Request, _| {
                let pushes = pushes.clone();
                async move {
                    let authorization = request
                        .headers()
                        .get("authorization")
                        .and_then(|value| value.to_str().ok())
                        .map(str::to_owned);
                    let body = runway_http::read_body(request, 1 << 20).await.unwrap();
                    let envelope: PushEnvelope = serde_json::from_slice(&body)
                        .unwrap_or_else(|e| panic!("not a push envelope ({e}): {body:?}"));
                    let mut pushes = pushes.lock().unwrap();
                    let status = if pushes.len() < fail_first { 503 } else { 204 };
                    pushes.push(Push {
                        envelope,
                        authorization,
                        status,
                    });
                    let status = ::http::StatusCode::from_u16(status).unwrap();
                    runway_http::json(status, &"")
                }
            },
            std::future::pending(),
            runway_http::serve::ServeOptions::default(),
        ));
        receiver
    }

    pub fn pushes(&self) -> Vec<Push> {
        self.pushes.lock().unwrap().clone()
    }

    /// The pushes it acknowledged (answered 2xx), in arrival order.
    pub fn acknowledged(&self) -> Vec<Push> {
        self.pushes()
            .into_iter()
            .filter(|push| push.status < 300)
            .collect()
    }

    /// Waits until `n` pushes were acknowledged; panics naming what arrived after `timeout`.
    pub async fn wait_for_acknowledged(&self, n: usize, timeout: Duration) -> Vec<Push> {
        let deadline = Instant::now() + timeout;
        loop {
            let acknowledged = self.acknowledged();
            if acknowledged.len() >= n {
                return acknowledged;
            }
            assert!(
                Instant::now() < deadline,
                "{n} acknowledged pushes expected within {timeout:?}; got {:?}",
                self.pushes()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
