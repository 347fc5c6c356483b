//! `ragloop embed` as a user runs it: documents → Parquet shards that pyarrow reads, a second
//! run that finds everything current, and a killed run that resumes to exactly the output of an
//! uninterrupted one. Needs the model from `scripts/fetch-model.sh` (scripts/test.sh runs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rag_core::vectors::read_shard;
use support::{model_dir, walk};

/// The first `n` man pages of the bundled corpus, as one JSONL file in a fresh directory.
fn input(dir: &Path, n: usize) -> PathBuf {
    let corpus =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/manpages/docs/corpus.jsonl.gz");
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(
        std::fs::File::open(corpus).unwrap(),
    ));
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let mut out = std::fs::File::create(docs.join("pages.jsonl")).unwrap();
    for line in reader.lines().take(n) {
        writeln!(out, "{}", line.unwrap()).unwrap();
    }
    docs
}

fn embed(input: &Path, output: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ragloop"));
    cmd.args([
        "embed",
        "--json",
        "--shard-rows",
        "16",
        "--threads",
        "2",
        "--chunk-chars",
        "600",
    ])
    .arg("--model")
    .arg(model_dir())
    .arg("--input")
    .arg(input)
    .arg("--output")
    .arg(output);
    cmd
}

/// A shard's file name and its rows as (chunk id, vector).
type Shard = (String, Vec<(String, Vec<f32>)>);

fn shards(dir: &Path) -> Vec<Shard> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            let (_, rows) = read_shard(bytes.into()).unwrap();
            (
                n,
                rows.into_iter().map(|r| (r.chunk.id, r.vector)).collect(),
            )
        })
        .collect()
}

/// Runs `cmd`, asserts it succeeded (showing its stderr if not) and parses its stdout as JSON.
fn json_of(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn embed_writes_shards_pyarrow_reads_and_a_rerun_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let docs = input(dir.path(), 6);
    let out_dir = dir.path().join("vectors");
    let out = embed(&docs, &out_dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["documents"], 6);
    assert_eq!(summary["dims"], 384);
    let n = summary["shards"]["shards"].as_u64().unwrap();
    assert!(n >= 2, "{summary}");
    assert_eq!(summary["shards"]["written"], n);
    let chunks = summary["chunks"].as_u64().unwrap();
    let rows: usize = shards(&out_dir).iter().map(|(_, r)| r.len()).sum();
    assert_eq!(rows as u64, chunks);

    // pyarrow (installed by scripts/test.sh) reads the shards and their metadata.
    let script = r#"
import glob, sys, pyarrow.parquet as pq
files = sorted(glob.glob(sys.argv[1] + "/*.parquet"))
rows = sum(pq.read_table(f).num_rows for f in files)
t = pq.read_table(files[0])
meta = pq.read_metadata(files[0]).metadata
assert str(t.schema.field("vector").type) == "fixed_size_list<item: float>[384]", t.schema
assert meta[b"ragloop.dims"] == b"384" and meta[b"ragloop.normalized"] == b"true"
assert set(t.column_names) >= {"id", "text", "source", "vector"}
print(rows)
"#;
    let py = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        chunks.to_string()
    );

    let again = embed(&docs, &out_dir).output().unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        (
            summary["shards"]["current"].as_u64(),
            summary["shards"]["written"].as_u64()
        ),
        (Some(n), Some(0))
    );
}

