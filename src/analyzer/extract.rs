//! A fetched page becomes clean, bounded text for the model: title, meta
//! description, headings, the visible text (scripts, styles, navigation and
//! hidden parts dropped), the business facts of `schema.org` JSON-LD, and
//! the colours the page declares.
//!
//! Parsing is html5ever's (through `scraper`), the same HTML5 algorithm a
//! browser runs, so malformed markup, comments and CDATA tricks end up where
//! a browser puts them rather than where a pattern guesses. The tree is
//! walked with an explicit stack: a page nested a million levels deep cannot
//! overflow the thread's stack.
use std::collections::HashMap;

use scraper::{ElementRef, Html, Node, Selector};
use serde::Serialize;
use serde_json::Value;

/// Longest title and description kept, in characters.
const MAX_LINE: usize = 300;
/// Most headings kept.
const MAX_HEADINGS: usize = 40;
/// Most colours kept.
const MAX_COLOURS: usize = 5;

/// What the analyzer learned from a page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Extracted {
    pub title: Option<String>,
    pub description: Option<String>,
    pub headings: Vec<String>,
    /// The visible text, one block per line, blank lines collapsed.
    pub text: String,
    /// The first `schema.org` business found in JSON-LD.
    pub business: Option<Business>,
    /// `#rrggbb` colours: the theme colour first, then inline CSS colours by
    /// how often they occur (greys left out).
    pub colours: Vec<String>,
}

/// A `schema.org` LocalBusiness (or one of its kinds) from JSON-LD.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Business {
    /// `@type`, e.g. `["Dentist"]`.
    #[serde(rename = "type")]
    pub types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telephone: Option<String>,
    /// `openingHours` strings, or `openingHoursSpecification` as "Mo-Fr 09:00-17:00".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub opening_hours: Vec<String>,
}

impl Extracted {
    /// Whether nothing readable was found.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.title.is_none() && self.description.is_none() && self.text.is_empty() && self.business.is_none()
    }

    /// The whole extraction as one labelled text (what is hashed).
    #[must_use]
    pub fn document(&self) -> String {
        let mut out = String::new();
        if let Some(t) = &self.title {
            out.push_str(&format!("Title: {t}\n"));
        }
        if let Some(d) = &self.description {
            out.push_str(&format!("Description: {d}\n"));
        }
        if let Some(b) = &self.business {
            out.push_str(&format!("Business data (schema.org): {}\n", serde_json::to_string(b).unwrap_or_default()));
        }
        if !self.colours.is_empty() {
            out.push_str(&format!("Colours: {}\n", self.colours.join(", ")));
        }
        if !self.headings.is_empty() {
            out.push_str("Headings:\n");
            for h in &self.headings {
                out.push_str(&format!("- {h}\n"));
            }
        }
        if !self.text.is_empty() {
            out.push_str("Text:\n");
            out.push_str(&self.text);
            out.push('\n');
        }
        out
    }

    /// [`Extracted::document`] cut to at most `max_chars` characters (what
    /// the model is sent).
    #[must_use]
    pub fn bounded(&self, max_chars: usize) -> String {
        truncate(&self.document(), max_chars)
    }
}

/// Extracts an HTML page.
#[must_use]
pub fn html(body: &str) -> Extracted {
    let doc = Html::parse_document(body);
    let business = json_ld(&doc);
    Extracted {
        title: first_text(&doc, "title").map(|t| truncate(&t, MAX_LINE)),
        description: meta(&doc, "description")
            .or_else(|| meta_property(&doc, "og:description"))
            .map(|d| truncate(&d, MAX_LINE)),
        headings: headings(&doc),
        text: visible_text(&doc),
        business,
        colours: colours(&doc),
    }
}

/// Extracts a plain-text page: the text only, normalised.
#[must_use]
pub fn plain(body: &str) -> Extracted {
    Extracted { text: normalise(body), ..Extracted::default() }
}

fn selector(css: &str) -> Option<Selector> {
    Selector::parse(css).ok()
}

fn first_text(doc: &Html, css: &str) -> Option<String> {
    let sel = selector(css)?;
    doc.select(&sel).map(|e| collapse(&e.text().collect::<String>())).find(|t| !t.is_empty())
}

fn meta(doc: &Html, name: &str) -> Option<String> {
    let sel = selector("meta[name][content]")?;
    doc.select(&sel)
        .filter(|e| e.value().attr("name").is_some_and(|n| n.trim().eq_ignore_ascii_case(name)))
        .filter_map(|e| e.value().attr("content"))
        .map(collapse)
        .find(|c| !c.is_empty())
}

