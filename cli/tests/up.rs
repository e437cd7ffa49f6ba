//! `reid up`, the real binary: four services on four consecutive ports with one key, wired to each
//! other (an enrollment goes through the identity service to the embedder), stopped cleanly by
//! ctrl-c, and what they stored under `--data` is there after a restart; `reid watch` prints the
//! identity events; `reid feedback` sends an operator's corrections.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{KEY, ok, reid, repo};
use serde_json::Value;

/// A base port whose next three are free too.
fn four_free_ports() -> u16 {
    for _ in 0..200 {
        let base = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if base > u16::MAX - 4 {
            continue;
        }
        let taken: Vec<_> = (0..4).filter_map(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).ok()).collect();
        if taken.len() == 4 {
            return base;
        }
    }
    panic!("no four consecutive free ports");
}

fn up(data: &Path, port: u16, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_reid"))
        .args([
            "up",
            "--data",
            data.to_str().unwrap(),
            "--port",
            &port.to_string(),
            "--console-port",
            "0",
            "--model-dir",
        ])
        .arg(repo().join("models"))
        .env("REID_API_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    for p in port..port + 4 {
        while !reid(&["health", "--addr", &format!("127.0.0.1:{p}")]).status.success() {
            assert!(Instant::now() < deadline, "port {p} not serving");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    child
}

fn interrupt(mut child: Child) -> std::process::ExitStatus {
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap()
}

#[test]
fn four_services_on_four_ports_one_key_and_state_under_data() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("up.log"));
    let port = four_free_ports();
    let identity = format!("127.0.0.1:{}", port + 1);
    let ingester = format!("127.0.0.1:{}", port + 2);
    let photo = repo().join(".cache/data/face_recognition/test_images/obama.jpg");
    let photo = photo.to_str().unwrap();

    let child = up(&data, port, &log);
    let enrolled = &ok(&["enroll", "--addr", &identity, "--name", "Barack", photo])[0];
    let id = enrolled["identity"].as_str().unwrap().to_owned();
    assert_eq!(enrolled["model"], "person-vtest", "the identity service embedded through the embedder");
    assert_eq!(ok(&["identify", "--addr", &identity, photo])[0]["identity"], id.as_str());
    // The event stream tells what happened: the enrollment, as one JSON line.
    let events = ok(&["watch", "--addr", &identity, "--from-oldest", "--count", "1"]);
    assert_eq!((events[0]["kind"].as_str(), events[0]["identity_id"].as_str()), (Some("enrolled"), Some(id.as_str())));
    assert_eq!(events[0]["name"], "Barack");
    let cursor = events[0]["cursor"].as_str().unwrap().to_owned();
    assert!(ok(&["cameras", "list", "--addr", &ingester]).is_empty());
    // An operator's corrections from the command line: a second enrollment said to be someone
    // else, then merged after all; a split of a tracklet the identity does not hold is refused.
    let biden = repo().join(".cache/data/face_recognition/test_images/biden.jpg");
    let other = ok(&["enroll", "--addr", &identity, "--name", "Joe", biden.to_str().unwrap()])[0]["identity"]
        .as_str()
        .unwrap()
        .to_owned();
    let rejected = &ok(&["feedback", "reject", "--addr", &identity, &id, &other])[0];
    assert_eq!((rejected["kind"].as_str(), rejected["identity"].as_str()), (Some("reject"), Some(id.as_str())));
    let merged = &ok(&["feedback", "merge", "--addr", &identity, &id, &other])[0];
    assert_eq!(merged["identity"], id.as_str());
    let ids: Vec<Value> = ok(&["identities", "--addr", &identity]);
    assert_eq!(ids.iter().map(|l| l["identity"].as_str().unwrap()).collect::<Vec<_>>(), [id.as_str()], "{ids:?}");
    let split = reid(&["feedback", "split", "--addr", &identity, &id, "--camera", "door", "--track", "7"]);
    assert!(!split.status.success());
    assert!(String::from_utf8_lossy(&split.stderr).contains("InvalidArgument"), "{split:?}");
    let pairs = ok(&["feedback", "--addr", &identity]);
    let labels: Vec<_> = pairs.iter().map(|p| (p["same"].as_bool().unwrap(), p["a"].as_str().unwrap())).collect();
    assert_eq!(labels.len(), 2, "the reject and the merge: {pairs:?}");
    assert!(labels.iter().all(|(_, a)| *a == id), "pairs naming the merged identity are renamed: {pairs:?}");
    assert!(labels.iter().any(|(same, _)| *same) && labels.iter().any(|(same, _)| !same), "{pairs:?}");
    let refused = Command::new(env!("CARGO_BIN_EXE_reid")).args(["identities", "--addr", &identity]).output().unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"), "{refused:?}");
    let status = interrupt(child);
    assert!(status.success(), "reid up exited with {status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
    assert!(data.join("identity/qdrant").is_dir(), "the embedded engine stores under --data");

    let child = up(&data, port, &log);
    // Events are kept in memory: a cursor from before the restart is refused, not skipped over.
    let stale = reid(&["watch", "--addr", &identity, "--after", &cursor, "--count", "1"]);
    assert!(!stale.status.success());
    assert!(String::from_utf8_lossy(&stale.stderr).contains("restarted"), "{stale:?}");
    let listed = ok(&["identities", "--addr", &identity]);
    assert!(listed.iter().any(|l| l["identity"] == id.as_str() && l["name"] == "Barack"), "{listed:?}");
    assert_eq!(ok(&["feedback", "list", "--addr", &identity]).len(), 2, "feedback is stored");
    assert!(interrupt(child).success());
}
