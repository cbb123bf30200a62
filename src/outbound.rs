//! Requests to addresses a tenant controls (its agent's health endpoint,
//! later the website the analyzer reads), made from a pod that can read
//! Secrets: only public addresses are reached, and redirects are never
//! followed, unless the operator allows more ([`OutboundPolicy`]).
//!
//! A name is resolved once, every address it resolves to is checked, and
//! the connection goes to exactly those checked addresses: the resolver
//! that checks is the one the HTTP client connects with, so a second DNS
//! answer (rebinding to 127.0.0.1 between a check and the request) cannot
//! slip in. An IP literal in the URL never reaches a resolver and is
//! checked before the request. A caller that wants to follow a redirect
//! (the analyzer) sends each hop through [`OutboundClient::get`] again, so
//! each one is checked the same way.
//!
//! Neutral: no Kubernetes, no platform, nothing of Winston's above it.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an outbound request was not made or failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("refused to reach {host}: {}", refusal(.host, .addr))]
    Refused { host: String, addr: IpAddr },
    #[error("refused to reach {url}: only http and https URLs with a host are allowed")]
    Unsupported { url: String },
    #[error("failed to resolve {host}: {message}")]
    Resolve { host: String, message: String },
    #[error("failed to get an answer from {host} in time")]
    Timeout { host: String },
    #[error("failed to reach {host}: {message}")]
    Request { host: String, message: String },
    #[error("failed to build the outbound HTTP client: {0}")]
    Client(String),
}

/// Why `host` was refused: the address when the host is one, else only
/// that the name resolves to a non-public address, so messages that reach
/// users (conditions, analyzer errors) are no oracle of internal DNS.
#[must_use]
pub fn refusal(host: &str, addr: &IpAddr) -> String {
    let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok();
    if literal {
        format!("{addr} is not a public address")
    } else {
        "it resolves to an address that is not public".into()
    }
}

/// Which addresses outbound requests may reach: public ones, plus the
/// networks the operator allows (`--outbound-allow-cidr`, for the emulator
/// on loopback in tests, `make demo` and the chart's emulator mode).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    allow: Vec<IpNet>,
}

impl OutboundPolicy {
    /// Public addresses and `allow`.
    #[must_use]
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// Whether `ip` may be reached.
    #[must_use]
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        is_public(ip) || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// `Ok` when `ip` may be reached for `host`.
    ///
    /// # Errors
    /// [`OutboundError::Refused`] otherwise.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), OutboundError> {
        if self.permits(ip) { Ok(()) } else { Err(OutboundError::Refused { host: host.to_string(), addr: ip }) }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Whether `ip` is a globally routed unicast address: not unspecified,
/// loopback, private (RFC 1918), link-local (cloud metadata
/// 169.254.169.254 included), CGNAT (100.64/10), unique-local (fc00::/7),
/// multicast, broadcast, documentation, benchmarking or reserved.
#[must_use]
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && ip.segments()[1] == 0x0db8
        || first == 0x0064 && ip.segments()[1] == 0xff9b
        // 6to4 and Teredo carry an IPv4 address (possibly a private one) inside.
        || first == 0x2002
        || first == 0x2001 && ip.segments()[1] == 0x0000
        || ip.to_ipv4().is_some_and(|v4| !public_v4(v4)))
}

/// The resolver the [`OutboundClient`] connects through: it resolves with
/// the system resolver and refuses the name when any address it resolves
/// to is not permitted, so the connection only ever goes to checked ones.
struct CheckedResolver {
    policy: Arc<OutboundPolicy>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| OutboundError::Resolve { host: host.clone(), message: e.to_string() })?
                .collect();
            for a in &addrs {
                policy.check(&host, a.ip())?;
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// An HTTP client for tenant-controlled URLs: GET only, no redirects, no
/// proxy, every address checked against its [`OutboundPolicy`].
#[derive(Clone)]
pub struct OutboundClient {
    http: reqwest::Client,
    policy: Arc<OutboundPolicy>,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl OutboundClient {
    /// A client under `policy` whose requests give up after `timeout`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(policy: OutboundPolicy, timeout: Duration) -> Result<Self, OutboundError> {
        crate::telemetry::install_crypto_provider();
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver { policy: policy.clone() }))
            .build()
            .map_err(|e| OutboundError::Client(e.to_string()))?;
        Ok(Self { http, policy })
    }

    /// The policy requests are checked against.
    #[must_use]
    pub fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    /// `GET url`. A redirect is the answer (3xx), not followed.
    ///
    /// # Errors
    /// [`OutboundError::Unsupported`] for a URL that is not http(s) with a
    /// host, [`OutboundError::Refused`] when the host is or resolves to an
    /// address the policy does not permit (nothing is sent), and resolve,
    /// timeout and connection failures.
    pub async fn get(&self, url: &str) -> Result<reqwest::Response, OutboundError> {
        let unsupported = || OutboundError::Unsupported { url: url.to_string() };
        let parsed = reqwest::Url::parse(url).map_err(|_| unsupported())?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(unsupported());
        }
        let host = parsed.host_str().ok_or_else(unsupported)?.to_string();
        // An IP literal is connected to as written: no resolver sees it.
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            self.policy.check(&host, ip)?;
        }
        self.http.get(parsed).send().await.map_err(|e| classify(&host, &e))
    }
}

