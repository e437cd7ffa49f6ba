//! `reid adapt` end to end on a small synthetic deployment: colour-coded people as exported
//! tracklets, their stored crops and an operator's feedback pairs. What is checked is the rule,
//! not how much a one-epoch model learns: nothing trains without enough feedback; a first
//! adaptation is published; a candidate no better than the served model is not.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use serde_json::Value;

const PEOPLE: usize = 4;

/// A 16x32 picture of `person`: their top and bottom colours with a little noise.
fn picture(person: usize, seed: u64) -> Vec<u8> {
    let colours = [[200u8, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30], [30, 200, 200]];
    let (top, bottom) = (colours[person % 5], colours[(person * 2 + 1) % 5]);
    let mut n = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(person as u64);
    let mut rgb = Vec::with_capacity(16 * 32 * 3);
    for y in 0..32 {
        for _ in 0..16 {
            for c in 0..3 {
                n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let noise = ((n >> 33) % 30) as i16 - 15;
                let base = if y < 16 { top[c] } else { bottom[c] };
                rgb.push((i16::from(base) + noise).clamp(0, 255) as u8);
            }
        }
    }
    reid_model::preprocess::encode_jpeg(16, 32, &rgb).unwrap()
}

/// Tracklets of every person, three rounds on camera `cam-a`, then one each in the held-out time.
fn tracklets(root: &Path) {
    let write = |person: usize, start_ms: i64, track: String| {
        let dir = root.join("cam-a").join(format!("{start_ms:013}_{track}"));
        std::fs::create_dir_all(&dir).unwrap();
        let crops: Vec<Value> = (0..3)
            .map(|i| {
                let file = format!("{i}.jpg");
                std::fs::write(dir.join(&file), picture(person, start_ms as u64 + i)).unwrap();
                serde_json::json!({"file": file, "captured_at_ms": start_ms + 100 * i as i64})
            })
            .collect();
        let meta = serde_json::json!({"start_ms": start_ms, "end_ms": start_ms + 300, "crops": crops});
        std::fs::write(dir.join("tracklet.json"), meta.to_string()).unwrap();
    };
    for round in 0..3 {
        for p in 0..PEOPLE {
            write(p, ((round * PEOPLE + p) * 1000) as i64, format!("p{p}-{round}"));
        }
    }
    for p in 0..PEOPLE {
        write(p, (20_000 + p * 1000) as i64, format!("held-{p}"));
    }
}

