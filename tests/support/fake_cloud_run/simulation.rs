//! What the fake Cloud Run simulates: writing a service's fields, making revisions, routing
//! traffic (and refusing what Cloud Run refuses), finishing operations, and the app answering
//! at the service's URL.

use super::*;

pub(super) fn new_service(base_url: &str, name: &str) -> FakeService {
    let now = now();
    let path: Vec<&str> = name.split('/').collect();
    let (project, location, id) = (path[1], path[3], path[5]);
    FakeService {
        spec: Map::new(),
        uid: Uuid::new_v4().to_string(),
        uri: format!("{base_url}/serve/{project}/{location}/{id}"),
        generation: 0,
        observed_generation: 0,
        create_time: now.clone(),
        update_time: now,
        revisions: Vec::new(),
        serving: Vec::new(),
        terminal_condition: condition("CONDITION_PENDING", ""),
        reconciling: false,
    }
}

/// Writes the masked (or all) fields, makes a revision if the template changed, and routes
/// traffic. Returns what the operation will end with: the service, or a gRPC error. A request
/// the API would reject changes nothing.
pub(super) fn apply(
    service: &mut FakeService,
    name: &str,
    body: Map<String, Value>,
    mask: Option<&[String]>,
    broken: &HashMap<String, (i64, String)>,
    iam: &Iam,
) -> Result<Result<Value, Failure>, GoogleError> {
    let mut spec = service.spec.clone();
    write_fields(&mut spec, body, mask)?;
    let template = spec.get("template").cloned().unwrap_or(Value::Null);
    let changed = service.revisions.is_empty() || service.spec.get("template") != Some(&template);
    let revision = match changed {
        true => Some(new_revision(service, name, &template, broken, iam)?),
        false => None,
    };
    service.spec = spec;
    service.revisions.extend(revision);
    service.generation += 1;
    service.update_time = now();
    service.reconciling = true;
    Ok(reconcile(service, name))
}

/// A PATCH without `updateMask` replaces every writable field; with one, only those named.
pub(super) fn write_fields(
    spec: &mut Map<String, Value>,
    mut body: Map<String, Value>,
    mask: Option<&[String]>,
) -> Result<(), GoogleError> {
    body.remove("name");
    match mask {
        None => *spec = body,
        Some(fields) => {
            for field in fields {
                if field.contains('.') {
                    return Err(GoogleError::invalid(format!(
                        "the fake supports only top-level update mask fields, not {field}"
                    )));
                }
                match body.remove(field) {
                    Some(value) => spec.insert(field.clone(), value),
                    None => spec.remove(field),
                };
            }
        }
    }
    Ok(())
}

pub(super) fn new_revision(
    service: &FakeService,
    name: &str,
    template: &Value,
    broken: &HashMap<String, (i64, String)>,
    iam: &Iam,
) -> Result<FakeRevision, GoogleError> {
    let containers = template["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let [container] = containers else {
        return Err(GoogleError::invalid(
            "template.containers: a service needs exactly one container (the fake serves one)",
        ));
    };
    let image = container["image"].as_str().unwrap_or_default().to_owned();
    if image.is_empty() {
        return Err(GoogleError::invalid(
            "template.containers[0].image is required",
        ));
    }
    let id = name.rsplit('/').next().unwrap_or(name);
    let revision = format!(
        "{id}-{:05}-{}",
        service.revisions.len() + 1,
        random_suffix()
    );
    let project = name.split('/').nth(1).unwrap_or_default();
    let denied = revision_denied(iam, project, template)?;
    let failure = denied
        .or_else(|| broken.get(&image).cloned())
        .map(|(code, why)| {
            (
                code,
                format!("Revision '{revision}' is not ready and cannot serve traffic. {why}"),
            )
        });
    Ok(FakeRevision {
        name: revision,
        image,
        ready: failure.is_none(),
        failure_code: failure.as_ref().map_or(0, |(code, _)| *code),
        message: failure.map(|(_, message)| message).unwrap_or_default(),
        template: template.clone(),
    })
}

/// Three random lowercase letters, as Cloud Run ends revision names.
pub(super) fn random_suffix() -> String {
    Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(3)
        .map(|byte| char::from(b'a' + byte % 26))
        .collect()
}