fn meta_property(doc: &Html, property: &str) -> Option<String> {
    let sel = selector("meta[property][content]")?;
    doc.select(&sel)
        .filter(|e| e.value().attr("property").is_some_and(|n| n.trim().eq_ignore_ascii_case(property)))
        .filter_map(|e| e.value().attr("content"))
        .map(collapse)
        .find(|c| !c.is_empty())
}

fn headings(doc: &Html) -> Vec<String> {
    let Some(sel) = selector("h1, h2, h3") else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    let seen = |e: &ElementRef<'_>| {
        !hidden_or_noise(e) && !e.ancestors().filter_map(ElementRef::wrap).any(|a| hidden_or_noise(&a))
    };
    for h in doc.select(&sel).filter(seen) {
        let t = truncate(&collapse(&h.text().collect::<String>()), MAX_LINE);
        if !t.is_empty() && !out.contains(&t) {
            out.push(t);
        }
        if out.len() == MAX_HEADINGS {
            break;
        }
    }
    out
}

/// Elements whose content a visitor does not read as the page's text.
const NOISE: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "iframe", "nav", "head", "object", "canvas", "select", "button",
    "math",
];

/// Elements that start a new line of text.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "aside",
    "tr",
    "td",
    "th",
    "table",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "address",
    "blockquote",
    "pre",
    "hr",
    "figcaption",
    "form",
    "body",
];

fn hidden_or_noise(e: &ElementRef<'_>) -> bool {
    let el = e.value();
    NOISE.contains(&el.name())
        || el.attr("hidden").is_some()
        || el.attr("aria-hidden").is_some_and(|v| v.trim() == "true")
        || el.attr("style").is_some_and(|s| {
            let s: String = s.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
            s.contains("display:none") || s.contains("visibility:hidden")
        })
}

fn visible_text(doc: &Html) -> String {
    enum Step<'a> {
        Element(ElementRef<'a>),
        Text(&'a str),
        Break,
    }
    let mut raw = String::new();
    let mut stack = vec![Step::Element(doc.root_element())];
    while let Some(step) = stack.pop() {
        let el = match step {
            Step::Break => {
                raw.push('\n');
                continue;
            }
            Step::Text(t) => {
                // A line break in the source is a space on the page.
                raw.extend(t.chars().map(|c| if c.is_whitespace() { ' ' } else { c }));
                continue;
            }
            Step::Element(el) => el,
        };
        if hidden_or_noise(&el) {
            continue;
        }
        if BLOCKS.contains(&el.value().name()) {
            raw.push('\n');
            stack.push(Step::Break);
        }
        for child in el.children().rev() {
            match child.value() {
                Node::Text(t) => stack.push(Step::Text(t)),
                Node::Element(_) => stack.extend(ElementRef::wrap(child).map(Step::Element)),
                _ => {}
            }
        }
    }
    normalise(&raw)
}

/// One line per block, whitespace collapsed, empty and repeated lines dropped.
fn normalise(raw: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    for line in raw.lines().map(collapse).filter(|l| !l.is_empty()) {
        if lines.last() != Some(&line) {
            lines.push(line);
        }
    }
    lines.join("\n")
}

/// Whitespace runs (and control characters) to one space, trimmed.
fn collapse(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((cut, _)) => s[..cut].to_string(),
        None => s.to_string(),
    }
}

/// The first LocalBusiness-like object in the page's JSON-LD blocks.
fn json_ld(doc: &Html) -> Option<Business> {
    let sel = selector("script[type]")?;
    doc.select(&sel)
        .filter(|e| e.value().attr("type").is_some_and(|t| t.trim().eq_ignore_ascii_case("application/ld+json")))
        .filter_map(|e| serde_json::from_str::<Value>(&e.text().collect::<String>()).ok())
        .find_map(|v| find_business(&v, 0))
}

/// Kinds of `schema.org` Thing that describe a place of business.
const BUSINESS_TYPES: &[&str] = &[
    "LocalBusiness",
    "Organization",
    "Restaurant",
    "FoodEstablishment",
    "CafeOrCoffeeShop",
    "BarOrPub",
    "Bakery",
    "Dentist",
    "MedicalClinic",
    "MedicalBusiness",
    "Physician",
    "Store",
    "HealthAndBeautyBusiness",
    "ProfessionalService",
];

