//! Supabase Auth (GoTrue) admin API of one project: the application's
//! admin user behind the [`ExternalResource`] contract.
//!
//! Wire facts (GoTrue's admin endpoints, served by every project under
//! `{project_url}/auth/v1`): every call carries the project's
//! `service_role` key both as `apikey` and as the bearer token.
//! - `POST /admin/users` with `{email, password, email_confirm,
//!   user_metadata}` answers the user (`id`, `email`, `user_metadata`, ...);
//!   an address already registered is 422 `email_exists`.
//! - `GET /admin/users?page=N&per_page=M` answers `{"users": [...], "aud"}`
//!   one page at a time (pages from 1; a short page is the last).
//! - `PUT /admin/users/{id}` with `{password, user_metadata}` sets a new
//!   password (no old one asked) and merges `user_metadata` key by key.
//!
//! The user's marker is its email: Auth enforces one user per address, so
//! a lookup by email finds at most one and never is ambiguous. The
//! password travels only in the create body; observe never sees it.
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::budget::BudgetConfig;
use super::config::{PlatformConfig, Secret};
use super::error::ProviderError;
use super::http::{Http, decode};
use super::{Applied, Created, ExternalResource, Observation};
use crate::platform::Platform;

const P: Platform = Platform::Supabase;
/// Users read per page when searching by email.
const PER_PAGE: usize = 100;
/// A loop guard: at most this many pages are read in one search.
const MAX_PAGES: usize = 200;

/// Winston's own bound on one project's Auth admin calls.
pub const AUTH_BUDGET: BudgetConfig =
    BudgetConfig { per_minute: 600, burst: 20, breaker_threshold: 5, breaker_cooldown_ms: 30_000, max_wait_ms: 2_000 };

/// One Auth user (unknown fields ignored).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct AuthUser {
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_confirmed_at: Option<String>,
    #[serde(default)]
    pub user_metadata: Value,
}

#[derive(Deserialize)]
struct UserPage {
    #[serde(default)]
    users: Vec<AuthUser>,
}

/// The admin client of one project. Each project has its own Auth server,
/// so each client has its own request budget; the admin endpoints (service
/// role) publish no limit, and Winston bounds itself to [`AUTH_BUDGET`]
/// rather than the Management API's 120 requests per minute.
#[derive(Clone, Debug)]
pub struct SupabaseAuthClient {
    http: Http,
    service_role_key: Secret,
}

