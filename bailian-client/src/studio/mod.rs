//! The native Model Studio APIs under `…/api/v1` that the seed's steps 3 and 4 need: file
//! upload, fine-tune jobs (create, get, logs, cancel), deployments (create, get, list, scale,
//! delete) and the model-import call. Every answer is `{"request_id", "output" | "data"}`;
//! errors are the native `{"code", "message", "request_id"}` (see [`crate::ApiError`]).
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

pub use deployments::DeploymentInfo;
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
}
