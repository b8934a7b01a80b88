//! From the stored rows to the servable model: a total function. What cannot be served (a row
//! that does not parse, a deployment the gateway cannot reach, a credential that does not
//! resolve now) is left out and reported as a [`Problem`]; the rest is served.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::egress::Egress;

use super::{CredentialRef, Deployment, DeploymentError, Model, ModelSpec, Secrets, ServedModel, Settings, TeamRecord, UserRecord};

/// One stored model row; `spec` is `Err` (with the parser's message) when the stored JSON does
/// not parse (e.g. written by a newer version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRow {
    pub name: String,
    pub created: i64,
    pub spec: Result<ModelSpec, String>,
}

/// Everything the store holds that the model is built from, row by row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredConfig {
    pub settings: Settings,
    /// Credential references by name; `Err` when the stored row does not parse.
    pub credentials: BTreeMap<String, Result<CredentialRef, String>>,
    /// In declaration order.
    pub models: Vec<ModelRow>,
    pub teams: BTreeMap<String, TeamRecord>,
    pub users: BTreeMap<String, UserRecord>,
    /// Access groups by name: their model patterns.
    pub groups: BTreeMap<String, Vec<String>>,
    /// When the rows were read.
    pub now: i64,
    /// The admin's price entries (before the shipped defaults).
    pub prices: Vec<crate::metering::prices::PriceEntry>,
    pub quotas: Vec<crate::store::QuotaSpec>,
}

/// Something configured that is not served, and why (safe to log and to show: no secret, no URL).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Problem {
    pub model: String,
    /// Index of the deployment in the model's stored list; `None`: the model as a whole.
    pub deployment: Option<usize>,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.deployment {
            Some(i) => write!(f, "deployment {i} of model {}: {}", self.model, self.reason),
            None => write!(f, "model {}: {}", self.model, self.reason),
        }
    }
}

/// The servable model and what was left out of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolved {
    pub model: Model,
    /// In declaration order (models, then deployments).
    pub problems: Vec<Problem>,
}

impl Resolved {
    /// The problems of model `name`.
    pub fn problems_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Problem> + 'a {
        self.problems.iter().filter(move |p| p.model == name)
    }
}

