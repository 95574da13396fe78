//! A local HTTP receiver standing in for a ticketing tool, failing in scripted ways.
//!
//! It honours idempotency keys the way ticketing APIs that support them do: the first request
//! with a key that it accepts opens a ticket; any later request with the same key gets a 200
//! and opens nothing. Each key can be given a script of answers (500s, 429 with `Retry-After`,
//! 400, a slow answer, no answer at all); when a key's script is used up, or it has none, the
//! receiver answers with its default (200, or 503 while "down").

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Step {
    /// Open the ticket and answer 201.
    Accept,
    /// Answer with this status and body; no ticket.
    Fail(u16, &'static str),
    /// Answer 429 with `Retry-After: secs`; no ticket.
    TooMany(u64),
    /// Open the ticket, then answer 201 only after this long (past the client's timeout).
    Slow(Duration),
    /// Open the ticket and never answer.
    Hang,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub key: Option<String>,
    pub at: Instant,
    pub body: Vec<u8>,
    pub authorization: Option<String>,
}

#[derive(Debug, Default)]
struct State_ {
    scripts: HashMap<String, VecDeque<Step>>,
    down: bool,
    requests: Vec<Request>,
    tickets: HashMap<String, u32>,
}

/// The receiver's shared state and its address.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State_>>,
    changed: watch::Sender<u64>,
}

impl Receiver {
    /// Starts a receiver on a free loopback port, in the current tokio runtime.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let (changed, _) = watch::channel(0);
        let r = Receiver {
            addr,
            state: Arc::default(),
            changed,
        };
        let app = axum::Router::new().fallback(handle).with_state(r.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver runs");
        });
        r
    }

    /// The receiver's URL.
    pub fn url(&self) -> String {
        format!("http://{}/api/tickets", self.addr)
    }

    /// Scripts the answers to requests with idempotency key `key`.
    pub fn script(&self, key: &str, steps: Vec<Step>) {
        self.lock().scripts.insert(key.to_owned(), steps.into());
    }

    /// While down, unscripted requests get 503.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
        self.changed.send_modify(|n| *n += 1);
    }

    /// Tickets opened per key.
    pub fn tickets(&self) -> HashMap<String, u32> {
        self.lock().tickets.clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Requests with key `key`.
    pub fn attempts(&self, key: &str) -> Vec<Request> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.key.as_deref() == Some(key))
            .cloned()
            .collect()
    }

    /// Waits until `done` holds for the receiver (checked on every request), or panics after
    /// `limit` saying what it waited for.
    pub async fn wait_for(&self, what: &str, limit: Duration, done: impl Fn(&Receiver) -> bool) {
        let mut rx = self.changed.subscribe();
        let waiting = async {
            loop {
                if done(self) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(limit, waiting).await.is_err() {
            panic!(
                "receiver on {}: not {what} within {limit:?}; tickets {:?}, {} requests",
                self.addr,
                self.tickets(),
                self.requests().len()
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn handle(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let key = header("idempotency-key");
    let step = {
        let mut s = r.lock();
        s.requests.push(Request {
            key: key.clone(),
            at: Instant::now(),
            body: body.to_vec(),
            authorization: header("authorization"),
        });
        let Some(key) = key.clone() else {
            drop(s);
            r.changed.send_modify(|n| *n += 1);
            return (StatusCode::BAD_REQUEST, "missing Idempotency-Key").into_response();
        };
        if s.tickets.contains_key(&key) {
            // Idempotent replay: the ticket exists, nothing new is opened.
            None
        } else {
            let down = s.down;
            let scripted = s.scripts.get_mut(&key).and_then(VecDeque::pop_front);
            Some(scripted.unwrap_or(if down {
                Step::Fail(503, "down for maintenance")
            } else {
                Step::Accept
            }))
        }
    };
    let open = |r: &Receiver| {
        if let Some(k) = &key {
            *r.lock().tickets.entry(k.clone()).or_default() += 1;
        }
    };
    let response = match step {
        None => (StatusCode::OK, "{\"status\":\"exists\"}").into_response(),
        Some(Step::Accept) => {
            open(&r);
            (StatusCode::CREATED, "{\"status\":\"created\"}").into_response()
        }
        Some(Step::Fail(status, body)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response(),
        Some(Step::TooMany(secs)) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "slow down",
        )
            .into_response(),
        Some(Step::Slow(delay)) => {
            open(&r);
            r.changed.send_modify(|n| *n += 1);
            tokio::time::sleep(delay).await;
            (StatusCode::CREATED, "{\"status\":\"created\"}").into_response()
        }
        Some(Step::Hang) => {
            open(&r);
            r.changed.send_modify(|n| *n += 1);
            std::future::pending::<Response>().await
        }
    };
    r.changed.send_modify(|n| *n += 1);
    response
}
