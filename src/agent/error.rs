//! Every refusal and failure of the runtime's HTTP API as one JSON shape:
//! `{"error": {"type": "<stable type>", "message": "<for a person>"}}`.
//! Messages are written here, never copied from a database or a proxy
//! error, so no secret and no internal detail reaches a caller.
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid gateway token is required (Authorization: Bearer <GATEWAY_TOKEN>)")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    NotFound(String),
    #[error("this endpoint does not answer that method; see docs/runtime-contract.md")]
    MethodNotAllowed,
    #[error(
        "this agent has used all of its credits, so it cannot answer right now; please top up the account or try again next period"
    )]
    OutOfCredits,
    #[error("the language model is not available right now; please try again shortly")]
    LlmUnavailable,
    #[error("the agent's database is not available right now; please try again shortly")]
    Database,
    #[error("the agent could not record the conversation; please try again")]
    Spool,
}

impl ApiError {
    /// The stable `type` of the error body.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::BadRequest(_) => "invalid_request",
            Self::TooLarge(_) => "request_too_large",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::OutOfCredits => "out_of_credits",
            Self::LlmUnavailable => "llm_unavailable",
            Self::Database => "database_unavailable",
            Self::Spool => "transcript_unavailable",
        }
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::OutOfCredits => StatusCode::PAYMENT_REQUIRED,
            Self::LlmUnavailable => StatusCode::BAD_GATEWAY,
            Self::Database | Self::Spool => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON body.
    #[must_use]
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"type": self.kind(), "message": self.to_string()}})
    }

    /// The error as an answer about conversation `id`: the JSON body also
    /// names it, so a caller retrying a refused turn continues that
    /// conversation instead of opening another.
    #[must_use]
    pub fn in_conversation(self, id: uuid::Uuid) -> Response {
        (self.status(), Json(self.body_in(id))).into_response()
    }

    /// The JSON body naming conversation `id` beside the error.
    #[must_use]
    pub fn body_in(&self, id: uuid::Uuid) -> serde_json::Value {
        let mut body = self.body();
        body["conversation_id"] = json!(id);
        body
    }

    /// From a body that could not be read (too large, broken).
    #[must_use]
    pub fn from_body(r: &BytesRejection, limit: usize) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::TooLarge(limit)
        } else {
            Self::BadRequest("the request body could not be read".into())
        }
    }

    /// Logs a database failure (without its detail, which may name the
    /// server) and turns it into [`ApiError::Database`].
    pub fn db(e: &sqlx::Error) -> Self {
        tracing::warn!(kind = db_kind(e), "tenant database call failed");
        Self::Database
    }
}

fn db_kind(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Database(_) => "database",
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => "pool",
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => "io",
        _ => "other",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}

/// Refuses a NUL character in `what`: PostgreSQL's `text` cannot hold one,
/// so it is the caller's mistake (400), not the database's (503).
///
/// # Errors
/// [`ApiError::BadRequest`] naming the field.
pub fn no_nul(what: &str, v: &str) -> Result<(), ApiError> {
    if v.contains('\0') {
        return Err(ApiError::BadRequest(format!("`{what}` must not contain a NUL character (\\u0000)")));
    }
    Ok(())
}

/// Parses a JSON body into `T`, with a clear message when it does not fit.
///
/// # Errors
/// [`ApiError::BadRequest`] naming what was wrong (serde's message names
/// the field and position, never a value).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("the body is not the expected JSON: {e}")))
}
