//! The `[forward_auth]` table: where `/auth` looks for the key besides `Authorization: Bearer`
//! (`key_headers`, default `["X-API-Key"]`; `key_query_param`, off by default because URLs end up
//! in access logs) and which metadata fields become headers (`[forward_auth.metadata_headers]`,
//! `"X-User" = "user"`).

use super::ConfigError;
use hyper::header::HeaderName;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Headers a metadata field may not become: the answer's own and those that frame HTTP.
const RESERVED: [&str; 10] = [
    "www-authenticate",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "cache-control",
    "host",
    "te",
];

/// The table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ForwardAuthSection {
    pub key_headers: Option<Vec<String>>,
    pub key_query_param: Option<String>,
    pub metadata_headers: Option<BTreeMap<String, String>>,
}

/// How `/auth` reads keys and answers identities.
#[derive(Debug, Clone)]
pub struct ForwardAuthSettings {
    pub key_headers: Vec<HeaderName>,
    pub key_query_param: Option<String>,
    /// (header, metadata field), in header order.
    pub metadata_headers: Vec<(HeaderName, String)>,
}

impl Default for ForwardAuthSettings {
    fn default() -> Self {
        ForwardAuthSettings {
            key_headers: vec![HeaderName::from_static("x-api-key")],
            key_query_param: None,
            metadata_headers: Vec::new(),
        }
    }
}

impl ForwardAuthSettings {
    pub(super) fn describe(&self) -> Vec<String> {
        let headers: Vec<&str> = self.key_headers.iter().map(HeaderName::as_str).collect();
        let mapped: Vec<String> = self
            .metadata_headers
            .iter()
            .map(|(header, field)| format!("{header}={field}"))
            .collect();
        vec![
            format!("forward_auth.key_headers = {}", headers.join(",")),
            format!(
                "forward_auth.key_query_param = {}",
                self.key_query_param.as_deref().unwrap_or("(none)")
            ),
            format!("forward_auth.metadata_headers = {}", mapped.join(",")),
        ]
    }
}

pub(super) fn resolve(
    section: Option<&ForwardAuthSection>,
) -> Result<ForwardAuthSettings, ConfigError> {
    let Some(section) = section else {
        return Ok(ForwardAuthSettings::default());
    };
    let mut settings = ForwardAuthSettings::default();
    if let Some(names) = &section.key_headers {
        settings.key_headers = names
            .iter()
            .map(|name| header_name("forward_auth.key_headers", name))
            .collect::<Result<_, _>>()?;
    }
    settings.key_query_param = section.key_query_param.clone().filter(|p| !p.is_empty());
    for (header, field) in section.metadata_headers.iter().flatten() {
        let name = header_name("forward_auth.metadata_headers", header)?;
        if name.as_str().starts_with("x-heare-") || RESERVED.contains(&name.as_str()) {
            return Err(ConfigError::Invalid {
                setting: "forward_auth.metadata_headers",
                why: format!("{header} is one of the answer's own or framing headers"),
            });
        }
        settings.metadata_headers.push((name, field.clone()));
    }
    Ok(settings)
}

fn header_name(setting: &'static str, name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| ConfigError::Invalid {
        setting,
        why: format!("{name:?} is not a header name"),
    })
}