fn find_business(v: &Value, depth: u8) -> Option<Business> {
    if depth > 4 {
        return None;
    }
    match v {
        Value::Array(items) => items.iter().find_map(|i| find_business(i, depth + 1)),
        Value::Object(o) => {
            if let Some(graph) = o.get("@graph") {
                return find_business(graph, depth + 1);
            }
            let types = strings(o.get("@type"));
            let businesslike = types
                .iter()
                .any(|t| BUSINESS_TYPES.contains(&t.as_str()) || t.ends_with("Business") || t.ends_with("Store"));
            businesslike.then(|| business(&types, o))
        }
        _ => None,
    }
}

fn business(types: &[String], o: &serde_json::Map<String, Value>) -> Business {
    let text =
        |k: &str| o.get(k).and_then(Value::as_str).map(|s| truncate(&collapse(s), MAX_LINE)).filter(|s| !s.is_empty());
    let mut hours: Vec<String> = strings(o.get("openingHours")).iter().map(|h| collapse(h)).collect();
    if let Some(specs) = o.get("openingHoursSpecification") {
        let specs = if let Value::Array(a) = specs { a.clone() } else { vec![specs.clone()] };
        hours.extend(specs.iter().filter_map(hours_spec));
    }
    hours.retain(|h| !h.is_empty());
    hours.truncate(14);
    Business {
        types: types.to_vec(),
        name: text("name"),
        address: o.get("address").and_then(address),
        telephone: text("telephone"),
        opening_hours: hours,
    }
}

/// "Monday, Tuesday 09:00-17:00" from an OpeningHoursSpecification.
fn hours_spec(spec: &Value) -> Option<String> {
    let days: Vec<String> =
        strings(spec.get("dayOfWeek")).iter().map(|d| d.rsplit('/').next().unwrap_or(d).to_string()).collect();
    let opens = spec.get("opens")?.as_str()?;
    let closes = spec.get("closes")?.as_str()?;
    Some(collapse(&format!("{} {opens}-{closes}", days.join(", "))))
}

/// A PostalAddress (or a plain string) on one line.
fn address(v: &Value) -> Option<String> {
    let line = match v {
        Value::String(s) => collapse(s),
        Value::Object(o) => {
            let part = |k: &str| o.get(k).and_then(Value::as_str).map(collapse).filter(|s| !s.is_empty());
            let region_postal =
                [part("addressRegion"), part("postalCode")].into_iter().flatten().collect::<Vec<_>>().join(" ");
            [part("streetAddress"), part("addressLocality"), Some(region_postal), part("addressCountry")]
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(", ")
        }
        Value::Array(a) => return a.iter().find_map(address),
        _ => return None,
    };
    (!line.is_empty()).then(|| truncate(&line, MAX_LINE))
}

/// A JSON string or array of strings.
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// The theme colour, then the most frequent inline CSS hex colours.
fn colours(doc: &Html) -> Vec<String> {
    let mut theme: Vec<String> = ["theme-color", "msapplication-TileColor"]
        .iter()
        .filter_map(|n| meta(doc, n))
        .filter_map(|c| hex_colour(c.trim().strip_prefix('#')?))
        .collect();
    let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
    let mut order = 0;
    let mut count = |css: &str| {
        for c in css_hex_colours(css) {
            order += 1;
            counts.entry(c).or_insert((0, order)).0 += 1;
        }
    };
    if let Some(sel) = selector("style") {
        doc.select(&sel).for_each(|s| count(&s.text().collect::<String>()));
    }
    if let Some(sel) = selector("[style]") {
        doc.select(&sel).filter_map(|e| e.value().attr("style")).for_each(&mut count);
    }
    let mut css: Vec<(String, (usize, usize))> = counts.into_iter().filter(|(c, _)| !is_grey(c)).collect();
    css.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.1.1.cmp(&b.1.1)));
    for (c, _) in css {
        if !theme.contains(&c) {
            theme.push(c);
        }
    }
    theme.truncate(MAX_COLOURS);
    theme
}

/// `#rgb` / `#rrggbb` tokens in CSS text, as lowercase `#rrggbb`.
fn css_hex_colours(css: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = css.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'#' {
            let digits =
                bytes[i + 1..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b'_').count();
            if let Some(c) = css.get(i + 1..i + 1 + digits).and_then(hex_colour) {
                out.push(c);
            }
            i += 1 + digits;
        } else {
            i += 1;
        }
    }
    out
}

/// `rgb` or `rrggbb` (no `#`) as lowercase `#rrggbb`.
fn hex_colour(s: &str) -> Option<String> {
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let s = s.to_ascii_lowercase();
    match s.len() {
        6 => Some(format!("#{s}")),
        3 => Some(format!("#{}", s.chars().flat_map(|c| [c, c]).collect::<String>())),
        _ => None,
    }
}

