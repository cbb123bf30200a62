//! The business profile the website analyzer proposed for a Tenant: kept in
//! `Tenant.status.profile` with where it came from and what it cost, and
//! copied (its fields only) into each TenantInstance's spec so the workspace
//! renders it wherever the Tenant's spec says nothing.
//!
//! Every text field is data a model derived from a stranger's web page; the
//! analyzer validated it (lengths, one line, colour, tone) and the workspace
//! quotes it as data only.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::shared::Tone;

/// What the analyzer proposed (the seeds' shape).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebsiteProfile {
    /// The business's name as the site gives it.
    pub business_name: String,
    /// Its industry, for example `cannabis dispensary`.
    pub industry: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_industry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<String>,
    /// What the business does, in a few sentences.
    pub description: String,
    /// `#rrggbb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand_color: Option<String>,
    /// What the agent could do for this business.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggested_capabilities: Vec<String>,
    /// A name for the agent.
    pub suggested_agent_name: String,
    /// The tone the agent should take.
    pub tone: Tone,
}

/// `status.profile`: the last successful analysis of `spec.website`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileStatus {
    /// The website analysed (equal to `spec.website` while it is current).
    pub source_url: String,
    /// `sha256:` of the page text the model read.
    pub content_hash: String,
    /// The model that proposed it, through Winston's proxy.
    pub model: String,
    /// Tokens the analysis used on the `system` account (input + output).
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// When the analysis finished (RFC 3339).
    pub analyzed_at: String,
    /// How long it took, in milliseconds.
    pub elapsed_ms: u64,
    /// The value of the annotation `winston.dev/reanalyze` this analysis
    /// answered, so a new value asks for one more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reanalyze_token: Option<String>,
    /// The proposed profile.
    #[serde(flatten)]
    pub fields: WebsiteProfile,
}
