//! The emails Winston writes to a customer (welcome, failure) from
//! templates, and the operator's deadline notification. Templates are
//! configuration: a directory (`--email-templates`, the chart mounts a
//! ConfigMap there) of files named `[<plan>.]<kind>.<part>`, with `kind`
//! `welcome` or `failure` and `part` `subject`, `txt` or `html`. A part is
//! taken from `<plan>.<kind>.<part>` when the directory has it, else from
//! `<kind>.<part>`, else from the defaults built into Winston
//! (`config/email/`).
//!
//! A template names values as `{{name}}` (see [`PLACEHOLDERS`]); anything
//! else between braces is refused when the templates are loaded, so a typo
//! fails at start-up, not in a customer's inbox. Values are escaped in the
//! HTML part. `{{api_key}}` is only allowed in welcome templates: the key
//! is read from the credentials Secret only when the template asks for it
//! and leaves Winston only in that email (never in status, Events or logs).
use std::collections::BTreeMap;
use std::path::Path;

/// The values a template may name.
pub const PLACEHOLDERS: [&str; 11] = [
    "display_name",
    "agent_name",
    "plan",
    "agent_url",
    "service_url",
    "frontend_url",
    "proxy_url",
    "instance",
    "api_key",
    "temporary_password",
    "admin_email",
];

/// Placeholders only a welcome email may name: secrets delivered once.
const WELCOME_ONLY: [&str; 3] = ["api_key", "temporary_password", "admin_email"];

/// Which email.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Sent once when an instance is first Ready.
    Welcome,
    /// Sent once when an instance that was never Ready passes its deadline.
    Failure,
    /// The welcome of a stack with an application admin user (the agency
    /// stack): it carries the admin's email and temporary password.
    AdminWelcome,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Welcome => "welcome",
            Self::Failure => "failure",
            Self::AdminWelcome => "admin-welcome",
        }
    }
}

const PARTS: [&str; 3] = ["subject", "txt", "html"];

/// Errors loading templates.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("failed to read the email templates in {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("failed to load email template {file}: {why}")]
    Invalid { file: String, why: String },
}

/// A rendered email.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Message {
    /// The subject only: a welcome body may carry the API key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message").field("subject", &self.subject).finish_non_exhaustive()
    }
}

/// Values for one rendering; absent values render as nothing.
#[derive(Clone, Default)]
pub struct Values(BTreeMap<&'static str, String>);

impl Values {
    /// Sets `name` (one of [`PLACEHOLDERS`]).
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) -> &mut Self {
        self.0.insert(name, value.into());
        self
    }
}

/// Every template file, by file name, built-in defaults included.
#[derive(Clone, Debug)]
pub struct Templates {
    files: BTreeMap<String, String>,
}

const BUILTIN: [(&str, &str); 9] = [
    ("welcome.subject", include_str!("../../config/email/welcome.subject")),
    ("welcome.txt", include_str!("../../config/email/welcome.txt")),
    ("welcome.html", include_str!("../../config/email/welcome.html")),
    ("failure.subject", include_str!("../../config/email/failure.subject")),
    ("failure.txt", include_str!("../../config/email/failure.txt")),
    ("failure.html", include_str!("../../config/email/failure.html")),
    ("admin-welcome.subject", include_str!("../../config/email/admin-welcome.subject")),
    ("admin-welcome.txt", include_str!("../../config/email/admin-welcome.txt")),
    ("admin-welcome.html", include_str!("../../config/email/admin-welcome.html")),
];

impl Templates {
    /// The built-in templates only.
    ///
    /// # Panics
    /// Never: the built-in files are checked by a unit test.
    #[must_use]
    pub fn builtin() -> Self {
        let files = BUILTIN.iter().map(|(n, t)| ((*n).to_string(), (*t).to_string())).collect();
        Self { files }
    }

    /// The built-in templates overlaid with the files of `dir`.
    ///
    /// # Errors
    /// An unreadable directory or file, a file name that is not
    /// `[<plan>.]<kind>.<part>`, an unknown placeholder, or `{{api_key}}`
    /// in a failure template. Hidden entries (a ConfigMap volume's `..data`)
    /// are skipped.
    pub fn load(dir: Option<&Path>) -> Result<Self, MailError> {
        let mut t = Self::builtin();
        let Some(dir) = dir else { return Ok(t) };
        let read_err = |source| MailError::Read { path: dir.display().to_string(), source };
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
            if name.starts_with('.') || path.is_dir() {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(read_err)?;
            validate(&name, &text)?;
            t.files.insert(name, text);
        }
        Ok(t)
    }

    fn part(&self, kind: Kind, plan: &str, part: &str) -> &str {
        let generic = format!("{}.{part}", kind.as_str());
        self.files.get(&format!("{plan}.{generic}")).or_else(|| self.files.get(&generic)).map_or("", String::as_str)
    }

    /// Whether the `kind` email of `plan` names `placeholder` anywhere.
    #[must_use]
    pub fn asks_for(&self, kind: Kind, plan: &str, placeholder: &str) -> bool {
        PARTS.iter().any(|p| placeholders(self.part(kind, plan, p)).iter().any(|n| n == placeholder))
    }

    /// Renders the `kind` email of `plan`.
    #[must_use]
    pub fn render(&self, kind: Kind, plan: &str, values: &Values) -> Message {
        let subject = fill(self.part(kind, plan, "subject"), values, false);
        Message {
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: fill(self.part(kind, plan, "txt"), values, false),
            html: fill(self.part(kind, plan, "html"), values, true),
        }
    }
}

