//! The `schema` step: the tenant migrations (`migrations/tenant`: memories,
//! conversations, messages, usage) applied to the tenant's own database.
//! sqlx records what ran in `_sqlx_migrations` and takes an advisory lock,
//! so reapplying is a read and two runs never race.
//!
//! TLS: a tenant database elsewhere is reached only over TLS with its
//! certificate and host name verified (`verify-full`) against the webpki
//! roots, plus the operator's `PGSSLROOTCERT` (the standard libpq variable,
//! e.g. for Supabase's own CA), whatever `sslmode` the provider's URL
//! carries: the connection carries the tenant's password. A database on
//! loopback (the emulator's) keeps its plain connection; a loopback URL that
//! asks for TLS gets it verified too. Trust anchors come from the operator,
//! never from the URL (`sslrootcert` in it is dropped).
use std::net::IpAddr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};

use super::EngineError;
use super::error::Redacted;

/// The tenant migrations ([`crate::tenant_schema`], shared with the agent runtime).
#[must_use]
pub fn migrator() -> sqlx::migrate::Migrator {
    crate::tenant_schema::migrator()
}

/// Identifies the database behind `database_url` without its credentials:
/// `sha256:` over host, port and database name.
#[must_use]
pub fn target_of(database_url: &str) -> String {
    use sha2::{Digest, Sha256};
    let (host, port, db) = match database_url.parse::<sqlx::postgres::PgConnectOptions>() {
        Ok(o) => (o.get_host().to_string(), o.get_port(), o.get_database().unwrap_or_default().to_string()),
        Err(_) => (String::new(), 0, String::new()),
    };
    format!("sha256:{}", hex::encode(Sha256::digest(format!("{host}:{port}/{db}"))))
}

/// URL parameters that would name trust anchors; only the operator's count.
const ROOT_CERT_PARAMS: [&str; 3] = ["sslrootcert", "ssl-root-cert", "ssl-ca"];

/// The connection options for the tenant database at `database_url`, with
/// the TLS policy of this module applied (see the module docs).
///
/// # Errors
/// `InvalidDatabaseUrl` (which stalls) when the URL cannot be parsed; it
/// never names the URL's secrets.
pub fn connect_options(database_url: &str) -> Result<PgConnectOptions, EngineError> {
    let mut url = reqwest::Url::parse(database_url).map_err(|_| EngineError::InvalidDatabaseUrl)?;
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !ROOT_CERT_PARAMS.contains(&k.as_ref()))
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    let options: PgConnectOptions = url.as_str().parse().map_err(|_| EngineError::InvalidDatabaseUrl)?;
    let mode = tls_mode(options.get_host(), options.get_socket().is_some(), options.get_ssl_mode());
    Ok(options.ssl_mode(mode))
}

/// The `sslmode` used for a database at `host` (or a Unix socket) whose URL
/// asked for `asked`: `verify-full` for anything beyond this machine; on
/// loopback, plain unless TLS was asked for, and then verified.
#[must_use]
pub fn tls_mode(host: &str, socket: bool, asked: PgSslMode) -> PgSslMode {
    if !(socket || is_loopback(host)) {
        return PgSslMode::VerifyFull;
    }
    match asked {
        PgSslMode::Disable | PgSslMode::Allow | PgSslMode::Prefer => PgSslMode::Disable,
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull => PgSslMode::VerifyFull,
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// How many tenant migrations exist.
#[must_use]
pub fn latest_version() -> i64 {
    migrator().iter().map(|m| m.version).max().unwrap_or(0)
}

/// Applies every pending tenant migration to `database_url`; returns how
/// many were newly applied.
///
/// # Errors
/// `TenantDatabase` (retried) when the database is unreachable (a fresh
/// Neon endpoint may take a moment); `Migration` (which stalls) when a
/// migration itself fails.
pub async fn apply(database_url: &str) -> Result<usize, EngineError> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(connect_options(database_url)?)
        .await
        .map_err(unreachable("connect to the tenant database"))?;
    let applied_before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'public' AND tablename = '_sqlx_migrations'",
    )
    .fetch_one(&pool)
    .await
    .map_err(unreachable("read the tenant database"))?;
    let before = if applied_before > 0 {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .map_err(unreachable("read applied migrations"))?
    } else {
        0
    };
    let result = migrator().run(&pool).await;
    pool.close().await;
    result.map_err(EngineError::Migration)?;
    Ok(usize::try_from(latest_version() - before).unwrap_or(0))
}

/// The tenant database did not answer while the step tried `doing`.
fn unreachable(doing: &'static str) -> impl FnOnce(sqlx::Error) -> EngineError {
    move |e| EngineError::TenantDatabase { doing, error: Redacted(e) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> PgSslMode {
        connect_options(url).expect("parses").get_ssl_mode()
    }

    fn verified(url: &str) -> bool {
        matches!(mode(url), PgSslMode::VerifyFull)
    }

    fn plain(url: &str) -> bool {
        matches!(mode(url), PgSslMode::Disable)
    }

    #[test]
    fn remote_databases_are_always_verified() {
        // What Neon and Supabase hand out, and what a hostile answer could.
        for url in [
            "postgresql://u:p@ep-x-123.us-east-2.aws.neon.tech/db?sslmode=require",
            "postgresql://postgres:pw@db.abcd.supabase.co:5432/postgres",
            "postgresql://u:p@db.example.com/db?sslmode=disable",
            "postgresql://u:p@db.example.com/db?sslmode=prefer",
            "postgresql://u:p@10.0.0.7/db?sslmode=verify-ca",
            "postgresql://u:p@127.example.com/db",
        ] {
            assert!(verified(url), "{url}");
        }
    }

    #[test]
    fn loopback_stays_plain_unless_tls_is_asked_for_and_then_is_verified() {
        for (url, tls) in [
            ("postgresql://u:p@127.0.0.1:5432/db", false),
            ("postgresql://u:p@127.0.0.2:5432/db?sslmode=prefer", false),
            ("postgresql://u:p@localhost/db?sslmode=allow", false),
            ("postgresql://u:p@[::1]:5432/db", false),
            ("postgresql://u:p@127.0.0.1/db?sslmode=require", true),
            ("postgresql://u:p@[::1]/db?sslmode=verify-ca", true),
        ] {
            assert!(if tls { verified(url) } else { plain(url) }, "{url}");
        }
        assert!(matches!(tls_mode("", true, PgSslMode::Prefer), PgSslMode::Disable), "a Unix socket");
    }

    #[test]
    fn the_url_names_no_trust_anchor_and_keeps_the_rest() {
        let o = connect_options(
            "postgresql://u:p@db.example.com:6543/app?sslrootcert=/tmp/evil.pem&application_name=w&ssl-ca=x",
        )
        .expect("parses");
        assert!(!format!("{o:?}").contains("evil.pem"), "{o:?}");
        assert_eq!((o.get_host(), o.get_port(), o.get_database()), ("db.example.com", 6543, Some("app")));
        assert_eq!(o.get_application_name(), Some("w"));
        assert!(matches!(o.get_ssl_mode(), PgSslMode::VerifyFull));
        let err = connect_options("not a url at all").expect_err("refused");
        assert!(!err.to_string().contains("not a url"), "{err}");
    }
}
