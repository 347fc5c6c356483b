//! `ragloop run --config`, `ingest`, `index` and `ask` as a user runs them: an all-local
//! configuration end to end, stage 5 as jobs, OSS on a real S3 server (moto) with an
//! OpenAI-compatible LLM (wiremock), Elasticsearch and OpenSearch (vector-store's fake
//! clusters), stages 3–4 offline, dry runs and missing credentials.

#![allow(clippy::unwrap_used)]

#[path = "support/cli.rs"]
mod cli;
mod support;

// vector-store's fake Elasticsearch 8 / OpenSearch 2 cluster (the wire format, on wiremock).
#[path = "../../vector-store/tests/support/fake_cluster.rs"]
mod fake_cluster;

use std::path::Path;

use cli::{assert_hand_off, json_of, project, ragloop, stage_names};
use serde_json::Value;
use support::{CitingLlm, model_dir, walk};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

#[tokio::test]
async fn a_local_config_runs_the_loop_and_ingest_index_ask_reuse_it() {
    let (dir, config) = project("[index]\nbackend = \"hnsw\"\n");
    // Nothing trained yet: `ask` says what to run, with the not-found status.
    let early = ragloop(dir.path())
        .args(["ask", "why?"])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&early.stderr);
    assert_eq!(early.status.code(), Some(4), "{err}");
    assert!(err.contains("run stage 2: `ragloop run`"), "{err}");
    let summary = json_of(
        ragloop(dir.path())
            .args(["run", "--json", "--config"])
            .arg(&config),
    )
    .await;
    assert_eq!(
        stage_names(&summary),
        [
            "Ingest",
            "TrainEmbeddings",
            "FineTuneLlm",
            "Deploy",
            "Embed",
            "Index",
            "Answer"
        ]
    );
    let rows: Vec<&str> = summary["evaluation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["retriever"].as_str().unwrap())
        .collect();
    // BM25, then the base (untrained) and the served (trained) hashed model, dense and hybrid.
    assert_eq!(
        rows,
        [
            "BM25",
            "dense hashed, untrained",
            "dense hashed, trained (IDF)",
            "hybrid: BM25 + hashed, untrained (RRF)",
            "hybrid: BM25 + hashed, trained (IDF) (RRF)"
        ]
    );
    for r in summary["evaluation"].as_array().unwrap() {
        assert_eq!(r["metrics"]["hit_at_1"], 1.0, "{r}");
    }
    let citation = &summary["answer"]["citations"][0];
    assert_eq!(citation["doc_id"], "kill.2");
    assert!(citation["end"].as_u64().unwrap() > citation["start"].as_u64().unwrap());
    assert!(dir.path().join("work/eval-report.png").is_file());
    // The HNSW index (vector-store) served it and saved its graph.
    assert!(dir.path().join("work/index/rag-index/ann.json").is_file());

    // The same configuration drives the single-stage commands (found as ./ragloop.toml).
    let ingest = json_of(ragloop(dir.path()).args(["ingest", "--json"])).await;
    assert!(
        ingest["summary"]
            .as_str()
            .unwrap()
            .starts_with("0 files uploaded"),
        "{ingest}"
    );
    let index = json_of(ragloop(dir.path()).args(["index", "--json"])).await;
    assert!(
        index["summary"]
            .as_str()
            .unwrap()
            .contains("2 in rag-index"),
        "{index}"
    );
    let answer = json_of(ragloop(dir.path()).args([
        "ask",
        "--json",
        "How do I duplicate a file descriptor?",
    ]))
    .await;
    assert_eq!(answer["citations"][0]["doc_id"], "dup.2", "{answer}");
    let source = answer["citations"][0]["source"].as_str().unwrap();
    assert!(source.contains("raw-docs/pages.jsonl"), "{source}");

    // New documents: ingest uploads only them.
    std::fs::write(
        dir.path().join("docs/ls.1"),
        "NAME\n   ls - list directory contents\n",
    )
    .unwrap();
    let ingest = json_of(ragloop(dir.path()).args(["ingest", "--json"])).await;
    assert!(
        ingest["summary"]
            .as_str()
            .unwrap()
            .starts_with("1 files uploaded"),
        "{ingest}"
    );
}

