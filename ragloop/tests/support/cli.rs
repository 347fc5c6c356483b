//! What the `ragloop` CLI tests share: the binary with no credential in its environment, a
//! small project with a configuration file, JSON output, stage assertions.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::write_corpus;

pub const SECRETS: [&str; 6] = [
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "DASHSCOPE_API_KEY",
    "RAGLOOP_SEARCH_API_KEY",
    "PAI_WORKSPACE_ID",
    "RAGLOOP_CONFIG",
];

pub fn ragloop(dir: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_ragloop"));
    c.current_dir(dir);
    // Pretrained models by name come from the copy `scripts/fetch-model.sh` made.
    c.env(
        "RAGLOOP_MODELS",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../models"),
    );
    for v in SECRETS {
        c.env_remove(v);
    }
    c
}

/// Two man pages and one test query, plus a configuration file with `extra` appended.
pub fn project(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let config = dir.path().join("ragloop.toml");
    std::fs::write(
        &config,
        format!(
            "data = \"docs\"\nwork_dir = \"work\"\n[embedding]\nmodel = \"hashed\"\ndims = 128\n\
             [eval]\nqueries = \"queries.jsonl\"\nquestion = \"How do I send a signal?\"\n{extra}"
        ),
    )
    .unwrap();
    (dir, config)
}

pub async fn json_of(cmd: &mut tokio::process::Command) -> Value {
    let out = cmd.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Stage 3's summary line holds `fine_tuned` and stage 4's holds `deployed`: the model the
/// fine-tune wrote is the one deployed.
pub fn assert_hand_off(summary: &Value, fine_tuned: &str, deployed: &str) {
    let line = |i: usize| {
        summary["stages"][i]["summary"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (ft, dep) = (line(2), line(3));
    assert!(ft.contains(fine_tuned), "stage 3: {ft}");
    assert!(dep.contains(deployed), "stage 4: {dep}");
}

pub fn stage_names(summary: &Value) -> Vec<String> {
    summary["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect()
}
