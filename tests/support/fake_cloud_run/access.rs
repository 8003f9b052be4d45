//! Who gets through to a service, as Cloud Run and IAP decide it, and the IAM policies that
//! say so.
//!
//! The policy surface follows the IAM REST reference: `GET /v2/{service}:getIamPolicy`
//! (query `options.requestedPolicyVersion`) and `POST /v2/{service}:setIamPolicy` on Cloud Run
//! Admin v2; `POST /v1/{resource}:getIamPolicy` and `:setIamPolicy` on the IAP Admin API, the
//! resource being `projects/NUMBER/iap_web/cloud_run-REGION/services/SERVICE`. A policy is
//! `{version, bindings: [{role, members, condition?}], etag}`; a write with a stale etag is
//! refused with ABORTED, as IAM does, and members must be principals IAM knows. With
//! `forbid_public_members` the fake behaves as an organization with domain-restricted sharing:
//! `allUsers` and `allAuthenticatedUsers` are refused with FAILED_PRECONDITION.
//!
//! Invocation, as the Cloud Run docs describe it:
//! - a service with `iapEnabled`: IAP first. No credentials → a redirect to Google's sign-in;
//!   a bad token → 401; a signed-in viewer without `roles/iap.httpsResourceAccessor` on the
//!   service's IAP resource → 403. IAP then calls the service as its service agent, which
//!   needs `roles/run.invoker` like any caller.
//! - otherwise Cloud Run's IAM check: `invokerIamDisabled`, or `roles/run.invoker` for
//!   `allUsers`, or for the caller (`allAuthenticatedUsers`, `user:`, `serviceAccount:`,
//!   `group:` by membership, `domain:`). Anything else is 403.
//!
//! A viewer's credential is `Authorization: Bearer ID_TOKEN` whose audience is the service's
//! URL, checked by the verifier the test gives ([`FakeCloudRun::trust`]); with none, no token
//! is valid.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::*;

/// The project number the fake's project has; IAP resources are named by it.
pub const PROJECT_NUMBER: &str = "123456789012";
pub const INVOKER: &str = "roles/run.invoker";
pub const IAP_ACCESSOR: &str = "roles/iap.httpsResourceAccessor";
const EVERYONE: [&str; 2] = ["allUsers", "allAuthenticatedUsers"];

/// Checks an ID token for an audience; the signed-in email, if valid.
pub type Verifier = Arc<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;

/// The IAP resource of a service `projects/P/locations/L/services/S`.
fn iap_resource(service: &str) -> String {
    let parts: Vec<&str> = service.split('/').collect();
    format!(
        "projects/{PROJECT_NUMBER}/iap_web/cloud_run-{}/services/{}",
        parts[3], parts[5]
    )
}

pub fn iap_agent() -> String {
    format!("serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-iap.iam.gserviceaccount.com")
}

/// IAM as the fake keeps it: a policy per resource, groups, and the organization's rules.
#[derive(Default)]
pub(super) struct Iam {
    /// Resource name → policy JSON (`version`, `bindings`), etag apart.
    policies: HashMap<String, (Value, u64)>,
    pub(super) forbid_public: bool,
    pub(super) groups: HashMap<String, BTreeSet<String>>,
    pub(super) verifier: Option<Verifier>,
    pub(super) accounts: identity::Accounts,
}

impl Iam {
    fn policy(&self, resource: &str) -> Value {
        let (policy, version) = self
            .policies
            .get(resource)
            .cloned()
            .unwrap_or_else(|| (json!({ "version": 1 }), 0));
        let mut policy = policy;
        policy["etag"] = json!(etag(version));
        policy
    }

    /// A deleted service's policies go with it (its IAP resource's too).
    pub(super) fn forget(&mut self, service: &str) {
        self.policies.remove(service);
        self.policies.remove(&iap_resource(service));
    }

    /// A deleted secret's policy goes with it.
    pub(super) fn forget_secret(&mut self, secret: &str) {
        self.policies.remove(secret);
    }

    /// Replaces `member` by `replacement` in every policy (a deleted account's members).
    pub(super) fn rename_member(&mut self, member: &str, replacement: &Value) {
        for (policy, _) in self.policies.values_mut() {
            for binding in policy["bindings"].as_array_mut().into_iter().flatten() {
                for each in binding["members"].as_array_mut().into_iter().flatten() {
                    if each == member {
                        *each = replacement.clone();
                    }
                }
            }
        }
    }

