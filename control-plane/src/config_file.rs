//! The YAML configuration file (models, deployments, credential references, settings).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::model::{CredentialRef, ModelSpec, Settings};

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
    /// Reads and checks the file; `own_ports` are the gateway's own ports (refused as provider
    /// destinations by the egress policy).
    pub fn load(path: &Path, own_ports: &[u16]) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse_for(&text, own_ports).with_context(|| format!("in {}", path.display()))
    }

    #[cfg(test)]
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Self::parse_for(text, &[])
    }

    pub fn parse_for(text: &str, own_ports: &[u16]) -> anyhow::Result<Self> {
        let cfg: ConfigFile = serde_yaml::from_str(text)?;
        cfg.validate(own_ports)?;
        Ok(cfg)
    }

    fn validate(&self, own_ports: &[u16]) -> anyhow::Result<()> {
        if let Some(problem) = self.settings.edge.problem() {
            bail!("{problem}");
        }
        if let Some(bad) = self.settings.egress.allow_hosts.iter().find(|h| crate::egress::allow_entry(h).is_none()) {
            bail!("settings.egress.allow_hosts: `{bad}` is not host, host:port, [ipv6] or [ipv6]:port");
        }
        let egress = crate::egress::Egress { settings: &self.settings.egress, own_ports };
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
                validate_deployment(&m.name, d, &self.credentials, &egress)?;
            }
        }
        for (name, c) in &self.credentials {
            if c.stored.is_some() {
                bail!("credential `{name}`: `stored` secrets are written by the admin API; reference an environment variable here");
            }
            if c.required_env().iter().any(|v| v.is_empty()) {
                bail!("credential `{name}`: an environment variable name is empty");
            }
            let aws_pair = c.aws_access_key_id_env.is_some() == c.aws_secret_access_key_env.is_some();
            if !aws_pair {
                bail!("credential `{name}`: aws_access_key_id_env and aws_secret_access_key_env go together");
            }
            if let Some(aws) = &c.aws {
                if c.api_key_env.is_some() || c.aws_access_key_id_env.is_some() || c.aws_session_token_env.is_some() {
                    bail!("credential `{name}`: `aws` (a credential chain) stands alone, without the *_env fields");
                }
                if let Some(problem) = aws.problem() {
                    bail!("credential `{name}`: aws: {problem}");
                }
            } else if c.api_key_env.is_none() && c.aws_access_key_id_env.is_none() {
                bail!("credential `{name}`: set api_key_env, aws_access_key_id_env and aws_secret_access_key_env, or aws (a credential chain)");
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
    egress: &crate::egress::Egress,
) -> anyhow::Result<()> {
    if let Some(c) = &d.credential {
        if !credentials.contains_key(c) {
            bail!("model `{model}`: deployment names credential `{c}`, which is not declared under `credentials`");
        }
    }
    // The same parser the model is resolved with: a file is refused for what would be skipped.
    d.parse(model, egress).map_err(|e| anyhow::anyhow!("model `{model}`: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AwsSource, SagemakerPayload};
    use tollgate_contract::config::PromptTemplate;

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
    fn provider_urls_pass_the_egress_policy() {
        let cfg = |settings: &str, url: &str| {
            ConfigFile::parse_for(
                &format!("settings: {settings}\nmodels: [{{name: m, deployments: [{{provider: openai, base_url: '{url}'}}]}}]"),
                &[8080, 9901],
            )
            .map_err(|e| format!("{e:#}"))
        };
        for url in ["http://169.254.169.254/latest", "http://0xA9FEA9FE/", "http://2852039166/", "http://[::ffff:169.254.169.254]/", "http://metadata.google.internal/"] {
            let e = cfg("{}", url).unwrap_err();
            assert!(e.contains("model `m`: base_url points at a cloud metadata address"), "{url}: {e}");
            assert!(!e.contains("169.254") && !e.contains("A9FE"), "the error does not echo the URL: {e}");
            // allowing loopback or private does not allow metadata
            assert!(cfg("{egress: {allow_loopback: true, allow_private: true}}", url).is_err(), "{url}");
        }
        let e = cfg("{}", "http://127.0.0.1:5000/v1").unwrap_err();
        assert!(e.contains("loopback") && e.contains("settings.egress.allow_loopback"), "{e}");
        assert!(cfg("{egress: {allow_loopback: true}}", "http://127.0.0.1:5000/v1").is_ok());
        let e = cfg("{egress: {allow_loopback: true}}", "http://127.0.0.1:9901/v1").unwrap_err();
        assert!(e.contains("the gateway's own ports"), "{e}");
        assert!(cfg("{egress: {allow_hosts: ['127.0.0.1:9901']}}", "http://127.0.0.1:9901/v1").is_ok());
        let e = cfg("{egress: {allow_hosts: ['h:x']}}", "https://api.openai.com/v1").unwrap_err();
        assert!(e.contains("settings.egress.allow_hosts"), "{e}");
        assert!(cfg("{egress: {allow_everything: true}}", "https://api.openai.com/v1").unwrap_err().contains("unknown field"));
    }

    #[test]
    fn edge_settings_are_checked() {
        let cfg = |edge: &str| ConfigFile::parse(&format!("settings: {{edge: {edge}}}")).map_err(|e| format!("{e:#}"));
        let ok = cfg("{request_headers_timeout_seconds: 2, stream_idle_timeout_seconds: 30}").unwrap();
        assert_eq!(ok.settings.edge.request_headers_timeout_seconds, 2);
        assert_eq!(ok.settings.edge.request_receive_timeout_seconds, 60, "unset fields keep their defaults");
        assert!(cfg("{request_receive_timeout_seconds: 0}").unwrap_err().contains("request_receive_timeout_seconds must be from 1"));
        assert!(cfg("{max_request_headers_kb: 9000}").unwrap_err().contains("max_request_headers_kb"));
        assert!(cfg("{max_headers_count: 0}").unwrap_err().contains("max_headers_count"));
        assert!(cfg("{idle: 1}").unwrap_err().contains("unknown field"));
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tollgate.yaml");
        let cfg = ConfigFile::load(&path, &[8080, 9901]).unwrap();
        assert!(cfg.models.iter().any(|m| m.name == "tollgate-demo"));
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
        assert!(ConfigFile::parse("credentials: {x: {aws_access_key_id_env: A}}").is_err());
        assert!(ConfigFile::parse("credentials: {x: {}}").is_err());
        assert!(ConfigFile::parse("models: [{name: a, deployments: [{provider: bedrock, model: m}]}]").is_err());
        let ok = ConfigFile::parse(
            "credentials: {aws: {aws_access_key_id_env: A, aws_secret_access_key_env: B}}\n\
             models: [{name: a, deployments: [{provider: bedrock, region: us-east-1, model: m, credential: aws}]}]",
        )
        .unwrap();
        assert_eq!(
            ok.models[0].deployments[0].effective_base_url().as_deref(),
            Some("https://bedrock-runtime.us-east-1.amazonaws.com")
        );
    }

    #[test]
    fn sagemaker_tgi_needs_a_known_template() {
        let cfg = |dep: &str| {
            ConfigFile::parse(&format!(
                "credentials: {{aws: {{aws_access_key_id_env: A, aws_secret_access_key_env: B}}}}\n\
                 models: [{{name: a, deployments: [{dep}]}}]"
            ))
        };
        let ok = cfg("{provider: sagemaker, region: us-east-1, model: ep, credential: aws, payload: tgi, prompt_template: llama3}")
            .unwrap();
        let d = &ok.models[0].deployments[0];
        assert_eq!((d.payload, d.prompt_template), (Some(SagemakerPayload::Tgi), Some(PromptTemplate::Llama3)));
        assert!(cfg("{provider: sagemaker, region: us-east-1, model: ep, payload: openai}").is_ok());
        for (bad, needle) in [
            ("{provider: sagemaker, region: us-east-1, model: ep, payload: tgi}", "needs prompt_template"),
            ("{provider: sagemaker, region: us-east-1, model: ep, payload: tgi, prompt_template: llama9}", "unknown prompt_template"),
            ("{provider: sagemaker, region: us-east-1, model: ep, prompt_template: chatml}", "payload: tgi only"),
            ("{provider: openai, base_url: 'http://x', payload: tgi, prompt_template: plain}", "sagemaker deployments only"),
        ] {
            let e = format!("{:#}", cfg(bad).unwrap_err());
            assert!(e.contains(needle), "{bad}: {e}");
        }
        assert!(cfg("{provider: sagemaker, region: us-east-1, model: ep, payload: vllm}").is_err());
    }

    #[test]
    fn parses_aws_chain_credentials() {
        let cfg = ConfigFile::parse(
            r#"
credentials:
  aws-chain: {aws: {source: default_chain}}
  aws-profile: {aws: {source: profile, profile: prod}}
  aws-role:
    aws: {source: default_chain, region: us-west-2, assume_role_arn: "arn:aws:iam::123456789012:role/x", external_id: ext-1, session_name: tollgate-gw}
  static: {aws_access_key_id_env: A, aws_secret_access_key_env: B}
models:
  - name: m
    deployments: [{provider: bedrock, region: us-east-1, model: m, credential: aws-role}]
"#,
        )
        .unwrap();
        let chain = cfg.credentials["aws-chain"].aws.as_ref().unwrap();
        assert_eq!((chain.source, chain.profile.as_deref(), chain.assume_role_arn.as_deref()), (AwsSource::DefaultChain, None, None));
        let profile = cfg.credentials["aws-profile"].aws.as_ref().unwrap();
        assert_eq!((profile.source, profile.profile.as_deref()), (AwsSource::Profile, Some("prod")));
        let role = cfg.credentials["aws-role"].aws.as_ref().unwrap();
        assert_eq!(role.assume_role_arn.as_deref(), Some("arn:aws:iam::123456789012:role/x"));
        assert_eq!(role.external_id.as_deref(), Some("ext-1"));
        assert_eq!(role.effective_session_name(), "tollgate-gw");
        assert_eq!(role.region.as_deref(), Some("us-west-2"));
        assert_eq!(chain.effective_session_name(), "tollgate");
        // the static form is unchanged
        assert!(cfg.credentials["static"].aws.is_none());
        assert_eq!(cfg.credentials["static"].aws_access_key_id_env.as_deref(), Some("A"));
        // what the store keeps round-trips, and holds only references
        let stored = serde_json::to_string(&cfg.credentials["aws-role"]).unwrap();
        assert_eq!(serde_json::from_str::<CredentialRef>(&stored).unwrap(), cfg.credentials["aws-role"]);
    }

    #[test]
    fn rejects_bad_aws_chain_credentials() {
        let err = |yaml: &str| format!("{:#}", ConfigFile::parse(&format!("credentials: {{x: {yaml}}}")).unwrap_err());
        assert!(err("{aws: {source: profile}}").contains("needs `profile`"));
        assert!(err("{aws: {source: profile, profile: ' '}}").contains("empty"));
        assert!(err("{aws: {source: default_chain, profile: prod}}").contains("source: profile"));
        assert!(err("{aws: {source: instance}}").contains("unknown variant"));
        assert!(err("{aws: {}}").contains("source"));
        assert!(err("{aws: {source: default_chain, external_id: e}}").contains("assume_role_arn"));
        assert!(err("{aws: {source: default_chain, session_name: s1}}").contains("assume_role_arn"));
        assert!(err("{aws: {source: default_chain, assume_role_arn: my-role}}").contains("role ARN"));
        assert!(err("{aws: {source: default_chain, assume_role_arn: 'arn:aws:iam::1:role/r', session_name: 'has space'}}")
            .contains("session_name"));
        assert!(err("{aws: {source: default_chain, region: 'us east'}}").contains("region"));
        assert!(err("{aws: {source: default_chain}, api_key_env: K}").contains("stands alone"));
        assert!(err("{aws: {source: default_chain}, aws_access_key_id_env: A, aws_secret_access_key_env: B}")
            .contains("stands alone"));
        // no inline secrets under aws either
        assert!(err("{aws: {source: default_chain, aws_secret_access_key: s}}").contains("unknown field"));
    }
}
