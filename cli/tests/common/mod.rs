//! What the tests that drive the real `reid` binary with an API key share.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// The key the services under test require and every `reid` call here sends.
pub const KEY: &str = "cli-test-key";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `reid ARGS` with the key.
pub fn reid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reid")).args(args).env("REID_API_KEY", KEY).output().expect("run reid")
}

/// Runs `reid ARGS`, which must succeed; its output, one JSON value per line.
pub fn ok(args: &[&str]) -> Vec<Value> {
    let out = reid(args);
    assert!(out.status.success(), "reid {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}
