//! Judge0's language ids (the data table `languages.toml`) resolved against the toolchains this
//! host has: the languages `GET /languages` lists, each named by the toolchain found here.

use std::collections::BTreeMap;

use codebeaker_engine::Engine;
use serde::{Deserialize, Serialize};

/// The table, as shipped.
const TABLE: &str = include_str!("languages.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    language: Vec<Row>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    id: u32,
    language: String,
    name: String,
    #[allow(dead_code)]
    upstream: String,
}

/// One Judge0 language id that runs here.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Judge0Language {
    pub id: u32,
    /// Its name, with the version of the toolchain found here.
    pub name: String,
    /// The registry's name for it.
    #[serde(skip)]
    pub language: String,
    pub is_archived: bool,
    pub source_file: String,
    pub compile_cmd: Option<String>,
    pub run_cmd: String,
}

/// The ids whose language's toolchain is installed here, by id.
pub(crate) fn available(engine: &Engine) -> BTreeMap<u32, Judge0Language> {
    let table: Table = match toml::from_str(TABLE) {
        Ok(table) => table,
        Err(error) => {
            // The table ships with the binary; a unit test keeps it valid.
            tracing::error!(%error, "the Judge0 language table does not parse");
            return BTreeMap::new();
        }
    };
    let registry = engine.registry();
    let toolchains = registry.discover();
    table
        .language
        .into_iter()
        .filter_map(|row| {
            let toolchain = toolchains.get(&row.language).filter(|t| t.available)?;
            let language = registry.resolve(&row.language).ok()?;
            let version = toolchain
                .version
                .clone()
                .unwrap_or_else(|| "unknown".into());
            let variant = toolchain.variant.as_deref().map_or_else(String::new, title);
            let name = row
                .name
                .replace("{version}", &version)
                .replace("{toolchain}", &variant);
            let (compile_cmd, run_cmd) = commands(engine, &row.language);
            Some((
                row.id,
                Judge0Language {
                    id: row.id,
                    name,
                    language: language.name().to_string(),
                    is_archived: false,
                    source_file: language.main_file().to_string(),
                    compile_cmd,
                    run_cmd,
                },
            ))
        })
        .collect()
}

/// The compile and run command lines of an empty program of `language`, as the box runs them
/// (sources in `.`, the compiled program in `out`).
fn commands(engine: &Engine, language: &str) -> (Option<String>, String) {
    let plan = match engine
        .registry()
        .prepare(language, "", codebeaker_languages::Mode::Script)
    {
        Ok(plan) => plan,
        Err(_) => return (None, String::new()),
    };
    let (src, out) = (std::path::Path::new("."), std::path::Path::new("out"));
    let compile = plan
        .has_compile_step()
        .then(|| plan.compile_step(src, out))
        .flatten()
        .map(|step| step.argv.join(" "));
    (compile, plan.run_step(src, out).argv.join(" "))
}

/// `mono` → `Mono`.
fn title(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_its_ids_are_unique() {
        let table: Table = toml::from_str(TABLE).expect("the table parses");
        let mut ids: Vec<u32> = table.language.iter().map(|r| r.id).collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "every id once");
        assert!(ids.contains(&71) && ids.contains(&54) && ids.contains(&62));
        for row in &table.language {
            assert!(
                row.name.contains("{version}"),
                "{} names its version",
                row.id
            );
        }
    }

    #[test]
    fn variants_are_titled() {
        assert_eq!(title("mono"), "Mono");
        assert_eq!(title(""), "");
    }
}
