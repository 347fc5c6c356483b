//! [`StoreUri`]: where an object lives, as `oss://bucket/key`, `s3://bucket/key` or `file:///path`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The scheme of a [`StoreUri`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// Alibaba Cloud OSS: `oss://bucket/key`.
    Oss,
    /// Amazon S3 or any S3-compatible server: `s3://bucket/key`.
    S3,
    /// A local path: `file:///absolute/path`. It has no bucket.
    File,
    /// The in-memory store: `mem://bucket/key`.
    Memory,
}

impl Scheme {
    /// The scheme as written before `://`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oss => "oss",
            Self::S3 => "s3",
            Self::File => "file",
            Self::Memory => "mem",
        }
    }
}

/// An object's address: scheme, bucket and key.
///
/// A key that ends in `/` (or is empty) names a *prefix*, as used by `list` and by the pipeline's
/// layout (`oss://bucket/raw-docs/`). Keys are `/`-separated and may hold any Unicode, spaces
/// included; empty segments and `.`/`..` segments are rejected because no store can map them
/// unambiguously.
///
/// ```
/// use rag_core::StoreUri;
/// let uri: StoreUri = "oss://my-bucket/raw-docs/getent.1.txt".parse()?;
/// assert_eq!(uri.bucket(), "my-bucket");
/// assert_eq!(uri.key(), "raw-docs/getent.1.txt");
/// assert_eq!(uri.parent().to_string(), "oss://my-bucket/raw-docs/");
/// # Ok::<(), rag_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreUri {
    scheme: Scheme,
    bucket: String,
    key: String,
}

impl StoreUri {
    /// Builds a URI from its parts, validating bucket and key.
    pub fn new(scheme: Scheme, bucket: impl Into<String>, key: impl Into<String>) -> Result<Self> {
        let bucket = bucket.into();
        let key = key.into();
        if scheme == Scheme::File {
            if !bucket.is_empty() {
                return Err(Error::invalid(format!(
                    "file URIs have no bucket (file:///path), got host {bucket:?}"
                )));
            }
        } else {
            validate_bucket(&bucket)?;
        }
        validate_key(&key)?;
        Ok(Self {
            scheme,
            bucket,
            key,
        })
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The bucket (empty for `file://`).
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key, without a leading `/`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether this names a prefix (key empty or ending in `/`) rather than an object.
    pub fn is_prefix(&self) -> bool {
        self.key.is_empty() || self.key.ends_with('/')
    }

    /// The last segment of the key (`"a.txt"` for `oss://b/docs/a.txt`).
    pub fn file_name(&self) -> &str {
        self.key
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
    }

    /// Appends `rel` (a relative key, `/`-separated) to this prefix.
    /// A `/` is inserted when this key does not end with one.
    pub fn join(&self, rel: &str) -> Result<Self> {
        let rel = rel.trim_start_matches('/');
        let key = if self.key.is_empty() || self.key.ends_with('/') {
            format!("{}{}", self.key, rel)
        } else {
            format!("{}/{}", self.key, rel)
        };
        Self::new(self.scheme, self.bucket.clone(), key)
    }

    /// This URI as a prefix: a `/` is appended to a non-empty key that lacks one.
    pub fn as_prefix(&self) -> Self {
        let mut out = self.clone();
        if !out.key.is_empty() && !out.key.ends_with('/') {
            out.key.push('/');
        }
        out
    }

    /// The prefix that holds this object (`oss://b/docs/` for `oss://b/docs/a.txt`).
    pub fn parent(&self) -> Self {
        let trimmed = self.key.trim_end_matches('/');
        let key = match trimmed.rfind('/') {
            Some(i) => trimmed[..=i].to_string(),
            None => String::new(),
        };
        Self {
            scheme: self.scheme,
            bucket: self.bucket.clone(),
            key,
        }
    }

    /// The key relative to `prefix`, if this URI lies under it.
    pub fn strip_prefix(&self, prefix: &StoreUri) -> Option<&str> {
        if self.scheme != prefix.scheme || self.bucket != prefix.bucket {
            return None;
        }
        self.key.strip_prefix(prefix.key.as_str())
    }
}

fn validate_bucket(bucket: &str) -> Result<()> {
    // S3/OSS rules: 3..=63 chars of lower-case letters, digits, '-' and '.'; starts and ends with a
    // letter or digit. A leading '.' is also what lets the local store keep its own files apart.
    let ok_len = (3..=63).contains(&bucket.len());
    let ok_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ok_ends = bucket
        .bytes()
        .next()
        .zip(bucket.bytes().last())
        .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_ends {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "bucket {bucket:?} is not a valid bucket name (3-63 chars of a-z, 0-9, '-', '.')"
        )))
    }
}

