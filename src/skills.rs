//! The skill catalog: skills are data, one `skills/<name>/SKILL.md` each
//! (YAML front matter, then the instructions the agent reads), built into
//! the binary. This module parses and validates them and decides which a
//! tenant gets: by plan, by industry, and by the connectors it has.
//!
//! Selection, for one tenant:
//! - **plan**: a skill is offered when the plan catalog's `skills` list for
//!   the plan names it (configuration, `config/plans.yaml` / Helm values), or
//!   when the skill's own `plans` lists the plan (industry packs, which the
//!   plan catalog does not name);
//! - **industry**: a skill with `industries` is offered only when the
//!   tenant's industry or sub-industry (from the spec, else the website
//!   profile) matches one of them; a skill without is for every industry.
//!   Matching ignores case, separators and plurals, and knows other names
//!   of an industry from `skills/industries.yaml` ([`Industries`]):
//!   "Dispensaries" and "cannabis retail" select what "cannabis" does;
//!   While the industry is unknown, the plan catalog's skills are offered
//!   as they are and industry packs are not;
//! - **connectors**: a skill that `requires` connectors is installed only
//!   when the tenant has each of them; otherwise it waits, and the result
//!   says on which connectors.
//!
//! Pure: no IO beyond reading a directory in [`SkillCatalog::load_dir`],
//! nothing of Winston's above it. Installing the files and reporting the
//! waiting skills in status are the engine's and the controller's.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The skills shipped with Winston, as (directory name, SKILL.md).
const BUILTIN: &[(&str, &str)] = &[
    ("analytics", include_str!("../skills/analytics/SKILL.md")),
    ("booking", include_str!("../skills/booking/SKILL.md")),
    ("crm", include_str!("../skills/crm/SKILL.md")),
    ("faq", include_str!("../skills/faq/SKILL.md")),
    ("inventory-lookup", include_str!("../skills/inventory-lookup/SKILL.md")),
    ("menu-qa", include_str!("../skills/menu-qa/SKILL.md")),
    ("reservations", include_str!("../skills/reservations/SKILL.md")),
    ("sales-summary", include_str!("../skills/sales-summary/SKILL.md")),
    ("social-media", include_str!("../skills/social-media/SKILL.md")),
];

/// The industry aliases kept beside the skills (`skills/industries.yaml`).
const BUILTIN_INDUSTRIES: &str = include_str!("../skills/industries.yaml");
/// The alias table's file name inside a skills directory.
const INDUSTRIES_FILE: &str = "industries.yaml";

/// Longest description, in characters.
const MAX_DESCRIPTION: usize = 300;
/// Shortest instructions, in characters: a skill is more than a title.
const MIN_INSTRUCTIONS: usize = 200;

/// A skill file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SkillError {
    #[error("failed to read the skill {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("failed to parse the skill {name}: {message}")]
    Parse { name: String, message: String },
    #[error("failed to validate the skill {name}: {message}")]
    Invalid { name: String, message: String },
}

/// Who a skill serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// The business's own people (sales figures, customer records).
    Staff,
    /// The business's customers.
    Customers,
}

/// A skill's front matter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillMeta {
    /// The skill's name: its directory's name, DNS-label-like.
    pub name: String,
    /// One line saying what it does.
    pub description: String,
    /// Industry slugs it is for; empty: every industry.
    #[serde(default)]
    pub industries: Vec<String>,
    /// Plans that offer it by default (besides the plan catalog's list).
    #[serde(default)]
    pub plans: Vec<String>,
    /// Connector types it needs (for example `pos`).
    #[serde(default)]
    pub requires: Vec<String>,
    /// Who it serves.
    pub audience: Vec<Audience>,
}

/// A skill: its front matter and the whole file as the agent receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skill {
    pub meta: SkillMeta,
    /// The SKILL.md text, front matter included.
    pub file: String,
}

