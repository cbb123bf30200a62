//! The shared state of one emulator process: every platform's objects (the
//! "world"), mutation counters, armed faults, the per-platform rate-limit
//! window, the optional backing PostgreSQL for Neon, and the request guard
//! every handler runs through (auth, faults, rate-limit headers).
//!
//! The world is persisted as JSON after each mutation when a state file is
//! configured, so it survives an emulator restart. Asynchronous lifecycles
//! are computed from creation timestamps, so they also advance across
//! restarts without background tasks.
//!
//! Every 429 (window run out, Resend's per-team bucket, an injected fault)
//! carries the platform's rate-limit headers with nothing remaining and
//! `Retry-After`: Railway and Vercel `x-ratelimit-*` (reset in epoch
//! seconds), Supabase `x-ratelimit-*` (reset in seconds), Resend the IETF
//! draft `ratelimit-*`, Neon none (it documents none). Besides the global
//! window (one per platform and minute), the published limits of
//! [`super::limits`] apply: Supabase's 120/min per token, Vercel's
//! per-endpoint ones and Railway's per-plan hourly and per-second ones.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::RngExt;
use serde_json::json;

use super::faults::{FaultBook, FaultKind};
use crate::platform::Platform;

/// How the emulator behaves.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Bearer tokens accepted on every platform.
    pub tokens: Vec<String>,
    /// Time an asynchronous lifecycle takes to settle; 0 = instant.
    pub async_delay_ms: u64,
    /// Superuser URL of the PostgreSQL where Neon roles/databases are made real.
    pub postgres_url: Option<String>,
    /// Empty databases created at start, claimed by new Neon and Supabase
    /// projects instead of a `CREATE DATABASE` each (see [`super::db_pool`]).
    pub database_pool: usize,
    /// JSON file the world is loaded from and saved to.
    pub state_file: Option<PathBuf>,
    /// Requests per minute per platform before the emulator answers 429.
    pub rate_limit_per_minute: u32,
    /// Behaviour of the mock LLM upstreams.
    pub llm: super::llm::LlmMockConfig,
    /// The Stripe emulator's webhook endpoint and delivery retries.
    pub stripe: super::stripe::StripeConfig,
    /// Real agent runtimes behind reference-image services (off by default).
    pub runtimes: super::runtimes::RuntimeConfig,
    /// Resend requests per second per team (token), as a bucket refilled
    /// continuously; Resend's published default is 2.
    pub resend_per_second: u32,
    /// Emails one Resend team may send per UTC day; `None` = no quota.
    pub resend_daily_quota: Option<u32>,
    /// How long sending one email takes: meanwhile another request with the
    /// same `Idempotency-Key` answers 409 `concurrent_idempotent_requests`.
    pub resend_send_ms: u64,
    /// Eventual consistency: a project created less than this ago is not
    /// yet listed (Neon and Supabase project lists, Railway `projects`),
    /// though it can be read by id. 0 = listed at once.
    pub list_lag_ms: u64,
    /// How long a new Supabase project stays COMING_UP; `None` = the async
    /// delay (the real platform takes minutes).
    pub supabase_coming_up_ms: Option<u64>,
    /// The platforms' published limits (Supabase per token, Vercel per
    /// endpoint, Railway per plan); see [`super::limits`].
    pub limits: super::limits::PlatformLimits,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            tokens: vec![DEFAULT_TOKEN.into()],
            async_delay_ms: 0,
            postgres_url: None,
            database_pool: 0,
            state_file: None,
            rate_limit_per_minute: 100_000,
            llm: super::llm::LlmMockConfig::default(),
            stripe: super::stripe::StripeConfig::default(),
            runtimes: super::runtimes::RuntimeConfig::default(),
            resend_per_second: 2,
            resend_daily_quota: None,
            resend_send_ms: 0,
            list_lag_ms: 0,
            supabase_coming_up_ms: None,
            limits: super::limits::PlatformLimits::default(),
        }
    }
}

