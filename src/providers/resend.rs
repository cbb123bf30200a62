//! Resend client: send one email with an `Idempotency-Key` and read it
//! back. Resend deduplicates by that key for 24 hours, so a retried send
//! after a lost answer returns the original id instead of sending twice.
//!
//! # Driving it (provisioning engine)
//! [`ResendEmails`] with a [`WelcomeEmail`] whose `key` is the instance UID
//! ([`Marker::uid`]): `create` sends (or, for a repeated key, returns the
//! email already sent) and the id goes to status; `observe` with that id
//! reads it back. Resend has no lookup by marker: the idempotency key is
//! the adoption. A failed email should never fail provisioning; that is
//! the caller's policy.
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::PlatformConfig;
use super::error::{ProviderError, not_found_to_none};
use super::http::{Http, decode};
use super::{Applied, Created, ExternalResource, Marker, Observation, find_by_id_or_marker};
use crate::platform::Platform;

const P: Platform = Platform::Resend;

/// One email to send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Email {
    /// `email@x.com` or `Name <email@x.com>`.
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `[{name, value}]`, ASCII letters, digits, `_` and `-` only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

/// An email tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub name: String,
    pub value: String,
}

/// A sent email as `GET /emails/{id}` reports it (unknown fields ignored).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SentEmail {
    pub id: String,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub last_event: Option<String>,
}

/// The Resend client. Cloning shares the connection pool and budget.
#[derive(Clone, Debug)]
pub struct ResendClient {
    http: Http,
}

impl ResendClient {
    /// A client for `config` (base URL `https://api.resend.com`).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(config: &PlatformConfig) -> Result<Self, ProviderError> {
        Ok(Self { http: Http::new(P, config)? })
    }

    /// The HTTP layer (budget inspection).
    #[must_use]
    pub fn http(&self) -> &Http {
        &self.http
    }

    /// `POST /emails` with `Idempotency-Key: key` (1..=256 characters):
    /// the id of the email sent under that key.
    ///
    /// # Errors
    /// Any [`ProviderError`]; a key reused with another payload is
    /// `Invalid` (409 `invalid_idempotent_request`); a send with the same
    /// key still in progress (409 `concurrent_idempotent_requests`) is
    /// `Locked`: retrying later answers the id of that send.
    pub async fn send(&self, email: &Email, key: &str) -> Result<String, ProviderError> {
        let body = serde_json::to_value(email)
            .map_err(|e| ProviderError::Decode { platform: P, message: format!("email body: {e}") })?;
        let headers = [("Idempotency-Key", key.to_string())];
        let reply = match self.http.send(Method::POST, "/emails", &[], Some(&body), &headers).await {
            Err(ProviderError::Invalid { status: 409, message, .. }) if message.contains("in progress") => {
                return Err(ProviderError::Locked { platform: P, message });
            }
            other => other?,
        };
        reply.body.get("id").and_then(Value::as_str).map(str::to_string).ok_or_else(|| ProviderError::Decode {
            platform: P,
            message: format!("send answer (status {}) without id", reply.status),
        })
    }

    /// `GET /emails/{id}`; `None` when unknown.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn get(&self, id: &str) -> Result<Option<SentEmail>, ProviderError> {
        let path = format!("/emails/{}", id.replace('/', "%2F"));
        let Some(reply) = not_found_to_none(self.http.send(Method::GET, &path, &[], None, &[]).await)? else {
            return Ok(None);
        };
        decode(P, reply.body, "email").map(Some)
    }
}

/// The welcome email of one instance, sent exactly once.
#[derive(Clone, Debug)]
pub struct WelcomeEmail {
    pub marker: Marker,
    pub email: Email,
}

impl WelcomeEmail {
    /// The idempotency key: the instance UID.
    #[must_use]
    pub fn key(&self) -> &str {
        self.marker.uid()
    }

    fn tagged(&self) -> Email {
        let mut email = self.email.clone();
        if !email.tags.iter().any(|t| t.name == Marker::KEY) {
            email.tags.push(Tag { name: Marker::KEY.into(), value: self.marker.uid().into() });
        }
        email
    }
}

/// [`ExternalResource`] for [`WelcomeEmail`].
#[derive(Clone, Debug)]
pub struct ResendEmails(pub ResendClient);

impl ExternalResource for ResendEmails {
    type Spec = WelcomeEmail;
    type Observed = SentEmail;

    /// With the id from status: the sent email. Without it: `Absent` (Resend
    /// cannot be searched; `create` is idempotent by key instead).
    async fn observe(
        &self,
        _spec: &WelcomeEmail,
        known_id: Option<&str>,
    ) -> Result<Observation<SentEmail>, ProviderError> {
        let by_id = |id| self.0.get(id);
        let unsearchable = std::future::ready(Ok(Vec::new()));
        Ok(match find_by_id_or_marker(known_id, by_id, unsearchable, |e: &SentEmail| &e.id).await? {
            Ok(sent) => Observation::Ready { id: sent.id.clone(), observed: sent, up_to_date: true },
            Err(settled) => settled,
        })
    }

    /// Sends under the instance UID as Idempotency-Key: repeating it within
    /// 24 hours returns the same id and sends nothing.
    async fn create(&self, spec: &WelcomeEmail) -> Result<Created, ProviderError> {
        Ok(Created { id: self.0.send(&spec.tagged(), spec.key()).await?, operation_id: None })
    }

    /// A sent email cannot change.
    async fn update(&self, _id: &str, _spec: &WelcomeEmail) -> Result<Applied, ProviderError> {
        Ok(Applied::Done)
    }

    /// A sent email cannot be unsent; nothing to clean up.
    async fn delete(&self, _id: &str, _spec: &WelcomeEmail) -> Result<Applied, ProviderError> {
        Ok(Applied::Done)
    }
}