#[tokio::test]
async fn stage_5_as_two_embedding_jobs_with_a_sentence_transformers_model() {
    let model = model_dir();
    let (dir, config) = project(&format!(
        "[embedding]\nmodel = \"{}\"\ntrain = \"none\"\nworkers = 2\n",
        model.display()
    ));
    // `[embedding]` twice is a TOML error: fold the test's line into the one table.
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[embedding]\nmodel = \"hashed\"\ndims = 128\n",
        "",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let summary = json_of(
        ragloop(dir.path())
            .args(["run", "--json", "--config"])
            .arg(&config),
    )
    .await;
    let stages = summary["stages"].as_array().unwrap();
    assert!(
        stages[1]["summary"]
            .as_str()
            .unwrap()
            .starts_with("skipped"),
        "{}",
        stages[1]
    );
    let embed = stages[4]["summary"].as_str().unwrap();
    assert!(
        embed.starts_with("2 jobs embedded the corpus")
            && embed.ends_with("(2 run, 0 already done)"),
        "{embed}"
    );
    let jobs = std::fs::read_dir(dir.path().join("work/jobs/jobs"))
        .unwrap()
        .count();
    assert_eq!(jobs, 2);
    // The workers' `_SUCCESS` is keyed by the corpus: a rerun over the same documents runs no
    // job; a changed corpus runs both again.
    let again = json_of(
        ragloop(dir.path())
            .args(["run", "--json", "--config"])
            .arg(&config),
    )
    .await;
    let embed = again["stages"][4]["summary"].as_str().unwrap();
    assert!(embed.ends_with("(0 run, 2 already done)"), "{embed}");
    std::fs::write(
        dir.path().join("docs/more.txt"),
        "The getpid() system call returns the process ID of the calling process.",
    )
    .unwrap();
    let changed = json_of(
        ragloop(dir.path())
            .args(["run", "--json", "--config"])
            .arg(&config),
    )
    .await;
    let embed = changed["stages"][4]["summary"].as_str().unwrap();
    assert!(embed.ends_with("(2 run, 0 already done)"), "{embed}");
    assert!(
        stages[5]["summary"]
            .as_str()
            .unwrap()
            .contains("2 in rag-index"),
        "{}",
        stages[5]
    );
    assert_eq!(
        summary["answer"]["citations"][0]["doc_id"], "kill.2",
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oss_on_a_real_s3_server_and_an_openai_llm_with_token_summary() {
    let s3 = oss_client::testing::S3TestServer::start();
    s3.store("cfg-bucket").await.unwrap();
    let llm = MockServer::start().await;
    // The LLM's key is sent (the mock only answers with it) …
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(wiremock::matchers::header(
            "authorization",
            "Bearer sk-llm-secret-4242",
        ))
        .respond_with(CitingLlm { question: None })
        .expect(1)
        .mount(&llm)
        .await;
    let (dir, config) = project(&format!(
        "[store]\nbackend = \"oss\"\nendpoint = \"{}\"\n\
         [llm]\nbackend = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"qwen2.5\"\n",
        s3.endpoint(),
        llm.uri()
    ));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("root = \"oss://cfg-bucket/rag/\"\n{text}")).unwrap();
    // A file whose path has spaces and non-ASCII letters goes through every stage by name.
    let odd = dir.path().join("docs/man pages");
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::write(
        odd.join("signaux ünïcode 文档.txt"),
        "Sending signals: use kill(1) from the shell to signal a process by its PID.",
    )
    .unwrap();
    // … and, like the AccessKey secret, never printed: the whole run at `trace` level, its
    // summary and the training job's log hold neither.
    let secrets = ["sEcReT-access-key-7781", "sk-llm-secret-4242"];
    let out = ragloop(dir.path())
        .args(["run", "--json", "--config"])
        .arg(&config)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI-test-id")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", secrets[0])
        .env("RAGLOOP_LLM_API_KEY", secrets[1])
        .env("RUST_LOG", "trace")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.len() > 10_000, "trace logging was on");
    let mut printed = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
    for log in walk(&dir.path().join("work")) {
        printed.push_str(&String::from_utf8_lossy(&std::fs::read(log).unwrap()));
    }
    for secret in secrets {
        assert!(!printed.contains(secret), "{secret} was printed");
    }
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The training job (a child process) read and wrote OSS as well.
    assert!(
        summary["stages"][1]["summary"]
            .as_str()
            .unwrap()
            .contains("oss://cfg-bucket/rag/models/emb-v1/"),
        "{summary}"
    );
    assert_eq!(
        summary["answer"]["text"]
            .as_str()
            .unwrap()
            .split('[')
            .next()
            .unwrap(),
        "kill() sends a signal. "
    );
    // The LLM cites the first chunk of its context: the odd file, "Sending signals: use
    // kill(1) … to signal a process", which BM25 with the English analyzer ranks above
    // kill.2 for "How do I send a signal?" (`sending`, `signals` meet `send`, `signal`).
    assert_eq!(
        summary["answer"]["citations"][0]["doc_id"],
        "man pages/signaux ünïcode 文档.txt"
    );
    assert_eq!(summary["stages"][6]["tokens"], 158);
    assert_eq!(summary["total_tokens"], 158);
    let store = s3.store("cfg-bucket").await.unwrap();
    let listed: Vec<rag_core::ObjectMeta> = futures::TryStreamExt::try_collect(
        rag_core::ObjectStore::list(&store, &"oss://cfg-bucket/rag/".parse().unwrap()),
    )
    .await
    .unwrap();
    let keys: Vec<&str> = listed.iter().map(|m| m.uri.key()).collect();
    let index = summary["stages"][5]["summary"].as_str().unwrap();
    assert!(index.contains("3 in rag-index"), "{index}");
    for want in [
        "rag/raw-docs/pages.jsonl",
        "rag/raw-docs/man pages/signaux ünïcode 文档.txt",
        "rag/models/emb-v1/_SUCCESS",
    ] {
        assert!(keys.contains(&want), "{want} not in {keys:?}");
    }
    assert!(
        keys.iter()
            .any(|k| k.starts_with("rag/vector-indexes/") && k.ends_with(".parquet")),
        "{keys:?}"
    );
}

