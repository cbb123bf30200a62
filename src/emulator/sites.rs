//! Sample business websites for the website analyzer, served on the
//! emulator's loopback port under `/sites/<name>/`: a cannabis dispensary,
//! an Italian restaurant and a dental clinic, each a realistic page with
//! navigation, scripts, styles, a theme colour and `schema.org` JSON-LD.
//!
//! Also pages that misbehave on purpose, for the analyzer's tests:
//! `/sites/_redirect?to=<url>&hops=<n>` (n redirects to itself, then one to
//! `to`), `/sites/_large?bytes=<n>&chunked=<bool>` (an HTML page of n bytes,
//! with or without a declared length) and `/sites/_image` (a PNG).
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

/// Base path of the sample sites.
pub const SITES_PATH: &str = "/sites";

/// The sample sites by name: (name, what it is).
pub const SITES: [(&str, &str); 3] = [
    ("green-leaf", "cannabis dispensary, Denver"),
    ("trattoria-luna", "Italian restaurant, Chicago"),
    ("bright-smile", "dental clinic, Portland"),
];

/// The sites' routes.
pub fn router() -> Router {
    Router::new()
        .route(SITES_PATH, get(index))
        .route(&format!("{SITES_PATH}/_redirect"), get(redirect))
        .route(&format!("{SITES_PATH}/_large"), get(large))
        .route(&format!("{SITES_PATH}/_image"), get(image))
        .route(&format!("{SITES_PATH}/{{name}}"), get(site))
        .route(&format!("{SITES_PATH}/{{name}}/"), get(site))
}

async fn index() -> Response {
    let sites: Vec<_> = SITES
        .iter()
        .map(|(name, what)| json!({"name": name, "path": format!("{SITES_PATH}/{name}/"), "is": what}))
        .collect();
    axum::Json(json!({"sites": sites})).into_response()
}