impl Skill {
    /// Parses and validates one SKILL.md whose directory is `dir_name`.
    ///
    /// # Errors
    /// [`SkillError::Parse`] without a `---` front matter or with invalid
    /// YAML or unknown keys; [`SkillError::Invalid`] when a rule is broken.
    pub fn parse(dir_name: &str, file: &str) -> Result<Self, SkillError> {
        let parse_err = |message: String| SkillError::Parse { name: dir_name.to_string(), message };
        let rest = file
            .strip_prefix("---\n")
            .ok_or_else(|| parse_err("no front matter: the file must start with ---".into()))?;
        let end = rest.find("\n---\n").ok_or_else(|| parse_err("the front matter has no closing ---".into()))?;
        let meta: SkillMeta = serde_saphyr::from_str(&rest[..end]).map_err(|e| parse_err(e.to_string()))?;
        let instructions = &rest[end + 5..];
        validate(dir_name, &meta, instructions)?;
        Ok(Self { meta, file: file.to_string() })
    }

    /// The instructions after the front matter.
    #[must_use]
    pub fn instructions(&self) -> &str {
        self.file.strip_prefix("---\n").and_then(|r| r.find("\n---\n").map(|e| &r[e + 5..])).unwrap_or("")
    }
}

fn validate(dir_name: &str, meta: &SkillMeta, instructions: &str) -> Result<(), SkillError> {
    let invalid = |message: String| SkillError::Invalid { name: dir_name.to_string(), message };
    if meta.name != dir_name || !is_slug(&meta.name) {
        return Err(invalid(format!("name {:?} must equal its directory name and be a lowercase slug", meta.name)));
    }
    let d = meta.description.trim();
    if d.is_empty() || d.chars().count() > MAX_DESCRIPTION || d.contains('\n') {
        return Err(invalid(format!("description must be one line of 1 to {MAX_DESCRIPTION} characters")));
    }
    for (field, values) in [("industries", &meta.industries), ("plans", &meta.plans), ("requires", &meta.requires)] {
        if let Some(bad) = values.iter().find(|v| !is_slug(v)) {
            return Err(invalid(format!("{field} entry {bad:?} must be a lowercase slug")));
        }
    }
    if meta.audience.is_empty() {
        return Err(invalid("audience must name staff, customers or both".into()));
    }
    if instructions.trim().chars().count() < MIN_INSTRUCTIONS || !instructions.trim_start().starts_with("# ") {
        return Err(invalid(format!(
            "instructions must start with a # title and hold at least {MIN_INSTRUCTIONS} characters"
        )));
    }
    Ok(())
}

/// `a-z0-9` and inner `-`, 1 to 63 characters.
fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Free text ("Cannabis Dispensary", "dental clinic") as a slug.
#[must_use]
pub fn slug(text: &str) -> String {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    words.join("-")
}

/// Who a tenant is, for selecting skills.
#[derive(Clone, Debug, Default)]
pub struct Selection<'a> {
    /// The tenant's plan name.
    pub plan: &'a str,
    /// The skills the plan catalog lists for that plan.
    pub plan_skills: &'a [String],
    /// The tenant's industry and sub-industry as free text (spec first,
    /// else the website profile); empty when unknown.
    pub industries: &'a [&'a str],
    /// Connector types the tenant has (for example `pos`).
    pub connectors: &'a [&'a str],
}

/// A skill waiting for connectors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Waiting {
    pub skill: String,
    /// Connector types still missing.
    pub connectors: Vec<String>,
}

/// Which skills a tenant gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selected<'c> {
    /// To install, by name.
    pub installed: Vec<&'c Skill>,
    /// Offered but waiting for connectors.
    pub waiting: Vec<Waiting>,
    /// Names the plan catalog lists that no skill file defines.
    pub unknown: Vec<String>,
}

impl Selected<'_> {
    /// Names of the installed skills.
    #[must_use]
    pub fn installed_names(&self) -> Vec<&str> {
        self.installed.iter().map(|s| s.meta.name.as_str()).collect()
    }
}

/// Every known skill by name, and the industry aliases they are selected with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkillCatalog {
    skills: BTreeMap<String, Skill>,
    industries: Industries,
}

impl SkillCatalog {
    /// The skills built into the binary (`skills/`).
    ///
    /// # Errors
    /// When a built-in file is invalid (a unit test keeps them valid).
    pub fn builtin() -> Result<Self, SkillError> {
        let industries = Industries::parse(BUILTIN_INDUSTRIES)?;
        Self::from_files(BUILTIN.iter().map(|(dir, file)| ((*dir).to_string(), (*file).to_string())), industries)
    }