#[test]
fn embed_in_int8_is_its_own_model_with_vectors_close_to_f32() {
    let dir = tempfile::tempdir().unwrap();
    let docs = input(dir.path(), 4);
    let (f32_dir, int8_dir) = (dir.path().join("f32"), dir.path().join("int8"));
    let f32_run = json_of(&mut embed(&docs, &f32_dir));
    let int8_run = json_of(embed(&docs, &int8_dir).args(["--quantize", "int8"]));
    let id = f32_run["model_id"].as_str().unwrap();
    assert_eq!(int8_run["model_id"].as_str().unwrap(), format!("{id}-int8"));
    let (a, b) = (shards(&f32_dir), shards(&int8_dir));
    assert_eq!(a.len(), b.len());
    let mut compared = 0;
    for ((_, ra), (_, rb)) in a.iter().zip(&b) {
        for ((ida, va), (idb, vb)) in ra.iter().zip(rb) {
            assert_eq!(ida, idb, "the same chunks in the same order");
            let cos: f32 = va.iter().zip(vb).map(|(x, y)| x * y).sum();
            assert!(cos > 0.99, "cosine {cos} for {ida}");
            compared += 1;
        }
    }
    assert!(compared > 10, "{compared} chunks");
    // A quantisation name the CLI does not know is refused before any work.
    let bad = embed(&docs, &int8_dir)
        .args(["--quantize", "int4"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("expected \"none\" or \"int8\""),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn a_killed_embed_resumes_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let docs = input(dir.path(), 12);
    let whole = dir.path().join("whole");
    let out = embed(&docs, &whole).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = shards(&whole);

    let resumed = dir.path().join("resumed");
    let mut child = embed(&docs, &resumed).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !resumed.join("part-00001.parquet").exists() {
        assert!(Instant::now() < deadline, "no shard appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = shards(&resumed).len();
    assert!(
        partial < want.len(),
        "{partial} of {} shards before the kill",
        want.len()
    );

    let out = embed(&docs, &resumed).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        summary["shards"]["current"].as_u64().unwrap() >= 2,
        "{summary}"
    );
    let got = shards(&resumed);
    assert_eq!(got.len(), want.len());
    for ((gn, grows), (wn, wrows)) in got.iter().zip(&want) {
        assert_eq!(gn, wn);
        let gids: Vec<_> = grows.iter().map(|r| &r.0).collect();
        let wids: Vec<_> = wrows.iter().map(|r| &r.0).collect();
        assert_eq!(gids, wids, "{gn}: same rows, same order, no duplicates");
        for (g, w) in grows.iter().zip(wrows) {
            assert!(rag_core::embedding::cosine(&g.1, &w.1) > 0.999_999);
        }
    }
}

#[test]
fn embed_without_a_model_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let docs = input(dir.path(), 1);
    let out = Command::new(env!("CARGO_BIN_EXE_ragloop"))
        .args(["embed", "--model"])
        .arg(dir.path().join("no-such-model"))
        .arg("--input")
        .arg(&docs)
        .arg("--output")
        .arg(dir.path().join("v"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("loading the model") && stderr.contains("no-such-model"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// `ragloop run --model M --fine-tune adapter`: besides the base model, stage 2 runs the neural
/// trainer as a `LocalProcessBackend` job (base model and mode passed as `RAGLOOP_BASE_MODEL` /
/// `RAGLOOP_HP_MODE`, as a PAI-DLC job gets them), the trained model comes back from the store
/// and is evaluated and answers.
#[test]
fn run_with_a_neural_model_fine_tunes_it_as_a_job_and_answers_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let docs = input(dir.path(), 8);
    // One train-split query per page (its title), and the evaluated test query.
    let corpus = std::fs::read_to_string(docs.join("pages.jsonl")).unwrap();
    let mut queries = String::new();
    for line in corpus.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        queries.push_str(&format!(
            "{}\n",
            serde_json::json!({"id": format!("t-{}", v["id"].as_str().unwrap()),
                "text": format!("{} command", v["title"].as_str().unwrap()),
                "relevant": [v["id"]], "split": "train"})
        ));
    }
    queries.push_str(
        r#"{"id":"q1","text":"print entries from the name service databases","relevant":["getent.1"],"split":"test"}"#,
    );
    let qpath = dir.path().join("queries.jsonl");
    std::fs::write(&qpath, queries).unwrap();
    let work = dir.path().join("work");
    let summary = json_of(
        Command::new(env!("CARGO_BIN_EXE_ragloop"))
            .args([
                "run",
                "--json",
                "--dims",
                "64",
                "--fine-tune",
                "adapter",
                "--question",
                "What does getent display?",
            ])
            .arg("--model")
            .arg(model_dir())
            .arg("--data")
            .arg(&docs)
            .arg("--queries")
            .arg(&qpath)
            .arg("--work-dir")
            .arg(&work),
    );
    // One stage-2 job: the adapter on the queries' train split.
    let train = summary["stages"][1]["summary"].as_str().unwrap();
    assert!(
        train.contains("(emb-v1-train) trained")
            && train.contains("(adapter) on the queries' train split"),
        "{train}"
    );
    // The job left a sentence-transformers directory with the adapter, its report and the
    // marker in the store.
    let model = work.join("store/ragloop-demo/models/emb-v1");
    for f in [
        "2_Dense/model.safetensors",
        "training-report.json",
        "_SUCCESS",
    ] {
        assert!(model.join(f).exists(), "{f} missing");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("training-report.json")).unwrap())
            .unwrap();
    assert_eq!(report["mode"], "adapter");
    assert_eq!(
        report["train_pairs"].as_u64().unwrap() + report["held_out_pairs"].as_u64().unwrap(),
        8
    );

    // The base model and its adapter share one encoder: its pooled vectors are cached once,
    // in one cache, and the adapter's embedding of the corpus reads them back.
    let caches: Vec<_> = std::fs::read_dir(work.join("cache/pooled"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    let chunks = summary["stages"][4]["summary"].as_str().unwrap();
    assert!(chunks.contains("(1 written)"), "{chunks}");

    // BM25, then the base and the trained model, dense and hybrid.
    let rows: Vec<&str> = summary["evaluation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["retriever"].as_str().unwrap())
        .collect();
    // The hybrid rows' fusion was chosen on the 8 train-split queries with the base model
    // (the trained one learnt them; too few for the job to choose out of fold), and is named
    // in the rows.
    let details = &summary["stages"][5]["details"];
    let base = details[1].as_str().unwrap();
    assert!(
        base.contains("chosen on 8 train-split queries with all-MiniLM-L6-v2:"),
        "{details}"
    );
    let served = details[0].as_str().unwrap();
    assert!(served.contains("the base model's: "), "{details}");
    let chosen = base
        .trim_start_matches("hybrid fusion, base model: ")
        .split(", chosen")
        .next()
        .unwrap();
    assert_eq!(
        rows,
        [
            "BM25".to_string(),
            "dense all-MiniLM-L6-v2".into(),
            "dense all-MiniLM-L6-v2 fine-tuned (adapter)".into(),
            format!("hybrid: BM25 + all-MiniLM-L6-v2 ({chosen})"),
            format!("hybrid: BM25 + all-MiniLM-L6-v2 fine-tuned (adapter) ({chosen})")
        ]
    );
    for i in [1, 2] {
        assert_eq!(
            summary["evaluation"][i]["metrics"]["hit_at_1"], 1.0,
            "{summary}"
        );
    }
    assert_eq!(
        summary["answer"]["citations"][0]["doc_id"], "getent.1",
        "{summary}"
    );
}

#[test]
fn embed_reads_from_and_writes_to_an_s3_compatible_store() {
    let server = oss_client::testing::S3TestServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(server.store("embed-bucket")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let docs = input(dir.path(), 3);
    let bytes = std::fs::read(docs.join("pages.jsonl")).unwrap();
    rt.block_on(rag_core::ObjectStore::put(
        &store,
        &"oss://embed-bucket/raw-docs/pages.jsonl".parse().unwrap(),
        bytes.into(),
    ))
    .unwrap();
    // The model too comes from the store, as a training job would have left it there.
    for entry in walk(&model_dir()) {
        let rel = entry
            .strip_prefix(model_dir())
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let uri = format!("oss://embed-bucket/models/minilm/{rel}")
            .parse()
            .unwrap();
        rt.block_on(rag_core::ObjectStore::put(
            &store,
            &uri,
            std::fs::read(&entry).unwrap().into(),
        ))
        .unwrap();
    }
    let summary = json_of(
        Command::new(env!("CARGO_BIN_EXE_ragloop"))
            .args(["embed", "--json", "--shard-rows", "32", "--threads", "2"])
            .args(["--model", "oss://embed-bucket/models/minilm/"])
            .arg("--model-cache")
            .arg(dir.path().join("cache"))
            .args(["--input", "oss://embed-bucket/raw-docs/"])
            .args(["--output", "oss://embed-bucket/vector-indexes/minilm/"])
            .args(["--endpoint", server.endpoint()])
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "testing")
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testing"),
    );
    assert_eq!(summary["documents"], 3);
    let shards = summary["shards"]["shards"].as_u64().unwrap() as usize;
    let listed: Vec<rag_core::ObjectMeta> = rt
        .block_on(futures::TryStreamExt::try_collect(
            rag_core::ObjectStore::list(
                &store,
                &"oss://embed-bucket/vector-indexes/minilm/".parse().unwrap(),
            ),
        ))
        .unwrap();
    assert_eq!(listed.len(), shards);
    let mut rows = 0;
    for m in &listed {
        let data = rt
            .block_on(rag_core::ObjectStore::get_bytes(&store, &m.uri))
            .unwrap();
        let (meta, r) = read_shard(data).unwrap();
        assert_eq!(meta.dims, 384);
        rows += r.len();
    }
    assert_eq!(rows as u64, summary["chunks"].as_u64().unwrap());
    // Same weights as the local copy: the model id ends with the same weights hash.
    let local = embed_runtime::SentenceEmbedder::load(&model_dir()).unwrap();
    let local_id = rag_core::EmbeddingModel::model_id(&local);
    let remote_id = summary["model_id"].as_str().unwrap();
    assert_eq!(
        remote_id[remote_id.len() - 12..],
        local_id[local_id.len() - 12..]
    );
}

/// `ragloop train --base-model` as the local loop or a PAI-DLC job runs it: documents in, a
/// sentence-transformers directory, a report and `_SUCCESS` out; the trained model then serves
/// `ragloop embed` straight from the output prefix.
#[test]
fn train_fine_tunes_the_model_and_embed_uses_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let docs = input(dir.path(), 24);
    // Queries: each page's id words as a query, half train, half test.
    let corpus = std::fs::read_to_string(docs.join("pages.jsonl")).unwrap();
    let mut queries = String::new();
    for (i, line) in corpus.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["id"].as_str().unwrap();
        let split = if i % 2 == 0 { "train" } else { "test" };
        queries.push_str(&format!(
            "{}\n",
            serde_json::json!({"id": format!("q-{id}"), "text": format!("manual page for {}", v["title"].as_str().unwrap()), "relevant": [id], "split": split})
        ));
    }
    let qpath = dir.path().join("queries.jsonl");
    std::fs::write(&qpath, queries).unwrap();
    let output = dir.path().join("store/models/emb-v1");
    let summary = json_of(
        Command::new(env!("CARGO_BIN_EXE_ragloop"))
            .args(["train", "--json", "--max-steps", "3", "--batch-size", "4"])
            .args(["--max-passage-tokens", "32", "--max-query-tokens", "16"])
            .args(["--hold-out", "0.2", "--negatives", "1", "--round-trip", "2"])
            .arg("--base-model")
            .arg(model_dir())
            .arg("--data")
            .arg(&docs)
            .arg("--output")
            .arg(&output)
            .arg("--queries")
            .arg(&qpath)
            .arg("--eval-queries")
            .arg(&qpath)
            .args(["--eval-split", "train,test"]),
    );
    assert_eq!(summary["report"]["steps"].as_array().unwrap().len(), 3);
    assert_eq!(summary["documents"], 24);
    let evals = summary["evaluations"].as_array().unwrap();
    assert_eq!(evals.len(), 5, "{evals:?}");
    // Full fine-tuning on labelled queries is also judged over the chunks the loop ranks.
    assert!(
        evals[4]["set"]
            .as_str()
            .unwrap()
            .contains("held-out queries over the 334 chunks"),
        "{evals:?}"
    );
    assert!(
        evals[1]["set"]
            .as_str()
            .unwrap()
            .contains("held-out queries over 24 documents"),
        "{evals:?}"
    );
    // One row per split named.
    for (row, split) in [(2, "(train)"), (3, "(test)")] {
        assert!(
            evals[row]["set"].as_str().unwrap().contains(split),
            "{evals:?}"
        );
        assert_eq!(evals[row]["base"]["queries"], 12);
    }
    // Hard negatives from the other documents, and the merge weight chosen on held-out queries.
    let negatives = &summary["negatives"];
    assert_eq!(negatives["documents"], 24);
    assert!(
        negatives["pairs_with_negatives"].as_u64().unwrap() > 0,
        "{negatives}"
    );
    // Round trip: the mined pairs are checked, the queries' pairs kept as given.
    let rt = &summary["round_trip"];
    let (checked, kept) = (
        rt["checked"].as_u64().unwrap(),
        rt["kept"].as_u64().unwrap(),
    );
    assert!(checked > 0 && kept <= checked, "{rt}");
    let checked_origins: Vec<&str> = rt["by_origin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o[0].as_str().unwrap())
        .collect();
    for o in ["title", "heading", "inverse_cloze"] {
        assert!(checked_origins.contains(&o), "{rt}");
    }
    let query_pairs = summary["pairs_by_origin"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o[0] == "query")
        .map(|o| o[1].as_u64().unwrap());
    assert_eq!(query_pairs, Some(12), "{summary}");
    let merge = &summary["merge"];
    let tried = merge["tried"].as_array().unwrap();
    assert_eq!(tried.len(), 4, "{merge}");
    let alpha = merge["alpha"].as_f64().unwrap();
    assert!(
        tried.iter().any(|t| t[0].as_f64() == Some(alpha)),
        "{merge}"
    );
    assert!(
        merge["selected_on"]
            .as_str()
            .unwrap()
            .contains("held-out queries"),
        "{merge}"
    );
    let origins: Vec<&str> = summary["pairs_by_origin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o[0].as_str().unwrap())
        .collect();
    assert!(origins.contains(&"query"), "{origins:?}");
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "1_Pooling/config.json",
        "training-report.json",
        "training-report.md",
        "_SUCCESS",
    ] {
        assert!(output.join(f).exists(), "{f} missing");
    }
    let md = std::fs::read_to_string(output.join("training-report.md")).unwrap();
    assert!(
        md.contains("| trained |")
            && md.contains("loss per step")
            && md.contains("hard negatives: ")
            && md.contains("merged with the base model at α"),
        "{md}"
    );

    // From raw documents alone the defaults are the raw-documents recipe (one hard
    // negative, round trip in the top 3); here with GPL's margin-MSE loss over them.
    let raw = dir.path().join("raw");
    let summary = json_of(
        Command::new(env!("CARGO_BIN_EXE_ragloop"))
            .args(["train", "--json", "--max-steps", "2", "--batch-size", "4"])
            .args(["--max-passage-tokens", "32", "--max-query-tokens", "16"])
            .args(["--loss", "margin-mse"])
            .arg("--base-model")
            .arg(model_dir())
            .arg("--data")
            .arg(&docs)
            .arg("--output")
            .arg(&raw),
    );
    assert_eq!(summary["round_trip"]["top_k"], 3, "{summary}");
    assert!(
        summary["negatives"]["mining"]["negatives"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(summary["config"]["objective"], "margin-mse");
    assert_eq!(summary["report"]["steps"].as_array().unwrap().len(), 2);
    let md = std::fs::read_to_string(raw.join("training-report.md")).unwrap();
    assert!(md.contains("loss: MarginMse — the hybrid teacher"), "{md}");
    // The distillation needs negatives to distil over.
    let out = Command::new(env!("CARGO_BIN_EXE_ragloop"))
        .args(["train", "--loss", "margin-mse", "--negatives", "0"])
        .arg("--base-model")
        .arg(model_dir())
        .arg("--data")
        .arg(&docs)
        .arg("--output")
        .arg(dir.path().join("raw2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("add --negatives 1"), "{err}");

    // The output prefix is a model `ragloop embed` loads.
    let shards = dir.path().join("shards");
    let out = Command::new(env!("CARGO_BIN_EXE_ragloop"))
        .args(["embed", "--json", "--shard-rows", "64", "--threads", "2"])
        .arg("--model")
        .arg(format!("file://{}/", output.display()))
        .arg("--model-cache")
        .arg(dir.path().join("cache"))
        .arg("--input")
        .arg(&docs)
        .arg("--output")
        .arg(&shards)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An OpenAI-compatible chat server that writes two questions naming the passage's first line
/// (so every document gets its own), and answers one document with a 500 every time.
struct QuestionWriter;

impl wiremock::Respond for QuestionWriter {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let prompt = body["messages"][1]["content"].as_str().unwrap();
        let Some(passage) = prompt.split("Passage:\n").nth(1) else {
            // Not a request for questions: the loop's answer (stage 7).
            return wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "choices": [{"message": {"role": "assistant",
                    "content": "It prints entries from the databases [1]."},
                    "finish_reason": "stop", "index": 0}],
                "object": "chat.completion",
                "usage": {"prompt_tokens": 300, "completion_tokens": 10, "total_tokens": 310},
                "model": "qwen-test", "id": "chatcmpl-2"
            }));
        };
        let first = passage.lines().next().unwrap();
        if first.starts_with("getent") {
            return wiremock::ResponseTemplate::new(500).set_body_json(serde_json::json!(
                {"error": {"code": "internal_error", "message": "boom", "type": "server_error"}}
            ));
        }
        wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "choices": [{"message": {"role": "assistant",
                "content": format!("1. What is {first} for?\n2. How do I use {first}?")},
                "finish_reason": "stop", "index": 0}],
            "object": "chat.completion",
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            "model": "qwen-test", "id": "chatcmpl-1"
        }))
    }
}

/// An OpenAI-compatible server for model `qwen-test` answering with [`QuestionWriter`]; it runs
/// on the returned runtime, which must outlive its use.
fn question_server() -> (tokio::runtime::Runtime, wiremock::MockServer) {
    use wiremock::matchers::{body_partial_json, method, path};
    use wiremock::{Mock, MockServer};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(body_partial_json(serde_json::json!({"model": "qwen-test"})))
            .respond_with(QuestionWriter)
            .mount(&server)
            .await;
        server
    });
    (rt, server)
}

/// `ragloop train --synthetic 2` asks the configured LLM (the OpenAI wire format, here a local
/// server) for questions about each page and trains on them; a page whose call keeps failing
/// is reported and skipped, not fatal.
#[test]
fn train_with_synthetic_questions_from_an_llm() {
    let (_rt, server) = question_server();
    let dir = tempfile::tempdir().unwrap();
    let docs = input(dir.path(), 8);
    let output = dir.path().join("out");
    let summary = json_of(
        Command::new(env!("CARGO_BIN_EXE_ragloop"))
            .args(["train", "--json", "--mode", "adapter", "--mine", "none"])
            .args(["--synthetic", "2", "--hold-out", "0", "--epochs", "3"])
            .arg("--base-model")
            .arg(model_dir())
            .arg("--data")
            .arg(&docs)
            .arg("--output")
            .arg(&output)
            .env("RAGLOOP_LLM_BASE_URL", format!("{}/v1", server.uri()))
            .env("RAGLOOP_LLM_MODEL", "qwen-test")
            .env_remove("DASHSCOPE_API_KEY"),
    );
    let synthetic = &summary["synthetic"];
    assert_eq!(synthetic["documents"], 8);
    assert_eq!(synthetic["pairs"], 14, "{synthetic}");
    assert_eq!(synthetic["failed"][0][0], "getent.1", "{synthetic}");
    assert_eq!(synthetic["usage"]["total_tokens"], 7 * 120);
    assert_eq!(
        summary["pairs_by_origin"],
        serde_json::json!([["synthetic", 14]])
    );
    assert_eq!(summary["train_pairs"], 14);
    assert!(output.join("2_Dense/model.safetensors").exists());
    let md = std::fs::read_to_string(output.join("training-report.md")).unwrap();
    assert!(
        md.contains("synthetic questions: 14 pairs from 8 documents (1 failed"),
        "{md}"
    );

    // Without an LLM configured, the flag is refused with a one-line explanation.
    let out = Command::new(env!("CARGO_BIN_EXE_ragloop"))
        .args(["train", "--mine", "none", "--synthetic", "1"])
        .arg("--base-model")
        .arg(model_dir())
        .arg("--data")
        .arg(&docs)
        .arg("--output")
        .arg(dir.path().join("out2"))
        .env_remove("RAGLOOP_LLM_BASE_URL")
        .env_remove("DASHSCOPE_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--synthetic needs an LLM"), "{err}");
}

