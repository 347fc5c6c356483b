//! The configuration file: defaults, the documented example, mistakes.

#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn an_empty_file_is_the_local_loop() {
    let c = LoopConfig::from_toml("").unwrap();
    assert_eq!(c.root.to_string(), "oss://ragloop-demo/");
    assert_eq!(c.store.backend, StoreBackend::Local);
    assert_eq!(c.jobs.backend, JobsBackend::Local);
    assert_eq!(
        c.embedding.kind(),
        ModelKind::Sentence("all-MiniLM-L6-v2".into())
    );
    assert_eq!(c.embedding.training(), Training::Adapter);
    assert_eq!(c.index.backend, IndexBackend::Local);
    assert_eq!(c.llm.backend, LlmBackend::Extractive);
    assert!(!c.uses_cloud());
    assert_eq!(
        c.model_output().to_string(),
        "oss://ragloop-demo/models/emb-v1/"
    );
}

#[test]
fn the_cloud_example_of_the_module_doc_parses() {
    let text = r#"
root = "oss://my-bucket/rag/"
[store]
backend = "oss"
region = "cn-hangzhou"
[jobs]
backend = "pai"
workspace_id = "12345"
image = "img"
[embedding]
model = "oss://my-bucket/models/all-MiniLM-L6-v2/"
train = "adapter"
workers = 4
[index]
backend = "elasticsearch"
url = "https://es.example:9200"
[llm]
backend = "bailian"
[llm_fine_tune]
backend = "bailian"
base_model = "qwen2.5-7b-instruct"
hyper_parameters = { n_epochs = 3, learning_rate = "1e-5" }
[deploy]
backend = "bailian"
"#;
    let c = LoopConfig::from_toml(text).unwrap();
    assert_eq!(
        c.embedding.kind(),
        ModelKind::Sentence("oss://my-bucket/models/all-MiniLM-L6-v2/".into())
    );
    assert_eq!(c.embedding.workers, 4);
    assert_eq!(c.index.backend, IndexBackend::Elasticsearch);
    assert_eq!(c.llm_fine_tune.hyper_parameters.len(), 2);
    assert!(c.uses_cloud());
    assert_eq!(
        c.model_output().to_string(),
        "oss://my-bucket/rag/models/emb-v1/"
    );
}

proptest::proptest! {
    /// Whatever the file holds, reading it returns a configuration or an error — never a
    /// panic — and errors are a usage error of at most a few lines.
    #[test]
    fn any_text_parses_or_fails_cleanly(text in "(\\[[a-z_]{1,12}\\]\n|[a-z_]{1,10} = (\"[^\"\\\\\n]{0,20}\"|[0-9]{1,4}|true|\\[\\])\n|[^\n]{0,30}\n){0,12}") {
        match LoopConfig::from_toml(&text) {
            Ok(c) => proptest::prop_assert!(c.validate().is_ok()),
            Err(e) => {
                proptest::prop_assert_eq!(crate::exit::code(&e), crate::exit::USAGE);
                proptest::prop_assert!(format!("{e:#}").lines().count() <= 3, "{:#}", e);
            }
        }
    }
}

#[test]
fn int8_reaches_every_job_that_encodes() {
    // `train` named: by default a corpus without labelled queries (none are found from the
    // test's directory) trains nothing (`training_only_from_mined_pairs_is_opt_in`).
    let c =
        LoopConfig::from_toml("[embedding]\ntrain = \"adapter\"\nquantize = \"int8\"\nworkers = 2")
            .unwrap();
    assert_eq!(c.embedding.quantize, embed_runtime::Quantization::Int8);
    let plan = crate::jobs::JobPlan::new(
        &c,
        vec!["ragloop".into()],
        crate::stores::StoreSpec::Local {
            root: "/tmp/store".into(),
        },
    );
    let train = plan.training().unwrap();
    let workers = plan.embedding_workers("models/m", &c.model_output(), "abc");
    for spec in std::iter::once(&train).chain(&workers) {
        let at = spec.command.iter().position(|a| a == "--quantize");
        assert_eq!(
            at.map(|i| spec.command[i + 1].as_str()),
            Some("int8"),
            "{:?}",
            spec.command
        );
    }
    let f32 = LoopConfig::from_toml("[embedding]\ntrain = \"adapter\"").unwrap();
    let plan = crate::jobs::JobPlan::new(
        &f32,
        vec!["ragloop".into()],
        crate::stores::StoreSpec::Local {
            root: "/tmp/store".into(),
        },
    );
    assert!(
        !plan
            .training()
            .unwrap()
            .command
            .contains(&"--quantize".to_string())
    );
}