    /// The skills of a directory laid out as `skills/` is (one
    /// `<name>/SKILL.md` per skill, and the aliases in `industries.yaml`
    /// when it exists).
    ///
    /// # Errors
    /// When the directory or a file cannot be read or a file is invalid.
    pub fn load_dir(dir: &Path) -> Result<Self, SkillError> {
        let read_err = |path: &Path, source| SkillError::Read { path: path.display().to_string(), source };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
            let entry = entry.map_err(|e| read_err(dir, e))?;
            let path = entry.path().join("SKILL.md");
            if !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
            files.push((entry.file_name().to_string_lossy().into_owned(), text));
        }
        let aliases = dir.join(INDUSTRIES_FILE);
        let industries = match std::fs::read_to_string(&aliases) {
            Ok(text) => Industries::parse(&text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Industries::default(),
            Err(e) => return Err(read_err(&aliases, e)),
        };
        Self::from_files(files, industries)
    }

    fn from_files(
        files: impl IntoIterator<Item = (String, String)>,
        industries: Industries,
    ) -> Result<Self, SkillError> {
        let mut skills = BTreeMap::new();
        for (dir, file) in files {
            let skill = Skill::parse(&dir, &file)?;
            skills.insert(skill.meta.name.clone(), skill);
        }
        Ok(Self { skills, industries })
    }

    /// The skill called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Skill> {
        self.skills.get(name)
    }

    /// Every skill, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Skill> {
        self.skills.values()
    }

    /// The skills a tenant gets (see the module's rules), in name order.
    #[must_use]
    pub fn select(&self, who: &Selection<'_>) -> Selected<'_> {
        let tenant = tenant_words(who);
        let mut out = Selected {
            unknown: who.plan_skills.iter().filter(|n| !self.skills.contains_key(*n)).cloned().collect(),
            ..Selected::default()
        };
        for skill in self.skills.values() {
            let m = &skill.meta;
            if !offered(m, who) || !self.suits(m, who, &tenant) {
                continue;
            }
            let missing: Vec<String> =
                m.requires.iter().filter(|c| !who.connectors.contains(&c.as_str())).cloned().collect();
            if missing.is_empty() {
                out.installed.push(skill);
            } else {
                out.waiting.push(Waiting { skill: m.name.clone(), connectors: missing });
            }
        }
        out
    }

    /// Why [`Self::select`] does not offer the skill `name` to `who`: no
    /// such skill, not offered on the plan, or not for the tenant's
    /// industry. `None` when it is offered (installed, or waiting on
    /// connectors).
    #[must_use]
    pub fn not_offered(&self, name: &str, who: &Selection<'_>) -> Option<NotOffered> {
        let Some(skill) = self.skills.get(name) else { return Some(NotOffered::UnknownSkill) };
        if !offered(&skill.meta, who) {
            Some(NotOffered::NotInPlan)
        } else if !self.suits(&skill.meta, who, &tenant_words(who)) {
            Some(NotOffered::NotForIndustry)
        } else {
            None
        }
    }

    fn suits(&self, m: &SkillMeta, who: &Selection<'_>, tenant: &[Vec<String>]) -> bool {
        if tenant.is_empty() {
            m.industries.is_empty() || who.plan_skills.contains(&m.name)
        } else {
            self.industries.suits(&m.industries, tenant)
        }
    }
}

/// Why a skill is not offered to a tenant (see [`SkillCatalog::not_offered`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotOffered {
    /// No skill file has that name.
    UnknownSkill,
    /// The plan catalog does not list it for the plan, nor does the skill name the plan.
    NotInPlan,
    /// The skill is for other industries than the tenant's.
    NotForIndustry,
}

/// Whether the plan offers `m`: the plan catalog lists it, or it names the plan.
fn offered(m: &SkillMeta, who: &Selection<'_>) -> bool {
    who.plan_skills.contains(&m.name) || m.plans.iter().any(|p| p == who.plan)
}

/// The tenant's industries as words (empty while the industry is unknown).
fn tenant_words(who: &Selection<'_>) -> Vec<Vec<String>> {
    who.industries.iter().map(|i| words(i)).filter(|w| !w.is_empty()).collect()
}

/// Other names of the industries skills are for (`skills/industries.yaml`):
/// each phrase, normalised by [`words`], and the industry slug it names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Industries {
    phrases: Vec<(Vec<String>, String)>,
}