/// Parses the stored rows into the model the gateway serves now. A deployment is served when it
/// parses and its credential (if any) resolves with `secrets`; a model is served when at least
/// one of its deployments is.
///
/// `own_ports` are the gateway's own ports (control plane and Envoy listeners), refused as
/// provider destinations by the egress policy with the stored `settings.egress`.
pub fn resolve(rows: &StoredConfig, secrets: &dyn Secrets, own_ports: &[u16]) -> Resolved {
    let egress = Egress { settings: &rows.settings.egress, own_ports };
    let credentials: BTreeMap<String, CredentialRef> =
        rows.credentials.iter().filter_map(|(name, r)| Some((name.clone(), r.as_ref().ok()?.clone()))).collect();
    // Each credential is resolved once, so that every deployment sees the same answer.
    let available: BTreeMap<&str, bool> =
        credentials.iter().map(|(name, r)| (name.as_str(), r.resolve(name, secrets).is_some())).collect();
    let credential_problem = |name: &str| -> Option<DeploymentError> {
        match (rows.credentials.get(name), available.get(name)) {
            (Some(Err(reason)), _) => Some(DeploymentError::UnreadableCredential { name: name.to_owned(), reason: reason.clone() }),
            (None, _) => Some(DeploymentError::UnknownCredential(name.to_owned())),
            (_, Some(true)) => None,
            (_, _) => Some(DeploymentError::CredentialUnavailable(name.to_owned())),
        }
    };
    let mut problems = Vec::new();
    let prices = crate::metering::prices::Catalogue::new(&rows.prices, &crate::metering::prices::default_entries());
    let mut models = Vec::new();
    for row in &rows.models {
        let problem = |deployment, reason: String| Problem { model: row.name.clone(), deployment, reason };
        let spec = match &row.spec {
            Ok(spec) => spec,
            Err(e) => {
                problems.push(problem(None, format!("the stored model does not parse: {e}")));
                continue;
            }
        };
        let mut deployments: Vec<Deployment> = Vec::new();
        for (i, d) in spec.deployments.iter().enumerate() {
            let parsed = d.parse(&row.name, &egress).and_then(|dep| match dep.credential.as_deref().and_then(credential_problem) {
                Some(e) => Err(e),
                None => Ok(dep),
            });
            match parsed {
                Ok(mut dep) => {
                    dep.price = prices.rates(dep.upstream.provider_name(), &dep.model).map(|r| tollgate_contract::config::Price {
                        input: r.input.unsigned_abs(),
                        output: r.output.unsigned_abs(),
                        cache_read: r.cache_read.unsigned_abs(),
                        cache_write: r.cache_write.unsigned_abs(),
                    });
                    deployments.push(dep)
                }
                Err(e) => problems.push(problem(Some(i), e.to_string())),
            }
        }
        if deployments.is_empty() {
            problems.push(problem(None, "none of its deployments can be served".to_owned()));
            continue;
        }
        models.push(ServedModel { name: row.name.clone(), created: row.created, deployments });
    }
    Resolved { model: Model { settings: rows.settings.clone(), credentials, models, quotas: rows.quotas.clone(), quota_keys: Default::default(), envoys: 1 }, problems }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, DeploymentSpec, Provider, SagemakerPayload, Upstream};
    use tollgate_contract::config::PromptTemplate;

    fn dep(provider: Provider, url: Option<&str>, credential: Option<&str>) -> DeploymentSpec {
        DeploymentSpec {
            provider,
            base_url: url.map(str::to_owned),
            model: None,
            credential: credential.map(str::to_owned),
            weight: 0,
            priority: 0,
            region: None,
            api_version: None,
            payload: None,
            prompt_template: None,
            responses_api: false,
        }
    }

    fn row(name: &str, deployments: Vec<DeploymentSpec>) -> ModelRow {
        ModelRow { name: name.into(), created: 1, spec: Ok(ModelSpec { name: name.into(), deployments }) }
    }

    fn rows(models: Vec<ModelRow>) -> StoredConfig {
        let mut credentials = BTreeMap::new();
        credentials.insert("set".to_owned(), Ok(CredentialRef { api_key_env: Some("SET".into()), ..Default::default() }));
        credentials.insert("unset".to_owned(), Ok(CredentialRef { api_key_env: Some("UNSET".into()), ..Default::default() }));
        credentials.insert("garbled".to_owned(), Err("expected value at line 1 column 1".to_owned()));
        StoredConfig { credentials, models, ..Default::default() }
    }

    fn env(name: &str) -> Option<String> {
        (name == "SET").then(|| "sk-secret-value".to_owned())
    }

    #[test]
    fn a_bad_deployment_is_reported_and_the_rest_is_served() {
        let mut tgi = dep(Provider::Sagemaker, None, None);
        tgi.region = Some("us-east-1".into());
        tgi.model = Some("ep".into());
        tgi.payload = Some(SagemakerPayload::Tgi);
        let stored = rows(vec![
            row("m", vec![dep(Provider::Openai, Some("ftp://user:hunter2@x/v1"), None), dep(Provider::Openai, Some("http://ok/v1"), Some("set"))]),
            row("tgi", vec![tgi]),
            ModelRow { name: "garbled".into(), created: 1, spec: Err("unknown variant `vertex`".into()) },
            row("demo", vec![dep(Provider::Demo, None, None)]),
        ]);
        let r = resolve(&stored, &env, &[]);
        assert_eq!(r.model.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), vec!["m", "demo"]);
        let m = &r.model.models[0];
        assert_eq!(m.deployments.len(), 1);
        assert_eq!(m.deployments[0].weight, 1, "weight 0 is served as 1");
        assert!(matches!(&m.deployments[0].upstream, Upstream::Openai { url, .. } if url.host == "ok" && url.base_path == "/v1"));
        assert_eq!(r.model.models[1].deployments[0].model, crate::demo::DEMO_MODEL_ID);
        let shown: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "deployment 0 of model m: base_url must start with http:// or https://",
                "deployment 0 of model tgi: a sagemaker deployment with payload: tgi needs prompt_template (llama3, chatml, mistral, plain)",
                "model tgi: none of its deployments can be served",
                "model garbled: the stored model does not parse: unknown variant `vertex`",
            ]
        );
        assert!(!shown.concat().contains("hunter2"));
    }

    #[test]
    fn a_forbidden_destination_is_a_problem_of_its_deployment() {
        let mut stored = rows(vec![
            row("imds", vec![dep(Provider::Openai, Some("http://169.254.169.254/latest"), None)]),
            row("mixed", vec![
                dep(Provider::Openai, Some("http://0xA9FEA9FE/v1"), None),
                dep(Provider::Openai, Some("http://127.0.0.1:5000/v1"), None),
                dep(Provider::Openai, Some("http://127.0.0.1:8080/v1"), None),
                dep(Provider::Openai, Some("https://api.openai.com/v1"), None),
            ]),
        ]);
        let r = resolve(&stored, &env, &[8080]);
        assert_eq!(r.model.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), vec!["mixed"]);
        assert_eq!(r.model.models[0].deployments.len(), 1, "only the public deployment is served");
        let shown: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
        assert_eq!(shown[0], "deployment 0 of model imds: base_url points at a cloud metadata address; refused (list the host under settings.egress.allow_hosts to allow it)");
        assert_eq!(shown[1], "model imds: none of its deployments can be served");
        assert!(shown[2].starts_with("deployment 0 of model mixed: base_url points at a cloud metadata address"), "{shown:?}");
        assert!(shown[3].contains("deployment 1 of model mixed: base_url points at a loopback address"), "{shown:?}");
        assert!(shown[4].contains("deployment 2 of model mixed: base_url points at one of the gateway's own ports"), "{shown:?}");
        // the stored settings open loopback, except the gateway's own ports
        stored.settings.egress.allow_loopback = true;
        let r = resolve(&stored, &env, &[8080]);
        assert_eq!(r.model.models[0].deployments.len(), 2);
        assert!(r.problems.iter().any(|p| p.reason.contains("the gateway's own ports")), "{:?}", r.problems);
    }

    #[test]
    fn credentials_that_do_not_resolve_leave_their_deployments_out() {
        let stored = rows(vec![
            row("unset", vec![dep(Provider::Openai, Some("http://x/v1"), Some("unset"))]),
            row("mixed", vec![dep(Provider::Openai, Some("http://x/v1"), Some("unset")), dep(Provider::Openai, Some("http://y/v1"), None)]),
            row("others", vec![
                dep(Provider::Openai, Some("http://x/v1"), Some("nope")),
                dep(Provider::Openai, Some("http://x/v1"), Some("garbled")),
                dep(Provider::Anthropic, None, Some("set")),
            ]),
        ]);
        let r = resolve(&stored, &env, &[]);
        assert_eq!(r.model.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), vec!["mixed", "others"]);
        assert_eq!(r.model.models[0].deployments.len(), 1);
        let reasons: Vec<(&str, Option<usize>, &str)> =
            r.problems.iter().map(|p| (p.model.as_str(), p.deployment, p.reason.as_str())).collect();
        assert!(reasons[0].2.starts_with("credential `unset` is not available"), "{reasons:?}");
        assert_eq!(reasons[1].1, None);
        assert_eq!(reasons[3], ("others", Some(0), "credential `nope` is not declared"));
        assert!(reasons[4].2.contains("`garbled` cannot be read from the store"), "{reasons:?}");
        assert_eq!(r.problems_of("others").count(), 2);
        // the garbled reference is not in the model; the others are, as references only
        assert_eq!(r.model.credentials.keys().collect::<Vec<_>>(), vec!["set", "unset"]);
        assert!(!format!("{:?}{:?}", r.model, r.problems).contains("sk-secret-value"));
    }

    #[test]
    fn providers_get_exactly_their_fields() {
        let mut sm = dep(Provider::Sagemaker, None, None);
        sm.region = Some("eu-west-1".into());
        sm.model = Some("ep".into());
        sm.payload = Some(SagemakerPayload::Tgi);
        sm.prompt_template = Some(PromptTemplate::Chatml);
        let d = sm.parse("m", &Egress::DEFAULT).unwrap();
        assert_eq!(d.model, "ep");
        match d.upstream {
            Upstream::Sagemaker { url, region, container } => {
                assert_eq!((url.host.as_str(), region.as_str()), ("runtime.sagemaker.eu-west-1.amazonaws.com", "eu-west-1"));
                assert_eq!(container, Container::Tgi(PromptTemplate::Chatml));
            }
            other => panic!("unexpected {other:?}"),
        }
        let az = dep(Provider::Azure, Some("https://a.openai.azure.com/openai/deployments/d"), None).parse("m", &Egress::DEFAULT).unwrap();
        assert!(matches!(az.upstream, Upstream::Azure { api_version, .. } if api_version == crate::model::DEFAULT_AZURE_API_VERSION));
        assert_eq!(dep(Provider::Bedrock, None, None).parse("m", &Egress::DEFAULT), Err(DeploymentError::NoRegion));
        sm.prompt_template = Some(PromptTemplate::Unknown);
        assert_eq!(sm.parse("m", &Egress::DEFAULT), Err(DeploymentError::UnknownPromptTemplate));
        assert_eq!(dep(Provider::Openai, None, None).parse("m", &Egress::DEFAULT), Err(DeploymentError::NoBaseUrl));
    }
}
