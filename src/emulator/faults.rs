//! Fault injection for the emulators: `POST /_emulator/faults` arms a fault
//! for a platform and operation with a count; the next matching requests
//! consume it. `GET` lists what is armed, `DELETE` disarms everything.
//!
//! Operation names: Railway uses the GraphQL root field (`serviceCreate`,
//! `deployment`, ...). The REST platforms use these names:
//! - Neon: `createProject`, `listProjects`, `getProject`, `deleteProject`,
//!   `getConnectionUri`, `listProjectOperations`, `getProjectOperation`;
//! - Vercel: `createProject`, `getProject`, `deleteProject`, `createEnv`,
//!   `listEnv`, `createDeployment`, `getDeployment`, `listDeployments`,
//!   `deleteDeployment`;
//! - Supabase: `createProject`, `listProjects`, `getProject`,
//!   `deleteProject`, `apiKeys`, `health`; each project's Auth:
//!   `createUser`, `listUsers`, `getUser`, `updateUser`, `signIn`;
//! - Resend: `sendEmail`, `getEmail`.
//!
//! `*` matches every operation of the platform. `fail_deployment` is not
//! tied to a request: the next Railway or Vercel deployment ends FAILED /
//! ERROR (on Railway, `"state": "CRASHED"` or `"SLEEPING"` ends it so
//! instead), the next Supabase project ends INIT_FAILED.
use std::sync::Mutex;

use crate::platform::Platform;

/// The kinds of fault the emulator can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 429 in the platform's envelope with `Retry-After: retry_after_secs`.
    RateLimit,
    /// `status` (default 500) in the platform's envelope; nothing performed.
    ServerError,
    /// Sleep `delay_ms` before handling (to exceed a client timeout).
    Delay,
    /// Perform the request, then break the connection instead of answering.
    DropResponse,
    /// The next deployment created on the platform ends in its failed state.
    FailDeployment,
    /// 423 Locked (Neon's "another operation is in progress").
    Locked,
}

/// One armed fault as posted to `/_emulator/faults`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Fault {
    pub platform: Platform,
    #[serde(default = "any_operation")]
    pub operation: String,
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u64,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// With `fail_deployment` on Railway: the state the deployment ends in
    /// instead of FAILED (`CRASHED`, or `SLEEPING`, which succeeded).
    #[serde(default)]
    pub state: Option<String>,
}

fn any_operation() -> String {
    "*".into()
}
fn one() -> u32 {
    1
}
fn default_retry_after() -> u64 {
    1
}

/// The armed faults of one emulator process.
#[derive(Debug, Default)]
pub struct FaultBook {
    armed: Mutex<Vec<Fault>>,
}

impl FaultBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.armed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Arms `fault` (a zero count arms nothing).
    pub fn arm(&self, fault: Fault) {
        if fault.count > 0 {
            self.lock().push(fault);
        }
    }

    /// Everything still armed.
    pub fn list(&self) -> Vec<Fault> {
        self.lock().clone()
    }

    /// Disarms everything.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Consumes one request-level fault matching `platform` + `operation`.
    pub fn take_request(&self, platform: Platform, operation: &str) -> Option<Fault> {
        self.take(|f| {
            f.platform == platform
                && f.kind != FaultKind::FailDeployment
                && (f.operation == "*" || f.operation == operation)
        })
    }

    /// Consumes one armed `FailDeployment` for `platform`.
    pub fn take_failed_deployment(&self, platform: Platform) -> bool {
        self.take_deployment_end(platform).is_some()
    }

    /// Consumes one armed `FailDeployment` for `platform`: the state the
    /// deployment ends in (`FAILED` unless the fault names another).
    pub fn take_deployment_end(&self, platform: Platform) -> Option<String> {
        let fault = self.take(|f| f.platform == platform && f.kind == FaultKind::FailDeployment)?;
        Some(fault.state.unwrap_or_else(|| "FAILED".into()))
    }

    fn take(&self, matches: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let mut armed = self.lock();
        let idx = armed.iter().position(matches)?;
        let fault = armed[idx].clone();
        armed[idx].count -= 1;
        if armed[idx].count == 0 {
            armed.remove(idx);
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_consumed_by_count_and_operation() {
        let book = FaultBook::default();
        book.arm(
            serde_json::from_value(serde_json::json!({
                "platform": "neon", "operation": "createProject", "kind": "locked", "count": 2
            }))
            .unwrap(),
        );
        assert!(book.take_request(Platform::Neon, "getConnectionUri").is_none());
        assert!(book.take_request(Platform::Railway, "createProject").is_none());
        assert_eq!(book.take_request(Platform::Neon, "createProject").unwrap().kind, FaultKind::Locked);
        assert!(book.take_request(Platform::Neon, "createProject").is_some());
        assert!(book.take_request(Platform::Neon, "createProject").is_none());
        book.arm(Fault {
            platform: Platform::Railway,
            operation: "*".into(),
            kind: FaultKind::FailDeployment,
            count: 1,
            retry_after_secs: 1,
            status: None,
            delay_ms: None,
            state: None,
        });
        assert!(book.take_request(Platform::Railway, "deployment").is_none());
        assert!(book.take_failed_deployment(Platform::Railway));
        assert!(!book.take_failed_deployment(Platform::Railway));
    }
}
