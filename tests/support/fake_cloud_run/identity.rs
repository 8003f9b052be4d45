//! The identities revisions run as, and what they may read: IAM's service accounts and the IAM
//! policies of Secret Manager secrets, as far as a Cloud Run deploy depends on them.
//!
//! Service accounts follow the IAM v1 REST reference (`projects.serviceAccounts`):
//! - `POST /v1/projects/P/serviceAccounts` with `{accountId, serviceAccount}`: the account id
//!   must match `^[a-z](?:[-a-z0-9]{4,28}[a-z0-9])$`; an id already taken is 409
//!   ALREADY_EXISTS; past the project's quota (100 by default) it is 429 RESOURCE_EXHAUSTED
//!   "Maximum number of service accounts on project reached.", with a day's `RetryInfo`, as IAM
//!   answers it;
//! - `GET` and `DELETE /v1/projects/P/serviceAccounts/EMAIL` (404 for one that does not exist);
//!   deleting an account turns its members in every policy into
//!   `deleted:serviceAccount:EMAIL?uid=ID`, so an account re-created under the same e-mail is
//!   not granted what the old one was.
//!
//! IAM is eventually consistent: a policy that names a new account may be refused with
//! "Service account EMAIL does not exist." for a while after the account was created
//! ([`FakeCloudRun::settle_after`]).
//!
//! Secret policies are `GET /v1/projects/P/secrets/S:getIamPolicy` and `POST ...:setIamPolicy`
//! (drongo, the Secret Manager emulator, has no IAM), for secrets that exist in drongo. Every
//! other Secret Manager call is passed on to drongo unchanged ([`FakeCloudRun::front`]), so one
//! endpoint serves Runway's whole Secret Manager client.
//!
//! Cloud Run checks both at deploy time: a template's `serviceAccount` must exist, and a
//! revision that mounts a secret its account may not read (`roles/secretmanager.secretAccessor`
//! on the secret) never gets ready; the operation fails with INTERNAL and "Permission denied on
//! secret", as Cloud Run reports it.

use std::collections::BTreeSet;

use super::*;

pub const SECRET_ACCESSOR: &str = "roles/secretmanager.secretAccessor";
/// Google's default quota of service accounts per project.
const DEFAULT_ACCOUNT_QUOTA: usize = 100;

/// The project's service accounts.
pub(super) struct Accounts {
    /// By e-mail: the `ServiceAccount` resource.
    pub(super) by_email: BTreeMap<String, Value>,
    /// How many accounts the project may have.
    pub(super) quota: usize,
    /// How many policy writes naming a new account are refused before IAM knows it.
    pub(super) settle_after: u32,
    /// Per new account, how many refusals are left.
    pub(super) unsettled: HashMap<String, u32>,
    /// Projects the fake holds accounts of: members from them must exist.
    pub(super) projects: BTreeSet<String>,
    next_id: u128,
}

impl Default for Accounts {
    fn default() -> Self {
        Self {
            by_email: BTreeMap::new(),
            quota: DEFAULT_ACCOUNT_QUOTA,
            settle_after: 1,
            unsettled: HashMap::new(),
            projects: BTreeSet::new(),
            next_id: 104_123_456_789_012_345_000,
        }
    }
}

impl Accounts {
    /// Whether `email` is a user-managed account of a project whose accounts the fake holds
    /// (not Google's service agents, nor another project's accounts).
    pub(super) fn holds_project_of(&self, email: &str) -> bool {
        email
            .strip_suffix(".iam.gserviceaccount.com")
            .and_then(|rest| rest.rsplit_once('@'))
            .is_some_and(|(_, project)| self.projects.contains(project))
    }

    /// Why a policy may not name `member` now, if it may not.
    pub(super) fn refuses(&mut self, member: &str) -> Option<GoogleError> {
        let email = member.strip_prefix("serviceAccount:")?;
        if !self.holds_project_of(email) {
            return None;
        }
        let unknown = || GoogleError::invalid(format!("Service account {email} does not exist."));
        if !self.by_email.contains_key(email) {
            return Some(unknown());
        }
        let left = self.unsettled.get_mut(email)?;
        if *left == 0 {
            return None;
        }
        *left -= 1;
        Some(unknown())
    }
}

/// Whether `path` is the fake's IAM or a secret's: `/v1/projects/P/serviceAccounts...`.
pub(super) fn is_accounts_path(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(
        parts.as_slice(),
        ["v1", "projects", _, "serviceAccounts", ..]
    )
}

/// A Secret Manager path other than an IAM policy one: drongo's to answer.
pub(super) fn is_secret_manager_path(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(parts.as_slice(), ["v1", "projects", _, "secrets", ..])
        && !path.ends_with(":getIamPolicy")
        && !path.ends_with(":setIamPolicy")
}

/// `projects/P/secrets/S` of a policy path `/v1/projects/P/secrets/S:verb`.
pub(super) fn secret_of_policy_path(path: &str) -> Option<String> {
    let (resource, _) = path.rsplit_once(':')?;
    let name = resource.strip_prefix("/v1/")?;
    let parts: Vec<&str> = name.split('/').collect();
    matches!(parts.as_slice(), ["projects", p, "secrets", s] if !p.is_empty() && !s.is_empty())
        .then(|| name.to_owned())
}

