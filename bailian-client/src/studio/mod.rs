//! The native Model Studio APIs under `…/api/v1` that the seed's steps 3 and 4 need: file
//! upload, fine-tune jobs (create, get, logs, cancel), deployments (deployable models, create,
//! get, list, scale, delete) and the seed's model-import call. Every answer is
//! `{"request_id", "output" | "data"}`; errors are the native `{"code", "message",
//! "request_id"}` (see [`crate::ApiError`]).
//!
//! **Region**: Model Studio documents its fine-tune and deployment APIs for the China
//! (Beijing) region only. A client of another region still sends them (the service may
//! answer), and every error it gets says so.
//!
//! The documented path from a fine-tune to a served model is the fine-tune's output
//! (`finetuned_output`) deployed with `POST /deployments` — what [`crate::BailianDeployer`]
//! does. `POST /models` ([`ModelStudio::import_model`]) is the seed's form of step 4 and is not
//! in the vendor's API reference; it is kept for callers that use it.
//!
//! One file per resource: `files.rs` (upload), `fine_tunes.rs`, `deployments.rs`, `models.rs`
//! (the seed's import call).

use rag_core::{Error, Result};
use serde::Deserialize;

use crate::config::BailianConfig;
use crate::http::Http;

mod deployments;
mod files;
mod fine_tunes;
mod models;

pub use deployments::{
    CreateDeployment, DeployPlan, DeployableModel, DeploymentInfo, MAX_SUFFIX_CHARS,
};
pub use files::FINE_TUNE_PURPOSE;
pub use fine_tunes::{CreateFineTune, FineTuneJob};

/// The native API client (cheap to clone).
#[derive(Debug, Clone)]
pub struct ModelStudio {
    pub(crate) http: Http,
}

/// The `{"request_id", "output"}` envelope of native answers.
#[derive(Deserialize)]
pub(crate) struct Envelope<T> {
    pub(crate) output: T,
}

/// An id that is safe to put in a URL path.
pub(crate) fn path_segment(id: &str) -> Result<&str> {
    if id.is_empty() || id.contains(['/', '?', '#']) {
        return Err(Error::invalid(format!("{id:?} is not a valid id")));
    }
    Ok(id)
}

impl ModelStudio {
    /// A client of the native API of `config`'s region.
    pub fn new(config: BailianConfig) -> Result<Self> {
        if config.api_key().is_none() {
            return Err(Error::Auth {
                message: format!(
                    "Model Studio needs an API key ({})",
                    BailianConfig::ENV_API_KEY
                ),
            });
        }
        Ok(Self {
            http: Http::new(config)?,
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.http.config.native_base())
    }

    /// What a call does, as its errors name it: outside Beijing, with the region caveat.
    pub(crate) fn what(&self, call: &str) -> String {
        if self.http.config.native_is_documented() {
            call.to_string()
        } else {
            format!(
                "{call} (in region {:?}: Model Studio documents its fine-tune and deployment APIs for the Beijing region only; set DASHSCOPE_REGION=beijing)",
                self.http.config.region()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Region;
    use rag_core::Secret;

    #[test]
    fn calls_outside_beijing_carry_the_region_caveat() {
        let key = || Secret::new("sk-test");
        let beijing = ModelStudio::new(BailianConfig::new(Region::Beijing).with_api_key(key()));
        assert_eq!(
            beijing.unwrap().what("create fine-tune"),
            "create fine-tune"
        );
        let intl = ModelStudio::new(BailianConfig::new(Region::Singapore).with_api_key(key()));
        let what = intl.unwrap().what("create fine-tune");
        assert!(
            what.starts_with("create fine-tune (in region Singapore"),
            "{what}"
        );
        assert!(what.contains("Beijing region only"), "{what}");
        // A native base set by hand is the caller's choice: no caveat.
        let own = BailianConfig::new(Region::Singapore)
            .with_api_key(key())
            .with_native_base("https://proxy.example/api/v1");
        assert_eq!(
            ModelStudio::new(own).unwrap().what("create fine-tune"),
            "create fine-tune"
        );
    }
}
