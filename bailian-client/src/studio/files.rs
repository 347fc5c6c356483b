//! File upload (`POST /files`, multipart), for fine-tune training and validation data.
//!
//! Wire format: Model Studio's file management reference
//! (<https://help.aliyun.com/zh/model-studio/model-customization-file-management-service>):
//! form fields `files` (the file), `purpose` (`fine-tune` for training data: the reference
//! marks it required, and a file uploaded without it is not offered to fine-tunes) and
//! `descriptions`; the answer is `{"data": {"uploaded_files": [{"file_id", "name"}],
//! "failed_uploads": […]}}`.

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::ModelStudio;
use crate::http::Payload;
use rag_core::{Error, Result};

/// The `purpose` of files fine-tunes read.
pub const FINE_TUNE_PURPOSE: &str = "fine-tune";

#[derive(Deserialize)]
struct Uploaded {
    data: UploadedData,
}

#[derive(Deserialize)]
struct UploadedData {
    #[serde(default)]
    uploaded_files: Vec<UploadedFile>,
    #[serde(default)]
    failed_uploads: Vec<Value>,
}

#[derive(Deserialize)]
struct UploadedFile {
    file_id: String,
}

impl ModelStudio {
    /// Uploads a fine-tune training or validation file (`POST /files`, `purpose=fine-tune`);
    /// returns its file id.
    pub async fn upload_file(
        &self,
        name: &str,
        bytes: Vec<u8>,
        description: &str,
    ) -> Result<String> {
        let (name, description) = (name.to_string(), description.to_string());
        let form = move || {
            let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.clone());
            reqwest::multipart::Form::new()
                .part("files", part)
                .text("purpose", FINE_TUNE_PURPOSE)
                .text("descriptions", description.clone())
        };
        let up: Uploaded = self
            .http
            .json(
                Method::POST,
                &self.url("files"),
                Payload::Form(&form),
                &self.what("upload file"),
            )
            .await?;
        if let Some(failed) = up.data.failed_uploads.first() {
            return Err(Error::InvalidInput {
                message: format!("upload file: refused: {failed}"),
            });
        }
        up.data
            .uploaded_files
            .into_iter()
            .next()
            .map(|f| f.file_id)
            .ok_or_else(|| Error::backend_msg("dashscope", "upload file: no file id in the answer"))
    }
}