/// The token accepted when none is configured.
pub const DEFAULT_TOKEN: &str = "winston-emulator";

/// Every platform's objects plus the mutation counters.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct World {
    pub neon: super::neon::NeonWorld,
    pub railway: super::railway::RailwayWorld,
    pub vercel: super::vercel::VercelWorld,
    pub resend: super::resend::ResendWorld,
    pub supabase: super::supabase::SupabaseWorld,
    /// The Auth users of each Supabase project.
    #[serde(default)]
    pub supabase_auth: super::supabase_auth::AuthWorld,
    /// Successful writes per platform (`neon`, `railway`, ...).
    pub mutations: BTreeMap<Platform, u64>,
}

/// Errors starting the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("failed to read the state file: {0}")]
    StateFile(String),
    #[error("failed to connect to the backing PostgreSQL: {0}")]
    Postgres(String),
    #[error("failed to serve: {0}")]
    Io(#[from] std::io::Error),
}

/// The emulator's shared context.
#[derive(Debug)]
pub struct Emulator {
    pub config: EmulatorConfig,
    world: Mutex<World>,
    pub faults: FaultBook,
    /// Per platform: the current one-minute window, its request count, and
    /// all authorized requests since start (reads and writes).
    windows: Mutex<BTreeMap<Platform, (u64, u32, u64)>>,
    /// Backing PostgreSQL for Neon roles and databases.
    pub pg: Option<sqlx::PgPool>,
    /// Databases made ahead of time in `pg`.
    pub databases: super::db_pool::DatabasePool,
    /// Host and port the Neon connection URIs point at.
    pub pg_host: String,
    pub pg_port: u16,
    /// The agent runtimes it runs (see [`super::runtimes`]).
    pub runtimes: super::runtimes::Runtimes,
    /// Resend's per-team request buckets, daily counts and sends in flight.
    pub resend_teams: super::resend::TeamLimits,
    /// The counters of the published limits ([`EmulatorConfig::limits`]).
    published: super::limits::Counters,
}

