//! The admin server of a run: read-only HTTP on the run's tokio runtime.
//!
//! - `/metrics`: every metric in the Prometheus text format;
//! - `/api/status`: the run as JSON (what the dashboard draws);
//! - `/`: the dashboard;
//! - `/health`: 200 while the run's loop goes; `/ready`: 200 once partitions are assigned, their
//!   state restored and the brokers reachable, else 503 with the reason.
//!
//! Nothing it serves changes anything. It listens on this machine only unless the pipeline
//! file or `--admin` says otherwise.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{Html, IntoResponse, Response},
    routing, Json, Router,
};
use tokio::net::TcpListener;

use crate::{
    config::AdminConfig,
    metrics::{prometheus_text, Metrics, StatusSampler},
    state::query::{Found, Held, Lookup},
    Error,
};

/// The dashboard: one page, no build step.
const DASHBOARD: &str = include_str!("dashboard.html");

#[derive(Clone)]
struct Served {
    metrics: Arc<Metrics>,
    sampler: Arc<StatusSampler>,
    held: Arc<Held>,
}

/// A bound admin server, to be run with [`AdminServer::serve`].
pub struct AdminServer {
    listener: TcpListener,
}

impl AdminServer {
    /// Bind `config`'s address, if any. A default address that is taken (another run on this
    /// machine) is a warning and no server; a given one is an error.
    pub async fn bind(config: &AdminConfig) -> Result<Option<AdminServer>, Error> {
        let Some(at) = config.listen else {
            return Ok(None);
        };
        match TcpListener::bind(at).await {
            Ok(listener) => Ok(Some(AdminServer { listener })),
            Err(e) if !config.explicit => {
                tracing::warn!(
                    "admin server not started: {at}: {e} (another run on this machine? give \
                     one of them `[admin] listen` or `--admin`, e.g. 127.0.0.1:0)"
                );
                Ok(None)
            }
            Err(cause) => Err(Error::Io {
                what: format!("the admin server's address {at}"),
                cause,
            }),
        }
    }

    /// The address it listens on (the port picked, when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Bind and serve `metrics` on a runtime of its own (for callers without one, as `weir
    /// demo`), until the returned handle is dropped; `None` as [`AdminServer::bind`].
    pub fn start(config: &AdminConfig, metrics: Arc<Metrics>) -> Result<Option<Background>, Error> {
        if config.listen.is_none() {
            return Ok(None);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weir-admin")
            .enable_all()
            .build()
            .map_err(|cause| Error::Io {
                what: "starting the admin server's runtime".into(),
                cause,
            })?;
        let Some(server) = runtime.block_on(AdminServer::bind(config))? else {
            return Ok(None);
        };
        let addr = server.local_addr();
        let sampler = {
            let _on = runtime.enter();
            StatusSampler::start(metrics)
        };
        runtime.spawn(server.serve(sampler, Arc::default()));
        Ok(Some(Background {
            addr,
            _runtime: runtime,
        }))
    }

    /// Serve the metrics `sampler` samples, and queries of the state `held`, until the runtime
    /// stops.
    pub async fn serve(self, sampler: Arc<StatusSampler>, held: Arc<Held>) {
        let metrics = sampler.metrics().clone();
        let app = Router::new()
            .route("/", routing::get(|| async { Html(DASHBOARD) }))
            .route("/metrics", routing::get(scrape))
            .route("/api/status", routing::get(status))
            .route("/health", routing::get(health))
            .route("/ready", routing::get(ready))
            .route("/api/state/{stage}", routing::get(state))
            .with_state(Served {
                metrics,
                sampler,
                held,
            });
        if let Err(e) = axum::serve(self.listener, app).await {
            tracing::warn!("admin server stopped: {e}");
        }
    }
}

/// An admin server on a runtime of its own, serving until dropped.
pub struct Background {
    pub addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

async fn scrape(State(s): State<Served>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        prometheus_text(&s.metrics),
    )
        .into_response()
}

async fn status(State(s): State<Served>) -> Response {
    Json(s.sampler.status()).into_response()
}

/// `/api/state/{stage}?key=K`, or `?prefix=P&limit=N`: what the run holds of a stage's keyed
/// state (the source partitions it holds, and the entries found there).
async fn state(
    State(s): State<Served>,
    Path(stage): Path<String>,
    Query(q): Query<StateQuery>,
) -> Response {
    let lookup = match (q.key, q.prefix) {
        (Some(key), None) => Lookup::Key(Some(key.into_bytes())),
        (None, prefix) => Lookup::Prefix {
            prefix: prefix.unwrap_or_default().into_bytes(),
            limit: q.limit.unwrap_or(100),
        },
        (Some(_), Some(_)) => {
            let why = "give `key` or `prefix`, not both\n";
            return (StatusCode::BAD_REQUEST, why).into_response();
        }
    };
    // Reading a store can take a while: not on the runtime that answers signals and probes.
    let held = s.held.clone();
    let name = stage.clone();
    let looked = tokio::task::spawn_blocking(move || held.lookup(&name, &lookup)).await;
    let Ok((partitions, found)) = looked else {
        let why = "the state lookup failed\n";
        return (StatusCode::INTERNAL_SERVER_ERROR, why).into_response();
    };
    let partitions: Vec<_> = partitions
        .into_iter()
        .map(|(topic, partition)| serde_json::json!({"topic": topic, "partition": partition}))
        .collect();
    let entries: Vec<_> = found.iter().map(Found::to_json).collect();
    Json(serde_json::json!({"stage": stage, "partitions": partitions, "entries": entries}))
        .into_response()
}

#[derive(serde::Deserialize)]
struct StateQuery {
    key: Option<String>,
    prefix: Option<String>,
    limit: Option<usize>,
}

async fn health(State(s): State<Served>) -> Response {
    if s.metrics
        .health
        .running
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        (StatusCode::OK, "running\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not running\n").into_response()
    }
}

async fn ready(State(s): State<Served>) -> Response {
    match s.metrics.health.ready() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// `GET http://AT/PATH` from a run's admin server: the status code and the body. HTTP/1.0 to
/// this machine's server only (`weir status`), so a few lines over a socket do it.
pub fn get(at: SocketAddr, path: &str) -> Result<(u16, String), Error> {
    use std::io::{Read, Write};
    let io = |cause| Error::Io {
        what: format!("the admin server at {at}"),
        cause,
    };
    let mut stream =
        std::net::TcpStream::connect_timeout(&at, Duration::from_secs(5)).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {at}\r\n\r\n").map_err(io)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(io)?;
    let code = response.split(' ').nth(1).and_then(|c| c.parse().ok());
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    match (code, body) {
        (Some(code), Some(body)) => Ok((code, body)),
        _ => Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an HTTP response",
        ))),
    }
}
