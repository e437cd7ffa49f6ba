//! The whole pipeline as separate processes: the real `reid` binary serves the embedder, the
//! identity service (embedded Qdrant engine) and the ingester on loopback ports, with an API key,
//! and is driven only through the `reid` command line. `vtest.avi` plays as two cameras with
//! different views; the embedder and then the identity service are killed (SIGKILL) and restarted
//! in the middle of it. Then: nothing stored is lost, every tracklet is delivered, some people are
//! seen on both cameras, a crop is identified, and forgetting that identity removes it everywhere.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{KEY, ok, reid, repo};
use serde_json::Value;

const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `reid serve` process, restartable on the same port and data.
struct Service {
    name: &'static str,
    args: Vec<String>,
    addr: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    fn new(name: &'static str, dir: &Path, args: &[&str]) -> Service {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut all: Vec<String> = vec!["serve".into(), name.into(), "--listen".into(), addr.clone()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        Service { name, args: all, addr, log: dir.join(format!("{name}.log")), child: None }
    }

    fn start(&mut self) {
        // The log goes to a file: a pipe nobody reads would fill and block the service.
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_reid"))
            .args(&self.args)
            .env("REID_API_KEY", KEY)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !reid(&["health", "--addr", &self.addr]).status.success() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "{} exited with {status}: {}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "{} not serving", self.name);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL: no chance to flush or say goodbye.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        child.wait().unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every stored sighting as (identity, camera, track), as one consistent reading: the merge pass
/// can fold an identity into another between the listing and the call for its sightings, and then
/// the reading starts again.
fn stored(identity: &str) -> BTreeSet<(String, String, String)> {
    for _ in 0..20 {
        if let Some(all) = read_stored(identity) {
            return all;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("identities kept vanishing between the listing and their sightings");
}

/// One reading of every stored sighting; `None` when a listed identity was gone by the time its
/// sightings were asked for.
fn read_stored(identity: &str) -> Option<BTreeSet<(String, String, String)>> {
    let mut all = BTreeSet::new();
    for line in ok(&["identities", "--addr", identity]) {
        let id = line["identity"].as_str().unwrap().to_owned();
        let out = reid(&["sightings", "--addr", identity, &id]);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("NotFound"), "reid sightings {id}: {stderr}");
            return None;
        }
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        for s in lines[0]["sightings"].as_array().unwrap() {
            all.insert((id.clone(), s["camera"].as_str().unwrap().into(), s["track"].as_str().unwrap().into()));
        }
    }
    Some(all)
}

fn tracks(set: &BTreeSet<(String, String, String)>) -> BTreeSet<(String, String)> {
    set.iter().map(|(_, c, t)| (c.clone(), t.clone())).collect()
}

fn cameras(ingester: &str) -> Vec<Value> {
    ok(&["cameras", "list", "--addr", ingester])
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn two_cameras_survive_restarts_match_across_cameras_and_forget_everywhere() {
    assert!(Path::new(VTEST).is_file(), "{VTEST} missing: run `make setup`");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("identity");
    let models = repo().join("models");
    let ingester_config = dir.path().join("ingester.toml");
    std::fs::write(&ingester_config, "[detectors.hog]\nmotion_gate = true\n[delivery]\nretry_max = 1000\n").unwrap();

    let mut embedder = Service::new("embedder", dir.path(), &["--model-dir", models.to_str().unwrap()]);
    embedder.start();
    let mut identity = Service::new(
        "identity",
        dir.path(),
        &[
            "--data",
            data.to_str().unwrap(),
            "--embedder",
            &embedder.addr.clone(),
            "--threshold",
            "0.8",
            "--min-margin",
            "0",
            // Upkeep (and with it the merge pass) every second, so identities settle soon after
            // the last delivery.
            "--set",
            "retention.sweep_interval=1",
        ],
    );
    identity.start();
    let mut ingester = Service::new(
        "ingester",
        dir.path(),
        &[
            "--embedder",
            &embedder.addr.clone(),
            "--identity",
            &identity.addr.clone(),
            "--config",
            ingester_config.to_str().unwrap(),
            "--file-root",
            "/usr/share/doc/opencv-doc/examples/data",
            "--model-dir",
            models.to_str().unwrap(),
        ],
    );
    ingester.start();
    let (id_addr, ing_addr) = (identity.addr.clone(), ingester.addr.clone());

    // Without the key the command line is refused.
    let refused =
        Command::new(env!("CARGO_BIN_EXE_reid")).args(["cameras", "list", "--addr", &ing_addr]).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"), "{refused:?}");

    ok(&["cameras", "add", "--addr", &ing_addr, "--id", "west", "--region", "0,0,0.6,1", VTEST]);
    ok(&[
        "cameras",
        "add",
        "--addr",
        &ing_addr,
        "--id",
        "east",
        "--region",
        "0.4,0,0.6,1",
        "--scale",
        "0.9",
        "--gains",
        "1.1,1,0.9",
        "--brightness",
        "8",
        "--time-offset-ms",
        "60000",
        VTEST,
    ]);

    // Part-way through, kill the embedder and bring it back.
    wait_until("the first sightings", Duration::from_secs(180), || stored(&id_addr).len() >= 5);
    embedder.kill();
    std::thread::sleep(Duration::from_secs(2));
    embedder.start();

    // Then kill the identity service: what it had stored must still be there when it is back.
    let before = stored(&id_addr);
    identity.kill();
    std::thread::sleep(Duration::from_secs(2));
    identity.start();
    let after = stored(&id_addr);
    // Compared by tracklet: the merge pass may have moved a sighting to another identity since.
    let lost: Vec<_> = tracks(&before).difference(&tracks(&after)).cloned().collect();
    assert!(lost.is_empty(), "sightings lost over an identity restart: {lost:?}");

    // The cameras finish and every tracklet reaches the identity service: the ingester kept
    // them and retried while its services were down.
    wait_until("both cameras to finish", Duration::from_secs(600), || {
        cameras(&ing_addr).iter().all(|c| c["state"] == "finished")
    });
    let statuses = cameras(&ing_addr);
    let emitted: u64 = statuses.iter().map(|c| c["tracklets_emitted"].as_u64().unwrap()).sum();
    assert!(emitted >= 40, "too few tracklets: {statuses:?}");
    wait_until("every tracklet to be stored", Duration::from_secs(180), || {
        tracks(&stored(&id_addr)).len() as u64 >= emitted
    });
    // The merge pass may still fold identities together; what follows reads a settled store.
    let mut all = stored(&id_addr);
    wait_until("the merge pass to settle", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_secs(3));
        let again = stored(&id_addr);
        let settled = again == all;
        all = again;
        settled
    });
    assert_eq!(tracks(&all).len() as u64, emitted, "each tracklet stored once");
    assert!(tracks(&before).is_subset(&tracks(&all)));

    // People seen on both cameras.
    let listed = ok(&["identities", "--addr", &id_addr]);
    let on_both: Vec<&Value> = listed
        .iter()
        .filter(|l| {
            let cams: Vec<&str> = l["cameras"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            cams.contains(&"west") && cams.contains(&"east")
        })
        .collect();
    assert!(!on_both.is_empty(), "nobody was matched across the two cameras: {listed:?}");
    eprintln!("{} tracklets, {} identities, {} on both cameras", emitted, listed.len(), on_both.len());

    // Identify a stored crop of one of them: the answer is that identity. A person the
    // association split in two can have a crop nearer to the other half, so the check takes the
    // first person whose answer is decisive (a margin of 0.05 over the runner-up) and requires
    // that answer to be the person.
    let probe = dir.path().join("probe.jpg");
    let mut decisive = None;
    for candidate in &on_both {
        let person = candidate["identity"].as_str().unwrap().to_owned();
        let sightings = ok(&["sightings", "--addr", &id_addr, &person]);
        let thumbnail = sightings[0]["sightings"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|s| s["thumbnail"].as_str().filter(|t| !t.is_empty()))
            .expect("a stored crop")
            .to_owned();
        std::fs::copy(data.join("crops").join(&thumbnail), &probe).unwrap();
        let answer = ok(&["identify", "--addr", &id_addr, probe.to_str().unwrap()])[0].clone();
        if answer["margin"].as_f64().unwrap_or(0.0) >= 0.05 {
            decisive = Some((person, answer));
            break;
        }
    }
    let (person, answer) = decisive.expect("no decisive answer for anyone seen on both cameras");
    assert_eq!(answer["decision"], "known", "{answer}");
    assert_eq!(answer["identity"], person.as_str(), "{answer}");

    // Forget it: gone from the list, its sightings, its crops, and from identification; and it
    // stays gone after a restart.
    let forgotten = &ok(&["forget", "--addr", &id_addr, &person])[0];
    assert!(forgotten["vectors_removed"].as_u64().unwrap() >= 2, "{forgotten}");
    let gone = |id_addr: &str| {
        assert!(ok(&["identities", "--addr", id_addr]).iter().all(|l| l["identity"] != person.as_str()));
        let s = reid(&["sightings", "--addr", id_addr, &person]);
        let empty = s.status.success()
            && serde_json::from_slice::<Value>(&s.stdout).unwrap()["sightings"].as_array().unwrap().is_empty();
        assert!(empty || String::from_utf8_lossy(&s.stderr).contains("NotFound"), "{s:?}");
        assert!(!data.join("crops").join(&person).exists(), "its crops are still on disk");
        let answer = &ok(&["identify", "--addr", id_addr, probe.to_str().unwrap()])[0];
        assert_ne!(answer["identity"], person.as_str(), "a forgotten identity was recognised: {answer}");
        assert!(
            answer["candidates"].as_array().unwrap().iter().all(|c| c["identity"] != person.as_str()),
            "a forgotten identity is still a candidate: {answer}"
        );
    };
    gone(&id_addr);
    assert!(identity.stop().success(), "identity did not stop cleanly");
    identity.start();
    gone(&id_addr);

    for service in [&mut ingester, &mut identity, &mut embedder] {
        let status = service.stop();
        assert!(status.success(), "{} exited with {status}", service.name);
    }
}