impl Emulator {
    /// Loads the state file (if any) and connects to the backing PostgreSQL.
    ///
    /// # Errors
    /// An unreadable state file or an unreachable PostgreSQL.
    pub async fn new(config: EmulatorConfig) -> Result<Self, EmulatorError> {
        let world = match &config.state_file {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p).map_err(|e| EmulatorError::StateFile(e.to_string()))?;
                serde_json::from_str(&text).map_err(|e| EmulatorError::StateFile(e.to_string()))?
            }
            _ => World::default(),
        };
        let (pg, pg_host, pg_port) = match &config.postgres_url {
            Some(url) => {
                let opts: sqlx::postgres::PgConnectOptions =
                    url.parse().map_err(|e: sqlx::Error| EmulatorError::Postgres(e.to_string()))?;
                let host = opts.get_host().to_string();
                let port = opts.get_port();
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(4)
                    .connect_with(opts)
                    .await
                    .map_err(|e| EmulatorError::Postgres(e.to_string()))?;
                (Some(pool), if host.starts_with('/') { "127.0.0.1".into() } else { host }, port)
            }
            None => (None, "127.0.0.1".into(), 5432),
        };
        let databases = match (&pg, config.database_pool) {
            (Some(pool), n) if n > 0 => {
                super::db_pool::DatabasePool::fill(pool, n).await.map_err(EmulatorError::Postgres)?
            }
            _ => super::db_pool::DatabasePool::default(),
        };
        Ok(Self {
            databases,
            runtimes: super::runtimes::Runtimes::new(config.runtimes.clone()),
            config,
            world: Mutex::new(world),
            faults: FaultBook::default(),
            windows: Mutex::new(BTreeMap::new()),
            pg,
            pg_host,
            pg_port,
            resend_teams: super::resend::TeamLimits::default(),
            published: super::limits::Counters::default(),
        })
    }

    /// Runs `sql` on the backing PostgreSQL (nothing without one).
    ///
    /// # Errors
    /// PostgreSQL's message.
    pub async fn pg_exec(&self, sql: String) -> Result<(), String> {
        let Some(pool) = &self.pg else { return Ok(()) };
        super::sql::exec(pool, sql).await
    }

    /// Makes database `name` owned by `owner` on the backing PostgreSQL,
    /// from the pool of spare ones when it has one (nothing without a
    /// PostgreSQL).
    ///
    /// # Errors
    /// PostgreSQL's message.
    pub async fn create_database(&self, name: &str, owner: &str) -> Result<(), String> {
        let Some(pool) = &self.pg else { return Ok(()) };
        self.databases.create(pool, name, owner).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Authorized requests `platform` received since start.
    pub fn requests(&self, platform: Platform) -> u64 {
        self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&platform).map_or(0, |w| w.2)
    }

    /// Reads the world.
    pub fn read<R>(&self, f: impl FnOnce(&World) -> R) -> R {
        f(&self.lock())
    }

    /// Changes the world for `platform`: counts one mutation when `f`
    /// returns `Ok` and persists the world.
    pub fn write<R, E>(&self, platform: Platform, f: impl FnOnce(&mut World) -> Result<R, E>) -> Result<R, E> {
        let mut w = self.lock();
        let r = f(&mut w)?;
        *w.mutations.entry(platform).or_insert(0) += 1;
        self.persist(&w);
        Ok(r)
    }

    /// Counts one platform write done outside [`Emulator::write`].
    pub fn count_mutation(&self, platform: Platform) {
        let mut w = self.lock();
        *w.mutations.entry(platform).or_insert(0) += 1;
        self.persist(&w);
    }

    /// Changes the world without counting a platform write (lifecycle bookkeeping).
    pub fn touch<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let mut w = self.lock();
        let r = f(&mut w);
        self.persist(&w);
        r
    }

    fn persist(&self, w: &World) {
        let Some(path) = &self.config.state_file else { return };
        let tmp = path.with_extension("tmp");
        let result = serde_json::to_vec_pretty(w)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(error = %e, path = %path.display(), "failed to persist emulator state");
        }
    }

    /// Whether an object created at `created_ms` is listed yet (see
    /// [`EmulatorConfig::list_lag_ms`]).
    #[must_use]
    pub fn listed(&self, created_ms: i64) -> bool {
        now_ms() - created_ms >= self.config.list_lag_ms as i64
    }

    /// True once an asynchronous lifecycle started at `started_ms` has
    /// taken `fraction` of the configured delay.
    #[must_use]
    pub fn elapsed(&self, started_ms: i64, fraction: f64) -> bool {
        let needed = (self.config.async_delay_ms as f64 * fraction) as i64;
        now_ms() - started_ms >= needed
    }

    /// Runs `handler` for `platform`/`operation` behind auth, armed faults,
    /// the rate-limit window and the platform's rate-limit headers.
    pub async fn guard<F, Fut>(&self, platform: Platform, operation: &str, headers: &HeaderMap, handler: F) -> Response
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Response>,
    {
        if !self.authorized(platform, headers) {
            return unauthorized(platform, headers);
        }
        let (limit, remaining, reset_s) = self.count_request(platform);
        let mut drop_response = false;
        if remaining < 0 {
            let mut resp = rate_limited(platform, headers, reset_s.max(1));
            add_rate_headers(platform, resp.headers_mut(), limit, 0, reset_s.max(1));
            return resp;
        }
        let (limit, remaining, reset_s) =
            match self.published.admit(&self.config.limits, platform, operation, &bearer(headers)) {
                Ok(Some(s)) => (s.limit, i64::from(s.remaining), s.reset_s),
                Ok(None) => (limit, remaining, reset_s),
                Err(refusal) if refusal.counter == super::limits::VERCEL_DAILY_DEPLOYMENTS => {
                    let code = self.config.limits.vercel_daily().map_or("api-deployments-per-day", |d| d.1);
                    return super::vercel::daily_limit_refusal(refusal.standing, code);
                }
                Err(super::limits::Refusal { standing: s, .. }) => {
                    let mut resp = rate_limited(platform, headers, s.reset_s);
                    add_rate_headers(platform, resp.headers_mut(), s.limit, 0, s.reset_s);
                    return resp;
                }
            };
        // Resend limits each team (token) per second, and says so in its headers.
        let (limit, remaining, reset_s) = if platform == Platform::Resend {
            let per_second = self.config.resend_per_second;
            match self.resend_teams.admit(&bearer(headers), per_second) {
                Ok(left) => (per_second, i64::from(left), 1),
                Err(wait_s) => {
                    let mut resp = rate_limited(platform, headers, wait_s);
                    add_rate_headers(platform, resp.headers_mut(), per_second, 0, wait_s);
                    return resp;
                }
            }
        } else {
            (limit, remaining, reset_s)
        };
        if let Some(fault) = self.faults.take_request(platform, operation) {
            tracing::info!(%platform, operation, kind = ?fault.kind, "injecting fault");
            match fault.kind {
                FaultKind::RateLimit => {
                    let mut resp = rate_limited(platform, headers, fault.retry_after_secs);
                    add_rate_headers(platform, resp.headers_mut(), limit, 0, fault.retry_after_secs);
                    return resp;
                }
                FaultKind::ServerError => {
                    let status = fault.status.unwrap_or(500);
                    return error_response(platform, status, "internal_server_error", "injected server error", headers);
                }
                FaultKind::Locked => {
                    return error_response(
                        platform,
                        423,
                        "",
                        "project already has running operations, try again later",
                        headers,
                    );
                }
                FaultKind::Delay => tokio::time::sleep(Duration::from_millis(fault.delay_ms.unwrap_or(5_000))).await,
                FaultKind::DropResponse => drop_response = true,
                FaultKind::FailDeployment => {}
            }
        }
        let mut resp = handler().await;
        if drop_response {
            // The work is done; the client never learns the answer.
            let failing =
                futures::stream::once(async { Err::<bytes::Bytes, _>(std::io::Error::other("response dropped")) });
            return (resp.status(), Body::from_stream(failing)).into_response();
        }
        add_rate_headers(platform, resp.headers_mut(), limit, remaining.max(0) as u32, reset_s);
        resp
    }

    /// Requests refused by the published limits (and how many of them were
    /// sent early), per platform and limit name.
    #[must_use]
    pub fn refusals(&self) -> BTreeMap<(Platform, &'static str), super::limits::RefusalCount> {
        self.published.refusals()
    }

    /// Whether the request presents one of the configured tokens.
    pub fn authorized(&self, platform: Platform, headers: &HeaderMap) -> bool {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let mut presented = Vec::new();
        if let Some(a) = header("authorization") {
            presented.push(a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")).unwrap_or(a));
        }
        if platform == Platform::Railway {
            presented.extend(header("project-access-token"));
            presented.extend(header("team-access-token"));
        }
        presented.iter().any(|p| self.config.tokens.iter().any(|t| t == p))
    }

    /// Counts a request in the platform's one-minute window and in its
    /// total: (limit, remaining, seconds to reset).
    fn count_request(&self, platform: Platform) -> (u32, i64, u64) {
        let now_s = (now_ms() / 1000) as u64;
        let window = now_s - now_s % 60;
        let mut w = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = w.entry(platform).or_insert((window, 0, 0));
        if entry.0 != window {
            (entry.0, entry.1) = (window, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.2 += 1;
        let limit = self.config.rate_limit_per_minute;
        (limit, i64::from(limit) - i64::from(entry.1), window + 60 - now_s)
    }
}

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 timestamp for `ms`.
#[must_use]
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A random id of `len` characters from `alphabet`.
#[must_use]
pub fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())])).collect()
}