#[test]
fn a_named_device_reaches_every_job_that_encodes_and_auto_stays_the_jobs_default() {
    let plan_of = |toml: &str| {
        let c = LoopConfig::from_toml(toml).unwrap();
        let plan = crate::jobs::JobPlan::new(
            &c,
            vec!["ragloop".into()],
            crate::stores::StoreSpec::Local {
                root: "/tmp/store".into(),
            },
        );
        let mut specs = vec![plan.training().unwrap()];
        specs.extend(plan.embedding_workers("models/m", &c.model_output(), "abc"));
        specs
    };
    let device_of = |spec: &rag_core::JobSpec| {
        let at = spec.command.iter().position(|a| a == "--device");
        at.map(|i| spec.command[i + 1].clone())
    };
    for spec in plan_of("[embedding]\ntrain = \"full\"\ndevice = \"cuda:1\"\nworkers = 2") {
        assert_eq!(
            device_of(&spec).as_deref(),
            Some("cuda:1"),
            "{:?}",
            spec.command
        );
    }
    for spec in plan_of("[embedding]\ntrain = \"full\"\nworkers = 2") {
        assert_eq!(device_of(&spec), None, "{:?}", spec.command);
    }
    let c = LoopConfig::from_toml("").unwrap();
    assert_eq!(c.embedding.device, embed_runtime::DeviceChoice::Auto);
}

#[test]
fn training_only_from_mined_pairs_is_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, split: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!("{{\"id\": \"q1\", \"text\": \"q\", \"relevant\": [\"a\"], \"split\": \"{split}\"}}\n"),
        )
        .unwrap();
        path.display().to_string()
    };
    let (labelled, test_only) = (write("l.jsonl", "train"), write("t.jsonl", "test"));
    let plan = |toml: String| {
        let c = LoopConfig::from_toml(&toml).unwrap();
        crate::jobs::JobPlan::new(
            &c,
            vec!["ragloop".into()],
            crate::stores::StoreSpec::Local {
                root: "/tmp/store".into(),
            },
        )
    };
    // Labelled queries: the default adapter trains on their train split.
    let p = plan(format!("[eval]\nqueries = {labelled:?}"));
    assert!(p.training_skipped().is_none());
    assert!(p.training().unwrap().command.contains(&"--queries".into()));
    // Nothing but mined pairs: the base model is used, and the stage says why.
    let p = plan(format!("[eval]\nqueries = {test_only:?}"));
    assert!(p.training().is_none());
    let why = p.training_skipped().unwrap();
    assert!(
        why.contains("nothing to train on") && why.contains("train = \"adapter\""),
        "{why}"
    );
    // Asked for, or with an LLM to write questions, it trains from the documents.
    let p = plan(format!(
        "[embedding]\ntrain = \"adapter\"\n[eval]\nqueries = {test_only:?}"
    ));
    assert!(p.training_skipped().is_none());
    assert!(!p.training().unwrap().command.contains(&"--queries".into()));
    let p = plan(format!(
        "[llm]\nbackend = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\nmodel = \"m\"\n[eval]\nqueries = {test_only:?}"
    ));
    assert!(
        p.training()
            .unwrap()
            .command
            .contains(&"--synthetic".into())
    );
    // The hashed model is fitted as before.
    let p = plan(format!(
        "[embedding]\nmodel = \"hashed\"\n[eval]\nqueries = {test_only:?}"
    ));
    assert!(p.training().is_some());
}

