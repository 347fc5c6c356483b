//! Shared by the integration tests: where the reference model is.

use std::path::PathBuf;

/// all-MiniLM-L6-v2 as `scripts/fetch-model.sh` leaves it (or `RAGLOOP_TEST_MODEL`).
pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("RAGLOOP_TEST_MODEL").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2"),
        PathBuf::from,
    );
    assert!(
        dir.join("model.safetensors").exists(),
        "{} has no model: run scripts/fetch-model.sh (scripts/test.sh does) or set RAGLOOP_TEST_MODEL",
        dir.display()
    );
    dir
}