/// Lowercase letters and digits.
pub const ALNUM_LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn add_rate_headers(platform: Platform, h: &mut HeaderMap, limit: u32, remaining: u32, reset_s: u64) {
    let mut set = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    let epoch_reset = (now_ms() / 1000) as u64 + reset_s;
    match platform {
        // Neon documents no rate-limit headers.
        Platform::Neon => {}
        Platform::Railway | Platform::Vercel => {
            set("x-ratelimit-limit", limit.to_string());
            set("x-ratelimit-remaining", remaining.to_string());
            set("x-ratelimit-reset", epoch_reset.to_string());
        }
        Platform::Supabase => {
            set("x-ratelimit-limit", limit.to_string());
            set("x-ratelimit-remaining", remaining.to_string());
            set("x-ratelimit-reset", reset_s.to_string());
        }
        Platform::Resend => {
            set("ratelimit-limit", limit.to_string());
            set("ratelimit-remaining", remaining.to_string());
            set("ratelimit-reset", reset_s.to_string());
        }
    }
}

/// The bearer token of a request (Resend's team), empty without one.
pub fn bearer(headers: &HeaderMap) -> String {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or_default();
    auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer ")).unwrap_or(auth).to_string()
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string)
}

/// An error in `platform`'s envelope (Railway: GraphQL `errors[]`).
pub fn error_response(platform: Platform, status: u16, code: &str, message: &str, headers: &HeaderMap) -> Response {
    let status_code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match platform {
        Platform::Railway => json!({"data": null, "errors": [{"message": message, "extensions": {"code": code}}]}),
        Platform::Neon => json!({"code": code, "message": message, "request_id": request_id(headers)}),
        Platform::Vercel => json!({"error": {"code": code, "message": message}}),
        Platform::Supabase => json!({"message": message}),
        Platform::Resend => json!({"statusCode": status, "name": code, "message": message}),
    };
    (status_code, axum::Json(body)).into_response()
}