/// The loop with an LLM (`[llm] backend = "openai"`, here a local server) and no labelled
/// queries: stage 2 asks that LLM for synthetic questions by default, within the budget the
/// dry run shows, and the job trains on them (the job finds the server from the environment
/// the plan gives it); stage 7 answers with the same LLM.
#[test]
fn the_loop_trains_on_its_llms_questions_when_it_has_only_raw_documents() {
    let (_rt, server) = question_server();
    let dir = tempfile::tempdir().unwrap();
    let docs = input(dir.path(), 8);
    let config = dir.path().join("ragloop.toml");
    std::fs::write(
        &config,
        format!(
            "[llm]\nbackend = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"qwen-test\"\n\
             [embedding]\nsynthetic_tokens = 100000\n",
            server.uri()
        ),
    )
    .unwrap();
    let work = dir.path().join("work");
    let run = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ragloop"));
        c.arg("run")
            .args(extra)
            .args([
                "--fine-tune",
                "adapter",
                "--question",
                "What does getent display?",
            ])
            .arg("--config")
            .arg(&config)
            .arg("--model")
            .arg(model_dir())
            .arg("--data")
            .arg(&docs)
            .arg("--work-dir")
            .arg(&work)
            .env_remove("DASHSCOPE_API_KEY")
            .env_remove("RAGLOOP_LLM_BASE_URL")
            .env_remove("RAGLOOP_LLM_MODEL");
        c
    };
    let out = run(&["--dry-run"]).output().unwrap();
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "synthetic questions from openai qwen-test: 2 per document, at most 500 documents and 100000 tokens",
        "--synthetic 2 --synthetic-docs 500 --synthetic-tokens 100000",
    ] {
        assert!(plan.contains(want), "{want:?} not in\n{plan}");
    }
    let summary = json_of(&mut run(&["--json"]));
    let answer = summary["answer"].to_string();
    assert!(answer.contains("It prints entries"), "{summary}");
    let model = work.join("store/ragloop-demo/models/emb-v1");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("training-report.json")).unwrap())
            .unwrap();
    let synthetic = &report["synthetic"];
    assert_eq!(synthetic["documents"], 8, "{synthetic}");
    assert_eq!(synthetic["pairs"], 14, "{synthetic}");
    assert_eq!(synthetic["usage"]["total_tokens"], 7 * 120);
    let origins = report["pairs_by_origin"].as_array().unwrap();
    assert!(
        origins.iter().any(|o| o[0] == "synthetic" && o[1] == 14),
        "{origins:?}"
    );
}

