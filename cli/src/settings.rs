//! A service's configuration, with every field reachable without a flag written for it: the
//! TOML file (or the defaults), then each `PREFIX__SECTION__KEY=value` environment variable,
//! then each `--set section.key=value`, then the service's named flags. The config struct is the
//! one declaration: a key has the spelling it has in the file (`association.merge_threshold`,
//! `REID_IDENTITY__ASSOCIATION__MERGE_THRESHOLD`), a value is read as a TOML value (a bare word
//! as a string), and a misspelt key is refused by the config's `deny_unknown_fields`.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// This process's environment, skipping variables that are not UTF-8 (`std::env::vars` would
/// panic on them).
pub fn environment() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

/// A service's config from its TOML file, or its defaults without one.
pub(crate) fn read_toml<T: DeserializeOwned + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
        }
        None => Ok(T::default()),
    }
}

/// Reads `T` from `path` (defaults when `None`) with the overrides of `env` (variables named
/// `PREFIX__...`) and `sets` (`key.path=value`) applied in that order.
pub fn read_config<T: DeserializeOwned>(
    path: Option<&Path>,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> anyhow::Result<T> {
    let mut table = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            text.parse::<Table>().with_context(|| format!("parsing {}", path.display()))?
        }
        None => Table::new(),
    };
    let prefix = format!("{env_prefix}__");
    let mut from_env: Vec<(String, String)> = env
        .into_iter()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(&prefix)?.split("__").map(str::to_lowercase).collect::<Vec<_>>().join(".");
            Some((key, value))
        })
        .collect();
    from_env.sort();
    for (key, value) in &from_env {
        set(&mut table, key, value).with_context(|| format!("{prefix}{}", key.to_uppercase().replace('.', "__")))?;
    }
    for pair in sets {
        let (key, value) =
            pair.split_once('=').with_context(|| format!("--set {pair:?}: expected section.key=value"))?;
        set(&mut table, key.trim(), value.trim()).with_context(|| format!("--set {pair:?}"))?;
    }
    let source = path.map_or("the defaults".to_owned(), |p| p.display().to_string());
    T::deserialize(Value::Table(table)).with_context(|| format!("the configuration ({source} with the overrides)"))
}

/// Sets `key` (dotted) in `table` to `value` read as TOML (a bare word as a string).
fn set(table: &mut Table, key: &str, value: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    anyhow::ensure!(parts.iter().all(|p| !p.is_empty()), "{key:?} is not a key");
    let value = format!("v = {value}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(value.to_owned()));
    let (last, sections) = parts.split_last().unwrap_or((&"", &[]));
    let mut at = table;
    for section in sections {
        let entry = at.entry((*section).to_owned()).or_insert_with(|| Value::Table(Table::new()));
        at = entry.as_table_mut().with_context(|| format!("{section} is a value, not a section"))?;
    }
    at.insert((*last).to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(default, deny_unknown_fields)]
    struct Config {
        name: String,
        threads: u32,
        inner: Inner,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(default, deny_unknown_fields)]
    struct Inner {
        threshold: Option<f32>,
        on: bool,
        hosts: Vec<String>,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn file_then_environment_then_sets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "name = \"file\"\nthreads = 2\n[inner]\nthreshold = 0.5\n").unwrap();
        let env = env(&[
            ("SVC__THREADS", "4"),
            ("SVC__INNER__ON", "true"),
            ("SVC__INNER__HOSTS", "[\"a\", \"b\"]"),
            ("SVC_THREADS", "9"), // one underscore: a named flag's variable, not an override
            ("OTHER__THREADS", "7"),
        ]);
        let sets = ["inner.threshold=0.75".to_owned(), "name = from-set".to_owned()];
        let c: Config = read_config(Some(&file), "SVC", env, &sets).unwrap();
        assert_eq!(
            c,
            Config {
                name: "from-set".into(),
                threads: 4,
                inner: Inner { threshold: Some(0.75), on: true, hosts: vec!["a".into(), "b".into()] },
            }
        );
        let defaults: Config = read_config(None, "SVC", Vec::new(), &[]).unwrap();
        assert_eq!(defaults, Config::default());
    }

    #[test]
    fn misspelt_keys_and_bad_values_are_refused() {
        let err = read_config::<Config>(None, "SVC", Vec::new(), &["inner.treshold=0.5".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("treshold"), "{err:#}");
        let err = read_config::<Config>(None, "SVC", env(&[("SVC__THREADS", "many")]), &[]).unwrap_err();
        assert!(format!("{err:#}").contains("threads") || format!("{err:#}").contains("invalid type"), "{err:#}");
        let err = read_config::<Config>(None, "SVC", Vec::new(), &["threads".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("expected section.key=value"), "{err:#}");
        let err = read_config::<Config>(None, "SVC", Vec::new(), &["name=a".into(), "name.x=1".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("name is a value, not a section"), "{err:#}");
    }
}