impl Industries {
    /// Parses the alias table: industry slug -> phrases.
    ///
    /// # Errors
    /// [`SkillError::Parse`] on invalid YAML, [`SkillError::Invalid`] on a
    /// key that is not a slug or a phrase without a word.
    pub fn parse(yaml: &str) -> Result<Self, SkillError> {
        let name = INDUSTRIES_FILE.to_string();
        let table: BTreeMap<String, Vec<String>> = serde_saphyr::from_str(yaml)
            .map_err(|e| SkillError::Parse { name: name.clone(), message: e.to_string() })?;
        let mut phrases = Vec::new();
        for (industry, names) in table {
            let invalid = |message: String| SkillError::Invalid { name: name.clone(), message };
            if !is_slug(&industry) {
                return Err(invalid(format!("industry {industry:?} must be a lowercase slug")));
            }
            for phrase in names {
                let w = words(&phrase);
                if w.is_empty() {
                    return Err(invalid(format!("{industry}: phrase {phrase:?} has no word")));
                }
                phrases.push((w, industry.clone()));
            }
        }
        Ok(Self { phrases })
    }

    /// The industries `text` (normalised by [`words`]) names: those with a
    /// phrase occurring in it as whole words.
    fn named_by<'a>(&'a self, text: &'a [String]) -> impl Iterator<Item = &'a str> + 'a {
        self.phrases.iter().filter(|(p, _)| contains_words(text, p)).map(|(_, industry)| industry.as_str())
    }

    /// Whether a skill for `skill_industries` suits a tenant whose industry
    /// texts are `tenant` (each normalised by [`words`]): a skill industry's
    /// own words occur in a tenant text ("dispensary" in "cannabis
    /// dispensaries"), or the two name a common industry through the alias
    /// table ("marijuana store" and "cannabis").
    fn suits(&self, skill_industries: &[String], tenant: &[Vec<String>]) -> bool {
        skill_industries.is_empty()
            || tenant.iter().any(|t| {
                skill_industries.iter().any(|s| {
                    let s = words(s);
                    contains_words(t, &s) || self.named_by(&s).any(|i| self.named_by(t).any(|j| i == j))
                })
            })
    }
}

/// Free text as the words industries are compared by: lower case, split at
/// anything that is not a letter or digit, each word in the singular
/// ("Cannabis Dispensaries" -> `["cannabis", "dispensary"]`).
#[must_use]
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(singular).collect()
}

/// An English plural made singular by its regular endings (a final "ie"
/// written "y", see below); words of three letters or fewer, and those ending in -ss, -us or -is ("business",
/// "campus", "cannabis"), are left as they are.
fn singular(word: &str) -> String {
    let keep = word.chars().count() <= 3 || ["ss", "us", "is"].iter().any(|e| word.ends_with(e));
    if keep {
        return word.to_string();
    }
    if let Some(stem) = word.strip_suffix("ies") {
        return format!("{stem}y");
    }
    let one = if ["sses", "shes", "ches", "xes", "zes"].iter().any(|e| word.ends_with(e)) {
        &word[..word.len() - 2]
    } else {
        word.strip_suffix('s').unwrap_or(word)
    };
    // "-ies" is the plural of both "-y" and "-ie" ("bakeries", "patisseries"):
    // both singulars end in "y" here, so either spelling compares equal.
    match one.strip_suffix("ie") {
        Some(stem) => format!("{stem}y"),
        None => one.to_string(),
    }
}

