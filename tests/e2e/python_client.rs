//! The Python client example of docs/CLIENTS.md, run as an agency developer runs it: stubs
//! generated from the protos with stock protoc (grpcio-tools), grpcio over mutual TLS.

use std::{path::Path, process::Command};

use henvis_domain::Sector;
use henvis_tests::Deployment;

fn protos(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            protos(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path.display().to_string());
        }
    }
}

/// Runs the example with `args`; (exit code, stdout, stderr).
fn example(python: &Path, generated: &Path, root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(python)
        .arg(root.join("examples/python/henvis_client.py"))
        .args(args)
        .env("PYTHONPATH", generated)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_submits_retries_safely_reads_and_deduplicates_the_inbox() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = root.join(".tools/py/bin/python");
    assert!(
        python.exists(),
        "{} missing: run deploy/install-tools.sh (deploy/test.sh does)",
        python.display()
    );
    // stubs from the protos with stock protoc
    let generated = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    protos(&root.join("proto"), &mut files);
    let status = Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(root.join("proto"))
        .arg(format!("--python_out={}", generated.path().display()))
        .arg(format!("--grpc_python_out={}", generated.path().display()))
        .args(&files)
        .status()
        .unwrap();
    assert!(status.success(), "protoc");

    let d = Deployment::start().await.unwrap();
    let pki = d.pki_dir().display().to_string();
    let ngo = d.endpoints[&Sector::Ngo].to_string();
    let social = d.endpoints[&Sector::Social].to_string();
    let run = |args: &[&str]| example(&python, generated.path(), root, args);

    // a Submit, and its retry with the same key: the same event, nothing new stored
    let submit = |key: &str, municipality: &str| {
        run(&[
            "--endpoint",
            &ngo,
            "--pki",
            &pki,
            "--agency",
            "ngo-redbarnet",
            "submit",
            "--key",
            key,
            "--municipality",
            municipality,
            "--observed-at",
            "1790000000",
        ])
    };
    let (code, out, err) = submit("py-report-1", "101");
    assert_eq!(code, 0, "{err}");
    let event_id = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("event_id="))
        .unwrap()
        .to_owned();
    assert!(out.contains("duplicate=false"), "{out}");
    let (code, again, err) = submit("py-report-1", "101");
    assert_eq!(code, 0, "{err}");
    assert!(
        again.contains(&format!("event_id={event_id}")) && again.contains("duplicate=true"),
        "{again}"
    );
    // a refusal for good: exit 2, the field named
    let (code, _, err) = submit("py-report-2", "1x1");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("INVALID_ARGUMENT") && err.contains("municipality_code"),
        "{err}"
    );

    // the municipality's system had handled the event but lost the acknowledgement (it
    // crashed): the delivery is offered again and recognised as a repeat, acknowledged,
    // not handled twice
    let seen_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(seen_file.path(), format!("{event_id}\n")).unwrap();
    let seen = seen_file.path().display().to_string();
    let inbox = [
        "--endpoint",
        &social,
        "--pki",
        &pki,
        "--agency",
        "kommune-101",
        "inbox",
        "--seen",
        &seen,
        "--max",
        "1",
        "--idle",
        "3",
    ];
    let (code, out, err) = run(&inbox);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("repeat {event_id}")), "{out}");
    assert!(out.contains("handled=0"), "{out}");
    // a new referral: handled once and acknowledged; a second reader finds nothing new
    let (code, out, err) = submit("py-report-3", "101");
    assert_eq!(code, 0, "{err}");
    let second = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("event_id="))
        .unwrap()
        .to_owned();
    let (code, out, err) = run(&inbox);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("delivery {second}")) && out.contains("handled=1"),
        "{out}"
    );
    let (code, out, err) = run(&inbox);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("handled=0") && !out.contains(&second), "{out}");
}
