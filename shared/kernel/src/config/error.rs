//! Why a function cannot start: a setting or a secret is missing or unsafe. Its own module,
//! so that what reads settings and secrets can name it without depending on all of config.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("secret {secret_id} could not be read: {reason}")]
    SecretUnavailable { secret_id: String, reason: String },
    #[error("secret {secret_id} is not valid JSON of the expected shape: {reason}")]
    SecretMalformed { secret_id: String, reason: String },
    #[error("secret field {field} is unusable in production: {reason}")]
    WeakSecret { field: &'static str, reason: String },
    /// A secret holds a field another secret owns: whoever reads it would read that too.
    #[error("secret {secret_id} holds `{field}`, which belongs in {belongs}")]
    MisplacedSecret { secret_id: String, field: String, belongs: &'static str },
}