/// Whether `needle` occurs in `hay` as consecutive whole words.
fn contains_words(hay: &[String], needle: &[String]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plans::PlanCatalog;

    fn catalog() -> SkillCatalog {
        SkillCatalog::builtin().unwrap()
    }

    fn plan_skills(plan: &str) -> Vec<String> {
        PlanCatalog::builtin().get(plan).unwrap().skills.clone()
    }

    #[test]
    fn every_skill_directory_is_built_in_and_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("skills");
        let from_disk = SkillCatalog::load_dir(&dir).unwrap();
        assert_eq!(from_disk, catalog(), "skills/ and the built-in list differ");
        assert_eq!(catalog().iter().count(), BUILTIN.len());
    }

    #[test]
    fn every_skill_the_plan_catalog_names_has_a_file() {
        let plans = PlanCatalog::builtin();
        for (plan, p) in &plans.plans {
            for skill in &p.skills {
                assert!(
                    catalog().get(skill).is_some(),
                    "plan {plan} names skill {skill} without skills/{skill}/SKILL.md"
                );
            }
        }
    }

    #[test]
    fn general_skills_list_exactly_the_plans_that_name_them() {
        let plans = PlanCatalog::builtin();
        for skill in catalog().iter().filter(|s| s.meta.industries.is_empty()) {
            let naming: Vec<&String> =
                plans.plans.iter().filter(|(_, p)| p.skills.contains(&skill.meta.name)).map(|(n, _)| n).collect();
            let mut listed: Vec<&String> = skill.meta.plans.iter().collect();
            listed.sort();
            assert_eq!(listed, naming, "skills/{}/SKILL.md plans disagree with config/plans.yaml", skill.meta.name);
        }
    }

    #[test]
    fn the_dispensary_pack_is_selected_by_industry_plan_and_connectors() {
        let c = catalog();
        let growth = plan_skills("growth");
        let who =
            Selection { plan: "growth", plan_skills: &growth, industries: &["Cannabis Dispensary"], connectors: &[] };
        let s = c.select(&who);
        assert!(s.installed_names().contains(&"social-media"), "{:?}", s.installed_names());
        assert!(!s.installed_names().contains(&"inventory-lookup"));
        assert_eq!(
            s.waiting,
            vec![
                Waiting { skill: "inventory-lookup".into(), connectors: vec!["pos".into()] },
                Waiting { skill: "sales-summary".into(), connectors: vec!["pos".into()] },
            ]
        );
        // Restaurant skills the plan names stay out of a dispensary.
        assert!(!s.installed_names().contains(&"reservations") && !s.installed_names().contains(&"menu-qa"));
        assert!(s.installed_names().contains(&"faq") && s.installed_names().contains(&"crm"));
        assert!(s.unknown.is_empty());

        let with_pos = Selection { connectors: &["pos"], ..who.clone() };
        let s = c.select(&with_pos);
        assert!(s.waiting.is_empty());
        for name in ["inventory-lookup", "sales-summary", "social-media"] {
            assert!(s.installed_names().contains(&name), "{name}");
        }

        // On starter only inventory-lookup of the pack is offered.
        let starter = plan_skills("starter");
        let s = c.select(&Selection {
            plan: "starter",
            plan_skills: &starter,
            industries: &["dispensary"],
            connectors: &["pos"],
        });
        assert_eq!(s.installed_names(), vec!["booking", "faq", "inventory-lookup"]);
    }

    #[test]
    fn other_industries_do_not_get_the_pack() {
        let c = catalog();
        let team = plan_skills("team");
        for industry in ["dental clinic", "restaurant", ""] {
            let s = c.select(&Selection {
                plan: "team",
                plan_skills: &team,
                industries: &[industry],
                connectors: &["pos"],
            });
            for name in ["inventory-lookup", "sales-summary", "social-media"] {
                assert!(!s.installed_names().contains(&name), "{industry}: {name}");
            }
        }
        let s = c.select(&Selection {
            plan: "team",
            plan_skills: &team,
            industries: &["restaurant", "italian restaurant"],
            connectors: &[],
        });
        assert_eq!(s.installed_names(), vec!["analytics", "booking", "crm", "faq", "menu-qa", "reservations"]);
        let free = plan_skills("free");
        let s = c.select(&Selection { plan: "free", plan_skills: &free, industries: &["restaurant"], connectors: &[] });
        assert_eq!(s.installed_names(), vec!["faq"]);
    }

    #[test]
    fn without_an_industry_the_plan_catalog_decides() {
        let growth = plan_skills("growth");
        let c = catalog();
        let s = c.select(&Selection { plan: "growth", plan_skills: &growth, industries: &[], connectors: &["pos"] });
        assert_eq!(s.installed_names(), vec!["booking", "crm", "faq", "menu-qa", "reservations"]);
    }

    #[test]
    fn unknown_plan_skills_are_reported() {
        let names = vec!["faq".to_string(), "teleport".to_string()];
        let c = catalog();
        let s = c.select(&Selection { plan: "custom", plan_skills: &names, industries: &[], connectors: &[] });
        assert_eq!(s.unknown, vec!["teleport"]);
        assert_eq!(s.installed_names(), vec!["faq"]);
    }

    #[test]
    fn bad_skill_files_are_refused() {
        let body = format!("# Title\n{}", "instructions ".repeat(20));
        let good = format!("---\nname: x\ndescription: d\naudience: [staff]\n---\n{body}");
        assert!(Skill::parse("x", &good).is_ok());
        let cases = [
            ("y", good.clone()),
            ("x", good.replace("---\nname", "name")),
            ("x", good.replace("audience: [staff]\n---", "audience: [staff]\n")),
            ("x", good.replace("audience: [staff]", "audience: []")),
            ("x", good.replace("audience: [staff]", "audience: [robots]")),
            ("x", good.replace("description: d", "description: d\nsecret: 1")),
            ("x", good.replace("description: d", "description: d\nrequires: [Point Of Sale]")),
            ("x", good.replace(&body, "# Title\nshort")),
            ("x", good.replace("name: x", "name: X")),
        ];
        for (dir, file) in cases {
            assert!(Skill::parse(dir, &file).is_err(), "accepted: {file}");
        }
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("Cannabis Dispensary"), "cannabis-dispensary");
        assert_eq!(slug("  Food & Drink "), "food-drink");
    }

    #[test]
    fn words_ignore_case_separators_and_plurals() {
        assert_eq!(words("Cannabis Dispensaries"), ["cannabis", "dispensary"]);
        assert_eq!(words("cannabis-retail/CAFES & bars"), ["cannabis", "retail", "cafe", "bar"]);
        assert_eq!(words("Fitness business, churches, boxes"), ["fitness", "business", "church", "box"]);
        assert_eq!(words("  --  "), Vec::<String>::new());
        assert_eq!(words("Café"), ["café"]);
    }

    /// Names of the pack's industries in many spellings select it; what
    /// merely looks alike does not.
    #[test]
    fn industry_variants_select_the_dispensary_pack_and_look_alikes_do_not() {
        let c = catalog();
        let growth = plan_skills("growth");
        let pack = |industry: &str| {
            let s = c.select(&Selection {
                plan: "growth",
                plan_skills: &growth,
                industries: &[industry],
                connectors: &["pos"],
            });
            s.installed_names().contains(&"inventory-lookup")
        };
        for yes in [
            "cannabis",
            "dispensary",
            "Dispensaries",
            "DISPENSARY",
            "Cannabis Dispensary",
            "cannabis dispensaries",
            "cannabis_dispensary",
            "cannabis-retail",
            "Cannabis Retail",
            "Marijuana",
            "marijuana store",
            "Recreational Marijuana Dispensaries",
            "weed shops",
            "Pot Shop",
            "retail / cannabis",
        ] {
            assert!(pack(yes), "{yes:?} must select the dispensary pack");
        }
        for no in [
            "retail",
            "grocery store",
            "dispensing optician",
            "dispens",
            "cannabi",
            "pharmacy",
            "coffee shop",
            "shop",
            "weedkiller supplier",
            "potshop",
            "",
        ] {
            assert!(!pack(no), "{no:?} must not select the dispensary pack");
        }
    }

    #[test]
    fn food_industries_match_by_alias_and_plural_but_not_by_prefix() {
        let c = catalog();
        let growth = plan_skills("growth");
        let menu = |industry: &str| {
            let s =
                c.select(&Selection { plan: "growth", plan_skills: &growth, industries: &[industry], connectors: &[] });
            s.installed_names().contains(&"menu-qa") || s.waiting.iter().any(|w| w.skill == "menu-qa")
        };
        for yes in ["Restaurants", "Pizzeria", "coffee shops", "Café", "wine bars", "Patisseries", "food trucks"] {
            assert!(menu(yes), "{yes:?}");
        }
        for no in ["barber shop", "Barbers", "bartending school", "cafeteria equipment", "dental clinic"] {
            assert!(!menu(no), "{no:?}");
        }
    }

    #[test]
    fn a_bad_alias_table_is_refused() {
        assert!(matches!(Industries::parse("Cannabis Shop: [weed]"), Err(SkillError::Invalid { .. })));
        assert!(matches!(Industries::parse("cannabis: ['--']"), Err(SkillError::Invalid { .. })));
        assert!(matches!(Industries::parse("cannabis: 3"), Err(SkillError::Parse { .. })));
        let table = Industries::parse(BUILTIN_INDUSTRIES).unwrap();
        assert!(table.phrases.len() > 20);
    }
}