fn is_grey(c: &str) -> bool {
    let b = c.as_bytes();
    b.len() == 7 && b[1..3] == b[3..5] && b[3..5] == b[5..7]
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r##"<!doctype html><html><head>
      <title> Bright Smile   Dental </title>
      <meta name="description" content="Family dentistry in Portland.">
      <meta name="theme-color" content="#1E88E5">
      <style>body{color:#333333;background:#fff} .cta{background:#ff7043} a{color:#FF7043}</style>
      <script>var secret = "do not read me";</script>
      <script type="application/ld+json">{"@context":"https://schema.org","@graph":[
        {"@type":"WebSite","name":"site"},
        {"@type":"Dentist","name":"Bright Smile Dental","telephone":"+1 503 555 0100",
         "address":{"@type":"PostalAddress","streetAddress":"12 Main St","addressLocality":"Portland","addressRegion":"OR","postalCode":"97201","addressCountry":"US"},
         "openingHoursSpecification":[{"dayOfWeek":["https://schema.org/Monday","Tuesday"],"opens":"08:00","closes":"17:00"}]}]}</script>
      </head><body>
      <nav><a href="/">Home</a><a href="/x">Menu item</a><h2>Nav heading</h2></nav>
      <h1>Gentle care</h1><p>We   clean
        teeth.</p><div hidden>hidden offer</div><p style="display: none">invisible</p>
      <p aria-hidden="true">decor</p><noscript>enable js</noscript>
      <h2>Hours</h2><ul><li>Mon 8-5</li><li>Tue 8-5</li></ul>
      <!-- <p>commented out</p> -->
      <footer>12 Main St, Portland</footer></body></html>"##;

    #[test]
    fn html_page_is_extracted() {
        let e = html(PAGE);
        assert_eq!(e.title.as_deref(), Some("Bright Smile Dental"));
        assert_eq!(e.description.as_deref(), Some("Family dentistry in Portland."));
        assert_eq!(e.headings, vec!["Gentle care", "Hours"]);
        assert_eq!(e.text, "Gentle care\nWe clean teeth.\nHours\nMon 8-5\nTue 8-5\n12 Main St, Portland");
        for noise in ["secret", "Menu item", "hidden offer", "invisible", "decor", "enable js", "commented"] {
            assert!(!e.text.contains(noise), "{noise} leaked into {:?}", e.text);
        }
        let b = e.business.unwrap();
        assert_eq!(b.types, vec!["Dentist"]);
        assert_eq!(b.name.as_deref(), Some("Bright Smile Dental"));
        assert_eq!(b.address.as_deref(), Some("12 Main St, Portland, OR 97201, US"));
        assert_eq!(b.telephone.as_deref(), Some("+1 503 555 0100"));
        assert_eq!(b.opening_hours, vec!["Monday, Tuesday 08:00-17:00"]);
        assert_eq!(e.colours, vec!["#1e88e5", "#ff7043"]);
    }

    #[test]
    fn document_is_labelled_and_bounded() {
        let e = html(PAGE);
        let doc = e.document();
        assert!(doc.starts_with("Title: Bright Smile Dental\nDescription: Family dentistry in Portland.\n"), "{doc}");
        assert!(doc.contains("Business data (schema.org): {\"type\":[\"Dentist\"]"), "{doc}");
        assert!(doc.contains("Colours: #1e88e5, #ff7043\n"), "{doc}");
        assert_eq!(e.bounded(10), "Title: Bri");
        assert_eq!(e.bounded(100_000), doc);
        let wide = Extracted { text: "é".repeat(50), ..Extracted::default() };
        assert_eq!(wide.bounded(9).chars().count(), 9);
    }

    #[test]
    fn deep_and_broken_markup_does_not_crash() {
        let deep = "<div>".repeat(5_000) + "deep text" + &"</div>".repeat(10);
        assert!(html(&deep).text.contains("deep text"));
        let broken = "<p>unclosed <b>bold <script>x</p> <title>t</title>";
        let _ = html(broken);
        assert!(html("").is_empty());
        assert!(html("<script type=\"application/ld+json\">{not json</script>").business.is_none());
    }

    #[test]
    fn plain_text_is_normalised() {
        let e = plain("  Hello\r\n\r\n\tworld  \n\nworld\n");
        assert_eq!(e.text, "Hello\nworld");
        assert!(e.title.is_none());
    }

    #[test]
    fn css_colours_are_found() {
        assert_eq!(
            css_hex_colours("a{color:#ABC} b{c:#123456;} #main{x:#12345g} u{c:#1234}"),
            vec!["#aabbcc", "#123456"]
        );
        assert!(is_grey("#333333") && !is_grey("#333334"));
    }
}
