//! Templates: what an E2B `templateID` means here. A template is a CodeBeaker box profile (the
//! session's language, its memory and CPU, and files to seed its workspace with), not an image:
//! nothing is built from a Dockerfile. `base` (the SDK's default) and `code-interpreter-v1` (the
//! code-interpreter SDK's default) are always defined and give a box with every installed
//! language; the server's configuration can add more.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The templates every server knows, whatever its configuration says.
pub const BUILT_IN: [&str; 2] = ["base", "code-interpreter-v1"];

/// The language a template without `languages` gives its session (for `execute`; shell commands
/// reach every installed toolchain whatever the session's language).
const DEFAULT_LANGUAGE: &str = "python";

/// The E2B front door's settings (the `[e2b]` section of the configuration file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct E2bConfig {
    /// Templates by id, besides (or replacing) the built-in `base` and `code-interpreter-v1`.
    pub templates: BTreeMap<String, TemplateConfig>,
}

/// One template: a box profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplateConfig {
    /// The languages the template is for; the first is the session's language. Empty: the
    /// default language (every installed toolchain is in every box all the same).
    pub languages: Vec<String>,
    /// The box's memory limit in MiB; `None`: the engine's default.
    pub memory_mb: Option<u64>,
    /// The box's CPU, in cores; `None`: the engine's default.
    pub cpu_count: Option<u32>,
    /// Files written into the workspace of every new sandbox: path (relative to the workspace)
    /// to UTF-8 content.
    pub files: BTreeMap<String, String>,
}

impl E2bConfig {
    /// Checks the templates; the error names the key and says why.
    pub fn validate(&self) -> Result<(), String> {
        for (id, template) in &self.templates {
            if id.trim().is_empty() {
                return Err("e2b.templates: a template id must not be empty".into());
            }
            if template.memory_mb.is_some_and(|mb| mb < 16) {
                return Err(format!("e2b.templates.{id}.memory_mb: must be at least 16"));
            }
            if template.cpu_count == Some(0) {
                return Err(format!("e2b.templates.{id}.cpu_count: must be at least 1"));
            }
            if template.files.keys().any(|p| p.trim().is_empty()) {
                return Err(format!(
                    "e2b.templates.{id}.files: a file path must not be empty"
                ));
            }
        }
        Ok(())
    }

    /// The template `id` (a configured one first, then a built-in one), or `None`.
    pub fn template(&self, id: &str) -> Option<TemplateConfig> {
        self.templates
            .get(id)
            .cloned()
            .or_else(|| BUILT_IN.contains(&id).then(TemplateConfig::default))
    }

    /// Every known template id, sorted, for the message of an unknown one.
    pub fn known(&self) -> Vec<String> {
        let mut known: Vec<String> = BUILT_IN.iter().map(|s| s.to_string()).collect();
        known.extend(self.templates.keys().cloned());
        known.sort();
        known.dedup();
        known
    }
}

impl TemplateConfig {
    /// The session language of a sandbox of this template.
    pub fn language(&self) -> &str {
        self.languages
            .first()
            .map_or(DEFAULT_LANGUAGE, String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_templates_exist_and_configured_ones_come_first() {
        let mut config = E2bConfig::default();
        assert_eq!(config.template("base"), Some(TemplateConfig::default()));
        assert!(config.template("code-interpreter-v1").is_some());
        assert!(config.template("nope").is_none());
        config.templates.insert(
            "node".into(),
            TemplateConfig {
                languages: vec!["javascript".into()],
                ..TemplateConfig::default()
            },
        );
        assert_eq!(
            config.template("node").map(|t| t.language().to_string()),
            Some("javascript".into())
        );
        assert_eq!(
            config.template("base").map(|t| t.language().to_string()),
            Some("python".into())
        );
        assert_eq!(config.known(), ["base", "code-interpreter-v1", "node"]);
    }

    #[test]
    fn bad_templates_are_named() {
        let mut config = E2bConfig::default();
        config.templates.insert(
            "tiny".into(),
            TemplateConfig {
                memory_mb: Some(1),
                ..TemplateConfig::default()
            },
        );
        let error = config.validate().expect_err("too little memory");
        assert!(error.contains("e2b.templates.tiny.memory_mb"), "{error}");
    }
}
