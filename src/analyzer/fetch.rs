//! Fetching a user-given URL safely: only http(s) without credentials, only
//! to addresses the shared [`crate::outbound`] policy permits (never a cloud
//! metadata address, whatever the allow-list says), connected to exactly the
//! addresses that were checked, redirects followed here by hand with each
//! target checked again, one total deadline, a size cap, and HTML or plain
//! text only.
//!
//! Pinning and the address check are [`OutboundClient`]'s: its resolver is
//! the one that both checks and hands the addresses to the connection, so a
//! second DNS answer cannot slip in between, and it never follows a redirect
//! or goes through an environment proxy.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, LOCATION};

use super::error::{AnalyzeError, short};
use crate::outbound::{OutboundClient, OutboundError, OutboundPolicy};

/// The cloud metadata services: refused even when an allowed block holds them.
pub const METADATA_ADDRESSES: [IpAddr; 6] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    // AWS ECS task credentials and EKS pod identity (v4 and v6).
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 23)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0023)),
    // Alibaba Cloud's, inside the CGNAT block.
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
];

/// What may be fetched and how much.
#[derive(Clone, Debug)]
pub struct FetchPolicy {
    /// Non-public blocks let through (the emulator's loopback sites); empty
    /// in production. Build it with [`FetchPolicy::allowing`].
    allow: Vec<ipnet::IpNet>,
    /// Deadline of the whole fetch, redirects included.
    pub timeout: Duration,
    /// Largest body read, in bytes; a larger page is refused.
    pub max_bytes: usize,
    /// Redirects followed at most.
    pub max_redirects: u8,
}

impl Default for FetchPolicy {
    /// The seeds' 5-second timeout, 2 MiB, 5 redirects, public addresses only.
    fn default() -> Self {
        Self { allow: Vec::new(), timeout: Duration::from_secs(5), max_bytes: 2 * 1024 * 1024, max_redirects: 5 }
    }
}

impl FetchPolicy {
    /// The default policy, also letting `allow` through.
    ///
    /// # Errors
    /// [`AnalyzeError::Refused`] when a block holds a cloud metadata address:
    /// no configuration opens the metadata service to a customer's URL.
    pub fn allowing(allow: Vec<ipnet::IpNet>) -> Result<Self, AnalyzeError> {
        if let Some(net) = allow.iter().find(|net| METADATA_ADDRESSES.iter().any(|m| net.contains(m))) {
            return Err(AnalyzeError::Refused(format!("the allowed block {net} holds a cloud metadata address")));
        }
        Ok(Self { allow, ..Self::default() })
    }

    /// The blocks allowed beyond public addresses.
    #[must_use]
    pub fn allowed(&self) -> &[ipnet::IpNet] {
        &self.allow
    }
}

/// The kind of page fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    Html,
    Text,
}

/// A fetched page.
#[derive(Clone, Debug)]
pub struct Page {
    /// Where the page was finally read from (after redirects).
    pub url: Url,
    pub kind: PageKind,
    /// The body, decoded as UTF-8 (invalid bytes replaced).
    pub body: String,
    /// Redirects followed.
    pub redirects: u8,
}

/// Fetches pages under a [`FetchPolicy`].
#[derive(Clone, Debug)]
pub struct Fetcher {
    policy: FetchPolicy,
    client: OutboundClient,
}

/// One hop's outcome.
enum Hop {
    Page(Page),
    Redirect(Url),
}

