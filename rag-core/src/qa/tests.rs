//! The dataset builder: generation, user pairs, checks, split and files.

#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use async_trait::async_trait;

use super::dataset::*;
use super::*;
use crate::chat::{ChatModel, ChatRequest, ChatResponse};
use crate::local::{ExtractiveChat, InMemoryStore};
use crate::prompt::parse_questions;
use crate::{Chunker, Document};

fn chunks() -> Vec<Chunk> {
    let docs = [
        ("kill.2", "kill", "DESCRIPTION\nThe kill() system call sends a signal to a process or process group."),
        ("dup.2", "dup", "DESCRIPTION\nThe dup() system call allocates a new file descriptor that refers to the same open file."),
        ("ls.1", "ls", "DESCRIPTION\nList information about the files in the current directory."),
    ]
    .map(|(id, title, text)| Document {
        id: id.into(),
        title: title.into(),
        text: text.into(),
        source: format!("oss://b/raw-docs/{id}"),
        ..Default::default()
    });
    Chunker::default().chunk_all(&docs)
}

#[tokio::test]
async fn the_local_extractive_model_answers_heading_questions_with_citations() {
    let options = QaOptions {
        questions: QuestionSource::Headings,
        validation_fraction: 0.0,
        ..Default::default()
    };
    let chunks = chunks();
    let (pairs, dropped, _) = generate(&ExtractiveChat::new(2), &chunks, &options)
        .await
        .unwrap();
    assert!(dropped.is_empty(), "{dropped:?}");
    assert_eq!(pairs.len(), 3);
    let kill = pairs.iter().find(|p| p.doc_id == "kill.2").unwrap().clone();
    assert_eq!(kill.question, "What is kill?");
    assert!(kill.answer.contains("sends a signal"), "{}", kill.answer);
    assert!(kill.answer.contains(&format!("[{}]", kill.chunk_id)));
    let data = validate(pairs, &options);
    // "What is ls?": no word of it is in ls's text, so the extractive model says the
    // context does not answer it — dropped as a refusal.
    assert_eq!((data.train.len(), data.validation.len()), (2, 0));
    assert_eq!(data.dropped.len(), 1);
    assert_eq!(data.dropped[0].question.as_deref(), Some("What is ls?"));
    assert_eq!(data.dropped[0].why, Drop::Refused);
    let kill = &kill;

    // The JSONL line is the production prompt plus the answer.
    let line: serde_json::Value = serde_json::from_str(&messages_line(kill)).unwrap();
    let m = line["messages"].as_array().unwrap();
    assert_eq!(
        m.iter()
            .map(|x| x["role"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["system", "user", "assistant"]
    );
    assert_eq!(m[0]["content"], SYSTEM_PROMPT);
    let user = m[1]["content"].as_str().unwrap();
    assert!(
        user.starts_with(&format!("Context:\n[{}] ", kill.chunk_id)),
        "{user}"
    );
    assert!(user.ends_with("\nQuestion: What is kill?"), "{user}");
    assert_eq!(m[2]["content"], kill.answer.as_str());
}

/// Writes questions, then answers as scripted per question.
struct Scripted {
    calls: Mutex<usize>,
}

#[async_trait]
impl ChatModel for Scripted {
    fn model_id(&self) -> &str {
        "scripted"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse> {
        *self.calls.lock().unwrap() += 1;
        let prompt = &request.messages.last().unwrap().content;
        let content = if let Some((chunks, q)) = crate::prompt::parse_rag_prompt(prompt) {
            let id = &chunks[0].id;
            match q.as_str() {
                "Which call sends a signal?" => format!("kill() does. [{id}]"),
                "What does ls list?" => "Files.".to_string(), // no citation
                "Why?" => String::new(),
                "Who wrote dup?" => {
                    "The provided context does not contain an answer to this question.".into()
                }
                other => format!("{} [{id}]", "long ".repeat(3000 + other.len())),
            }
        } else if prompt.contains("kill()") {
            "1. Which call sends a signal?\n2. which call sends a signal?".into()
        } else if prompt.contains("dup()") {
            "Q: Who wrote dup?\n- Why?".into()
        } else if prompt.contains("List information") {
            return Err(Error::Unavailable {
                message: "chat: 503".into(),
                source: None,
            });
        } else {
            "What does ls list?".into()
        };
        Ok(ChatResponse {
            content,
            usage: Usage::new(10, 5),
            finish_reason: Some("stop".into()),
        })
    }
}

#[tokio::test]
async fn a_model_writes_the_questions_and_bad_examples_are_dropped_with_the_reason() {
    let chat = Scripted {
        calls: Mutex::new(0),
    };
    let chunks = chunks();
    let options = QaOptions::default();
    let (pairs, dropped, usage) = generate(&chat, &chunks, &options).await.unwrap();
    // ls's question call failed: recorded, the others went on.
    assert_eq!(dropped.len(), 1);
    assert!(matches!(dropped[0].why, Drop::ChatFailed(_)));
    assert!(usage.total_tokens > 0);
    // QaOptions asks for one question per chunk: kill's first, dup's first.
    assert_eq!(
        pairs
            .iter()
            .map(|p| p.question.as_str())
            .collect::<Vec<_>>(),
        ["Which call sends a signal?", "Who wrote dup?"]
    );
    let data = validate(
        pairs,
        &QaOptions {
            validation_fraction: 0.0,
            ..options
        },
    );
    assert_eq!(data.train.len(), 1);
    assert_eq!(data.dropped_by_reason().get("refused"), Some(&1));

    // The other checks, on pairs as a user might give them.
    let base = data.train[0].clone();
    let with = |q: &str, a: &str| QaPair {
        question: q.into(),
        answer: a.into(),
        ..base.clone()
    };
    let cite = format!("[{}]", base.chunk_id);
    let given = vec![
        base.clone(),
        with("WHICH call sends a signal? ", &format!("Again. {cite}")),
        with("Empty?", "  "),
        with("Uncited?", "An answer without a citation."),
        with("Long?", &format!("{} {cite}", "word ".repeat(5000))),
    ];
    let data = validate(
        given,
        &QaOptions {
            validation_fraction: 0.0,
            ..QaOptions::default()
        },
    );
    assert_eq!(data.train.len(), 1);
    let reasons: Vec<&str> = data.dropped.iter().map(|d| d.why.kind()).collect();
    assert_eq!(
        reasons,
        ["duplicate", "empty_answer", "uncited", "too_long"]
    );
}

#[tokio::test]
async fn bad_credentials_or_every_call_failing_stop_the_run() {
    struct Failing(bool);
    #[async_trait]
    impl ChatModel for Failing {
        fn model_id(&self) -> &str {
            "failing"
        }

        async fn chat(&self, _: &ChatRequest) -> Result<ChatResponse> {
            Err(if self.0 {
                Error::Auth {
                    message: "bad key".into(),
                }
            } else {
                Error::Unavailable {
                    message: "chat: 503".into(),
                    source: None,
                }
            })
        }
    }
    let auth = Failing(true);
    assert!(matches!(
        generate(&auth, &chunks(), &QaOptions::default()).await,
        Err(Error::Auth { .. })
    ));
    let down = Failing(false);
    assert!(matches!(
        generate(&down, &chunks(), &QaOptions::default()).await,
        Err(Error::Unavailable { .. })
    ));
}

#[test]
fn user_pairs_are_grounded_in_a_chunk_or_their_own_context() {
    let chunks = chunks();
    let kill = &chunks.iter().find(|c| c.doc_id == "kill.2").unwrap().id;
    let text = format!(
        "{{\"question\": \"Which call sends a signal?\", \"answer\": \"kill(). [{kill}]\", \"chunk_id\": \"{kill}\"}}\n\
         \n\
         {{\"question\": \"What is 2+2?\", \"answer\": \"4\", \"context\": \"2+2 is 4.\"}}\n\
         {{\"question\": \"q\", \"answer\": \"a\", \"chunk_id\": \"nope\"}}\n\
         {{\"question\": \"q\", \"answer\": \"a\"}}\n\
         not json\n"
    );
    let (pairs, dropped) = user_pairs(&text, &chunks);
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].doc_id, "kill.2");
    assert!(pairs[0].context.contains("sends a signal"));
    assert_eq!(pairs[1].source, "user");
    let lines: Vec<String> = dropped
        .iter()
        .map(|d| match &d.why {
            Drop::BadLine(l) => l.split(':').next().unwrap().to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(lines, ["line 4", "line 5", "line 6"]);
    // The second cites nothing: validate drops it unless citations are not required.
    let data = validate(
        pairs.clone(),
        &QaOptions {
            validation_fraction: 0.0,
            ..Default::default()
        },
    );
    assert_eq!(
        (data.train.len(), data.dropped[0].why.kind()),
        (1, "uncited")
    );
    let data = validate(
        pairs,
        &QaOptions {
            validation_fraction: 0.0,
            require_citation: false,
            ..Default::default()
        },
    );
    assert_eq!(data.train.len(), 2);
}

proptest::proptest! {
    /// A user's file of any content: no panic, and every non-blank line is either a pair
    /// or a dropped line.
    #[test]
    fn user_pair_files_never_panic_and_account_for_every_line(
        lines in proptest::collection::vec(
            "(\\{\"question\": \"[a-z ?]{0,10}\", \"answer\": \"[a-z\\[\\] ]{0,10}\"(, \"context\": \"[a-z ]{0,8}\")?\\}|[^\n]{0,40})",
            0..20,
        )
    ) {
        let text = lines.join("\n");
        let (pairs, dropped) = user_pairs(&text, &chunks());
        let non_blank = text.lines().filter(|l| !l.trim().is_empty()).count();
        proptest::prop_assert_eq!(pairs.len() + dropped.len(), non_blank);
        let data = validate(pairs, &QaOptions::default());
        proptest::prop_assert!(data.train.iter().chain(&data.validation).all(|p| !p.answer.trim().is_empty()));
    }

    #[test]
    fn question_parsing_never_panics_and_keeps_at_most_n(answer in "[^\\x00]{0,300}", n in 0usize..5) {
        let (q, _) = parse_questions(&answer, n, 300);
        proptest::prop_assert!(q.len() <= n);
    }
}

#[test]
fn the_split_keeps_each_document_on_one_side_and_is_stable() {
    let pair = |doc: &str, q: &str| QaPair {
        question: q.into(),
        answer: "a [c]".into(),
        chunk_id: "c".into(),
        context: "ctx".into(),
        doc_id: doc.into(),
        source: "s".into(),
    };
    let pairs: Vec<QaPair> = (0..200)
        .flat_map(|d| (0..2).map(move |q| pair(&format!("doc{d}"), &format!("q{d}-{q}"))))
        .collect();
    let options = QaOptions {
        validation_fraction: 0.2,
        ..Default::default()
    };
    let a = validate(pairs.clone(), &options);
    let b = validate(pairs, &options);
    assert_eq!(a.validation, b.validation);
    let frac = a.validation.len() as f64 / 400.0;
    assert!((0.12..0.28).contains(&frac), "{frac}");
    let train_docs: HashSet<&str> = a.train.iter().map(|p| p.doc_id.as_str()).collect();
    assert!(
        a.validation
            .iter()
            .all(|p| !train_docs.contains(p.doc_id.as_str()))
    );
}

#[tokio::test]
async fn the_dataset_is_written_with_its_manifest_last() {
    let store = InMemoryStore::new();
    let prefix: StoreUri = "mem://bkt/qa-pairs/".parse().unwrap();
    let chunks = chunks();
    let options = QaOptions {
        questions: QuestionSource::Headings,
        validation_fraction: 0.0,
        ..Default::default()
    };
    let (pairs, _, usage) = generate(&ExtractiveChat::new(2), &chunks, &options)
        .await
        .unwrap();
    let mut data = validate(pairs, &options);
    data.usage = usage;
    let manifest = write_dataset(&store, &prefix, &data, &corpus_hash(&chunks), "extractive")
        .await
        .unwrap();
    assert_eq!((manifest.train, manifest.validation), (2, 0));
    assert!(
        !store
            .exists(&prefix.join("validation.jsonl").unwrap())
            .await
            .unwrap()
    );
    assert_eq!(manifest.dropped.get("refused"), Some(&1));
    let train = store
        .get_bytes(&prefix.join("train.jsonl").unwrap())
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(train.to_vec()).unwrap().lines().count(),
        manifest.train
    );
    let m: Manifest = serde_json::from_slice(
        &store
            .get_bytes(&prefix.join("manifest.json").unwrap())
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(m.corpus_hash, corpus_hash(&chunks));
    assert_eq!(m.format, "ragloop-qa-pairs/1");

    let empty = QaDataset::default();
    let err = write_dataset(
        &store,
        &"mem://bkt/none/".parse().unwrap(),
        &empty,
        "h",
        "g",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
}
