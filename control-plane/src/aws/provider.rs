//! Builds the `aws-config` credentials provider for an [`AwsChainSpec`]. No cache: every
//! `provide_credentials` call asks the chain afresh; the refresher decides when.

use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::SharedCredentialsProvider;

use crate::model::{AwsChainSpec, AwsSource};

/// Why no provider could be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("aws-config produced no credentials provider")]
    NoProvider,
}

/// The provider for `spec`: the default chain or one profile, with `assume_role_arn` on top.
/// Endpoint overrides are aws-config's own (`AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`, a
/// profile's `endpoint_url` or `services` section).
pub async fn build(spec: &AwsChainSpec) -> Result<SharedCredentialsProvider, BuildError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &spec.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let (AwsSource::Profile, Some(profile)) = (spec.source, &spec.profile) {
        loader = loader.profile_name(profile);
    }
    let sdk_config = loader.load().await;
    let base = match (spec.source, &spec.profile) {
        (AwsSource::Profile, Some(profile)) => {
            // Only this profile: not the environment's keys that the default chain tries first.
            let conf = ProviderConfig::default().with_region(sdk_config.region().cloned());
            SharedCredentialsProvider::new(ProfileFileCredentialsProvider::builder().configure(&conf).profile_name(profile).build())
        }
        _ => sdk_config.credentials_provider().ok_or(BuildError::NoProvider)?,
    };
    let Some(role_arn) = &spec.assume_role_arn else { return Ok(base) };
    let mut role = AssumeRoleProvider::builder(role_arn.clone()).configure(&sdk_config).session_name(spec.effective_session_name());
    if let Some(external_id) = &spec.external_id {
        role = role.external_id(external_id.clone());
    }
    Ok(SharedCredentialsProvider::new(role.build_from_provider(base).await))
}