pub(super) fn account_request(
    state: &mut State,
    method: &Method,
    request: &SeenRequest,
) -> Result<(StatusCode, Value), GoogleError> {
    only_params(request, &["$alt"])?;
    let parts: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::POST, ["v1", "projects", project, "serviceAccounts"]) => {
            create(state, project, request.body.as_ref())
        }
        (&Method::GET, ["v1", "projects", project, "serviceAccounts", email]) => {
            let account = find(state, project, email)?;
            Ok((StatusCode::OK, account))
        }
        (&Method::DELETE, ["v1", "projects", project, "serviceAccounts", email]) => {
            let account = find(state, project, email)?;
            delete(state, &account);
            Ok((StatusCode::OK, json!({})))
        }
        _ => Err(GoogleError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNIMPLEMENTED",
            format!("{method} {} is not served by the fake", request.path),
        )),
    }
}

fn create(
    state: &mut State,
    project: &str,
    body: Option<&Value>,
) -> Result<(StatusCode, Value), GoogleError> {
    let body = body.ok_or_else(|| GoogleError::invalid("a CreateServiceAccountRequest"))?;
    let id = body["accountId"].as_str().unwrap_or_default();
    let valid = id.len() >= 6
        && id.len() <= 30
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id
            .chars()
            .all(|c| c == '-' || c.is_ascii_lowercase() || c.is_ascii_digit());
    if !valid {
        return Err(GoogleError::invalid(format!(
            "Invalid account ID {id:?}: it must be 6 to 30 lowercase letters, digits or \
             hyphens, start with a letter and not end with a hyphen."
        )));
    }
    let email = format!("{id}@{project}.iam.gserviceaccount.com");
    let accounts = &mut state.iam.accounts;
    if accounts.by_email.contains_key(&email) {
        return Err(GoogleError::new(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            format!("Service account {id} already exists within project projects/{project}."),
        ));
    }
    if accounts.by_email.len() >= accounts.quota {
        return Err(GoogleError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            "Maximum number of service accounts on project reached.",
        )
        .with_details(json!([{
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": "86401s",
        }])));
    }
    accounts.next_id += 1;
    let unique = accounts.next_id.to_string();
    let given = &body["serviceAccount"];
    let account = json!({
        "name": format!("projects/{project}/serviceAccounts/{email}"),
        "projectId": project,
        "uniqueId": unique,
        "email": email,
        "displayName": given["displayName"].as_str().unwrap_or_default(),
        "description": given["description"].as_str().unwrap_or_default(),
        "etag": "MDEwMjE5MjA=",
        "oauth2ClientId": unique,
    });
    accounts.projects.insert(project.to_owned());
    accounts.by_email.insert(email.clone(), account.clone());
    let settle = accounts.settle_after;
    accounts.unsettled.insert(email, settle);
    Ok((StatusCode::OK, account))
}

fn find(state: &State, project: &str, email: &str) -> Result<Value, GoogleError> {
    state
        .iam
        .accounts
        .by_email
        .get(email)
        .filter(|account| project == "-" || account["projectId"] == project)
        .cloned()
        .ok_or_else(|| {
            GoogleError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("Unknown service account: projects/{project}/serviceAccounts/{email}"),
            )
        })
}

fn delete(state: &mut State, account: &Value) {
    let email = account["email"].as_str().unwrap_or_default().to_owned();
    let unique = account["uniqueId"].as_str().unwrap_or_default();
    let member = format!("serviceAccount:{email}");
    let deleted = json!(format!("deleted:serviceAccount:{email}?uid={unique}"));
    state.iam.accounts.by_email.remove(&email);
    state.iam.accounts.unsettled.remove(&email);
    state.iam.rename_member(&member, &deleted);
}

/// Why a revision from `template` of a service in `project` cannot start, if it cannot: an
/// account that does not exist refuses the write; a secret its account may not read fails the
/// revision (gRPC code and message).
pub(super) fn revision_denied(
    iam: &Iam,
    project: &str,
    template: &Value,
) -> Result<Option<(i64, String)>, GoogleError> {
    let account = template["serviceAccount"].as_str().unwrap_or_default();
    let known = |email: &str| iam.accounts.by_email.contains_key(email);
    let email = if account.is_empty() {
        format!(
            "{}-compute@developer.gserviceaccount.com",
            access::PROJECT_NUMBER
        )
    } else if known(account) || !iam.accounts.holds_project_of(account) {
        account.to_owned()
    } else {
        return Err(GoogleError::invalid(format!(
            "spec.template.spec.serviceAccountName: Service account {account} does not exist."
        )));
    };
    for (index, volume) in template["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(secret) = volume["secret"]["secret"].as_str() else {
            continue;
        };
        let secret = match secret.starts_with("projects/") {
            true => secret.to_owned(),
            false => format!("projects/{project}/secrets/{secret}"),
        };
        let readers = iam.members(&secret, SECRET_ACCESSOR);
        if !readers.contains(&format!("serviceAccount:{email}")) {
            let version = volume["secret"]["items"][0]["version"]
                .as_str()
                .unwrap_or("latest");
            return Ok(Some((
                INTERNAL,
                format!(
                    "spec.template.spec.volumes[{index}].secret.secretName: Permission denied \
                     on secret: {secret}/versions/{version} for Revision service account \
                     {email}. The service account used must be granted the 'Secret Manager \
                     Secret Accessor' role (roles/secretmanager.secretAccessor) at the secret, \
                     project or higher level."
                ),
            )));
        }
    }
    Ok(None)
}
