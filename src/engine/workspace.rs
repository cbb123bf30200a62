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

/// Renders the workspace of the instance `name` with `spec` on `plan`
/// (`plan_name` is the catalog key).
#[must_use]
pub fn render(name: &str, spec: &TenantInstanceSpec, plan_name: &str, plan: &Plan) -> Workspace {
    let p = &spec.profile;
    let persona_name = p.persona.as_ref().map_or("Winston", |x| x.name.as_str());
    let tone = p.persona.as_ref().map_or(Tone::Friendly, |x| x.tone);
    // Skills: the persona's choice limited to what the plan includes, or
    // every plan skill when the persona names none.
    let wanted: Vec<&str> = match p.persona.as_ref().filter(|x| !x.skills.is_empty()) {
        Some(x) => x.skills.iter().map(String::as_str).filter(|s| plan.skills.iter().any(|k| k == s)).collect(),
        None => plan.skills.iter().map(String::as_str).collect(),
    };
    let capabilities: Vec<&str> =
        p.persona.as_ref().map(|x| x.capabilities.iter().map(String::as_str).collect()).unwrap_or_default();

    let mut files = BTreeMap::new();
    let mut soul = format!("# {persona_name}\n\nYou are {persona_name}, the assistant of {}.\n", p.display_name);
    let _ = write!(soul, "\nYour tone is {}.\n", tone_words(tone));
    if !capabilities.is_empty() {
        soul.push_str("\nYou can:\n");
        for c in &capabilities {
            let _ = writeln!(soul, "- {c}");
        }
    }
    soul.push_str("\nNever invent facts about the business; when unsure, say so and offer to pass the question on.\n");
    files.insert("SOUL.md".into(), soul);

    let mut user = format!("# {}\n\n", p.display_name);
    if let Some(i) = &p.industry {
        let _ = writeln!(user, "- Industry: {i}");
    }
    if let Some(w) = &p.website {
        let _ = writeln!(user, "- Website: {w}");
    }
    let _ = writeln!(user, "- Contact: {}", p.contact_email);
    files.insert("USER.md".into(), user);

    files.insert(
        "IDENTITY.md".into(),
        format!("# Identity\n\n- Name: {persona_name}\n- Instance: {name}\n- Plan: {plan_name}\n"),
    );
    files.insert(
        "AGENTS.md".into(),
        "# Operating rules\n\n1. Read SOUL.md and USER.md at the start of every session.\n\
         2. Keep durable facts in the `memories` table, conversations in `conversations`/`messages`.\n\
         3. Every LLM call goes through the Winston proxy with WINSTON_API_KEY; a 402 means the \
         credits are spent: tell the user politely and stop.\n"
            .into(),
    );
    let mut tools = String::from("# Tools\n\n");
    for s in &wanted {
        let _ = writeln!(tools, "- `{s}`: see skills/{s}/SKILL.md");
    }
    if wanted.is_empty() {
        tools.push_str("No skills are enabled on this plan.\n");
    }
    files.insert("TOOLS.md".into(), tools);
    files.insert(
        "HEARTBEAT.md".into(),
        "# Heartbeat\n\nEvery 30 minutes: summarise finished conversations into memories; nothing else.\n".into(),
    );
    files.insert("MEMORY.md".into(), "# Memory\n\nLong-term memory lives in the database (`memories`).\n".into());
    files.insert(
        "STATE.json".into(),
        pretty(&json!({ "instance": name, "ordinal": spec.ordinal, "plan": plan_name, "skills": wanted })),
    );
    files.insert(
        "openclaw.json".into(),
        pretty(&json!({
            "agent": { "name": persona_name, "workspace": ".", "heartbeat": "HEARTBEAT.md" },
            "model": { "provider": "winston", "baseUrlEnv": "WINSTON_PROXY_URL", "apiKeyEnv": "WINSTON_API_KEY" },
            "database": { "urlEnv": "DATABASE_URL" },
            "gateway": { "tokenEnv": "GATEWAY_TOKEN" },
            "resources": { "cpu": plan.resources.cpu, "memory": plan.resources.memory },
            "skills": wanted,
        })),
    );
    for s in &wanted {
        files.insert(
            format!("skills/{s}/SKILL.md"),
            format!("# Skill: {s}\n\nEnabled by the {plan_name} plan for {}.\n", p.display_name),
        );
    }
    Workspace { files }
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