/// The refusal or resolve failure inside a reqwest error, else its kind.
fn classify(host: &str, e: &reqwest::Error) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(o) = s.downcast_ref::<OutboundError>() {
            return match o {
                OutboundError::Refused { host, addr } => OutboundError::Refused { host: host.clone(), addr: *addr },
                other => OutboundError::Resolve { host: host.to_string(), message: other.to_string() },
            };
        }
        source = s.source();
    }
    if e.is_timeout() {
        OutboundError::Timeout { host: host.to_string() }
    } else {
        OutboundError::Request { host: host.to_string(), message: e.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_are_public() {
        for refused in [
            "0.0.0.0",
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            // Audit (session 16): 6to4 of 127.0.0.1 was attempted; Teredo likewise.
            "2002:7f00:1::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(!is_public(ip(refused)), "{refused} counted as public");
        }
        // A refused name does not tell what it resolves to; a literal is itself.
        let by_name = OutboundError::Refused { host: "db.internal".into(), addr: ip("10.0.0.7") }.to_string();
        assert!(!by_name.contains("10.0.0.7") && by_name.contains("not public"), "{by_name}");
        let literal = OutboundError::Refused { host: "[::1]".into(), addr: ip("::1") }.to_string();
        assert!(literal.contains("::1 is not a public address"), "{literal}");
        for public in ["1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.1", "172.32.0.1", "2606:4700::1111"] {
            assert!(is_public(ip(public)), "{public} refused");
        }
    }

    /// A loopback server counting the requests that reach it: `/hop`
    /// redirects to `/target`.
    async fn server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>, tokio::task::JoinHandle<()>) {
        use axum::routing::get;
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = |hits: Arc<std::sync::atomic::AtomicUsize>| {
            axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move { next.run(req).await }
            })
        };
        let app = axum::Router::new()
            .route("/hop", get(|| async { axum::response::Redirect::temporary("/target") }))
            .route("/target", get(|| async { "ok" }))
            .layer(counted(hits.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (addr, hits, task)
    }

    fn client(allow: &[&str]) -> OutboundClient {
        crate::telemetry::install_crypto_provider();
        let nets = allow.iter().map(|n| n.parse().unwrap()).collect();
        OutboundClient::new(OutboundPolicy::new(nets), Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn loopback_private_and_metadata_are_refused_before_any_request() {
        let (addr, hits, task) = server().await;
        let strict = client(&[]);
        for url in [
            format!("http://127.0.0.1:{}/target", addr.port()),
            format!("http://[::ffff:127.0.0.1]:{}/target", addr.port()),
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "http://10.0.0.1/".to_string(),
            "http://[fd00::1]/".to_string(),
            "http://0.0.0.0/".to_string(),
        ] {
            let e = strict.get(&url).await.unwrap_err();
            assert!(matches!(e, OutboundError::Refused { .. }), "{url}: {e}");
        }
        // A name that resolves to loopback is refused after resolving.
        let e = strict.get(&format!("http://localhost:{}/target", addr.port())).await.unwrap_err();
        assert!(matches!(e, OutboundError::Refused { .. }), "{e}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "a refused request reached the server");
        // Allowing loopback does not allow the metadata address.
        let loopback = client(&["127.0.0.0/8", "::1/128"]);
        let e = loopback.get("http://169.254.169.254/latest/meta-data/").await.unwrap_err();
        assert!(matches!(e, OutboundError::Refused { .. }), "{e}");
        let r = loopback.get(&format!("http://localhost:{}/target", addr.port())).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(matches!(strict.get("file:///etc/passwd").await, Err(OutboundError::Unsupported { .. })));
        task.abort();
    }

    #[tokio::test]
    async fn a_redirect_is_the_answer_and_is_not_followed() {
        let (addr, hits, task) = server().await;
        let r = client(&["127.0.0.0/8"]).get(&format!("http://127.0.0.1:{}/hop", addr.port())).await.unwrap();
        assert_eq!(r.status(), 307);
        assert_eq!(r.headers()["location"], "/target");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "the redirect was followed");
        task.abort();
    }

    #[test]
    fn allowed_networks_widen_the_policy_and_nothing_else() {
        let policy = OutboundPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(policy.permits(ip("127.0.0.1")) && policy.permits(ip("::ffff:127.0.0.1")));
        assert!(!policy.permits(ip("169.254.169.254")) && !policy.permits(ip("10.0.0.1")));
        assert!(OutboundPolicy::default().check("h", ip("127.0.0.1")).is_err());
    }
}
