//! `GET runtimes`, and finding the runtime a request names.
//!
//! A runtime is a language of the registry whose toolchain was found on this host. Its
//! `language` is Piston's name for it (`c++` for our `cpp`), its `version` the toolchain's own
//! version as SemVer (`MAJOR.MINOR.PATCH`: missing parts are `0`, a fourth part and suffixes are
//! dropped, so Mono's `6.8.0.105` is `6.8.0`), and its `aliases` Piston's usual ones beside the
//! registry's. A request's `version` is an npm range matched as npm's `semver.satisfies` does
//! (the `node-semver` crate): `3.11` is `>=3.11.0 <3.12.0-0`, `*` any version.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use super::PistonError;
use crate::state::AppState;

/// What Piston says a language's `runtime` is.
#[derive(Debug, Clone, Copy)]
enum Named {
    /// Nothing: Piston names the runtime only where a language has several.
    No,
    /// Always this name (`gcc` for C and C++).
    As(&'static str),
    /// The toolchain found here (`mono` or `dotnet` for C#).
    Toolchain,
}

/// Piston's names and aliases for the registry's languages: `(registry name, Piston's language,
/// Piston's aliases, its runtime)`. A language of the registry that is not here is listed under
/// its own name and aliases.
const PISTON_NAMES: &[(&str, &str, &[&str], Named)] = &[
    ("python", "python", &["py", "py3", "python3"], Named::No),
    (
        "javascript",
        "javascript",
        &["node-javascript", "node-js", "js", "node"],
        Named::As("node"),
    ),
    (
        "typescript",
        "typescript",
        &["ts", "node-ts", "tsc"],
        Named::No,
    ),
    ("go", "go", &["golang"], Named::No),
    (
        "csharp",
        "csharp",
        &["mono", "mono-csharp", "mono-c#", "mono-cs", "c#", "cs"],
        Named::Toolchain,
    ),
    ("bash", "bash", &["sh"], Named::No),
    ("ruby", "ruby", &["ruby3", "rb"], Named::No),
    ("c", "c", &["gcc"], Named::As("gcc")),
    ("cpp", "c++", &["cpp", "g++"], Named::As("gcc")),
    ("rust", "rust", &["rs"], Named::No),
    ("java", "java", &[], Named::No),
];

/// One entry of `GET runtimes`, and what a request that names it runs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Runtime {
    pub language: String,
    pub version: String,
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The registry's name of the language.
    #[serde(skip)]
    pub registry_name: String,
    /// Whether the language has a compile stage.
    #[serde(skip)]
    pub compiled: bool,
}

/// The runtimes of this host, in the registry's order.
pub(crate) fn all(state: &AppState) -> Vec<Runtime> {
    let registry = state.engine.registry();
    let toolchains = registry.discover();
    registry
        .languages()
        .filter_map(|language| {
            let toolchain = toolchains.get(language.name()).filter(|t| t.available)?;
            let known = PISTON_NAMES
                .iter()
                .find(|(name, ..)| *name == language.name());
            let piston_language = known.map_or(language.name(), |(_, piston, ..)| *piston);
            let mut aliases: Vec<String> = Vec::new();
            let mut add = |alias: &str| {
                if alias != piston_language && !aliases.iter().any(|a| a == alias) {
                    aliases.push(alias.to_string());
                }
            };
            known
                .into_iter()
                .flat_map(|k| k.2.iter())
                .for_each(|a| add(a));
            language.aliases().iter().for_each(|a| add(a));
            add(language.name());
            Some(Runtime {
                language: piston_language.to_string(),
                version: semver_of(toolchain.version.as_deref().unwrap_or_default()),
                aliases,
                runtime: match known.map_or(Named::No, |k| k.3) {
                    Named::No => None,
                    Named::As(name) => Some(name.to_string()),
                    Named::Toolchain => toolchain.variant.clone(),
                },
                registry_name: language.name().to_string(),
                compiled: language.is_compiled(),
            })
        })
        .collect()
}

/// A toolchain's version as SemVer: its leading numeric parts, three of them.
pub(crate) fn semver_of(raw: &str) -> String {
    let numeric: Vec<u64> = raw
        .trim()
        .trim_start_matches(['v', 'V'])
        .split('.')
        .map_while(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            let whole = digits.len() == part.len();
            digits.parse::<u64>().ok().map(|n| (n, whole))
        })
        .scan(true, |go_on, (n, whole)| {
            // A part like `0rc1` is the last one taken.
            let this = (*go_on).then_some(n);
            *go_on = whole;
            this
        })
        .take(3)
        .collect();
    let part = |i: usize| numeric.get(i).copied().unwrap_or(0);
    format!("{}.{}.{}", part(0), part(1), part(2))
}

/// The runtime a request names: its `language` as Piston's name or an alias, and its `version`
/// a range the runtime's version satisfies. `None`: Piston's "runtime is unknown".
pub(crate) fn find(state: &AppState, language: &str, version: &str) -> Option<Runtime> {
    let range = node_semver::Range::parse(version.trim()).ok()?;
    all(state).into_iter().find(|rt| {
        (rt.language == language || rt.aliases.iter().any(|a| a == language))
            && node_semver::Version::parse(&rt.version).is_ok_and(|v| range.satisfies(&v))
    })
}

/// `GET runtimes`.
pub(crate) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<Runtime>>, PistonError> {
    super::caller(&state, &headers, "/api/v2/runtimes")?;
    Ok(Json(all(&state)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolchain_versions_become_semver() {
        for (raw, semver) in [
            ("3.11.2", "3.11.2"),
            ("1.19", "1.19.0"),
            ("12", "12.0.0"),
            ("6.8.0.105", "6.8.0"),
            ("3.13.0rc1", "3.13.0"),
            ("3.13rc1", "3.13.0"),
            ("v18.19.0", "18.19.0"),
            ("", "0.0.0"),
            ("unknown", "0.0.0"),
        ] {
            assert_eq!(semver_of(raw), semver, "{raw:?}");
        }
    }

    #[test]
    fn ranges_match_as_npm_does() {
        let satisfies = |range: &str, version: &str| {
            let range = node_semver::Range::parse(range).expect("range");
            node_semver::Version::parse(version)
                .expect("version")
                .satisfies(&range)
        };
        assert!(satisfies("3.11", "3.11.2"));
        assert!(!satisfies("3.10", "3.11.2"));
        assert!(satisfies("*", "12.2.0"));
        assert!(satisfies("3.x", "3.11.2"));
        assert!(satisfies(">=3.8 <4", "3.11.2"));
        assert!(satisfies("^3.9.1", "3.11.2"));
        assert!(!satisfies("~3.9.1", "3.11.2"));
        assert!(satisfies("3.11.2", "3.11.2"));
    }
}