#[test]
fn mistakes_are_one_clear_line() {
    let cases = [
        ("[store]\nbackend = \"s3\"", "unknown variant `s3`"),
        (
            "[index]\nbakend = \"local\"",
            "line 2 (bakend = \"local\"): unknown field `bakend`",
        ),
        (
            "root = \"http://x\"",
            "line 1 (root = \"http://x\"): invalid input",
        ),
        (
            "[embedding]\nmodel = \"hashed\"\ntrain = \"adapter\"",
            "the hashed model can only be fitted",
        ),
        (
            "[embedding]\nmodel = \"models/m\"\ntrain = \"idf\"",
            "hashed model only",
        ),
        (
            "[embedding]\nmodel = \"hashed\"\nworkers = 2",
            "batch-embedding jobs run sentence",
        ),
        ("[jobs]\nbackend = \"pai\"", "needs store.backend = \"oss\""),
        (
            "[store]\nbackend = \"oss\"\n[jobs]\nbackend = \"pai\"\n[embedding]\nmodel = \"models/m\"\ntrain = \"full\"",
            "ragloop cp -r models/m",
        ),
        (
            "[llm_fine_tune]\nbackend = \"bailian\"",
            "base_model is required",
        ),
        (
            "[llm_fine_tune]\nbackend = \"pai\"\nbase_model = \"q\"",
            "command is required",
        ),
        ("[deploy]\nbackend = \"bailian\"", "deploy needs a model"),
        ("[llm]\nbackend = \"openai\"", "base_url is required"),
        ("[index]\ntop_k = 0", "top_k must lie in 1..=1000"),
        (
            "[index]\nanalyzer = \"klingon\"",
            "unknown variant `klingon`, expected `standard` or `english`",
        ),
        (
            "[index]\ncluster_analyzer = \"ik_smart\"",
            "is for Elasticsearch / OpenSearch indexes",
        ),
        ("work_dir = \"\"", "work_dir is empty"),
        ("[index]\ntop_k = 5000000", "top_k must lie in 1..=1000"),
        (
            "[embedding]\ndims = 4000000000",
            "embedding.dims must lie in 1..=16384",
        ),
        (
            "[embedding]\nmodel = \"hashed\"\nquantize = \"int8\"",
            "is for sentence-transformers models",
        ),
        ("[embedding]\nquantize = \"int4\"", "unknown variant `int4`"),
        (
            "[embedding]\ndevice = \"tpu\"",
            "expected `auto`, `cpu`, `cuda` or `cuda:N`",
        ),
        (
            "[embedding]\nmodel = \"hashed\"\ndevice = \"cuda\"",
            "embedding.device = \"cuda:0\" is for sentence-transformers models",
        ),
        (
            "[embedding]\nquantize = \"int8\"\ndevice = \"cuda:0\"",
            "is a CPU path",
        ),
        (
            "[embedding]\nsynthetic = 2",
            "embedding.synthetic needs an LLM",
        ),
        (
            "[embedding]\nsynthetic = 2\n[llm]\nbackend = \"openai\"\nbase_url = \"http://h/v1\"",
            "needs llm.model",
        ),
        (
            "[embedding]\nmodel = \"hashed\"\n[rerank]\nbackend = \"local\"",
            "is not a sentence-transformers model: name a cross-encoder directory",
        ),
        (
            "[serve]\naddr = \"localhost\"",
            "serve.addr = \"localhost\" is not an address",
        ),
        ("[serve]\nmax_k = 0", "serve.max_k is 0"),
        ("[serve]\ntoken = \"x\"", "unknown field `token`"),
        (
            "[rerank]\nbackend = \"colbert\"",
            "unknown variant `colbert`",
        ),
        (
            "[rerank]\nbackend = \"local\"\nmodel = \"m\"\ncandidates = 0",
            "rerank.candidates is 0",
        ),
        (
            "[rerank]\nbackend = \"local\"\nmodel = \"m\"\nweight = 1.5",
            "rerank.weight: 1.5 is not in [0, 1]",
        ),
        (
            "[rerank]\nbackend = \"bailian\"\nquantize = \"int8\"",
            "rerank.quantize is for the local cross-encoder",
        ),
    ];
    for (text, want) in cases {
        let err = format!("{:#}", LoopConfig::from_toml(text).unwrap_err());
        assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        assert!(!err.contains('\n') || err.lines().count() <= 3, "{err}");
    }
}

#[test]
fn hybrid_fusion_is_auto_rrf_or_a_weight_in_the_unit_interval() {
    let fusion = |v: &str| {
        IndexSection {
            fusion: v.into(),
            ..IndexSection::default()
        }
        .fusion()
    };
    assert_eq!(
        LoopConfig::from_toml("").unwrap().index.fusion(),
        Ok(FusionSetting::Auto)
    );
    assert_eq!(
        fusion("rrf"),
        Ok(FusionSetting::Fixed(rag_core::Fusion::Rrf))
    );
    assert_eq!(
        fusion("convex:0.7"),
        Ok(FusionSetting::Fixed(rag_core::Fusion::Convex {
            vector_weight: 0.7
        }))
    );
    for bad in ["convex:1.5", "convex:", "weighted", "convex:-0.1"] {
        let e = fusion(bad).unwrap_err();
        assert!(e.contains("expected \"auto\""), "{bad}: {e}");
        let e = LoopConfig::from_toml(&format!("[index]\nfusion = {bad:?}\n")).unwrap_err();
        assert!(format!("{e:#}").contains("[index] fusion"), "{e:#}");
    }
}
