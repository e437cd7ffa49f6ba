//! The real `reid` binary at start-up, as compose and shells run it: an empty variable means
//! unset, a key with a carriage return is refused loudly, printing into a closed pipe ends
//! quietly, and `reid up` will not serve a network host without a key.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn reid() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reid"));
    c.env_remove("REID_API_KEY").env_remove("REID_API_KEY_FILE");
    c
}

#[test]
fn keys_init_runs_with_the_key_variables_empty_as_compose_passes_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = reid()
        .args(["keys", "init", "--dir", dir.path().to_str().unwrap()])
        .env("REID_API_KEY", "")
        .env("REID_API_KEY_FILE", "")
        .env("QDRANT_API_KEY", "")
        .env("REID_TLS_CA", "")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = std::fs::read_to_string(dir.path().join("api-key")).unwrap();
    assert_eq!(key.trim().len(), 64, "a random key was made: {key:?}");
}

#[test]
fn a_key_captured_with_a_carriage_return_is_trimmed_and_a_broken_one_refused() {
    // `$(docker compose exec identity cat /keys/api-key)` under a TTY ends in "\r": trimmed.
    let out = reid().args(["health", "--addr", "127.0.0.1:1"]).env("REID_API_KEY", "abc123\r\n").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("api_key"), "a trailing \\r is trimmed, not refused: {stderr}");
    // A key that cannot be a header value at all is refused loudly, not silently left off.
    let out = reid().args(["health", "--addr", "127.0.0.1:1"]).env("REID_API_KEY", "two\rwords").output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be sent"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn printing_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // `reid keys init ... | head -0`: the reader is gone before anything is printed.
    let mut child = reid()
        .args(["keys", "init", "--dir", dir.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(status.success() || status.signal() == Some(13), "{status:?}: {stderr}");
    }
}

#[test]
fn reid_up_refuses_a_network_host_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = reid()
        .args(["up", "--host", "0.0.0.0", "--port", "1", "--data", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no API key") && stderr.contains("--allow-unauthenticated"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "refused before anything starts");
}