async fn site(Path(name): Path<String>) -> Response {
    match page(&name) {
        Some(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        None => (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/html")], "<h1>Not found</h1>").into_response(),
    }
}

/// The HTML of a sample site.
#[must_use]
pub fn page(name: &str) -> Option<&'static str> {
    match name {
        "green-leaf" => Some(GREEN_LEAF),
        "trattoria-luna" => Some(TRATTORIA_LUNA),
        "bright-smile" => Some(BRIGHT_SMILE),
        _ => None,
    }
}

#[derive(Deserialize)]
struct RedirectQuery {
    to: String,
    #[serde(default)]
    hops: u32,
}

async fn redirect(Query(q): Query<RedirectQuery>) -> Response {
    let location = if q.hops > 0 {
        let to: String = url_encode(&q.to);
        format!("{SITES_PATH}/_redirect?hops={}&to={to}", q.hops - 1)
    } else {
        q.to
    };
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// Percent-encodes everything but unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct LargeQuery {
    bytes: usize,
    #[serde(default)]
    chunked: bool,
}

/// Largest `_large` page: 64 MiB.
const MAX_LARGE: usize = 64 * 1024 * 1024;

async fn large(Query(q): Query<LargeQuery>) -> Response {
    let total = q.bytes.min(MAX_LARGE);
    let chunk = Bytes::from(format!("<p>{}</p>\n", "filler text ".repeat(340)));
    let chunks = total.div_ceil(chunk.len());
    let mut left = total;
    let body = futures::stream::iter((0..chunks).map(move |_| {
        let n = left.min(chunk.len());
        left -= n;
        Ok::<_, std::convert::Infallible>(chunk.slice(..n))
    }));
    let mut resp = Response::builder().header(header::CONTENT_TYPE, "text/html");
    if !q.chunked {
        resp = resp.header(header::CONTENT_LENGTH, total);
    }
    resp.body(Body::from_stream(body)).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn image() -> Response {
    // The 8-byte PNG signature and an empty IHDR: enough to be a PNG by type.
    let png: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    ([(header::CONTENT_TYPE, "image/png")], png).into_response()
}

const GREEN_LEAF: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Green Leaf Dispensary | Recreational &amp; Medical Cannabis in Denver</title>
  <meta name="description" content="Green Leaf is a licensed recreational and medical cannabis dispensary in Denver's Highland neighborhood: flower, edibles, vapes and pre-rolls, with online ordering for in-store pickup.">
  <meta name="theme-color" content="#2E7D32">
  <meta property="og:title" content="Green Leaf Dispensary">
  <link rel="stylesheet" href="/static/site.css">
  <style>
    :root { --brand: #2e7d32; --accent: #f9a825; }
    body { font-family: "Inter", sans-serif; color: #222222; background: #ffffff; }
    .hero { background: #2e7d32; color: #ffffff; }
    .btn-primary { background: #2E7D32; border-color: #1b5e20; }
    .badge-sale { background: #f9a825; }
  </style>
  <script async src="https://www.googletagmanager.com/gtag/js?id=G-XXXX"></script>
  <script>window.dataLayer = window.dataLayer || []; function gtag(){dataLayer.push(arguments);} gtag('js', new Date());</script>
  <script type="application/ld+json">
  {
    "@context": "https://schema.org",
    "@type": ["Store", "LocalBusiness"],
    "name": "Green Leaf Dispensary",
    "url": "https://greenleaf.example/",
    "telephone": "+1-303-555-0142",
    "priceRange": "$$",
    "address": {
      "@type": "PostalAddress",
      "streetAddress": "3120 W 32nd Ave",
      "addressLocality": "Denver",
      "addressRegion": "CO",
      "postalCode": "80211",
      "addressCountry": "US"
    },
    "openingHours": ["Mo-Sa 09:00-21:50", "Su 10:00-20:00"]
  }
  </script>
</head>
<body>
  <div class="age-gate" aria-hidden="true">Are you 21 or older? Yes / No</div>
  <header>
    <nav class="main-nav">
      <a href="/">Home</a> <a href="/menu">Shop the menu</a> <a href="/deals">Deals</a>
      <a href="/rewards">Rewards</a> <a href="/contact">Contact</a>
    </nav>
  </header>
  <main>
    <section class="hero">
      <h1>Denver's neighborhood dispensary</h1>
      <p>Recreational and medical cannabis in Highland since 2014. Order online and pick up in store in 15 minutes.</p>
      <button class="btn-primary">Order for pickup</button>
    </section>
    <section>
      <h2>What we carry</h2>
      <ul>
        <li>Flower from Colorado craft growers, tested and labelled with THC and CBD content</li>
        <li>Edibles, tinctures and topicals</li>
        <li>Vape cartridges and pre-rolls</li>
        <li>Accessories: papers, grinders, batteries</li>
      </ul>
    </section>
    <section>
      <h2>Daily deals</h2>
      <p>Mindful Monday: 15% off CBD products. Flower Friday: 20% off eighths. Veterans save 10% every day.</p>
    </section>
    <section>
      <h2>Rewards</h2>
      <p>Earn one point per dollar and redeem points for discounts. Sign up at the counter.</p>
    </section>
    <section>
      <h2>Visit us</h2>
      <p>3120 W 32nd Ave, Denver, CO 80211. Free parking behind the store. Open Monday to Saturday 9 am to 9:50 pm, Sunday 10 am to 8 pm.</p>
      <p>Valid government ID required. You must be 21 or older, or 18+ with a valid medical card.</p>
    </section>
  </main>
  <footer>
    <p>Green Leaf Dispensary &middot; License 402R-00123 &middot; (303) 555-0142</p>
    <p>For use only by adults 21 and older. Keep out of reach of children.</p>
  </footer>
  <script src="/static/menu-widget.js"></script>
</body>
</html>
"##;

const TRATTORIA_LUNA: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Trattoria Luna - Handmade Pasta in Chicago's West Loop</title>
  <meta name="description" content="Family-run Italian trattoria in the West Loop: handmade pasta, wood-fired pizza and a Sunday brunch. Reservations for parties of up to 12.">
  <meta name="theme-color" content="#B71C1C">
  <style>
    body { background: #fffaf0; color: #2b2b2b; }
    h1, h2 { color: #b71c1c; }
    .reserve { background: #b71c1c; color: #fff; }
    .menu-note { color: #6d4c41; }
  </style>
  <script type="application/ld+json">
  {
    "@context": "https://schema.org",
    "@graph": [
      {"@type": "WebSite", "name": "Trattoria Luna", "url": "https://trattorialuna.example/"},
      {
        "@type": "Restaurant",
        "name": "Trattoria Luna",
        "servesCuisine": ["Italian", "Pizza"],
        "telephone": "+1 312 555 0199",
        "acceptsReservations": "True",
        "address": "1021 W Randolph St, Chicago, IL 60607, US",
        "openingHoursSpecification": [
          {"@type": "OpeningHoursSpecification", "dayOfWeek": ["Tuesday", "Wednesday", "Thursday"], "opens": "17:00", "closes": "22:00"},
          {"@type": "OpeningHoursSpecification", "dayOfWeek": ["Friday", "Saturday"], "opens": "17:00", "closes": "23:00"},
          {"@type": "OpeningHoursSpecification", "dayOfWeek": "https://schema.org/Sunday", "opens": "10:30", "closes": "15:00"}
        ]
      }
    ]
  }
  </script>
</head>
<body>
  <nav><a href="/">Home</a> | <a href="/menu">Menu</a> | <a href="/reserve">Reserve</a> | <a href="/private-events">Private events</a></nav>
  <h1>Trattoria Luna</h1>
  <p>Handmade pasta, wood-fired pizza and natural wines, from Nonna Lucia's recipes, since 2009.</p>
  <h2>Menu highlights</h2>
  <ul>
    <li>Tagliatelle al ragù, slow-cooked for eight hours</li>
    <li>Margherita and diavola pizza from our wood-fired oven</li>
    <li>Vegetarian and gluten-free pasta on request</li>
    <li>Tiramisù made at the table</li>
  </ul>
  <h2>Reservations</h2>
  <p>Book a table online or call us. Parties of up to 12; for larger groups see private events. Walk-ins welcome at the bar.</p>
  <h2>Hours</h2>
  <p>Tuesday to Thursday 5 pm to 10 pm, Friday and Saturday 5 pm to 11 pm, Sunday brunch 10:30 am to 3 pm. Closed Mondays.</p>
  <footer>1021 W Randolph St, Chicago, IL 60607 &middot; (312) 555-0199</footer>
  <script>document.querySelector('.reserve') && console.log('widget');</script>
</body>
</html>
"##;

const BRIGHT_SMILE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Bright Smile Dental | Family &amp; Cosmetic Dentistry in Portland, OR</title>
  <meta name="description" content="Bright Smile Dental offers gentle family, cosmetic and emergency dentistry in Portland's Pearl District. New patients welcome; most insurance accepted.">
  <meta name="theme-color" content="#1E88E5">
  <style>
    .topbar { background: #1e88e5; }
    a { color: #1565c0; }
    .cta { background: #1E88E5; color: white; }
    .footer { background: #eeeeee; }
  </style>
  <script type="application/ld+json">
  {
    "@context": "https://schema.org",
    "@type": "Dentist",
    "name": "Bright Smile Dental",
    "telephone": "+1-503-555-0100",
    "address": {
      "@type": "PostalAddress",
      "streetAddress": "1200 NW Glisan St, Suite 3",
      "addressLocality": "Portland",
      "addressRegion": "OR",
      "postalCode": "97209",
      "addressCountry": "US"
    },
    "openingHoursSpecification": [
      {"@type": "OpeningHoursSpecification", "dayOfWeek": ["Monday", "Tuesday", "Wednesday", "Thursday"], "opens": "08:00", "closes": "17:00"},
      {"@type": "OpeningHoursSpecification", "dayOfWeek": "Friday", "opens": "08:00", "closes": "13:00"}
    ]
  }
  </script>
</head>
<body>
  <div class="topbar"><nav><a href="/">Home</a><a href="/services">Services</a><a href="/new-patients">New patients</a><a href="/book">Book online</a></nav></div>
  <main>
    <h1>Gentle dentistry for the whole family</h1>
    <p>Dr. Maya Chen and her team have cared for Portland smiles for over 15 years.</p>
    <h2>Services</h2>
    <ul>
      <li>Check-ups, cleanings and X-rays</li>
      <li>Fillings, crowns and root canals</li>
      <li>Teeth whitening and veneers</li>
      <li>Invisalign clear aligners</li>
      <li>Same-day emergency appointments</li>
    </ul>
    <h2>New patients</h2>
    <p>We accept most PPO insurance plans and offer a membership plan for patients without insurance. Please arrive 10 minutes early to complete your forms.</p>
    <h2>Office hours</h2>
    <p>Monday to Thursday 8 am to 5 pm, Friday 8 am to 1 pm.</p>
  </main>
  <footer class="footer">1200 NW Glisan St, Suite 3, Portland, OR 97209 &middot; (503) 555-0100</footer>
  <noscript>Please enable JavaScript to book online.</noscript>
</body>
</html>
"##;
