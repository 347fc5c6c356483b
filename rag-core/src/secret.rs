//! [`Secret`]: a credential that never prints itself.

use std::fmt;

/// A string that must not leak: `Debug` and `Display` print `***`, and it has no `Serialize`.
/// Read it with [`Secret::expose`] only where it is put on the wire or into a signature.
///
/// ```
/// use rag_core::Secret;
/// let key = Secret::new("sk-live-123");
/// assert_eq!(format!("{key:?} {key}"), "Secret(***) ***");
/// assert_eq!(key.expose(), "sk-live-123");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Reads a credential from an environment variable; `None` when unset or empty.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(Self)
    }

    /// The credential itself. Call only where it is sent or used to sign.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An Alibaba Cloud AccessKey pair, optionally with an STS security token. Used by every
/// Alibaba client (OSS, PAI). `Debug` shows the key id only.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// The AccessKey id (not secret; shown in logs to say which key was used).
    pub id: String,
    /// The AccessKey secret.
    pub secret: Secret,
    /// The STS token, for temporary credentials.
    pub security_token: Option<Secret>,
}

impl AccessKey {
    /// Environment variable of the key id.
    pub const ENV_ID: &'static str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
    /// Environment variable of the key secret.
    pub const ENV_SECRET: &'static str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
    /// Environment variable of the optional STS token.
    pub const ENV_TOKEN: &'static str = "ALIBABA_CLOUD_SECURITY_TOKEN";

    /// Reads the standard Alibaba Cloud variables. Fails with [`crate::Error::Auth`] naming
    /// the missing variable (never a value).
    pub fn from_env() -> crate::Result<Self> {
        let id = std::env::var(Self::ENV_ID)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| crate::Error::Auth {
                message: format!("{} is not set", Self::ENV_ID),
            })?;
        let secret = Secret::from_env(Self::ENV_SECRET).ok_or_else(|| crate::Error::Auth {
            message: format!("{} is not set", Self::ENV_SECRET),
        })?;
        Ok(Self {
            id,
            secret,
            security_token: Secret::from_env(Self::ENV_TOKEN),
        })
    }
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_keys_never_print_their_secrets() {
        let key = AccessKey {
            id: "LTAI-id".into(),
            secret: Secret::new("very-secret"),
            security_token: Some(Secret::new("sts-token")),
        };
        let shown = format!("{key:?}");
        assert!(shown.contains("LTAI-id"));
        assert!(
            !shown.contains("very-secret") && !shown.contains("sts-token"),
            "{shown}"
        );
    }
}
