//! The YAML configuration file (models, deployments, credential references, settings).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::model::{CredentialRef, ModelSpec, Provider, Settings};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub credentials: BTreeMap<String, CredentialRef>,
    #[serde(default)]
    pub models: Vec<ModelSpec>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let cfg: ConfigFile = serde_yaml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let mut seen = std::collections::HashSet::new();
        for m in &self.models {
            if m.name.is_empty() {
                bail!("a model has an empty name");
            }
            if !seen.insert(&m.name) {
                bail!("model `{}` is declared twice", m.name);
            }
            if m.deployments.is_empty() {
                bail!("model `{}` has no deployments", m.name);
            }
            for d in &m.deployments {
                validate_deployment(&m.name, d, &self.credentials)?;
            }
        }
        for (name, c) in &self.credentials {
            if c.api_key_env.is_empty() {
                bail!("credential `{name}`: api_key_env is empty");
            }
        }
        if self.settings.max_body_bytes == 0 {
            bail!("settings.max_body_bytes must be positive");
        }
        Ok(())
    }
}

fn validate_deployment(
    model: &str,
    d: &crate::model::DeploymentSpec,
    credentials: &BTreeMap<String, CredentialRef>,
) -> anyhow::Result<()> {
    if let Some(c) = &d.credential {
        if !credentials.contains_key(c) {
            bail!("model `{model}`: deployment names credential `{c}`, which is not declared under `credentials`");
        }
    }
    match d.provider {
        Provider::Demo => Ok(()),
        Provider::Openai => {
            let Some(url) = &d.base_url else {
                bail!("model `{model}`: an openai deployment needs base_url (e.g. https://api.openai.com/v1)");
            };
            crate::upstream::UpstreamUrl::parse(url).with_context(|| format!("model `{model}`: base_url"))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_example() {
        let cfg = ConfigFile::parse(
            r#"
credentials:
  openai: {api_key_env: OPENAI_API_KEY}
models:
  - name: gpt-4o-mini
    deployments:
      - {provider: openai, base_url: "https://api.openai.com/v1", credential: openai}
  - name: demo
    deployments: [{provider: demo}]
"#,
        )
        .unwrap();
        assert_eq!(cfg.models.len(), 2);
        assert_eq!(cfg.models[0].deployments[0].weight, 1);
        assert_eq!(cfg.settings, Settings::default());
    }

    #[test]
    fn rejects_unknown_credential_and_duplicates() {
        let e = ConfigFile::parse("models: [{name: a, deployments: [{provider: openai, base_url: 'http://x', credential: nope}]}]")
            .unwrap_err();
        assert!(format!("{e:#}").contains("nope"));
        let e = ConfigFile::parse("models: [{name: a, deployments: [{provider: demo}]}, {name: a, deployments: [{provider: demo}]}]")
            .unwrap_err();
        assert!(format!("{e:#}").contains("twice"));
        assert!(ConfigFile::parse("models: [{name: a, deployments: []}]").is_err());
        assert!(ConfigFile::parse("models: [{name: a, deployments: [{provider: openai}]}]").is_err());
        assert!(ConfigFile::parse("bogus: 1").is_err());
        // inline secrets are not a thing: unknown fields are rejected
        assert!(ConfigFile::parse("credentials: {x: {api_key: sk-1}}").is_err());
    }
}
