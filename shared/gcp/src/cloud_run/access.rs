//! Who may open an app's service, in IAM.
//!
//! Cloud Run lets a request through only if its caller holds `roles/run.invoker` on the service
//! (or the service has `invokerIamDisabled`). A public app therefore gets `allUsers` as invoker,
//! or, where an organization policy forbids `allUsers` (domain-restricted sharing),
//! `invokerIamDisabled`: the operator picks once ([`PublicAccess`]). A private app gets
//! Identity-Aware Proxy on the service (`iapEnabled`): IAP signs the viewer in, checks
//! `roles/iap.httpsResourceAccessor` on the service's IAP resource, then calls the service as
//! IAP's service agent, which therefore needs `roles/run.invoker` on it.
//!
//! Runway owns these bindings and nothing else in the policies: the `run.invoker` members it
//! adds or removes (`allUsers`, `allAuthenticatedUsers`, IAP's agent) and the whole accessor
//! binding of a private app. Other roles, other members (an operator's) and conditional
//! bindings stay as they are. Each change is a read-modify-write with the policy's etag, retried
//! when someone else wrote in between.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::Code;
use google_cloud_iam_v1::model::{Binding, GetPolicyOptions, Policy};

use super::{CloudRunPlatform, SECRET_ACCESSOR, has_code};
use runway_core::domain::{Access, AppName};
use runway_core::ports::PlatformError;

pub const INVOKER: &str = "roles/run.invoker";
pub const IAP_ACCESSOR: &str = "roles/iap.httpsResourceAccessor";
const EVERYONE: [&str; 2] = ["allUsers", "allAuthenticatedUsers"];
/// Conditional bindings are only returned (and kept) in version 3 of a policy.
const POLICY_VERSION: i32 = 3;
/// Read-modify-write attempts before giving up on a policy others keep changing.
const ATTEMPTS: usize = 3;

/// How a public app is opened to everyone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PublicAccess {
    /// `allUsers` holds `roles/run.invoker` on the service.
    #[default]
    AllUsers,
    /// The service's `invokerIamDisabled`: for organizations whose policy forbids `allUsers`.
    InvokerIamDisabled,
}

impl std::str::FromStr for PublicAccess {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "all-users" => Ok(Self::AllUsers),
            "invoker-iam-disabled" => Ok(Self::InvokerIamDisabled),
            other => Err(format!(
                "{other:?} is not all-users or invoker-iam-disabled"
            )),
        }
    }
}

/// The two settings on the service itself that decide who gets through, as a deploy writes
/// them (`None`: left as the operator set it).
pub(super) struct ServiceSwitches {
    pub iap_enabled: bool,
    pub invoker_iam_disabled: Option<bool>,
}

pub(super) fn switches(access: &Access, public: PublicAccess) -> ServiceSwitches {
    match (access, public) {
        (Access::Public, PublicAccess::AllUsers) => ServiceSwitches {
            iap_enabled: false,
            invoker_iam_disabled: None,
        },
        (Access::Public, PublicAccess::InvokerIamDisabled) => ServiceSwitches {
            iap_enabled: false,
            invoker_iam_disabled: Some(true),
        },
        // With the invoker check off, IAP's would be the only one; keep both.
        (Access::Private { .. }, _) => ServiceSwitches {
            iap_enabled: true,
            invoker_iam_disabled: Some(false),
        },
    }
}

