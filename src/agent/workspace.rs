//! The workspace the runtime was deployed with (`WINSTON_WORKSPACE`: base64
//! of a JSON object `{path: content}`, rendered by Winston's workspace step)
//! and the system prompt built from it.
//!
//! The files are Winston's own text plus customer facts in fenced JSON data
//! blocks (see docs/architecture.md, "Free text in the workspace"); the
//! prompt keeps them as they are, so the data stays marked as data.
use std::collections::BTreeMap;

use base64::Engine as _;

/// The files that make up the system prompt, in the order they are read.
pub const PROMPT_FILES: [&str; 5] = ["SOUL.md", "IDENTITY.md", "USER.md", "AGENTS.md", "TOOLS.md"];

/// Why a bundle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("failed to decode the workspace bundle: not base64")]
    Base64,
    #[error("failed to decode the workspace bundle: not a JSON object of strings")]
    Json,
}

/// The workspace files by relative path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workspace {
    pub files: BTreeMap<String, String>,
}

/// One skill the workspace ships (`skills/<name>/SKILL.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skill {
    pub name: String,
    /// The first line of SKILL.md that is not a heading.
    pub description: String,
}

impl Workspace {
    /// Decodes a bundle; `None` (no workspace given) is an empty workspace.
    ///
    /// # Errors
    /// When the bundle is not base64 of a JSON object of strings.
    pub fn decode(bundle: Option<&str>) -> Result<Self, WorkspaceError> {
        let Some(bundle) = bundle.map(str::trim).filter(|b| !b.is_empty()) else {
            return Ok(Self::default());
        };
        let raw = base64::engine::general_purpose::STANDARD.decode(bundle).map_err(|_| WorkspaceError::Base64)?;
        let files = serde_json::from_slice(&raw).map_err(|_| WorkspaceError::Json)?;
        Ok(Self { files })
    }

    /// The skills the workspace ships, by name.
    #[must_use]
    pub fn skills(&self) -> Vec<Skill> {
        self.files
            .iter()
            .filter_map(|(path, text)| {
                let name = path.strip_prefix("skills/")?.strip_suffix("/SKILL.md")?;
                let description = text
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with('#'))
                    .unwrap_or_default()
                    .to_string();
                Some(Skill { name: name.to_string(), description })
            })
            .collect()
    }

    /// The system prompt: the prompt files in [`PROMPT_FILES`] order, then
    /// the SKILL.md of each skill in `enabled` that the workspace ships.
    #[must_use]
    pub fn system_prompt(&self, enabled: &[String]) -> String {
        let mut parts: Vec<String> =
            PROMPT_FILES.iter().filter_map(|f| self.files.get(*f)).map(|t| t.trim_end().to_string()).collect();
        let skills: Vec<String> = enabled
            .iter()
            .filter_map(|name| self.files.get(&format!("skills/{name}/SKILL.md")))
            .map(|t| t.trim_end().to_string())
            .collect();
        if !skills.is_empty() {
            parts.push(format!("# Enabled skills\n\n{}", skills.join("\n\n")));
        }
        if parts.is_empty() {
            parts.push("You are a helpful assistant.".into());
        }
        parts.join("\n\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(files: &[(&str, &str)]) -> String {
        let map: BTreeMap<&str, &str> = files.iter().copied().collect();
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&map).unwrap_or_default())
    }

    #[test]
    fn the_prompt_has_the_files_in_order_and_only_enabled_skills() {
        let b = bundle(&[
            ("USER.md", "# User\nbiz"),
            ("SOUL.md", "# Soul\nkind"),
            ("TOOLS.md", "# Tools"),
            ("skills/faq/SKILL.md", "# Skill: faq\n\nAnswers questions.\n"),
            ("skills/booking/SKILL.md", "# Skill: booking\n\nBooks tables.\n"),
        ]);
        let ws = Workspace::decode(Some(&b)).expect("decodes");
        let p = ws.system_prompt(&["faq".into(), "ghost".into()]);
        let soul = p.find("# Soul").expect("soul");
        let user = p.find("# User").expect("user");
        assert!(soul < user);
        assert!(p.contains("Answers questions."));
        assert!(!p.contains("Books tables."));
        let names: Vec<String> = ws.skills().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["booking", "faq"]);
        assert_eq!(ws.skills()[1].description, "Answers questions.");
    }

    #[test]
    fn a_bad_bundle_is_an_error_and_none_is_empty() {
        assert!(matches!(Workspace::decode(Some("%%%")), Err(WorkspaceError::Base64)));
        let not_object = base64::engine::general_purpose::STANDARD.encode("[1]");
        assert!(matches!(Workspace::decode(Some(&not_object)), Err(WorkspaceError::Json)));
        assert_eq!(Workspace::decode(None).expect("empty"), Workspace::default());
    }
}
