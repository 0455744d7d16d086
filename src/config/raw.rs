//! The serde mirror of the TOML file (to be written).
use super::Config;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

pub(super) fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError(e.to_string()))?;
    parse(&text, path)
}

pub(super) fn parse(_text: &str, _path: &Path) -> Result<Config, ConfigError> {
    Err(ConfigError("not yet implemented".into()))
}

pub(super) fn render(_config: &Config) -> String {
    String::new()
}
