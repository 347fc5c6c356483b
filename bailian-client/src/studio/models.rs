//! The seed's model-import call (`POST /models` with `model_name`/`model_path`).
//!
//! This is the form the seed's product page gives for step 4; it is **not** in Model
//! Studio's API reference. The documented way to serve a fine-tuned model is to deploy the
//! fine-tune's output (`POST /deployments`, [`crate::BailianDeployer`]), which is what the
//! pipeline does; this call is kept for accounts where the seed's form works.

use reqwest::Method;
use serde_json::{Value, json};

use super::ModelStudio;
use rag_core::Result;

impl ModelStudio {
    /// The seed's step 4 call: `POST /models` with `{"model_name", "model_path"}`, registering
    /// model weights in OSS under a name. Returns the answer's `output`. Undocumented by the
    /// vendor (see the module docs): prefer deploying the fine-tune's output.
    pub async fn import_model(&self, model_name: &str, model_path: &str) -> Result<Value> {
        let body = json!({"model_name": model_name, "model_path": model_path});
        let v: Value = self
            .http
            .json(
                Method::POST,
                &self.url("models"),
                Some(&body),
                &self.what("import model"),
            )
            .await?;
        Ok(v.get("output").cloned().unwrap_or(v))
    }
}
