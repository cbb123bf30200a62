//! The mock's answer to Winston's website analyzer: a request whose system
//! prompt carries [`ANALYZER_MARKER`] gets, instead of filler words, a
//! business profile in the seeds' JSON shape derived from the page text the
//! request carries (deterministically: the same page, the same profile), so
//! the whole analyzer path runs locally.
//!
//! It reads the labelled text the analyzer sends (`Title:`, `Description:`,
//! `Business data (schema.org): {..}`, `Colours:`, `Text:`) and classifies
//! the business by keywords. The emulator keeps its own copy of the marker
//! and knows none of the analyzer's types (a test holds the markers equal).
//!
//! A malformed answer (the JSON cut in half) is given to the next
//! `LlmMockConfig::analyzer_malformed` analyzer requests, or to a request
//! that asks with `x-mock-analyzer-malformed: true` / `mock.analyzer_malformed`.
//! Usage counts the answer's text like input: `ceil(bytes / 4)` tokens, cut
//! at the request's output cap (a cut answer is malformed, as a real one is).
use serde_json::{Value, json};

/// What marks an analyzer request in the system prompt.
pub const ANALYZER_MARKER: &str = "[winston-analyzer/v1]";

/// Whether `body` is an analyzer request (the marker in a system prompt).
pub(super) fn is_request(body: &Value) -> bool {
    let marked = |v: &Value| text_of(v).contains(ANALYZER_MARKER);
    body.get("system").is_some_and(marked)
        || body.get("messages").and_then(Value::as_array).is_some_and(|m| {
            m.iter().any(|m| {
                m.get("role").and_then(Value::as_str) == Some("system") && m.get("content").is_some_and(marked)
            })
        })
}

/// The answer's text and the output tokens it counts, cut at `cap` tokens.
pub(super) fn answer(body: &Value, malformed: bool, cap: Option<u64>) -> (String, u64, bool) {
    let page = first_user_text(body);
    let mut text = profile(&page).to_string();
    if malformed {
        let half = text.len() / 2;
        let cut = (0..=half).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
    }
    let tokens = (text.len() as u64).div_ceil(4);
    match cap {
        Some(cap) if cap < tokens => {
            let bytes = usize::try_from(cap.saturating_mul(4)).unwrap_or(usize::MAX);
            let cut = (0..=bytes.min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            text.truncate(cut);
            (text, cap, true)
        }
        _ => (text, tokens, false),
    }
}

/// The request's first user message as text.
fn first_user_text(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().find(|m| m.get("role").and_then(Value::as_str) == Some("user")))
        .and_then(|m| m.get("content"))
        .map(text_of)
        .unwrap_or_default()
}

/// A string, or the `text` of content parts, joined.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().map(text_of).collect::<Vec<_>>().join("\n"),
        Value::Object(o) => o.get("text").map(text_of).unwrap_or_default(),
        _ => String::new(),
    }
}

/// The labelled page text, split into what the mock uses.
#[derive(Default)]
struct Page {
    website: Option<String>,
    title: Option<String>,
    description: Option<String>,
    business: Value,
    colours: Vec<String>,
    text: Vec<String>,
}

fn parse(page: &str) -> Page {
    let mut p = Page { business: Value::Null, ..Page::default() };
    let mut in_text = false;
    for line in page.lines() {
        if in_text {
            p.text.push(line.to_string());
        } else if let Some(v) = line.strip_prefix("Website: ") {
            p.website = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("Title: ") {
            p.title = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("Description: ") {
            p.description = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("Business data (schema.org): ") {
            p.business = serde_json::from_str(v).unwrap_or(Value::Null);
        } else if let Some(v) = line.strip_prefix("Colours: ") {
            p.colours = v.split(", ").map(str::to_string).collect();
        } else if line == "Text:" {
            in_text = true;
        }
    }
    p
}

/// A kind of business the mock recognises.
struct Kind {
    keywords: &'static [&'static str],
    industry: &'static str,
    sub_industry: &'static str,
    capabilities: &'static [&'static str],
    names: &'static [&'static str],
    tone: &'static str,
}

const KINDS: &[Kind] = &[
    Kind {
        keywords: &["dispensary", "cannabis", "marijuana"],
        industry: "cannabis",
        sub_industry: "dispensary",
        capabilities: &[
            "check product availability and stock",
            "explain daily deals and the rewards program",
            "answer questions about hours, location and ID requirements",
            "help customers order for in-store pickup",
        ],
        names: &["Sage", "Juniper", "Willow"],
        tone: "friendly",
    },
    Kind {
        keywords: &["dentist", "dental", "orthodont"],
        industry: "healthcare",
        sub_industry: "dental clinic",
        capabilities: &[
            "book, move and cancel appointments",
            "answer questions about services and insurance",
            "prepare new patients for their first visit",
            "route dental emergencies to same-day slots",
        ],
        names: &["Ava", "Clara", "Nora"],
        tone: "professional",
    },
    Kind {
        keywords: &["restaurant", "trattoria", "pizza", "bistro", "menu", "brunch"],
        industry: "restaurant",
        sub_industry: "italian restaurant",
        capabilities: &[
            "take table reservations",
            "answer questions about the menu and dietary needs",
            "share opening hours and directions",
            "handle private event enquiries",
        ],
        names: &["Luca", "Gina", "Marco"],
        tone: "playful",
    },
];

