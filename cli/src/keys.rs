//! `reid keys init`: the keys a deployment needs, made once. Docker compose runs it before the
//! services start, so that a clean `docker compose up` is protected by keys nobody else knows.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use rand::RngCore;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Writes `api-key` (reid's) and `qdrant-api-key` under --dir unless they exist: from
    /// REID_API_KEY / QDRANT_API_KEY when set, otherwise 32 random bytes in hex.
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[arg(long)]
    dir: PathBuf,
}

/// 32 random bytes from the operating system's generator, as hex.
fn random_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `name` under `dir` (readable by its owner only) unless it exists; true if written.
fn ensure(dir: &Path, name: &str, given: Option<String>) -> anyhow::Result<bool> {
    let path = dir.join(name);
    if path.exists() {
        return Ok(false);
    }
    let key = given.filter(|k| !k.trim().is_empty()).unwrap_or_else(random_key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{}", key.trim())?;
    Ok(true)
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Init(args) => {
            std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
            for (name, env) in [("api-key", "REID_API_KEY"), ("qdrant-api-key", "QDRANT_API_KEY")] {
                let made = ensure(&args.dir, name, std::env::var(env).ok())?;
                let path = args.dir.join(name);
                println!("{} {}", if made { "wrote" } else { "kept" }, path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keys_are_made_once_random_and_private() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure(dir.path(), "k", None).unwrap());
        let first = std::fs::read_to_string(dir.path().join("k")).unwrap();
        assert_eq!(first.trim().len(), 64);
        assert!(!ensure(dir.path(), "k", Some("other".into())).unwrap(), "an existing key was replaced");
        assert_eq!(std::fs::read_to_string(dir.path().join("k")).unwrap(), first);
        assert!(ensure(dir.path(), "k2", None).unwrap());
        assert_ne!(std::fs::read_to_string(dir.path().join("k2")).unwrap(), first);
        assert!(ensure(dir.path(), "given", Some(" s3cret \n".into())).unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("given")).unwrap(), "s3cret\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("k")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