/// Two identities per person in the identity service's crop folder, and feedback about them:
/// `same` pairs of one person's two identities, `different` pairs of neighbours; and about
/// single tracklets, which train instead of judging: two of person 0's confirmed as `p0a`, one
/// of person 1's rejected from it.
fn crops_and_feedback(root: &Path, pairs_of_each: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let crops = root.join("crops");
    for p in 0..PEOPLE {
        for side in ["a", "b"] {
            let dir = crops.join(format!("p{p}{side}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..2 {
                std::fs::write(dir.join(format!("{i}.jpg")), picture(p, 90_000 + i)).unwrap();
            }
        }
    }
    let mut lines = Vec::new();
    for p in 0..pairs_of_each.min(PEOPLE) {
        lines.push(serde_json::json!({"same": true, "a": format!("p{p}a"), "b": format!("p{p}b")}).to_string());
        let q = (p + 1) % PEOPLE;
        lines.push(serde_json::json!({"same": false, "a": format!("p{p}a"), "b": format!("p{q}b")}).to_string());
    }
    let about = |same: bool, track: &str| {
        serde_json::json!({"same": same, "a": "p0a", "camera": "cam-a", "track": track}).to_string()
    };
    lines.extend([about(true, "p0-0"), about(true, "p0-1"), about(false, "p1-0")]);
    let feedback = root.join("pairs.jsonl");
    std::fs::write(&feedback, lines.join("\n")).unwrap();
    (crops, feedback)
}

fn recipe(root: &Path, tracklets: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"
name = "adapted"
[dataset]
kind = "tracklets"
path = "{}"
eval_fraction = 0.2
[model]
architecture = "small_cnn"
embedding_dim = 16
width = 16
height = 32
color = "rgb"
[sampler]
p = 4
k = 2
with_replacement = true
[pseudo_labels]
every = 1
threshold = 0.9
[pseudo_labels.memory]
[training]
epochs = 1
seed = 3
threads = 2
verification_items = 50
"#,
        tracklets.display()
    );
    let path = root.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_adapted_model_replaces_the_served_one_only_when_the_feedback_says_it_is_better() {
    let root = tempfile::tempdir().unwrap();
    let exported = root.path().join("exports");
    tracklets(&exported);
    let config = recipe(root.path(), &exported);
    let (models, runs) = (root.path().join("models"), root.path().join("runs"));
    let adapt = |crops: &Path, feedback: &Path, extra: &[&str]| {
        let mut args = vec!["adapt", "--json", "--config", config.to_str().unwrap()];
        args.extend(["--crops", crops.to_str().unwrap(), "--feedback", feedback.to_str().unwrap()]);
        args.extend([
            "--model-dir",
            models.to_str().unwrap(),
            "--model",
            "adapted",
            "--runs-dir",
            runs.to_str().unwrap(),
        ]);
        args.extend(extra);
        common::reid(&args)
    };

    // Two pairs of each kind are too few to judge by: nothing is trained.
    let (crops, few) = crops_and_feedback(&root.path().join("few"), 2);
    let out = adapt(&crops, &few, &["--min-pairs", "3"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 same-person and 2 different-people pairs") && err.contains("--min-pairs 3"), "{err}");
    assert!(!runs.exists(), "nothing trained");

    // With no served model, the first candidate is published.
    let (crops, feedback) = crops_and_feedback(root.path(), 4);
    let run = |out: std::process::Output| -> Value {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap()
    };
    let first = run(adapt(&crops, &feedback, &["--min-pairs", "3"]));
    assert_eq!(first["pairs"], serde_json::json!({"same": 4, "different": 4}), "{first}");
    // The tracklet feedback became links the run trained with: p0-0 with p0-1, p1-0 apart from both.
    assert_eq!(first["links"], serde_json::json!({"same": 1, "different": 2}), "{first}");
    let run_dir = Path::new(first["run"].as_str().unwrap());
    let links = std::fs::read_to_string(run_dir.join("links.jsonl")).unwrap();
    assert_eq!(links.lines().count(), 3, "{links}");
    assert!(
        links.contains(r#""same":false,"a":{"camera":"cam-a","track":"p0-0"},"b":{"camera":"cam-a","track":"p1-0"}"#),
        "{links}"
    );
    let recorded = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    assert!(recorded.contains("links.jsonl"), "the run's recipe names its links: {recorded}");
    assert!(first["served"].is_null(), "{first}");
    let version = first["published"].as_str().unwrap().to_owned();
    let card: Value = serde_json::from_slice(&std::fs::read(models.join("adapted/model.json")).unwrap()).unwrap();
    assert_eq!(card["version"], version.as_str());
    let auc = first["candidate"]["auc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auc), "{first}");

    // The same recipe again trains the same weights: no better than what is served, so kept.
    let second = run(adapt(&crops, &feedback, &["--min-pairs", "3"]));
    assert_eq!(second["candidate"]["auc"], second["served"]["auc"], "{second}");
    assert!(second["published"].is_null(), "{second}");
    let card: Value = serde_json::from_slice(&std::fs::read(models.join("adapted/model.json")).unwrap()).unwrap();
    assert_eq!(card["version"], version.as_str(), "the served model stays");
    assert_ne!(first["run"], second["run"], "each adaptation has its own run folder");
}

/// `reid serve identity` on a free port with the tests' key; its address.
fn identity_service(data: &Path) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_reid"))
        .args(["serve", "identity", "--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()])
        .env("REID_API_KEY", common::KEY)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("the identity service logs where it serves").unwrap();
        if let Some(rest) = line.split("serving grpc addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep reading, so that the pipe never fills.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

#[test]
fn a_scheduled_adaptation_reads_the_feedback_from_the_identity_service_every_round() {
    let root = tempfile::tempdir().unwrap();
    let exported = root.path().join("exports");
    tracklets(&exported);
    let config = recipe(root.path(), &exported);
    let (mut identity, addr) = identity_service(&root.path().join("identity"));
    let runs = root.path().join("runs");
    let adapt = std::process::Command::new(env!("CARGO_BIN_EXE_reid"))
        .args(["adapt", "--config", config.to_str().unwrap(), "--identity", &addr, "--every", "1s"])
        .args(["--crops", root.path().join("identity/crops").to_str().unwrap(), "--min-pairs", "1"])
        .args(["--runs-dir", runs.to_str().unwrap(), "--model-dir", root.path().join("models").to_str().unwrap()])
        .env("REID_API_KEY", common::KEY)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    std::process::Command::new("kill").args(["-INT", &adapt.id().to_string()]).status().unwrap();
    let out = adapt.wait_with_output().unwrap();
    let _ = identity.kill();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stopped by the signal, not by a failed round: {err}");
    // The service has no feedback yet: every round says so and waits for the next.
    assert!(err.matches("0 same-person and 0 different-people pairs").count() >= 2, "{err}");
    assert!(err.matches("next adaptation in 1s").count() >= 2, "{err}");
    assert!(!runs.exists(), "nothing trained without feedback");
}
