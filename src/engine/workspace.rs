//! The agent's workspace: the files its runtime reads at start, rendered
//! from the instance spec and its plan. Pure and deterministic: the same
//! inputs give byte-identical files and the same content hash, so a resync
//! changes nothing and any real change (persona, plan, skills) changes the
//! hash, which redeploys the service.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::{TenantInstanceSpec, Tone};
use crate::plans::Plan;

/// Rendered files by relative path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub files: BTreeMap<String, String>,
}

impl Workspace {
    /// `sha256:` + hex over every path and content, length-prefixed so no
    /// two different file sets collide by concatenation.
    #[must_use]
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for (path, content) in &self.files {
            h.update((path.len() as u64).to_be_bytes());
            h.update(path.as_bytes());
            h.update((content.len() as u64).to_be_bytes());
            h.update(content.as_bytes());
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    /// The files as one base64 JSON object, the form the service receives
    /// them in (one variable, so a change is one atomic redeploy).
    #[must_use]
    pub fn bundle(&self) -> String {
        let json = serde_json::to_vec(&self.files).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    }
}

fn tone_words(t: Tone) -> &'static str {
    match t {
        Tone::Friendly => "warm and friendly; use plain words and a light touch",
        Tone::Professional => "professional and precise; courteous, never stiff",
        Tone::Playful => "playful and upbeat, while staying helpful and accurate",
        Tone::Formal => "formal and respectful; full sentences, no slang",
        Tone::Concise => "brief and to the point; answer first, details only on request",
    }
}

/// What the files say about the agent, read once from the spec and plan.
struct Agent<'a> {
    instance: &'a str,
    spec: &'a TenantInstanceSpec,
    plan_name: &'a str,
    plan: &'a Plan,
    persona_name: &'a str,
    tone: Tone,
    /// The persona's choice of skills limited to what the plan includes, or
    /// every plan skill when the persona names none.
    skills: Vec<&'a str>,
    capabilities: Vec<&'a str>,
}

impl<'a> Agent<'a> {
    fn of(instance: &'a str, spec: &'a TenantInstanceSpec, plan_name: &'a str, plan: &'a Plan) -> Self {
        let persona = spec.profile.persona.as_ref();
        let skills = match persona.filter(|x| !x.skills.is_empty()) {
            Some(x) => x.skills.iter().map(String::as_str).filter(|s| plan.skills.iter().any(|k| k == s)).collect(),
            None => plan.skills.iter().map(String::as_str).collect(),
        };
        Self {
            instance,
            spec,
            plan_name,
            plan,
            persona_name: persona.map_or("Winston", |x| x.name.as_str()),
            tone: persona.map_or(Tone::Friendly, |x| x.tone),
            skills,
            capabilities: persona.map(|x| x.capabilities.iter().map(String::as_str).collect()).unwrap_or_default(),
        }
    }
}

const AGENTS_MD: &str = "# Operating rules\n\n1. Read SOUL.md and USER.md at the start of every session.\n\
     2. Keep durable facts in the `memories` table, conversations in `conversations`/`messages`.\n\
     3. Every LLM call goes through the Winston proxy with WINSTON_API_KEY; a 402 means the \
     credits are spent: tell the user politely and stop.\n";
const HEARTBEAT_MD: &str =
    "# Heartbeat\n\nEvery 30 minutes: summarise finished conversations into memories; nothing else.\n";
const MEMORY_MD: &str = "# Memory\n\nLong-term memory lives in the database (`memories`).\n";

/// Renders the workspace of the instance `name` with `spec` on `plan`
/// (`plan_name` is the catalog key).
#[must_use]
pub fn render(name: &str, spec: &TenantInstanceSpec, plan_name: &str, plan: &Plan) -> Workspace {
    let a = Agent::of(name, spec, plan_name, plan);
    let mut files = BTreeMap::from([
        ("SOUL.md".to_string(), soul(&a)),
        ("USER.md".to_string(), user(&a)),
        (
            "IDENTITY.md".to_string(),
            format!("# Identity\n\n- Name: {}\n- Instance: {name}\n- Plan: {plan_name}\n", a.persona_name),
        ),
        ("AGENTS.md".to_string(), AGENTS_MD.to_string()),
        ("TOOLS.md".to_string(), tools(&a)),
        ("HEARTBEAT.md".to_string(), HEARTBEAT_MD.to_string()),
        ("MEMORY.md".to_string(), MEMORY_MD.to_string()),
        ("STATE.json".to_string(), state(&a)),
        ("openclaw.json".to_string(), openclaw(&a)),
    ]);
    for s in &a.skills {
        files.insert(
            format!("skills/{s}/SKILL.md"),
            format!("# Skill: {s}\n\nEnabled by the {plan_name} plan for {}.\n", spec.profile.display_name),
        );
    }
    Workspace { files }
}