impl Fetcher {
    /// A fetcher under `policy`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(policy: FetchPolicy) -> Result<Self, AnalyzeError> {
        crate::telemetry::install_crypto_provider();
        let client = OutboundClient::new(OutboundPolicy::new(policy.allow.clone()), policy.timeout)
            .map_err(|e| AnalyzeError::Unreachable(e.to_string()))?;
        Ok(Self { policy, client })
    }

    /// The policy in force.
    #[must_use]
    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// Fetches `url` under the policy.
    ///
    /// # Errors
    /// [`AnalyzeError::InvalidUrl`] / [`AnalyzeError::Refused`] for a URL,
    /// address or redirect the policy refuses; [`AnalyzeError::Unreachable`]
    /// and [`AnalyzeError::Timeout`] when the site cannot be read;
    /// [`AnalyzeError::TooLarge`] and [`AnalyzeError::Unsupported`] for the
    /// page itself.
    pub async fn fetch(&self, url: &str) -> Result<Page, AnalyzeError> {
        let url = checked_url(url)?;
        let secs = self.policy.timeout.as_secs().max(1);
        tokio::time::timeout(self.policy.timeout, self.follow(url)).await.unwrap_or(Err(AnalyzeError::Timeout { secs }))
    }

    async fn follow(&self, mut url: Url) -> Result<Page, AnalyzeError> {
        for redirects in 0..=self.policy.max_redirects {
            match self.hop(&url, redirects).await? {
                Hop::Page(page) => return Ok(page),
                Hop::Redirect(next) => url = next,
            }
        }
        Err(AnalyzeError::Refused(format!("more than {} redirects", self.policy.max_redirects)))
    }

    /// One request to a checked address, and its answer.
    async fn hop(&self, url: &Url, redirects: u8) -> Result<Hop, AnalyzeError> {
        let resp = self.client.get(url.as_str()).await.map_err(outbound_error)?;
        if let Some(addr) = resp.remote_addr().map(|a| a.ip()).filter(|ip| is_metadata(*ip)) {
            return Err(AnalyzeError::Refused(format!("{addr} is a cloud metadata address")));
        }
        let status = resp.status();
        if status.is_redirection() {
            let location = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
                AnalyzeError::Unreachable(format!("the site answered HTTP {} without a Location", status.as_u16()))
            })?;
            let next = url.join(location).map_err(|_| AnalyzeError::Refused("a redirect to an invalid URL".into()))?;
            return checked_url(next.as_str()).map(Hop::Redirect);
        }
        if !status.is_success() {
            return Err(AnalyzeError::Unreachable(format!("the site answered HTTP {}", status.as_u16())));
        }
        let kind = page_kind(resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()))?;
        let body = read_capped(resp, self.policy.max_bytes).await?;
        Ok(Hop::Page(Page { url: url.clone(), kind, body, redirects }))
    }
}

/// Whether `ip` (also written as IPv4-mapped IPv6) is a metadata address.
#[must_use]
pub fn is_metadata(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    METADATA_ADDRESSES.contains(&ip)
}

fn outbound_error(e: OutboundError) -> AnalyzeError {
    match e {
        OutboundError::Refused { host, addr } => {
            AnalyzeError::Refused(format!("{host}: {}", crate::outbound::refusal(&host, &addr)))
        }
        OutboundError::Unsupported { .. } => AnalyzeError::Refused("only http and https URLs with a host".into()),
        OutboundError::Timeout { .. } => AnalyzeError::Unreachable("the site did not answer in time".into()),
        other => AnalyzeError::Unreachable(short(&other.to_string(), 300)),
    }
}

/// A URL the analyzer may start from or be redirected to.
fn checked_url(raw: &str) -> Result<Url, AnalyzeError> {
    let url = Url::parse(raw.trim()).map_err(|e| AnalyzeError::InvalidUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(AnalyzeError::Refused(format!("scheme {:?} (only http and https)", url.scheme())));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // The URL is not repeated: it carries a secret.
        return Err(AnalyzeError::Refused("the URL carries credentials".into()));
    }
    if url.host().is_none() {
        return Err(AnalyzeError::InvalidUrl("the URL has no host".into()));
    }
    Ok(url)
}

fn page_kind(content_type: Option<&str>) -> Result<PageKind, AnalyzeError> {
    let essence = content_type.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "text/html" | "application/xhtml+xml" => Ok(PageKind::Html),
        "text/plain" => Ok(PageKind::Text),
        _ => Err(AnalyzeError::Unsupported(short(&essence, 100))),
    }
}

/// Reads at most `max` bytes; refuses a body that declares or delivers more.
async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<String, AnalyzeError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(AnalyzeError::TooLarge { limit: max });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| AnalyzeError::Unreachable(describe(&e)))? {
        if body.len() + chunk.len() > max {
            return Err(AnalyzeError::TooLarge { limit: max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A reqwest error without the URL (it is the user's and already known).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the response body broke off"
    } else {
        "the request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() { kind.to_string() } else { format!("{kind}: {}", short(&detail, 200)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(checked_url("https://example.com/").is_ok());
        assert!(checked_url("http://example.com:8080/a?b").is_ok());
        for bad in
            ["ftp://example.com/", "file:///etc/passwd", "gopher://x/", "data:text/html,hi", "javascript:alert(1)"]
        {
            assert!(matches!(checked_url(bad), Err(AnalyzeError::Refused(_) | AnalyzeError::InvalidUrl(_))), "{bad}");
        }
        let err = checked_url("https://admin:hunter2@example.com/").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(checked_url("https://user@example.com/").is_err());
        assert!(checked_url("not a url").is_err());
    }

    #[test]
    fn content_types() {
        assert_eq!(page_kind(Some("text/html; charset=utf-8")).unwrap(), PageKind::Html);
        assert_eq!(page_kind(Some("TEXT/PLAIN")).unwrap(), PageKind::Text);
        assert!(matches!(page_kind(Some("image/png")), Err(AnalyzeError::Unsupported(_))));
        assert!(matches!(page_kind(Some("application/json")), Err(AnalyzeError::Unsupported(_))));
        assert!(matches!(page_kind(None), Err(AnalyzeError::Unsupported(_))));
    }
}