impl SupabaseAuthClient {
    /// A client for the project at `project_url` (`https://<ref>.supabase.co`)
    /// authenticating with its `service_role` key.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(project_url: &str, service_role_key: Secret, timeout_ms: u64) -> Result<Self, ProviderError> {
        let config = PlatformConfig {
            base_url: format!("{}/auth/v1", project_url.trim_end_matches('/')),
            token: service_role_key.clone(),
            timeout_ms,
            budget: Some(AUTH_BUDGET),
        };
        Ok(Self { http: Http::new(P, &config)?, service_role_key })
    }

    fn apikey(&self) -> [(&'static str, String); 1] {
        [("apikey", self.service_role_key.expose().to_string())]
    }

    /// `POST /admin/users`: a confirmed user with `password` and `metadata`.
    ///
    /// # Errors
    /// Any [`ProviderError`]; 422 when the email is taken.
    pub async fn create_user(
        &self,
        email: &str,
        password: &Secret,
        metadata: Value,
    ) -> Result<AuthUser, ProviderError> {
        let body = json!({"email": email, "password": password.expose(), "email_confirm": true,
            "user_metadata": metadata});
        let reply = self.http.send(Method::POST, "/admin/users", &[], Some(&body), &self.apikey()).await?;
        decode(P, reply.body, "auth user")
    }

    /// `GET /admin/users/{id}`; `None` when absent.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn get_user(&self, id: &str) -> Result<Option<AuthUser>, ProviderError> {
        let path = format!("/admin/users/{}", super::http::segment(id));
        let found =
            super::error::not_found_to_none(self.http.send(Method::GET, &path, &[], None, &self.apikey()).await)?;
        found.map(|r| decode(P, r.body, "auth user")).transpose()
    }

    /// `PUT /admin/users/{id}`: sets `password` on the user and merges
    /// `metadata` into its `user_metadata`.
    ///
    /// # Errors
    /// Any [`ProviderError`]; not-found when the user is gone.
    pub async fn set_password(&self, id: &str, password: &Secret, metadata: Value) -> Result<AuthUser, ProviderError> {
        let path = format!("/admin/users/{}", super::http::segment(id));
        let body = json!({"password": password.expose(), "user_metadata": metadata});
        let reply = self.http.send(Method::PUT, &path, &[], Some(&body), &self.apikey()).await?;
        decode(P, reply.body, "auth user")
    }

    /// Every user whose email equals `email` (without case), paging through
    /// `GET /admin/users`.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn find_by_email(&self, email: &str) -> Result<Vec<AuthUser>, ProviderError> {
        let mut found = Vec::new();
        for page in 1..=MAX_PAGES {
            let query = [("page", page.to_string()), ("per_page", PER_PAGE.to_string())];
            let reply = self.http.send(Method::GET, "/admin/users", &query, None, &self.apikey()).await?;
            let users: UserPage = decode(P, reply.body, "auth users")?;
            let last = users.users.len() < PER_PAGE;
            found.extend(
                users.users.into_iter().filter(|u| u.email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(email))),
            );
            if last {
                break;
            }
        }
        Ok(found)
    }
}

/// The admin user Winston wants.
#[derive(Clone, Debug)]
pub struct AdminUserSpec {
    /// The sign-in address; also the marker (unique per project).
    pub email: String,
    /// The temporary password, kept in a Secret before the create.
    pub password: Secret,
}

/// What an admin-user observation reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminUserState {
    pub user: AuthUser,
}

/// [`ExternalResource`] for [`AdminUserSpec`] on one project.
#[derive(Clone, Debug)]
pub struct SupabaseAdminUsers(pub SupabaseAuthClient);

/// The metadata that marks a password the user must change at first sign-in.
#[must_use]
pub fn must_change_password() -> Value {
    json!({"must_change_password": true, "created_by": "winston"})
}

impl ExternalResource for SupabaseAdminUsers {
    type Spec = AdminUserSpec;
    type Observed = AdminUserState;

    /// By id when known, else by email. The password is never compared:
    /// the user may have changed it, which is the point.
    async fn observe(
        &self,
        spec: &AdminUserSpec,
        known_id: Option<&str>,
    ) -> Result<Observation<AdminUserState>, ProviderError> {
        let by_id = |id| self.0.get_user(id);
        let by_marker = self.0.find_by_email(&spec.email);
        match super::find_by_id_or_marker(known_id, by_id, by_marker, |u: &AuthUser| &u.id).await? {
            Ok(user) => {
                Ok(Observation::Ready { id: user.id.clone(), observed: AdminUserState { user }, up_to_date: true })
            }
            Err(settled) => Ok(settled),
        }
    }

    async fn create(&self, spec: &AdminUserSpec) -> Result<Created, ProviderError> {
        let user = self.0.create_user(&spec.email, &spec.password, must_change_password()).await?;
        Ok(Created { id: user.id, operation_id: None })
    }

    /// Nothing to converge: the user owns its password and profile.
    async fn update(&self, _id: &str, _spec: &AdminUserSpec) -> Result<Applied, ProviderError> {
        Ok(Applied::Done)
    }

    /// The user goes with its project; Winston never deletes it alone.
    async fn delete(&self, _id: &str, _spec: &AdminUserSpec) -> Result<Applied, ProviderError> {
        Ok(Applied::Done)
    }
}