    /// Members of `role`'s unconditional binding on `resource`.
    pub(super) fn members(&self, resource: &str, role: &str) -> BTreeSet<String> {
        let Some((policy, _)) = self.policies.get(resource) else {
            return BTreeSet::new();
        };
        policy["bindings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|binding| binding["role"] == role && binding.get("condition").is_none())
            .flat_map(|binding| binding["members"].as_array().cloned().unwrap_or_default())
            .filter_map(|member| member.as_str().map(str::to_owned))
            .collect()
    }

    /// Whether `email` is one of `members`, directly, through a group or by its domain.
    fn includes(&self, members: &BTreeSet<String>, email: &str) -> bool {
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        members.iter().any(|member| match member.split_once(':') {
            Some(("user" | "serviceAccount", who)) => who.eq_ignore_ascii_case(email),
            Some(("domain", name)) => name.eq_ignore_ascii_case(domain),
            Some(("group", _)) => self
                .groups
                .get(member)
                .is_some_and(|people| people.contains(&email.to_ascii_lowercase())),
            _ => member == "allAuthenticatedUsers",
        })
    }
}

fn etag(version: u64) -> String {
    STANDARD.encode(format!("fake-{version}"))
}

/// A policy resource the fake serves, and the roles that may be granted on it.
pub(super) enum PolicyResource {
    /// A Cloud Run service, by its full name.
    Service(String),
    /// A service's IAP resource, by its IAP name.
    Iap(String),
    /// A Secret Manager secret, `projects/P/secrets/S` (its existence checked in drongo).
    Secret(String),
}

impl PolicyResource {
    /// `/v2/{service}:verb` or `/v1/projects/N/iap_web/cloud_run-R/services/S:verb`.
    pub(super) fn parse(path: &str) -> Option<(Self, &str)> {
        let (resource, verb) = path.rsplit_once(':')?;
        if !matches!(verb, "getIamPolicy" | "setIamPolicy") {
            return None;
        }
        if let Some(name) = resource.strip_prefix("/v2/") {
            let parts: Vec<&str> = name.split('/').collect();
            return matches!(parts.as_slice(), ["projects", _, "locations", _, "services", s] if !s.is_empty())
                .then(|| (Self::Service(name.to_owned()), verb));
        }
        if let Some(secret) = identity::secret_of_policy_path(path) {
            return Some((Self::Secret(secret), verb));
        }
        let name = resource.strip_prefix("/v1/")?;
        let parts: Vec<&str> = name.split('/').collect();
        matches!(parts.as_slice(), ["projects", _, "iap_web", kind, "services", s] if kind.starts_with("cloud_run-") && !s.is_empty())
            .then(|| (Self::Iap(name.to_owned()), verb))
    }

    /// The Cloud Run service the policy belongs to, which must exist.
    fn service(&self, state: &State) -> Result<String, GoogleError> {
        match self {
            Self::Secret(name) => Ok(name.clone()),
            Self::Service(name) => state
                .services
                .contains_key(name)
                .then(|| name.clone())
                .ok_or_else(|| GoogleError::not_found(name)),
            Self::Iap(name) => {
                let parts: Vec<&str> = name.split('/').collect();
                let (number, region, id) = (parts[1], &parts[3]["cloud_run-".len()..], parts[5]);
                if number != PROJECT_NUMBER {
                    return Err(GoogleError::new(
                        StatusCode::FORBIDDEN,
                        "PERMISSION_DENIED",
                        format!(
                            "IAP resources are named by project number; {number} is not this project's"
                        ),
                    ));
                }
                let suffix = format!("/locations/{region}/services/{id}");
                state
                    .services
                    .keys()
                    .find(|service| service.ends_with(&suffix))
                    .cloned()
                    .ok_or_else(|| GoogleError::not_found(name))
            }
        }
    }

    fn key(&self) -> &str {
        match self {
            Self::Service(name) | Self::Iap(name) | Self::Secret(name) => name,
        }
    }

    fn grantable(&self, role: &str) -> bool {
        match self {
            Self::Service(_) => role.starts_with("roles/run."),
            Self::Iap(_) => role.starts_with("roles/iap."),
            Self::Secret(_) => role.starts_with("roles/secretmanager."),
        }
    }
}

pub(super) fn policy_request(
    state: &mut State,
    method: &Method,
    resource: PolicyResource,
    verb: &str,
    request: &SeenRequest,
) -> Result<(StatusCode, Value), GoogleError> {
    resource.service(state)?;
    // Cloud Run and Secret Manager read a policy with GET, IAP with POST.
    let cloud_run = !matches!(resource, PolicyResource::Iap(_));
    match (method, verb) {
        (&Method::GET, "getIamPolicy") if cloud_run => {
            only_params(request, &["options.requestedPolicyVersion", "$alt"])?;
            Ok((StatusCode::OK, state.iam.policy(resource.key())))
        }
        (&Method::POST, "getIamPolicy") if !cloud_run => {
            only_params(request, &["$alt"])?;
            Ok((StatusCode::OK, state.iam.policy(resource.key())))
        }
        (&Method::POST, "setIamPolicy") => {
            only_params(request, &["$alt"])?;
            set_policy(state, &resource, request.body.as_ref())
        }
        _ => Err(GoogleError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNIMPLEMENTED",
            format!("{method} {} is not served", request.path),
        )),
    }
}