/// `ragloop eval`: BM25, the hashed model and a sentence-transformers model (dense, hybrid) on
/// a query set, written as a Markdown table and a PNG chart.
#[test]
fn eval_writes_the_report_for_every_retriever() {
    let dir = tempfile::tempdir().unwrap();
    let docs = input(dir.path(), 8);
    let queries = dir.path().join("queries.jsonl");
    std::fs::write(
        &queries,
        concat!(
            r#"{"id":"q1","text":"print entries from the name service databases","relevant":["getent.1"],"split":"test"}"#,
            "\n",
            r#"{"id":"q2","text":"not evaluated: train split","relevant":["getent.1"],"split":"train"}"#,
        ),
    )
    .unwrap();
    let out_dir = dir.path().join("report");
    let summary = json_of(
        Command::new(env!("CARGO_BIN_EXE_ragloop"))
            .args(["eval", "--json", "--dims", "64"])
            .arg("--model")
            .arg(model_dir())
            .arg("--data")
            .arg(&docs)
            .arg("--queries")
            .arg(&queries)
            .arg("--out")
            .arg(&out_dir),
    );
    let rows: Vec<&str> = summary["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["retriever"].as_str().unwrap())
        .collect();
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(rows[0], "BM25");
    assert!(
        rows[1].starts_with("dense hashed") && rows[3].starts_with("dense "),
        "{rows:?}"
    );
    assert_eq!(
        summary["rows"][0]["metrics"]["queries"], 1,
        "the test split only"
    );
    assert_eq!(summary["rows"][3]["metrics"]["hit_at_1"], 1.0, "{summary}");
    let md = std::fs::read_to_string(out_dir.join("eval-report.md")).unwrap();
    assert!(
        md.contains("| BM25 |") && md.contains("eval-report.png"),
        "{md}"
    );
    let png = std::fs::read(out_dir.join("eval-report.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
}

/// `ragloop eval --reranker DIR`: each model's hybrid row is also reported with its fused
/// candidates reranked by the cross-encoder (here embed-runtime's random-init fixture).
#[test]
fn eval_reports_the_hybrid_row_reranked() {
    let dir = tempfile::tempdir().unwrap();
    let docs = input(dir.path(), 8);
    let queries = dir.path().join("queries.jsonl");
    std::fs::write(
        &queries,
        r#"{"id":"q1","text":"print entries from the name service databases","relevant":["getent.1"],"split":"test"}"#,
    )
    .unwrap();
    let reranker = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../embed-runtime/tests/fixtures/tiny-cross-encoder");
    let summary = json_of(
        Command::new(env!("CARGO_BIN_EXE_ragloop"))
            .args(["eval", "--json", "--dims", "64", "--rerank-candidates", "7"])
            .args(["--rerank-weight", "1,0"])
            .arg("--reranker")
            .arg(&reranker)
            .arg("--data")
            .arg(&docs)
            .arg("--queries")
            .arg(&queries)
            .arg("--out")
            .arg(dir.path().join("report")),
    );
    let rows = summary["rows"].as_array().unwrap();
    let labels: Vec<&str> = rows
        .iter()
        .map(|r| r["retriever"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 5, "{labels:?}");
    assert!(
        labels[3].starts_with(labels[2])
            && labels[3].contains("rerank top 7 with tiny-cross-encoder")
            && !labels[3].contains("weight"),
        "{labels:?}"
    );
    assert_eq!(rows[3]["metrics"]["queries"], 1);
    // Weight 0 keeps the search's order: the hybrid row's metrics again.
    assert!(labels[4].ends_with("weight 0"), "{labels:?}");
    assert_eq!(rows[4]["metrics"], rows[2]["metrics"]);
    // A directory that is not a cross-encoder is refused before anything runs.
    let out = Command::new(env!("CARGO_BIN_EXE_ragloop"))
        .args(["eval", "--dims", "64", "--reranker"])
        .arg(&docs)
        .arg("--data")
        .arg(&docs)
        .arg("--queries")
        .arg(&queries)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loading the reranker"), "{stderr}");
}

/// `ragloop train --reranker`: a cross-encoder from the base model's encoder, trained on the
/// queries' best chunks against hard-negative chunks, written with its report and `_SUCCESS`;
/// the directory loads as a reranker.
#[test]
fn train_reranker_writes_a_cross_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let docs = input(dir.path(), 12);
    let corpus = std::fs::read_to_string(docs.join("pages.jsonl")).unwrap();
    let mut queries = String::new();
    for line in corpus.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        queries.push_str(&format!(
            "{}\n",
            serde_json::json!({"id": format!("q-{}", v["id"]), "text": format!("manual page for {}", v["title"].as_str().unwrap()), "relevant": [v["id"]], "split": "train"})
        ));
    }
    let qpath = dir.path().join("queries.jsonl");
    std::fs::write(&qpath, queries).unwrap();
    let output = dir.path().join("reranker");
    let summary = json_of(
        Command::new(env!("CARGO_BIN_EXE_ragloop"))
            .args(["train", "--reranker", "--json", "--max-steps", "2"])
            .args([
                "--batch-size",
                "2",
                "--negatives",
                "2",
                "--max-passage-tokens",
                "48",
            ])
            .args(["--mine", "none", "--hold-out", "0"])
            .arg("--base-model")
            .arg(model_dir())
            .arg("--data")
            .arg(&docs)
            .arg("--output")
            .arg(&output)
            .arg("--queries")
            .arg(&qpath),
    );
    assert_eq!(summary["report"]["steps"].as_array().unwrap().len(), 2);
    assert_eq!(summary["train_pairs"], 12, "{summary}");
    assert_eq!(summary["config"]["group_size"], 3);
    assert!(
        summary["mining"]["negatives"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(output.join("_SUCCESS").exists());
    assert!(output.join("training-report.md").exists());
    // No query held out: the reranker's weight against the search's order is the prior.
    let choice: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("rerank.json")).unwrap()).unwrap();
    assert_eq!(choice, summary["weight"]);
    assert_eq!(choice["weight"], 0.5);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    let model = ragloop::embed_runtime::CrossEncoder::load(&output).unwrap();
    assert_eq!(model.max_seq_length(), 48);
    let scores = model
        .predict(&[("manual page", "a page"), ("manual page", "")])
        .unwrap();
    assert!(
        scores
            .iter()
            .all(|s| s.is_finite() && (0.0..=1.0).contains(s))
    );
}

/// The loop with a GTE encoder (gte-multilingual-base's architecture; a small random-init
/// model, `embed-runtime/tests/fixtures/tiny-gte`) on Chinese pages: the full fine-tune job
/// trains it, both models embed and index, and the answer cites the page.
#[test]
fn the_loop_runs_a_gte_model_on_chinese_pages() {
    let dir = tempfile::tempdir().unwrap();
    let zh = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/manpages-zh");
    let read = |p: &Path, n: usize| -> String {
        let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(
            std::fs::File::open(p).unwrap(),
        ));
        reader.lines().take(n).map(|l| l.unwrap() + "\n").collect()
    };
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("pages.jsonl"),
        read(&zh.join("docs/corpus.jsonl.gz"), 20),
    )
    .unwrap();
    let queries = dir.path().join("queries.jsonl");
    std::fs::write(&queries, read(&zh.join("queries.jsonl.gz"), 20)).unwrap();
    let gte =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../embed-runtime/tests/fixtures/tiny-gte");
    let work = dir.path().join("work");
    let summary = json_of(
        Command::new(env!("CARGO_BIN_EXE_ragloop"))
            .args([
                "run",
                "--json",
                "--fine-tune",
                "full",
                "--question",
                "如何复制文件描述符",
            ])
            .arg("--model")
            .arg(&gte)
            .arg("--data")
            .arg(&docs)
            .arg("--queries")
            .arg(&queries)
            .arg("--work-dir")
            .arg(&work),
    );
    let train = summary["stages"][1]["summary"].as_str().unwrap();
    assert!(train.contains("(full)"), "{train}");
    let model = work.join("store/ragloop-demo/models/emb-v1");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "gte");
    assert!(model.join("model.safetensors").exists());
    let rows: Vec<&str> = summary["evaluation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["retriever"].as_str().unwrap())
        .collect();
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(
        summary["answer"]["citations"][0]["doc_id"], "bash.1",
        "{}",
        summary["answer"]
    );
}