#[tokio::test]
async fn cloud_config_dry_run_needs_no_credentials_and_a_real_run_names_the_missing_one() {
    let cloud = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/cloud.toml");
    let dir = tempfile::tempdir().unwrap();
    let out = ragloop(dir.path())
        .args(["run", "--dry-run", "--config"])
        .arg(&cloud)
        .output()
        .await
        .unwrap();
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "PAI-DLC workspace your-workspace-id",
        "job emb-v1-train (full on oss://my-rag-bucket/models/all-MiniLM-L6-v2/) → oss://my-rag-bucket/models/emb-v1/",
        "4 jobs, e.g. ragloop embed --model oss://my-rag-bucket/models/emb-v1/",
        "--worker 0 --workers 4",
        // Stage 2 from raw documents with an LLM in the loop: its questions, within a budget.
        "--synthetic 2 --synthetic-docs 500 --synthetic-tokens 1000000",
        "synthetic questions from bailian qwen-plus: 2 per document, at most 500 documents and 1000000 tokens",
        "Bailian fine-tune of qwen2.5-7b-instruct",
        "Elasticsearch index \"rag-index\"",
    ] {
        assert!(plan.contains(want), "{want:?} not in\n{plan}");
    }

    let out = ragloop(dir.path())
        .args(["run", "--config"])
        .arg(&cloud)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "credentials: exit status 3");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("ALIBABA_CLOUD_ACCESS_KEY_ID"), "{err}");

    // A local store with a Bailian LLM: the DashScope key is the one named.
    let (dir, config) = project("[llm]\nbackend = \"bailian\"\n");
    let out = ragloop(dir.path())
        .args(["ask", "what?", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert!(err.contains("DASHSCOPE_API_KEY"), "{err}");

    // A typo in the file: the line and the key.
    std::fs::write(&config, "[index]\nbakend = \"hnsw\"\n").unwrap();
    let out = ragloop(dir.path()).args(["index"]).output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "configuration mistake: exit status 2"
    );
    assert!(
        err.contains("line 2 (bakend = \"hnsw\"): unknown field `bakend`"),
        "{err}"
    );
}