/// Routes traffic as the spec asks, if it can; the terminal condition says how that went. As
/// in Cloud Run, `LATEST` is the latest *ready* revision: when the newest revision never gets
/// ready, the operation fails, yet traffic for `LATEST` still goes to the newest one that did,
/// which after a rollback is not the one serving now. When the spec cannot be routed at all (a
/// pinned revision that is gone), the previous routing stays.
pub(super) fn reconcile(service: &mut FakeService, name: &str) -> Result<Value, Failure> {
    let newest_failed = service
        .revisions
        .last()
        .filter(|created| !created.ready)
        .map(|created| (created.failure_code, created.message.clone()));
    match (route_traffic(service), newest_failed) {
        (Ok(serving), None) => {
            service.serving = serving;
            service.observed_generation = service.generation;
            service.terminal_condition = condition("CONDITION_SUCCEEDED", "");
            Ok(service.to_json(name))
        }
        (Ok(serving), Some((code, message))) => {
            service.serving = serving;
            service.terminal_condition = condition("CONDITION_FAILED", &message);
            Err((code, message))
        }
        (Err((code, message)), _) => {
            service.terminal_condition = condition("CONDITION_FAILED", &message);
            Err((code, message))
        }
    }
}

pub(super) fn route_traffic(service: &FakeService) -> Result<Vec<Route>, Failure> {
    let default = vec![json!({ "type": LATEST, "percent": 100 })];
    let targets = service
        .spec
        .get("traffic")
        .and_then(Value::as_array)
        .filter(|targets| !targets.is_empty())
        .unwrap_or(&default);
    targets
        .iter()
        .map(|target| {
            let kind = target["type"].as_str().unwrap_or(LATEST).to_owned();
            let percent = target["percent"].as_i64().unwrap_or(0);
            let revision = if kind == REVISION {
                pinned(service, target["revision"].as_str().unwrap_or_default())?
            } else {
                service
                    .latest_ready()
                    .map(|r| r.name.clone())
                    .unwrap_or_default()
            };
            Ok(Route {
                revision,
                percent,
                kind,
            })
        })
        .collect()
}

/// A revision traffic is pinned to must exist and be ready. For a missing one Cloud Run has
/// been seen failing the operation with code 13 and this message (Terraform users report it).
pub(super) fn pinned(service: &FakeService, revision: &str) -> Result<String, Failure> {
    match service.revision(revision) {
        None => Err((
            INTERNAL,
            format!(
                "Revision '{revision}' does not exist or is deleted. Update all traffic to \
                 route to currently available revisions."
            ),
        )),
        Some(found) if !found.ready => Err((found.failure_code, found.message.clone())),
        Some(found) => Ok(found.name.clone()),
    }
}

pub(super) fn condition(state: &str, message: &str) -> Value {
    let mut condition = json!({
        "type": "Ready",
        "state": state,
        "lastTransitionTime": now(),
    });
    if !message.is_empty() {
        condition["message"] = json!(message);
        condition["severity"] = json!("ERROR");
    }
    condition
}

/// An operation is done: its service stops reconciling, unless a newer change is under way.
pub(super) fn finish(state: &mut State, service: &str, generation: i64) {
    if let Some(service) = state.services.get_mut(service)
        && service.generation == generation
    {
        service.reconciling = false;
    }
}

/// The stand-in for the app itself: which revision (and image) answers at the service's URL.
pub(super) fn serve_app(
    state: &State,
    rest: &str,
    authorization: Option<&str>,
) -> Result<Value, GoogleError> {
    let [project, location, id] = rest.split('/').collect::<Vec<_>>()[..] else {
        return Err(GoogleError::not_found(rest));
    };
    let name = format!("projects/{project}/locations/{location}/services/{id}");
    let service = state
        .services
        .get(&name)
        .ok_or_else(|| GoogleError::not_found(&name))?;
    if let Err(refused) = admit(state, &name, service, authorization) {
        return Err(GoogleError::new(refused.status, "REFUSED", refused.message));
    }
    let serving = service
        .serving
        .iter()
        .max_by_key(|route| route.percent)
        .and_then(|route| service.revision(&route.revision));
    match serving {
        Some(revision) => {
            Ok(json!({ "service": id, "revision": revision.name, "image": revision.image }))
        }
        None => Err(GoogleError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "no revision is serving",
        )),
    }
}

/// What a new revision writes to Cloud Logging as it starts: Cloud Run's own line, then the
/// container's (Streamlit's greeting), or why it never got ready.
pub(super) fn log_start(
    sink: &crate::fake_cloud_logging::LogSink,
    name: &str,
    revision: &FakeRevision,
) {
    use crate::fake_cloud_logging::FakeEntry;
    let path: Vec<&str> = name.split('/').collect();
    let (project, location, service) = (path[1], path[3], path[5]);
    let line = |log: &str, text: &str| {
        FakeEntry::stdout(project, location, service, &revision.name, text).on(log)
    };
    sink.write(line(
        "varlog/system",
        "Starting new instance. Reason: DEPLOYMENT - New revision created.",
    ));
    if revision.ready {
        sink.write(line(
            "stdout",
            "  You can now view your Streamlit app in your browser.",
        ));
        sink.write(line("stdout", "  URL: http://0.0.0.0:8080"));
    } else {
        sink.write(line("stderr", &revision.message));
    }
}
