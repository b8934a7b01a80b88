//! Models and deployments managed at runtime, validated when set (egress policy, names resolved).

use super::*;

/// A base URL whose host is a DNS name is resolved when it is set: a name that resolves to an
/// address the egress policy refuses (a metadata, link-local, private or loopback address not
/// allowed) is refused like the address itself. A name that does not resolve from here within
/// 2 s is accepted (the provider may be reachable only from Envoy's network). This does not stop
/// a name whose DNS changes later (rebinding): Envoy resolves it then, not the control plane.
async fn resolves_to_refused(egress: &crate::egress::Egress<'_>, base_url: Option<&str>) -> Option<crate::egress::EgressError> {
    let url = crate::upstream::UpstreamUrl::parse(base_url?).ok()?;
    if url.host.parse::<std::net::IpAddr>().is_ok() || url.host.contains(':') {
        return None;
    }
    let allowed_by_name = egress.settings.allow_hosts.iter().filter_map(|e| crate::egress::allow_entry(e)).any(|(h, port)| {
        h == crate::egress::normalize_host(&url.host) && port.is_none_or(|p| p == url.port)
    });
    if allowed_by_name {
        return None;
    }
    let lookup = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::net::lookup_host((url.host.as_str(), url.port)));
    let addrs: Vec<std::net::SocketAddr> = match lookup.await {
        Ok(Ok(addrs)) => addrs.collect(),
        _ => return None,
    };
    addrs.into_iter().find_map(|a| {
        let by_ip = crate::upstream::UpstreamUrl { host: a.ip().to_string(), ..url.clone() };
        egress.check(&by_ip).err()
    })
}

impl Service {
    /// Checks a model as the admin API sets it: a name, at least one deployment, each of which
    /// parses, passes the egress policy and names a credential that exists. (A credential that
    /// exists but does not resolve now, e.g. an AWS chain still starting, is accepted: the model
    /// is served when it does, and `GET /admin/v1/models` says why not meanwhile.)
    async fn checked_model(&self, spec: &model::ModelSpec) -> Result<(), ServiceError> {
        if spec.name.is_empty() || spec.name.len() > 200 || spec.name.chars().any(char::is_control) {
            return Err(ServiceError::Invalid("'name' must be 1 to 200 characters, no control characters.".into()));
        }
        if spec.deployments.is_empty() {
            return Err(ServiceError::Invalid("'deployments' must hold at least one deployment.".into()));
        }
        let rows = self.store.load().await?;
        let egress = crate::egress::Egress { settings: &rows.settings.egress, own_ports: self.publisher.own_ports() };
        for (i, d) in spec.deployments.iter().enumerate() {
            if let Err(e) = d.parse(&spec.name, &egress) {
                let code = matches!(e, model::DeploymentError::Egress(_)).then_some("forbidden_destination");
                return Err(ServiceError::InvalidCode(format!("deployments[{i}]: {e}"), code));
            }
            if let Some(e) = resolves_to_refused(&egress, d.effective_base_url().as_deref()).await {
                return Err(ServiceError::InvalidCode(format!("deployments[{i}]: base_url's host resolves to an address that {e}"), Some("forbidden_destination")));
            }
            if let Some(c) = &d.credential {
                if !rows.credentials.contains_key(c) {
                    return Err(ServiceError::Invalid(format!("deployments[{i}]: credential `{c}` does not exist; create it with POST /admin/v1/credentials")));
                }
            }
        }
        Ok(())
    }

    /// Creates (`replace: false`), replaces or (`spec: None`) deletes an API-managed model.
    pub async fn put_model(&self, actor: &Actor, name: &str, spec: Option<model::ModelSpec>, replace: bool) -> Result<(), ServiceError> {
        Self::check(actor, Verb::Write, Object::Platform)?;
        if let Some(s) = &spec {
            if s.name != name {
                return Err(ServiceError::Invalid("'name' in the body differs from the name in the path.".into()));
            }
            self.checked_model(s).await?;
        }
        let sources = self.store.model_sources().await?;
        match (sources.get(name).map(String::as_str), replace || spec.is_none()) {
            (Some("file"), _) => return Err(ServiceError::Conflict(format!("Model '{name}' comes from the config file; change it there."))),
            (Some(_), false) => return Err(ServiceError::Conflict(format!("A model named '{name}' exists; PUT it to replace it."))),
            (None, true) => return Err(ServiceError::NotFound(format!("No model named '{name}'."))),
            _ => {}
        }
        let before = self.store.model_rows().await?.into_iter().find(|m| m.name == name).and_then(|m| m.spec.ok());
        let action = match (&spec, replace) {
            (None, _) => "model.delete",
            (Some(_), true) => "model.update",
            (Some(_), false) => "model.create",
        };
        let now = unix_now();
        let audit = Audit {
            before: before.and_then(|b| serde_json::to_value(b).ok()),
            after: spec.as_ref().and_then(|s| serde_json::to_value(s).ok()),
            ..Self::audit(actor, action, name, None, now)
        };
        if !self.store.put_model(name, spec.as_ref(), !replace && spec.is_some(), now, &audit).await? {
            return Err(ServiceError::NotFound(format!("No model named '{name}'.")));
        }
        self.publisher.refresh().await?;
        Ok(())
    }
}

#[cfg(test)]
mod dns_tests {
    use super::resolves_to_refused;
    use crate::egress::{Egress, EgressError};
    use crate::model::EgressSettings;

    #[tokio::test]
    async fn a_name_is_judged_by_what_it_resolves_to() {
        let strict = Egress::DEFAULT;
        // `localhost` resolves to loopback (here, from /etc/hosts).
        assert_eq!(resolves_to_refused(&strict, Some("http://localhost:9/v1")).await, Some(EgressError::Loopback));
        let loopback_ok = EgressSettings { allow_loopback: true, ..Default::default() };
        assert_eq!(resolves_to_refused(&Egress { settings: &loopback_ok, own_ports: &[] }, Some("http://localhost:9/v1")).await, None);
        let by_name = EgressSettings { allow_hosts: vec!["localhost:9".into()], ..Default::default() };
        assert_eq!(resolves_to_refused(&Egress { settings: &by_name, own_ports: &[] }, Some("http://localhost:9/v1")).await, None);
        // The gateway's own port, reached by a name.
        assert_eq!(resolves_to_refused(&Egress { settings: &loopback_ok, own_ports: &[9] }, Some("http://localhost:9/v1")).await, Some(EgressError::OwnPort));
        // Addresses are judged as written elsewhere; a name that does not resolve is let through.
        assert_eq!(resolves_to_refused(&strict, Some("http://127.0.0.1/v1")).await, None);
        assert_eq!(resolves_to_refused(&strict, Some("http://no-such-host.invalid/v1")).await, None);
    }
}
