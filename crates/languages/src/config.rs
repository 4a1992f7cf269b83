//! The on-disk (TOML) schema of the registry, and how an override merges into it.
//!
//! Every field of a language is optional here so that an override can name only what it changes;
//! [`crate::registry`] checks the merged result and reports missing fields by key.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The highest schema version this crate understands.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// A whole registry file: `schema = 1` plus `[languages.NAME]` tables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegistryFile {
    pub schema: Option<u32>,
    #[serde(default)]
    pub languages: BTreeMap<String, LanguageConfig>,
}

/// One `[languages.NAME]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LanguageConfig {
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub aliases: Option<Vec<String>>,
    pub extensions: Option<Vec<String>>,
    pub main_file: Option<String>,
    pub main_file_pattern: Option<String>,
    pub main_file_entry: Option<EntryConfig>,
    pub snippet: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub toolchains: Option<Vec<ToolchainConfig>>,
}

/// One `[[languages.NAME.toolchains]]` entry: a way to build and run the language.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToolchainConfig {
    pub name: String,
    pub package: String,
    pub tools: BTreeMap<String, Vec<String>>,
    pub version: VersionProbeConfig,
    #[serde(default)]
    pub compile: Option<Vec<String>>,
    pub run: Vec<String>,
    #[serde(default)]
    pub artifacts: Vec<String>,
    #[serde(default)]
    pub mounts: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// A built-in warm worker that can run this toolchain's programs (`python`).
    #[serde(default)]
    pub warm: Option<String>,
    /// A directory the compile step reuses between compiles (Go's build cache).
    #[serde(default)]
    pub build_cache: Option<BuildCacheConfig>,
}

/// `build_cache = { dir = "/tmp/...", seed = "..." }`: a directory under `/tmp` that the compile
/// step reuses between compiles, filled once by compiling `seed` (a program in script mode) and
/// then copied into each compile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BuildCacheConfig {
    pub dir: String,
    pub seed: String,
}

/// `main_file_entry = { declares = '...', before = '...' }`: when `main_file_pattern` does not
/// match, the main file is named after the last `declares` capture that comes before the first
/// `before` match (Java: the class that declares `main`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntryConfig {
    pub declares: String,
    pub before: String,
}

/// `version = { argv = [...], regex = '...' }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionProbeConfig {
    pub argv: Vec<String>,
    pub regex: String,
}

impl LanguageConfig {
    /// Field by field: what `over` sets wins, everything else stays as in `self`.
    pub(crate) fn merged_with(self, over: LanguageConfig) -> LanguageConfig {
        LanguageConfig {
            description: over.description.or(self.description),
            enabled: over.enabled.or(self.enabled),
            aliases: over.aliases.or(self.aliases),
            extensions: over.extensions.or(self.extensions),
            main_file: over.main_file.or(self.main_file),
            main_file_pattern: over.main_file_pattern.or(self.main_file_pattern),
            main_file_entry: over.main_file_entry.or(self.main_file_entry),
            snippet: over.snippet.or(self.snippet),
            env: over.env.or(self.env),
            toolchains: over.toolchains.or(self.toolchains),
        }
    }
}

/// Parses a registry file, naming `source` in errors (toml's messages carry line and key).
pub(crate) fn parse(source: &str, text: &str) -> Result<RegistryFile, crate::LanguageError> {
    let file: RegistryFile = toml::from_str(text)
        .map_err(|e| crate::LanguageError::config(source, e.to_string().trim_end().to_string()))?;
    if let Some(schema) = file.schema {
        if schema > SCHEMA_VERSION {
            return Err(crate::LanguageError::config(
                format!("{source}: schema"),
                format!("schema {schema} is newer than this build understands ({SCHEMA_VERSION})"),
            ));
        }
    }
    Ok(file)
}
