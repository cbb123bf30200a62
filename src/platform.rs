//! The names of the external platforms Winston provisions on: the one
//! vocabulary the platform clients ([`crate::providers`]) and their local
//! stand-ins ([`crate::emulator`]) share. Neither of those two imports the
//! other; everything else about a platform (wire formats, errors, budgets,
//! paths) belongs to one side only.

/// An external platform Winston talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Railway,
    Neon,
    Vercel,
    Supabase,
    Resend,
}

impl Platform {
    /// Every platform, in a stable order.
    pub const ALL: [Platform; 5] = [Self::Railway, Self::Neon, Self::Vercel, Self::Supabase, Self::Resend];

    /// Stable lowercase name, used in URLs, metrics and configuration.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Railway => "railway",
            Self::Neon => "neon",
            Self::Vercel => "vercel",
            Self::Supabase => "supabase",
            Self::Resend => "resend",
        }
    }

    /// Parses [`Platform::as_str`] output.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_parse_and_serde() {
        for p in Platform::ALL {
            assert_eq!(Platform::parse(p.as_str()), Some(p));
            assert_eq!(serde_json::to_value(p).unwrap(), serde_json::json!(p.as_str()));
        }
        assert_eq!(Platform::parse("heroku"), None);
    }
}
