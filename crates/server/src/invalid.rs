//! A setting refused at start-up, named by its key as the service's TOML file writes it (and as
//! `--set key=value` and `REID_<SERVICE>__TABLE__KEY` name it), with the reason.

/// A configuration value that cannot work. `Display` is `key: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The dotted key, e.g. `association.threshold`.
    pub key: String,
    /// Why the value is refused, without the key.
    pub reason: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { key: key.into(), reason: reason.into() }
    }

    /// The same refusal inside the table `table`: key `m` becomes `index.m`.
    pub fn within(self, table: &str) -> Self {
        Self { key: format!("{table}.{}", self.key), ..self }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for Invalid {}

/// `Ok` when `ok`, else `key` refused for `reason` (made only when needed).
pub fn ensure(ok: bool, key: &str, reason: impl FnOnce() -> String) -> Result<(), Invalid> {
    if ok { Ok(()) } else { Err(Invalid::new(key, reason())) }
}

/// Each of these counts must be above zero.
pub fn positive(counts: &[(&str, u64)]) -> Result<(), Invalid> {
    match counts.iter().find(|(_, n)| *n == 0) {
        Some((key, _)) => Err(Invalid::new(*key, "must be positive")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_its_full_key() {
        let e = Invalid::new("m", "5000 is outside 4..=128").within("index");
        assert_eq!(e.key, "index.m");
        assert_eq!(e.to_string(), "index.m: 5000 is outside 4..=128");
        assert_eq!(ensure(true, "a", || unreachable!()), Ok(()));
        assert_eq!(ensure(false, "a", || "no".into()), Err(Invalid::new("a", "no")));
        assert_eq!(positive(&[("a", 1), ("b", 0), ("c", 0)]).unwrap_err().key, "b");
        assert!(positive(&[("a", 1)]).is_ok());
    }
}
