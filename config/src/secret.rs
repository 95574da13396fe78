//! Secrets in the service config: tokens, passwords, webhook URLs that embed a key.
//!
//! A secret is never written in the config file itself: it names where the value lives, an
//! environment variable (`{ env = "ACME_JIRA_TOKEN" }`) or a file (`{ file = "/run/secrets/jira" }`,
//! relative paths under the config file's folder). [`ServiceConfig::load`](crate::ServiceConfig::load)
//! reads every secret once and reports the missing ones with their line, like any other problem.
//!
//! [`Secret`] redacts itself: `Debug` and `Display` name the source, never the value, and it has
//! no `Serialize`. The value is reached only through [`Secret::expose`], at the one place that
//! puts it on the wire.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// Where a secret's value is read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSource {
    /// An environment variable of the chainwatch process.
    Env(String),
    /// A file (trailing newlines are dropped); relative to the config file's folder.
    File(PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "env {name}"),
            SecretSource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// A secret value and where it came from. Prints as `<secret from env NAME>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    source: SecretSource,
    /// `None` until [`Secret::resolve`] has read it (config loading does this).
    value: Option<Arc<str>>,
}

impl Secret {
    /// A secret to be read from `source`.
    pub fn from_source(source: SecretSource) -> Self {
        Self {
            source,
            value: None,
        }
    }

    /// A secret with a known value (tests, and values built at run time).
    pub fn with_value(source: SecretSource, value: &str) -> Self {
        Self {
            source,
            value: Some(Arc::from(value)),
        }
    }

    /// Where the value comes from (safe to print).
    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// Reads the value from its source; relative files are under `base_dir`. The error says
    /// what is missing, never a value.
    pub fn resolve(&mut self, base_dir: &Path) -> Result<(), String> {
        let value = match &self.source {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) => v,
                Err(std::env::VarError::NotPresent) => {
                    return Err(format!("secret: environment variable {name} is not set"));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(format!(
                        "secret: environment variable {name} is not valid UTF-8"
                    ));
                }
            },
            SecretSource::File(path) => {
                let p = if path.is_absolute() {
                    path.clone()
                } else {
                    base_dir.join(path)
                };
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| format!("secret: cannot read {}: {e}", p.display()))?;
                text.trim_end_matches(['\r', '\n']).to_owned()
            }
        };
        if value.is_empty() {
            return Err(format!("secret: {} is empty", self.source));
        }
        self.value = Some(Arc::from(value));
        Ok(())
    }

    /// The value, for the one place that sends it. Empty before [`Secret::resolve`].
    pub fn expose(&self) -> &str {
        self.value.as_deref().unwrap_or_default()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.source)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<secret from {}>", self.source)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SecretSource::deserialize(d)
            .map(Secret::from_source)
            .map_err(|e| {
                de::Error::custom(format!(
                    "{e} (a secret is {{ env = \"NAME\" }} or {{ file = \"PATH\" }})"
                ))
            })
    }
}

/// A setting that may be written plainly or come from a secret: a webhook URL is harmless for
/// a ticketing API and a credential for a Slack or Teams webhook.
#[derive(Clone, PartialEq, Eq)]
pub enum MaybeSecret {
    /// Written in the config.
    Plain(String),
    /// Read from a secret.
    Secret(Secret),
}

impl MaybeSecret {
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        match self {
            MaybeSecret::Plain(s) => s,
            MaybeSecret::Secret(s) => s.expose(),
        }
    }

    /// True when the value came from a secret (and so must not be printed).
    pub fn is_secret(&self) -> bool {
        matches!(self, MaybeSecret::Secret(_))
    }

    /// The secret, if the value is one.
    pub fn secret_mut(&mut self) -> Option<&mut Secret> {
        match self {
            MaybeSecret::Plain(_) => None,
            MaybeSecret::Secret(s) => Some(s),
        }
    }
}

impl fmt::Debug for MaybeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaybeSecret::Plain(s) => fmt::Debug::fmt(s, f),
            MaybeSecret::Secret(s) => fmt::Debug::fmt(s, f),
        }
    }
}

impl fmt::Display for MaybeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaybeSecret::Plain(s) => f.write_str(s),
            MaybeSecret::Secret(s) => fmt::Display::fmt(s, f),
        }
    }
}

impl<'de> Deserialize<'de> for MaybeSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeSecret;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or a secret: { env = \"NAME\" } or { file = \"PATH\" }")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeSecret::Plain(v.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Secret::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(MaybeSecret::Secret)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        token: Secret,
        url: MaybeSecret,
        plain: MaybeSecret,
    }

    #[test]
    fn reads_env_and_file_secrets_and_never_prints_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("url.txt"),
            "https://hooks.example/T0/B0/xyz\n",
        )
        .unwrap();
        // `set_var` is unsafe in edition 2024 (and unsafe code is forbidden here), so the test
        // reads a variable every process has.
        let (var, value) = ("PATH", std::env::var("PATH").expect("PATH is set"));
        let mut h: Holder = toml::from_str(&format!(
            "token = {{ env = \"{var}\" }}\nurl = {{ file = \"url.txt\" }}\nplain = \"https://jira.example\"\n"
        ))
        .unwrap();
        h.token.resolve(dir.path()).unwrap();
        h.url.secret_mut().unwrap().resolve(dir.path()).unwrap();
        assert_eq!(h.token.expose(), value);
        assert_eq!(h.url.expose(), "https://hooks.example/T0/B0/xyz");
        assert_eq!(h.plain.expose(), "https://jira.example");
        assert!(h.url.is_secret() && !h.plain.is_secret());
        let printed = format!("{h:?} {} {} {}", h.token, h.url, h.plain);
        assert!(!printed.contains("xyz"), "{printed}");
        assert!(!printed.contains(&value), "{printed}");
        assert!(printed.contains(&format!("env {var}")), "{printed}");
    }

    #[test]
    fn missing_secrets_say_what_is_missing() {
        let mut s = Secret::from_source(SecretSource::Env(
            "CHAINWATCH_TEST_SURELY_UNSET_VARIABLE".into(),
        ));
        let e = s.resolve(Path::new(".")).unwrap_err();
        assert!(
            e.contains("CHAINWATCH_TEST_SURELY_UNSET_VARIABLE is not set"),
            "{e}"
        );
        let mut f = Secret::from_source(SecretSource::File("no/such/file".into()));
        assert!(
            f.resolve(Path::new("/nowhere"))
                .unwrap_err()
                .contains("cannot read")
        );
        let bad: Result<Holder, _> =
            toml::from_str("token = { value = \"hunter2\" }\nurl = \"u\"\nplain = \"p\"\n");
        let e = bad.unwrap_err().to_string();
        assert!(e.contains("env = \"NAME\""), "{e}");
    }
}