/// A policy Runway edits.
enum Target<'a> {
    /// The Cloud Run service, `projects/P/locations/L/services/S`.
    Service(&'a str),
    /// The service's IAP resource, `projects/N/iap_web/cloud_run-L/services/S`.
    Iap(String),
    /// An app's secret, `projects/P/secrets/S`.
    Secret(&'a str),
}

impl CloudRunPlatform {
    /// Grants (and revokes) what `access` asks for on the app's service in `region`.
    pub(super) async fn grant(
        &self,
        app: &AppName,
        region: &str,
        access: &Access,
    ) -> Result<(), PlatformError> {
        let service = self.service_name(region, app);
        let iap_agent = format!(
            "serviceAccount:service-{}@gcp-sa-iap.iam.gserviceaccount.com",
            self.config.project_number
        );
        match access {
            Access::Public => {
                if self.config.public_access == PublicAccess::AllUsers {
                    self.edit(&Target::Service(&service), INVOKER, |members| {
                        members.insert("allUsers".to_owned());
                    })
                    .await?;
                }
            }
            Access::Private { viewers } => {
                let resource = format!(
                    "projects/{}/iap_web/cloud_run-{region}/services/{}",
                    self.config.project_number,
                    app.as_str()
                );
                self.edit(&Target::Iap(resource), IAP_ACCESSOR, |members| {
                    *members = viewers.iter().map(|v| v.as_str().to_owned()).collect();
                })
                .await?;
                self.edit(&Target::Service(&service), INVOKER, |members| {
                    for everyone in EVERYONE {
                        members.remove(everyone);
                    }
                    members.insert(iap_agent.clone());
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Lets the app's `account` read `secret` (`projects/P/secrets/S`), and no one else that
    /// Runway would add: the binding is the account's own.
    pub(super) async fn let_read(&self, secret: &str, account: &str) -> Result<(), PlatformError> {
        let member = format!("serviceAccount:{account}");
        self.edit(&Target::Secret(secret), SECRET_ACCESSOR, |members| {
            members.insert(member.clone());
        })
        .await
    }

    /// Rewrites the members of `role`'s unconditional binding with `change`, retrying when the
    /// policy changed between read and write, and while IAM does not know a new account yet.
    async fn edit(
        &self,
        target: &Target<'_>,
        role: &str,
        change: impl Fn(&mut BTreeSet<String>),
    ) -> Result<(), PlatformError> {
        let mut attempt = 0;
        let since = Instant::now();
        let mut wait = Duration::from_millis(250);
        loop {
            attempt += 1;
            let policy = self.policy(target).await?;
            let Some(policy) = with_members(policy, role, &change) else {
                return Ok(());
            };
            match self.set_policy(target, policy).await {
                Ok(()) => return Ok(()),
                Err(error) if has_code(&error, Code::Aborted) && attempt < ATTEMPTS => continue,
                Err(error) if self.identities.settling(&error, since, &mut wait).await => continue,
                Err(error) => return Err(policy_error(&self.config, target, role, error)),
            }
        }
    }

    async fn policy(&self, target: &Target<'_>) -> Result<Policy, PlatformError> {
        let options = GetPolicyOptions::new().set_requested_policy_version(POLICY_VERSION);
        let read = match target {
            Target::Service(name) => {
                self.client
                    .get_iam_policy()
                    .set_resource(*name)
                    .set_options(options)
                    .send()
                    .await
            }
            Target::Iap(resource) => {
                self.iap
                    .get_iam_policy()
                    .set_resource(resource)
                    .set_options(options)
                    .send()
                    .await
            }
            Target::Secret(secret) => {
                self.identities
                    .secrets
                    .get_iam_policy()
                    .set_resource(*secret)
                    .set_options(options)
                    .send()
                    .await
            }
        };
        read.map_err(|error| policy_error(&self.config, target, "", error))
    }

    async fn set_policy(&self, target: &Target<'_>, policy: Policy) -> Result<(), GaxError> {
        match target {
            Target::Service(name) => {
                self.client
                    .set_iam_policy()
                    .set_resource(*name)
                    .set_policy(policy)
                    .send()
                    .await
            }
            Target::Iap(resource) => {
                self.iap
                    .set_iam_policy()
                    .set_resource(resource)
                    .set_policy(policy)
                    .send()
                    .await
            }
            Target::Secret(secret) => {
                self.identities
                    .secrets
                    .set_iam_policy()
                    .set_resource(*secret)
                    .set_policy(policy)
                    .send()
                    .await
            }
        }
        .map(drop)
    }
}

/// The policy with `role`'s unconditional binding changed, or `None` if nothing changes. The
/// etag stays, so a write over someone else's change is refused (ABORTED) and retried.
fn with_members(
    mut policy: Policy,
    role: &str,
    change: impl Fn(&mut BTreeSet<String>),
) -> Option<Policy> {
    let index = policy
        .bindings
        .iter()
        .position(|binding| binding.role == role && binding.condition.is_none());
    let before: BTreeSet<String> = index
        .map(|i| policy.bindings[i].members.iter().cloned().collect())
        .unwrap_or_default();
    let mut after = before.clone();
    change(&mut after);
    if after == before {
        return None;
    }
    match (index, after.is_empty()) {
        (Some(i), true) => {
            policy.bindings.remove(i);
        }
        (Some(i), false) => policy.bindings[i].members = after.into_iter().collect(),
        (None, _) => policy
            .bindings
            .push(Binding::new().set_role(role).set_members(after)),
    }
    policy.version = POLICY_VERSION;
    Some(policy)
}

fn policy_error(
    config: &super::CloudRunConfig,
    target: &Target<'_>,
    role: &str,
    error: GaxError,
) -> PlatformError {
    let (what, grant) = match target {
        Target::Service(name) => (
            format!("the invoker policy of {}", super::short_revision(name)),
            "run.services.getIamPolicy and run.services.setIamPolicy (the app deployer role)",
        ),
        Target::Iap(resource) => (format!("the IAP policy of {resource}"), "roles/iap.admin"),
        Target::Secret(secret) => (
            format!("who may read {secret}"),
            "secretmanager.secrets.getIamPolicy and setIamPolicy (the app secrets role)",
        ),
    };
    // Domain-restricted sharing refuses `allUsers` with FAILED_PRECONDITION ("One or more users
    // named in the policy do not belong to a permitted customer").
    if role == INVOKER && has_code(&error, Code::FailedPrecondition) {
        return PlatformError::Other(anyhow!(
            "the organization's policy does not allow public apps through allUsers ({}). \
             Set app_public_access = \"invoker-iam-disabled\" in Terraform \
             (RUNWAY_PUBLIC_ACCESS), or make the app private",
            super::status_message(&error)
        ));
    }
    if has_code(&error, Code::PermissionDenied) {
        return PlatformError::Other(anyhow!(
            "setting {what} was denied: {}. Runway's service account needs {grant} on project {}",
            super::status_message(&error),
            config.project,
        ));
    }
    if super::is_transient(&error) {
        return PlatformError::Unavailable(format!("setting {what}: {error}"));
    }
    PlatformError::Other(anyhow::Error::new(error).context(format!("setting {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(bindings: &[(&str, &[&str])]) -> Policy {
        Policy::new()
            .set_etag(bytes::Bytes::from_static(b"e1"))
            .set_bindings(bindings.iter().map(|(role, members)| {
                Binding::new()
                    .set_role(*role)
                    .set_members(members.iter().copied())
            }))
    }

    #[test]
    fn adds_to_the_binding_and_keeps_the_rest_and_the_etag() {
        let conditional: Binding = serde_json::from_value(serde_json::json!({
            "role": INVOKER,
            "members": ["user:temp@x.io"],
            "condition": {"expression": "request.time < timestamp('2030-01-01')"},
        }))
        .unwrap();
        let mut before = policy(&[
            (INVOKER, &["user:ops@x.io"]),
            ("roles/run.viewer", &["group:g@x.io"]),
        ]);
        before.bindings.push(conditional.clone());
        let after = with_members(before, INVOKER, |m| {
            m.insert("allUsers".into());
        })
        .unwrap();
        assert_eq!(after.etag, bytes::Bytes::from_static(b"e1"));
        assert_eq!(after.version, 3);
        assert_eq!(after.bindings[0].members, ["allUsers", "user:ops@x.io"]);
        assert_eq!(after.bindings[1].members, ["group:g@x.io"]);
        assert_eq!(after.bindings[2], conditional);
    }

    #[test]
    fn an_unchanged_binding_is_not_written_and_an_emptied_one_goes() {
        let before = policy(&[(INVOKER, &["allUsers"])]);
        assert!(
            with_members(before.clone(), INVOKER, |m| {
                m.insert("allUsers".into());
            })
            .is_none()
        );
        let after = with_members(before, INVOKER, |m| {
            m.remove("allUsers");
        })
        .unwrap();
        assert!(after.bindings.is_empty());
    }
}
