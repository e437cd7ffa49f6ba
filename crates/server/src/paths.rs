//! Paths a caller names, confined to the folders the operator opened: what the ingester's
//! `AddCamera` and the trainer's `StartRun` check before they touch the file system for a caller.

use std::path::{Component, Path, PathBuf};

/// Whether `path` lies below one of `roots`: first lexically (absolute, no `.` or `..`, below a
/// root as written), before the file system is asked anything; then through links, when the
/// path exists (its real path below a root's real path). A path that does not exist but is below
/// a root lexically is accepted: the caller may be told it is missing.
pub fn is_confined(path: &Path, roots: &[PathBuf]) -> bool {
    let absolute = |p: &Path| std::path::absolute(p).ok();
    let Some(path) = (path.is_absolute()).then(|| path.to_path_buf()) else { return false };
    let plain = path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    let roots: Vec<PathBuf> = roots.iter().filter_map(|r| absolute(r)).collect();
    if !plain || !roots.iter().any(|root| path.starts_with(root)) {
        return false;
    }
    let Ok(real) = std::fs::canonicalize(&path) else { return true };
    roots.iter().filter_map(|root| std::fs::canonicalize(root).ok()).any(|root| real.starts_with(root))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_paths_below_the_roots_pass() {
        let root = tempfile::tempdir().unwrap();
        let roots = vec![root.path().to_path_buf()];
        std::fs::write(root.path().join("a"), b"x").unwrap();
        assert!(is_confined(&root.path().join("a"), &roots));
        assert!(is_confined(&root.path().join("missing"), &roots));
        assert!(!is_confined(&root.path().join("..").join("etc"), &roots));
        assert!(!is_confined(Path::new("/etc/passwd"), &roots));
        assert!(!is_confined(Path::new("relative/a"), &roots));
        assert!(!is_confined(&root.path().join("a"), &[]));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc", root.path().join("escape")).unwrap();
            assert!(!is_confined(&root.path().join("escape").join("passwd"), &roots));
        }
    }
}