fn soul(a: &Agent<'_>) -> String {
    let name = a.persona_name;
    let mut soul = format!("# {name}\n\nYou are {name}, the assistant of {}.\n", a.spec.profile.display_name);
    let _ = write!(soul, "\nYour tone is {}.\n", tone_words(a.tone));
    if !a.capabilities.is_empty() {
        soul.push_str("\nYou can:\n");
        for c in &a.capabilities {
            let _ = writeln!(soul, "- {c}");
        }
    }
    soul.push_str("\nNever invent facts about the business; when unsure, say so and offer to pass the question on.\n");
    soul
}

fn user(a: &Agent<'_>) -> String {
    let p = &a.spec.profile;
    let mut user = format!("# {}\n\n", p.display_name);
    if let Some(i) = &p.industry {
        let _ = writeln!(user, "- Industry: {i}");
    }
    if let Some(w) = &p.website {
        let _ = writeln!(user, "- Website: {w}");
    }
    let _ = writeln!(user, "- Contact: {}", p.contact_email);
    user
}

fn tools(a: &Agent<'_>) -> String {
    let mut tools = String::from("# Tools\n\n");
    for s in &a.skills {
        let _ = writeln!(tools, "- `{s}`: see skills/{s}/SKILL.md");
    }
    if a.skills.is_empty() {
        tools.push_str("No skills are enabled on this plan.\n");
    }
    tools
}

fn state(a: &Agent<'_>) -> String {
    pretty(&json!({ "instance": a.instance, "ordinal": a.spec.ordinal, "plan": a.plan_name, "skills": a.skills }))
}

fn openclaw(a: &Agent<'_>) -> String {
    pretty(&json!({
        "agent": { "name": a.persona_name, "workspace": ".", "heartbeat": "HEARTBEAT.md" },
        "model": { "provider": "winston", "baseUrlEnv": "WINSTON_PROXY_URL", "apiKeyEnv": "WINSTON_API_KEY" },
        "database": { "urlEnv": "DATABASE_URL" },
        "gateway": { "tokenEnv": "GATEWAY_TOKEN" },
        "resources": { "cpu": a.plan.resources.cpu, "memory": a.plan.resources.memory },
        "skills": a.skills,
    }))
}

fn pretty(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AgentProfile, Persona, TenantRef};
    use crate::plans::PlanCatalog;

    fn spec(skills: &[&str]) -> TenantInstanceSpec {
        TenantInstanceSpec {
            tenant_ref: TenantRef { name: "bella".into() },
            ordinal: 0,
            plan: "growth".into(),
            profile: AgentProfile {
                display_name: "Bella Bistro".into(),
                contact_email: "owner@bella.example".into(),
                website: Some("https://bella.example".into()),
                industry: Some("Restaurants".into()),
                persona: Some(Persona {
                    name: "Giulia".into(),
                    tone: Tone::Friendly,
                    capabilities: vec!["take reservations".into()],
                    skills: skills.iter().map(|s| (*s).to_string()).collect(),
                }),
            },
            components: Default::default(),
            paused: false,
            deletion_policy: Default::default(),
        }
    }

    #[test]
    fn renders_every_file_deterministically() {
        let cat = PlanCatalog::builtin();
        let plan = cat.get("growth").unwrap();
        let a = render("bella-0", &spec(&["reservations", "menu-qa"]), "growth", plan);
        let b = render("bella-0", &spec(&["reservations", "menu-qa"]), "growth", plan);
        assert_eq!(a, b);
        assert_eq!(a.hash(), b.hash());
        for f in [
            "SOUL.md",
            "USER.md",
            "AGENTS.md",
            "TOOLS.md",
            "HEARTBEAT.md",
            "IDENTITY.md",
            "MEMORY.md",
            "STATE.json",
            "openclaw.json",
            "skills/reservations/SKILL.md",
            "skills/menu-qa/SKILL.md",
        ] {
            assert!(a.files.contains_key(f), "missing {f}");
        }
        assert!(a.files["SOUL.md"].contains("Giulia"));
        assert!(a.hash().starts_with("sha256:"));
    }

    #[test]
    fn skills_are_limited_to_the_plan_and_changes_change_the_hash() {
        let cat = PlanCatalog::builtin();
        let free = cat.get("free").unwrap();
        let w = render("bella-0", &spec(&["reservations", "faq"]), "free", free);
        assert!(w.files.contains_key("skills/faq/SKILL.md"));
        assert!(!w.files.contains_key("skills/reservations/SKILL.md"), "not in the free plan");
        let growth = cat.get("growth").unwrap();
        let other = render("bella-0", &spec(&["reservations"]), "growth", growth);
        assert_ne!(w.hash(), other.hash());
    }
}
