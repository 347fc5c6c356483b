//! The seed's model-import call (`POST /models` with `model_name`/`model_path`).

use reqwest::Method;
use serde_json::{Value, json};

use super::ModelStudio;
use rag_core::Result;

impl ModelStudio {
    /// The seed's step 4 call: `POST /models` with `{"model_name", "model_path"}`, registering
    /// model weights in OSS under a name. Returns the answer's `output`.
    pub async fn import_model(&self, model_name: &str, model_path: &str) -> Result<Value> {
        let body = json!({"model_name": model_name, "model_path": model_path});
        let v: Value = self
            .http
            .json(
                Method::POST,
                &self.url("models"),
                Some(&body),
                "import model",
            )
            .await?;
        Ok(v.get("output").cloned().unwrap_or(v))
    }
}