/// Checks one template file's name and placeholders.
fn validate(name: &str, text: &str) -> Result<(), MailError> {
    let invalid = |why: String| MailError::Invalid { file: name.to_string(), why };
    let segments: Vec<&str> = name.split('.').collect();
    let (kind, part) = match segments.as_slice() {
        [kind, part] | [_, kind, part] => (*kind, *part),
        _ => return Err(invalid("the name must be [<plan>.]<welcome|failure>.<subject|txt|html>".into())),
    };
    if !matches!(kind, "welcome" | "failure" | "admin-welcome") || !PARTS.contains(&part) {
        return Err(invalid("the name must be [<plan>.]<welcome|admin-welcome|failure>.<subject|txt|html>".into()));
    }
    if text.matches("{{").count() != text.matches("}}").count() {
        return Err(invalid("unbalanced {{ }}".into()));
    }
    for p in placeholders(text) {
        if !PLACEHOLDERS.contains(&p.as_str()) {
            return Err(invalid(format!("unknown placeholder {{{{{p}}}}} (known: {})", PLACEHOLDERS.join(", "))));
        }
        if WELCOME_ONLY.contains(&p.as_str()) && kind == "failure" {
            return Err(invalid(format!("{{{{{p}}}}} is delivered by the welcome email only")));
        }
    }
    Ok(())
}

/// The names between `{{` and `}}` in `text`, trimmed.
fn placeholders(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim().to_string());
        rest = &after[end + 2..];
    }
    out
}

/// `template` with every placeholder replaced by its value (HTML-escaped
/// when `html`).
fn fill(template: &str, values: &Values, html: bool) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let value = values.0.get(after[..end].trim()).map_or("", String::as_str);
        if html {
            out.push_str(&escape_html(value));
        } else {
            out.push_str(value);
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        let mut v = Values::default();
        v.set("display_name", "Acme <Dental> & Co").set("agent_name", "Ava").set("plan", "starter");
        v.set("agent_url", "https://acme.up.railway.app").set("api_key", "wk_secret123");
        v.set("proxy_url", "https://llm.example");
        v
    }

    #[test]
    fn the_builtin_templates_are_valid_and_useful_without_cluster_access() {
        for (name, text) in BUILTIN {
            validate(name, text).unwrap_or_else(|e| panic!("{e}"));
        }
        let t = Templates::builtin();
        let m = t.render(Kind::Welcome, "starter", &values());
        for part in [&m.text, &m.html] {
            assert!(part.contains("https://acme.up.railway.app"), "{part}");
            assert!(part.contains("wk_secret123"), "{part}");
            assert!(!part.to_lowercase().contains("kubectl") && !part.contains("Secret "), "{part}");
        }
        assert!(m.html.contains("Acme &lt;Dental&gt; &amp; Co") && m.text.contains("Acme <Dental> & Co"));
        assert_eq!(m.subject, "Ava, the AI agent of Acme <Dental> & Co, is ready");
        assert!(t.asks_for(Kind::Welcome, "starter", "api_key"));
        assert!(!t.asks_for(Kind::Failure, "starter", "api_key"));
        assert!(!format!("{m:?}").contains("wk_secret123"), "Debug must not show the body");
    }

    #[test]
    fn the_admin_welcome_carries_the_temporary_password_once_per_part() {
        let t = Templates::builtin();
        let mut v = values();
        v.set("temporary_password", "Tmp-<pw>&1").set("admin_email", "boss@acme.example");
        v.set("agent_url", "https://wn-abc.vercel.app");
        let m = t.render(Kind::AdminWelcome, "growth", &v);
        assert_eq!(m.text.matches("Tmp-<pw>&1").count(), 1, "{}", m.text);
        assert_eq!(m.html.matches("Tmp-&lt;pw&gt;&amp;1").count(), 1, "{}", m.html);
        for part in [&m.text, &m.html] {
            assert!(part.contains("boss@acme.example") && part.contains("https://wn-abc.vercel.app"), "{part}");
        }
        assert!(t.asks_for(Kind::AdminWelcome, "growth", "temporary_password"));
        assert!(!t.asks_for(Kind::Welcome, "growth", "temporary_password"));
        assert!(!format!("{m:?}").contains("Tmp-"), "Debug must not show the body");
    }

    #[test]
    fn a_plan_file_overrides_the_generic_one_part_by_part() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("growth.welcome.txt"), "Growth! {{agent_url}}").unwrap();
        std::fs::write(dir.path().join("welcome.subject"), "Hi {{display_name}}").unwrap();
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let growth = t.render(Kind::Welcome, "growth", &values());
        assert_eq!(growth.text, "Growth! https://acme.up.railway.app");
        assert_eq!(growth.subject, "Hi Acme <Dental> & Co");
        assert!(growth.html.contains("wk_secret123"), "built-in html kept");
        assert!(t.asks_for(Kind::Welcome, "growth", "api_key"), "the built-in html part asks for it");
        let free = t.render(Kind::Welcome, "free", &values());
        assert!(free.text.contains("wk_secret123"), "other plans keep the built-in text");
    }

    #[test]
    fn bad_templates_fail_at_load() {
        let rows = [
            ("welcome.txt", "{{ apikey }}", "unknown placeholder"),
            ("failure.html", "{{temporary_password}}", "welcome email only"),
            ("growth.failure.txt", "{{ admin_email }}", "welcome email only"),
            ("failure.txt", "{{api_key}}", "welcome email only"),
            ("welcome.md", "x", "the name must be"),
            ("a.b.welcome.txt", "x", "the name must be"),
            ("welcome.html", "{{agent_url}", "unbalanced"),
        ];
        for (name, text, want) in rows {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(name), text).unwrap();
            let e = Templates::load(Some(dir.path())).expect_err(name).to_string();
            assert!(e.contains(want) && e.contains(name), "{name}: {e}");
        }
    }
}