fn validate_key(key: &str) -> Result<()> {
    if key.starts_with('/') {
        return Err(Error::invalid(format!(
            "key {key:?} must not start with '/'"
        )));
    }
    if key.len() > 1024 {
        return Err(Error::invalid("key is longer than 1024 bytes"));
    }
    let body = key.strip_suffix('/').unwrap_or(key);
    if body.is_empty() {
        return Ok(());
    }
    for seg in body.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(Error::invalid(format!(
                "key {key:?} has an empty, '.' or '..' segment"
            )));
        }
        if seg.chars().any(|c| c.is_control()) {
            return Err(Error::invalid(format!(
                "key {key:?} holds a control character"
            )));
        }
    }
    Ok(())
}

impl FromStr for StoreUri {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| Error::invalid(format!("{s:?} is not a store URI (scheme://…)")))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "oss" => Scheme::Oss,
            "s3" => Scheme::S3,
            "file" => Scheme::File,
            "mem" => Scheme::Memory,
            other => {
                return Err(Error::invalid(format!(
                    "unsupported scheme {other:?} in {s:?} (oss, s3, file, mem)"
                )));
            }
        };
        if scheme == Scheme::File {
            let path = rest.strip_prefix('/').ok_or_else(|| {
                Error::invalid(format!("{s:?}: file URIs are absolute: file:///path"))
            })?;
            return Self::new(scheme, "", path);
        }
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        Self::new(scheme, bucket, key)
    }
}

impl fmt::Display for StoreUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::File => write!(f, "file:///{}", self.key),
            s => write!(f, "{}://{}/{}", s.as_str(), self.bucket, self.key),
        }
    }
}

impl serde::Serialize for StoreUri {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StoreUri {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `name` with every character outside `[A-Za-z0-9._-]` replaced by `replacement`: safe as
/// one segment of an object key or a file name (model ids become `vector-indexes/<id>/`).
pub fn safe_segment(name: &str, replacement: char) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                replacement
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_each_scheme() {
        let u: StoreUri = "oss://bucket-1/raw-docs/a b/ü.txt".parse().unwrap();
        assert_eq!(
            (u.scheme(), u.bucket(), u.key()),
            (Scheme::Oss, "bucket-1", "raw-docs/a b/ü.txt")
        );
        let u: StoreUri = "s3://bkt/".parse().unwrap();
        assert!(u.is_prefix());
        let u: StoreUri = "file:///tmp/x/y".parse().unwrap();
        assert_eq!((u.bucket(), u.key()), ("", "tmp/x/y"));
        assert_eq!(u.to_string(), "file:///tmp/x/y");
    }

    #[test]
    fn rejects_what_no_store_can_map() {
        for bad in [
            "bucket/key",
            "gs://b/k",
            "oss://B/k",
            "oss://ab/k",
            "oss://bkt/a//b",
            "oss://bkt/../etc",
            "oss://bkt//abs",
            "file://host/x",
            "oss://bkt/a\nb",
        ] {
            assert!(
                matches!(bad.parse::<StoreUri>(), Err(Error::InvalidInput { .. })),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn join_parent_and_strip_prefix_agree() {
        let p: StoreUri = "oss://bkt/raw-docs".parse().unwrap();
        let c = p.join("x/y.txt").unwrap();
        assert_eq!(c.to_string(), "oss://bkt/raw-docs/x/y.txt");
        assert_eq!(c.parent().to_string(), "oss://bkt/raw-docs/x/");
        assert_eq!(c.strip_prefix(&p.as_prefix()), Some("x/y.txt"));
        assert_eq!(c.file_name(), "y.txt");
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(
            bucket in "[a-z0-9][a-z0-9-]{1,20}[a-z0-9]",
            segs in proptest::collection::vec("[^/\\p{Cc}]{1,8}", 0..4),
        ) {
            prop_assume!(segs.iter().all(|s| s != "." && s != ".."));
            let key = segs.join("/");
            let uri = StoreUri::new(Scheme::Oss, bucket, key).unwrap();
            let back: StoreUri = uri.to_string().parse().unwrap();
            prop_assert_eq!(back, uri);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in ".{0,64}") {
            let _ = s.parse::<StoreUri>();
        }
    }
}