/// Stages 3 and 4 offline: `ragloop qa-pairs` builds the dataset, a local job runs the example
/// trainer script on it, the local deployer registers the output.
#[tokio::test]
async fn stage_3_trains_on_the_built_dataset_and_stage_4_deploys_it_offline() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/train_llm_local.py");
    let (dir, config) = project(&format!(
        "[llm_fine_tune]\nbackend = \"local\"\nbase_model = \"tiny-llm\"\n\
         command = [\"python3\", \"{}\"]\nhyper_parameters = {{ n_epochs = 2 }}\n\
         [deploy]\nbackend = \"local\"\n",
        script.display()
    ));
    // Without a dataset, stage 3 says how to build one (not found: status 4).
    let out = ragloop(dir.path())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("ragloop qa-pairs"), "{err}");

    let manifest =
        json_of(ragloop(dir.path()).args(["qa-pairs", "--json", "--validation", "0"])).await;
    assert_eq!(manifest["format"], "ragloop-qa-pairs/1");
    let train = manifest["train"].as_u64().unwrap();
    assert!(train >= 1, "{manifest}");
    let qa = dir
        .path()
        .join("work/store/ragloop-demo/qa-pairs/train.jsonl");
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&qa)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["messages"][2]["role"], "assistant");

    // Your own pairs replace the generated ones, checked the same way.
    std::fs::write(
        dir.path().join("mine.jsonl"),
        "{\"question\": \"What is 2+2?\", \"answer\": \"4\", \"context\": \"2+2 is 4.\"}\n\
         {\"question\": \"broken\"\n",
    )
    .unwrap();
    let manifest = json_of(ragloop(dir.path()).args([
        "qa-pairs",
        "--json",
        "--validation",
        "0",
        "--allow-uncited",
        "--pairs",
        "mine.jsonl",
    ]))
    .await;
    assert_eq!(manifest["generator"], "user");
    assert_eq!(manifest["dropped"]["bad_line"], 1, "{manifest}");
    let train = manifest["train"].as_u64().unwrap();
    assert_eq!(train, 1);

    let summary = json_of(
        ragloop(dir.path())
            .args(["run", "--json", "--config"])
            .arg(&config),
    )
    .await;
    assert_hand_off(
        &summary,
        "fine-tuned tiny-llm → oss://ragloop-demo/models/llm-ft/",
        "serves oss://ragloop-demo/models/llm-ft/",
    );
    let card: Value = serde_json::from_slice(
        &std::fs::read(
            dir.path()
                .join("work/store/ragloop-demo/models/llm-ft/model-card.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(card["train_examples"].as_u64(), Some(train));
    assert_eq!(card["hyper_parameters"]["n_epochs"], "2");
    assert_eq!(card["base_model"], "tiny-llm");
}

/// `[index] backend = "elasticsearch"` and `"opensearch"`: stages 6 and 7 of `ragloop run
/// --config` on a cluster speaking each engine's wire format, then `ragloop ask` on it.
#[tokio::test(flavor = "multi_thread")]
async fn the_loop_indexes_into_and_answers_from_elasticsearch_and_opensearch() {
    for (engine, name) in [
        (vector_store::Engine::Elasticsearch8, "elasticsearch"),
        (vector_store::Engine::OpenSearch2, "opensearch"),
    ] {
        let cluster = fake_cluster::Running::start(engine).await;
        // OpenSearch with a cluster analyzer for the text field (built in, no plugin).
        let analyzer = if name == "opensearch" {
            "cluster_analyzer = \"cjk\"\n"
        } else {
            ""
        };
        let (dir, config) = project(&format!(
            "[index]\nbackend = \"{name}\"\nurl = \"{}\"\n{analyzer}",
            cluster.uri()
        ));
        let mut run = ragloop(dir.path());
        run.args(["run", "--json", "--config"])
            .arg(&config)
            .env("RAGLOOP_SEARCH_API_KEY", "search-key");
        let summary = json_of(&mut run).await;
        let index = summary["stages"][5]["summary"].as_str().unwrap();
        assert!(index.contains("2 in rag-index"), "{name}: {index}");
        assert_eq!(
            summary["answer"]["citations"][0]["doc_id"], "kill.2",
            "{name}: {summary}"
        );
        let requests = cluster.requests().await;
        let create = requests
            .iter()
            .find(|(m, p, _)| m == "PUT" && p == "/rag-index")
            .unwrap_or_else(|| panic!("{name}: the index was not created"));
        let mapping: serde_json::Value = serde_json::from_slice(&create.2).unwrap();
        let text = &mapping["mappings"]["properties"]["text"];
        if analyzer.is_empty() {
            assert_eq!(text["analyzer"], "english", "{name}: {text}");
        } else {
            assert_eq!(text["analyzer"], "cjk", "{name}: {text}");
        }
        assert!(
            requests
                .iter()
                .any(|(m, p, _)| m == "POST" && p.starts_with("/_bulk")),
            "{name}: records went in through _bulk"
        );

        let mut ask = ragloop(dir.path());
        ask.args(["ask", "--json", "How do I duplicate a file descriptor?"])
            .env("RAGLOOP_SEARCH_API_KEY", "search-key");
        let answer = json_of(&mut ask).await;
        assert_eq!(
            answer["citations"][0]["doc_id"], "dup.2",
            "{name}: {answer}"
        );
    }
}

/// A cluster analyzer the cluster lacks stops the index stage with the plugin to install, and
/// exit status 2, before an index is created.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_cluster_analyzer_is_named_with_its_plugin() {
    let cluster = fake_cluster::Running::start(vector_store::Engine::Elasticsearch8).await;
    let (dir, config) = project(&format!(
        "[index]\nbackend = \"elasticsearch\"\nurl = \"{}\"\ncluster_analyzer = \"ik_smart\"\n",
        cluster.uri()
    ));
    let out = ragloop(dir.path())
        .args(["run", "--config"])
        .arg(&config)
        .env("RAGLOOP_SEARCH_API_KEY", "search-key")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("analysis-ik"), "{stderr}");
    assert!(
        !cluster
            .requests()
            .await
            .iter()
            .any(|(m, p, _)| m == "PUT" && p == "/rag-index"),
        "an index was created without its analyzer"
    );
}