fn unauthorized(platform: Platform, headers: &HeaderMap) -> Response {
    match platform {
        // Railway answers auth failures as HTTP 200 with a GraphQL error.
        Platform::Railway => (
            StatusCode::OK,
            axum::Json(json!({"data": null, "errors": [{"message": "Not Authorized", "extensions": {"code": "UNAUTHENTICATED"}}]})),
        )
            .into_response(),
        Platform::Neon => error_response(platform, 401, "", "authorization failed", headers),
        Platform::Vercel => error_response(platform, 403, "forbidden", "Not authorized", headers),
        Platform::Supabase => error_response(platform, 401, "", "Unauthorized", headers),
        // A key that is presented but unknown is 403 `invalid_api_key`.
        Platform::Resend if headers.contains_key("authorization") => {
            error_response(platform, 403, "invalid_api_key", "API key is invalid", headers)
        }
        Platform::Resend => error_response(platform, 401, "missing_api_key", "Missing API key in the authorization header", headers),
    }
}

fn rate_limited(platform: Platform, headers: &HeaderMap, retry_after_secs: u64) -> Response {
    let mut resp = match platform {
        // Railway's edge may answer a burst with a non-JSON body; clients must cope.
        Platform::Railway => (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response(),
        Platform::Vercel => {
            let reset = (now_ms() / 1000) as u64 + retry_after_secs;
            (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"error": {"code": "rate_limited", "message": "Rate limit exceeded",
                    "limit": {"remaining": 0, "reset": reset, "resetMs": reset * 1000, "total": 0}}})),
            )
                .into_response()
        }
        Platform::Resend => error_response(platform, 429, "rate_limit_exceeded", "Too many requests", headers),
        Platform::Neon | Platform::Supabase => error_response(platform, 429, "", "rate limit exceeded", headers),
    };
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}