fn set_policy(
    state: &mut State,
    resource: &PolicyResource,
    body: Option<&Value>,
) -> Result<(StatusCode, Value), GoogleError> {
    let policy = body
        .and_then(|body| body.get("policy"))
        .filter(|policy| policy.is_object())
        .ok_or_else(|| GoogleError::invalid("policy is required"))?;
    let key = resource.key().to_owned();
    let current = state.iam.policies.get(&key).map_or(0, |(_, v)| *v);
    if let Some(sent) = policy.get("etag").and_then(Value::as_str)
        && sent != etag(current)
    {
        return Err(GoogleError::new(
            StatusCode::CONFLICT,
            "ABORTED",
            "There were concurrent policy changes. Please retry the whole read-modify-write \
             with exponential backoff.",
        ));
    }
    let mut bindings = Vec::new();
    for binding in policy["bindings"].as_array().into_iter().flatten() {
        let role = binding["role"].as_str().unwrap_or_default();
        if !resource.grantable(role) {
            return Err(GoogleError::invalid(format!(
                "Role {role} is not supported for this resource."
            )));
        }
        let members = binding["members"].as_array().cloned().unwrap_or_default();
        for member in &members {
            let member = member.as_str().unwrap_or_default();
            if !is_principal(member) {
                return Err(GoogleError::invalid(format!(
                    "Invalid member: {member:?} is not a valid principal."
                )));
            }
            if let Some(refused) = state.iam.accounts.refuses(member) {
                return Err(refused);
            }
            if state.iam.forbid_public && EVERYONE.contains(&member) {
                return Err(GoogleError::new(
                    StatusCode::BAD_REQUEST,
                    "FAILED_PRECONDITION",
                    "One or more users named in the policy do not belong to a permitted \
                     customer, perhaps due to an organization policy.",
                ));
            }
        }
        if !members.is_empty() {
            bindings.push(binding.clone());
        }
    }
    let stored = json!({
        "version": policy.get("version").cloned().unwrap_or(json!(1)),
        "bindings": bindings,
    });
    state
        .iam
        .policies
        .insert(key.clone(), (stored, current + 1));
    Ok((StatusCode::OK, state.iam.policy(&key)))
}

fn is_principal(member: &str) -> bool {
    if EVERYONE.contains(&member) {
        return true;
    }
    // What IAM shows (and takes back) for an account that was deleted.
    if let Some(deleted) = member.strip_prefix("deleted:serviceAccount:") {
        return deleted.contains("?uid=");
    }
    match member.split_once(':') {
        Some(("user" | "group" | "serviceAccount", email)) => email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.')),
        Some(("domain", domain)) => domain.contains('.'),
        _ => false,
    }
}

/// Why a request to a service's URL is refused, as Cloud Run or IAP answers it.
pub(super) struct Refused {
    pub status: StatusCode,
    pub message: &'static str,
}

/// Lets a request to `name`'s URL through, or says why not.
pub(super) fn admit(
    state: &State,
    name: &str,
    service: &FakeService,
    authorization: Option<&str>,
) -> Result<(), Refused> {
    let flag = |field: &str| service.spec.get(field).and_then(Value::as_bool) == Some(true);
    let caller = authorization
        .and_then(|header| header.strip_prefix("Bearer "))
        .map(|token| {
            state
                .iam
                .verifier
                .as_ref()
                .and_then(|verify| verify(token, &service.uri))
        });
    let invokers = state.iam.members(name, INVOKER);
    let invoker_check = |who: Option<&str>| {
        flag("invokerIamDisabled")
            || invokers.contains("allUsers")
            || who.is_some_and(|email| state.iam.includes(&invokers, email))
    };
    if flag("iapEnabled") {
        let email = match caller {
            None => {
                return Err(Refused {
                    status: StatusCode::FOUND,
                    message: "IAP: sign in with Google",
                });
            }
            Some(None) => {
                return Err(Refused {
                    status: StatusCode::UNAUTHORIZED,
                    message: "Invalid IAP credentials: the token is not valid for this service",
                });
            }
            Some(Some(email)) => email,
        };
        let accessors = state.iam.members(&iap_resource(name), IAP_ACCESSOR);
        if !state.iam.includes(&accessors, &email) {
            return Err(Refused {
                status: StatusCode::FORBIDDEN,
                message: "You don't have access. Please contact your administrator.",
            });
        }
        let agent = iap_agent();
        let agent_email = agent.trim_start_matches("serviceAccount:");
        return if invoker_check(Some(agent_email)) {
            Ok(())
        } else {
            Err(forbidden())
        };
    }
    let who = caller.flatten();
    if invoker_check(who.as_deref()) {
        Ok(())
    } else {
        Err(forbidden())
    }
}

fn forbidden() -> Refused {
    Refused {
        status: StatusCode::FORBIDDEN,
        message: "Error: Forbidden. Your client does not have permission to get URL from this server.",
    }
}