const GENERIC: Kind = Kind {
    keywords: &[],
    industry: "local business",
    sub_industry: "",
    capabilities: &["answer customer questions", "share opening hours and directions"],
    names: &["Alex", "Sam"],
    tone: "professional",
};

/// The profile for a page, in the seeds' shape.
fn profile(page: &str) -> Value {
    let p = parse(page);
    let lower = page.to_lowercase();
    let kind = KINDS.iter().find(|k| k.keywords.iter().any(|w| lower.contains(w))).unwrap_or(&GENERIC);
    let name = business_name(&p);
    let sub_industry = if kind.sub_industry == "italian restaurant" && !lower.contains("italian") {
        "restaurant"
    } else {
        kind.sub_industry
    };
    let hours: Vec<&str> = p
        .business
        .get("opening_hours")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let description = p
        .description
        .clone()
        .or_else(|| p.text.iter().find(|l| !l.trim().is_empty()).cloned())
        .unwrap_or_else(|| name.clone());
    json!({
        "business_name": clip(&name, 100),
        "industry": kind.industry,
        "sub_industry": if sub_industry.is_empty() { Value::Null } else { json!(sub_industry) },
        "location": p.business.get("address").and_then(Value::as_str).map(|a| clip(a, 200)),
        "hours": if hours.is_empty() { Value::Null } else { json!(clip(&hours.join("; "), 200)) },
        "description": clip(&description, 600),
        "brand_color": p.colours.first(),
        "suggested_capabilities": kind.capabilities,
        "suggested_agent_name": kind.names[usize::try_from(fnv(&name)).unwrap_or(0) % kind.names.len()],
        "tone": kind.tone,
    })
}

fn business_name(p: &Page) -> String {
    if let Some(n) = p.business.get("name").and_then(Value::as_str) {
        return n.to_string();
    }
    if let Some(t) = &p.title {
        let first = [" | ", " - ", " – ", " — "].iter().fold(t.as_str(), |t, sep| t.split(sep).next().unwrap_or(t));
        if !first.trim().is_empty() {
            return first.trim().to_string();
        }
    }
    p.website
        .as_deref()
        .and_then(|w| w.split("://").nth(1))
        .and_then(|rest| rest.split(['/', ':']).next())
        .filter(|h| !h.is_empty())
        .unwrap_or("Your business")
        .to_string()
}

fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect::<String>().trim().to_string()
}

/// FNV-1a: a stable pick among names (std's hasher is seeded per process).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "Website: http://127.0.0.1:4010/sites/green-leaf/\n\nTitle: Green Leaf Dispensary | Cannabis\n\
Description: A licensed dispensary.\nBusiness data (schema.org): {\"type\":[\"Store\"],\"name\":\"Green Leaf Dispensary\",\
\"address\":\"3120 W 32nd Ave, Denver, CO 80211, US\",\"opening_hours\":[\"Mo-Sa 09:00-21:50\",\"Su 10:00-20:00\"]}\n\
Colours: #2e7d32, #f9a825\nText:\nDenver's dispensary\n";

    fn request(page: &str) -> Value {
        json!({"model": "m", "messages": [
            {"role": "system", "content": format!("{ANALYZER_MARKER} propose a profile")},
            {"role": "user", "content": page}]})
    }

    #[test]
    fn a_page_becomes_a_profile_deterministically() {
        let body = request(PAGE);
        assert!(is_request(&body));
        let (text, tokens, cut) = answer(&body, false, None);
        assert!(!cut);
        assert_eq!(tokens, (text.len() as u64).div_ceil(4));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["business_name"], "Green Leaf Dispensary");
        assert_eq!(v["industry"], "cannabis");
        assert_eq!(v["sub_industry"], "dispensary");
        assert_eq!(v["location"], "3120 W 32nd Ave, Denver, CO 80211, US");
        assert_eq!(v["hours"], "Mo-Sa 09:00-21:50; Su 10:00-20:00");
        assert_eq!(v["brand_color"], "#2e7d32");
        assert_eq!(v["tone"], "friendly");
        assert_eq!(answer(&body, false, None).0, text, "not deterministic");
    }

    #[test]
    fn malformed_and_capped_answers_do_not_parse() {
        let body = request(PAGE);
        let (text, _, _) = answer(&body, true, None);
        assert!(serde_json::from_str::<Value>(&text).is_err());
        let (text, tokens, cut) = answer(&body, false, Some(5));
        assert!(cut && tokens == 5 && text.len() <= 20);
        assert!(serde_json::from_str::<Value>(&text).is_err());
    }

    #[test]
    fn other_requests_are_not_analyzer_requests() {
        assert!(!is_request(&json!({"messages": [{"role": "user", "content": ANALYZER_MARKER}]})));
        assert!(!is_request(&json!({"messages": [{"role": "system", "content": "Be brief."}]})));
        assert!(is_request(&json!({"system": [{"type": "text", "text": ANALYZER_MARKER}], "messages": []})));
    }

    #[test]
    fn an_unknown_page_gets_a_generic_profile() {
        let v: Value = serde_json::from_str(
            &answer(&request("Website: https://acme.example/x\n\nText:\nWe sell things.\n"), false, None).0,
        )
        .unwrap();
        assert_eq!(v["business_name"], "acme.example");
        assert_eq!(v["industry"], "local business");
        assert_eq!(v["sub_industry"], Value::Null);
        assert_eq!(v["description"], "We sell things.");
    }
}
