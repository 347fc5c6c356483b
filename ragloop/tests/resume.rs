//! `ragloop run --config` killed with SIGKILL at random moments — the whole process group, as a
//! dying machine or a Ctrl-C takes the training process with it — and run again until it
//! finishes: the store (raw documents, trained model, vector shards) and the index end
//! exactly as after a run that was never interrupted, compared by content hash.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rag_core::local::LocalVectorIndex;
use sha2::{Digest, Sha256};
use support::walk;

/// 80 man-page-like documents (text and JSONL, in folders) and a configuration with the
/// hashed model (stage 2 trains its IDF as a job process) and the local index.
fn project(dir: &Path) {
    let docs = dir.join("docs");
    std::fs::create_dir_all(docs.join("section2")).unwrap();
    for i in 0..60 {
        let text: String = (0..60)
            .map(|p| {
                format!(
                    "{i}.{p} The call number {i} handles signal {p}; see also pipe({}), dup({}).\n\n",
                    p % 7,
                    i % 5
                )
            })
            .collect();
        std::fs::write(docs.join(format!("section2/call{i}.2")), text).unwrap();
    }
    let lines: String = (0..20)
        .map(|i| {
            format!(
                "{{\"id\":\"cmd{i}\",\"title\":\"cmd{i}\",\"text\":\"NAME\\n   cmd{i} - list files, number {i}\"}}\n"
            )
        })
        .collect();
    std::fs::write(docs.join("commands.jsonl"), lines).unwrap();
    std::fs::write(
        dir.join("ragloop.toml"),
        "data = \"docs\"\nwork_dir = \"work\"\n[embedding]\nmodel = \"hashed\"\ndims = 96\n[store]\nbackend = \"local\"\n\
         [index]\nbackend = \"local\"\nname = \"rag-index\"\n[eval]\nquestion = \"Which call handles signal 3?\"\n",
    )
    .unwrap();
}

fn run(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ragloop"));
    c.current_dir(dir)
        .args(["run", "--json", "--config", "ragloop.toml"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    c
}

/// Every file of the store (bookkeeping aside: `_JOB` holds a job id and the training report
/// its duration, which differ per run) and every index record → SHA-256.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let store = dir.join("work/store");
    let mut out = BTreeMap::new();
    for path in walk(&store) {
        let rel = path.strip_prefix(&store).unwrap().display().to_string();
        if rel.ends_with("/_JOB") {
            continue;
        }
        if let Some(name) = rel.strip_prefix(".ragloop-tmp/") {
            let pid = name.split('-').next().unwrap_or_default();
            panic!(
                "a finished run leaves no temporary file: {rel}; its writer: {:?}",
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
            );
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if rel.ends_with("/report.json") {
            // The training report says how long training took.
            let mut report: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            report.as_object_mut().unwrap().remove("seconds");
            bytes = serde_json::to_vec(&report).unwrap();
        }
        out.insert(rel, hex::encode(Sha256::digest(&bytes)));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let records = runtime.block_on(async {
        let index = LocalVectorIndex::open(dir.join("work/index"))
            .await
            .unwrap();
        index.records("rag-index").await.unwrap()
    });
    for r in records {
        let mut h = Sha256::new();
        h.update(r.text.as_bytes());
        for x in &r.vector {
            h.update(x.to_bits().to_le_bytes());
        }
        h.update(serde_json::to_vec(&r.metadata).unwrap());
        out.insert(format!("index/{}", r.id), hex::encode(h.finalize()));
    }
    out
}

/// Keeps the directories of a failed case and shows the first differing file of each run.
fn keep(root: tempfile::TempDir, dir: &Path, rel: &str) -> String {
    let root = root.keep();
    let show = |d: &Path| {
        std::fs::read(d.join("work/store").join(rel)).map_or_else(
            |e| e.to_string(),
            |b| String::from_utf8_lossy(&b[..b.len().min(2000)]).into_owned(),
        )
    };
    format!(
        "\nuninterrupted: {}\nresumed: {}\n(kept in {})",
        show(&root.join("whole")),
        show(dir),
        root.display()
    )
}

fn finish(dir: &Path) {
    let out = run(dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_run_killed_at_random_moments_resumes_to_the_uninterrupted_result() {
    let root = tempfile::tempdir().unwrap();
    let whole = root.path().join("whole");
    project(&whole);
    let started = Instant::now();
    finish(&whole);
    let took = started.elapsed();
    let want = snapshot(&whole);
    assert!(
        want.keys().any(|k| k.contains("vector-indexes/"))
            && want.keys().any(|k| k.starts_with("index/"))
            && want.keys().any(|k| k.ends_with("_SUCCESS")),
        "{:?}",
        want.keys().collect::<Vec<_>>()
    );

    // SplitMix64 over a fixed seed: kill points spread over the whole run, reproducible.
    let mut state: u64 = 0x5EED;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut kills = Vec::new();
    for case in 0..3 {
        let dir = root.path().join(format!("killed-{case}"));
        project(&dir);
        for _ in 0..3 {
            let at = took.mul_f64(0.05 + (next() % 900) as f64 / 1000.0);
            let mut child = run(&dir).spawn().unwrap();
            let deadline = Instant::now() + at;
            while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            // The whole group: the training job's process dies with the run.
            let killed = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status()
                .unwrap();
            assert!(killed.success());
            child.wait().unwrap();
            // SIGKILL is delivered at once but the training job, reparented, exits a moment later.
            std::thread::sleep(Duration::from_millis(100));
            kills.push(at);
        }
        // Writes cut by SIGKILL leave temporary files; a later run removes those of dead
        // processes once they are a minute old. Age them rather than wait.
        let tmp_dir = dir.join("work/store/.ragloop-tmp");
        if tmp_dir.is_dir() {
            for tmp in walk(&tmp_dir) {
                let file = std::fs::File::options().write(true).open(&tmp).unwrap();
                file.set_modified(std::time::SystemTime::now() - Duration::from_secs(120))
                    .unwrap();
            }
        }
        finish(&dir);
        let got = snapshot(&dir);
        let differ: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .map(|(k, _)| k)
            .chain(got.keys().filter(|k| !want.contains_key(*k)))
            .collect();
        assert!(
            differ.is_empty(),
            "case {case} (killed at {kills:?} of {took:?}): {differ:?} differ{}",
            if differ.is_empty() {
                String::new()
            } else {
                keep(root, &dir, differ[0])
            }
        );
    }
    assert!(kills.len() >= 3, "only {} kills", kills.len());
    eprintln!(
        "{} SIGKILLs at {kills:?} of a {took:?} run; {} files and records equal after resuming",
        kills.len(),
        want.len()
    );
}
