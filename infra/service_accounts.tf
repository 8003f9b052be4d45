# Service accounts and what each may do.
#
# One identity per function, two for Cloud Build (the apps' builds run untrusted Dockerfiles, so
# they must not share an identity with Runway's own rollout), and one each for the two Google
# services that call private functions with OIDC tokens. Each deployed app runs as its own
# account, ${name_prefix}-a-{app}, which the worker creates at the app's first deploy (granting it
# read access to the app's secret only) and submit deletes with the app: they are not Terraform's. No account gets
# a basic role (owner/editor/viewer) and none has a key: Cloud Run and Cloud Build hand out
# short-lived tokens.
#
# Grants on a single resource live here too, next to the account, except: invoker grants on the
# Cloud Run services (run.tf) and accessor grants on secrets (secrets.tf).

locals {
  service_accounts = {
    "submit"         = "Runway submit: form and API behind IAP; creates apps, secrets, hooks"
    "status"         = "Runway status: read-only API behind IAP"
    "github-webhook" = "Runway github-webhook: verifies push events, queues releases"
    "worker"         = "Runway worker: builds images and deploys apps (Pub/Sub push)"
    "cleanup"        = "Runway cleanup: periodic sweep (Cloud Scheduler)"
    "pubsub-push"    = "Identity Pub/Sub uses to call the worker (OIDC)"
    "scheduler"      = "Identity Cloud Scheduler uses to call cleanup (OIDC)"
    "app-build"      = "Cloud Build identity of app builds (untrusted Dockerfiles)"
    "deployer"       = "Cloud Build identity of Runway's own build and rollout"
  }
}

resource "google_service_account" "sa" {
  for_each = local.service_accounts

  project      = var.project_id
  account_id   = "${var.name_prefix}-${each.key}"
  display_name = "${var.name_prefix} ${each.key}"
  description  = each.value

  depends_on = [google_project_service.api]
}

locals {
  sa        = { for k, v in google_service_account.sa : k => "serviceAccount:${v.email}" }
  sa_email  = { for k, v in google_service_account.sa : k => v.email }
  functions = ["submit", "status", "github-webhook", "worker", "cleanup"]
}

# ---------------------------------------------------------------------------------------------
# Custom roles: predefined Cloud Run and Secret Manager roles are either too broad or miss one
# permission, so Runway gets exactly what its code calls.
# ---------------------------------------------------------------------------------------------

# The worker's Platform adapter: upsert an app's service (PATCH ?allowMissing=true creates it),
# read it back, wait on the operation, read revisions (latestReady vs latestCreated, rollback),
# and set the app's invoker policy (a public app needs allUsers as invoker). And the app's own
# service account: create it (and read it back) and act as it, which deploying a revision that
# runs as it requires. IAM cannot narrow these to the accounts of one name prefix, so the worker
# could act as any account of the project: it runs only Runway's code, and the account it names
# is always {prefix}-a-{app}, checked to be one Runway created (cloud_run/identity.rs).
resource "google_project_iam_custom_role" "app_deployer" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}AppDeployer"
  title       = "Runway app deployer"
  description = "Create and update the Cloud Run services of Runway's apps."
  permissions = [
    "run.services.create",
    "run.services.get",
    "run.services.list",
    "run.services.update",
    "run.services.getIamPolicy",
    "run.services.setIamPolicy",
    "run.revisions.get",
    "run.revisions.list",
    "run.operations.get",
    "iam.serviceAccounts.create",
    "iam.serviceAccounts.get",
    "iam.serviceAccounts.actAs",
  ]
}

# submit's DELETE /api/deployments/{app}: stop the app's service and delete the app's account.
# Nothing else on Cloud Run.
resource "google_project_iam_custom_role" "app_remover" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}AppRemover"
  title       = "Runway app remover"
  description = "Delete the Cloud Run services of Runway's apps."
  permissions = [
    "run.services.get",
    "run.services.delete",
    "run.operations.get",
    "iam.serviceAccounts.get",
    "iam.serviceAccounts.delete",
  ]
}

# The SecretStore adapter: create the secret runway-app-{app}, add a version per update, disable
# and destroy old versions, delete the secret with the app; and the Platform adapter: let the
# app's own account read it (the secret's IAM policy). Deliberately no
# secretmanager.versions.access: Runway writes secrets, only the app reads them. Bound with a
# name-prefix condition in secrets.tf.
resource "google_project_iam_custom_role" "app_secrets" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}AppSecrets"
  title       = "Runway app secrets"
  description = "Manage (but not read) the Secret Manager secrets of Runway's apps."
  permissions = [
    "secretmanager.secrets.create",
    "secretmanager.secrets.get",
    "secretmanager.secrets.update",
    "secretmanager.secrets.delete",
    "secretmanager.versions.add",
    "secretmanager.versions.get",
    "secretmanager.versions.list",
    "secretmanager.versions.enable",
    "secretmanager.versions.disable",
    "secretmanager.versions.destroy",
    "secretmanager.secrets.getIamPolicy",
    "secretmanager.secrets.setIamPolicy",
  ]
}

# ---------------------------------------------------------------------------------------------
# submit
# ---------------------------------------------------------------------------------------------

# Firestore read/write: deployments, releases (queued with the next sequence), audit.
resource "google_project_iam_member" "submit_datastore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = local.sa["submit"]
}

# DELETE of an app stops its Cloud Run service.
resource "google_project_iam_member" "submit_app_remover" {
  project = var.project_id
  role    = google_project_iam_custom_role.app_remover.id
  member  = local.sa["submit"]
}

# DELETE of an app removes its images (ImageBuilder.delete_app): delete packages, only in the
# apps' repository, not in Runway's own.
resource "google_artifact_registry_repository_iam_member" "submit_apps_repo_admin" {
  project    = var.project_id
  location   = google_artifact_registry_repository.apps.location
  repository = google_artifact_registry_repository.apps.name
  role       = "roles/artifactregistry.repoAdmin"
  member     = local.sa["submit"]
}

# Publishing to runway-deploy-requests: pubsub.tf (topic-level grant).
# App secrets (conditional), GitHub credential, webhook secret: secrets.tf.

# ---------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------

# Firestore read-only: status never writes.
resource "google_project_iam_member" "status_datastore" {
  project = var.project_id
  role    = "roles/datastore.viewer"
  member  = local.sa["status"]
}

# GET /api/builds/{id}/log looks the build up (logsBucket, logUrl, status).
resource "google_project_iam_member" "status_builds_viewer" {
  project = var.project_id
  role    = "roles/cloudbuild.builds.viewer"
  member  = local.sa["status"]
}

# ... and reads its log from the build logs bucket (only that bucket).
resource "google_storage_bucket_iam_member" "status_logs_reader" {
  bucket = google_storage_bucket.build_logs.name
  role   = "roles/storage.objectViewer"
  member = local.sa["status"]
}

# The app page's runtime log: Cloud Run's entries, through a log view of the _Default bucket
# that holds nothing else (not the project's other logs, not audit logs).
resource "google_logging_log_view" "apps" {
  name        = "${var.name_prefix}-apps"
  bucket      = "projects/${var.project_id}/locations/global/buckets/_Default"
  description = "Cloud Run revisions' logs, for Runway's app pages"
  filter      = "SOURCE(\"projects/${var.project_id}\") AND resource.type = \"cloud_run_revision\""
}

resource "google_project_iam_member" "status_apps_log" {
  project = var.project_id
  role    = "roles/logging.viewAccessor"
  member  = local.sa["status"]
  condition {
    title      = "runway-apps-log-view"
    expression = "resource.name == \"${google_logging_log_view.apps.id}\""
  }
}

# ---------------------------------------------------------------------------------------------
# github-webhook
# ---------------------------------------------------------------------------------------------

# Firestore read/write: delivery ids (dedupe), deployments by repo id, queued releases.
resource "google_project_iam_member" "github_webhook_datastore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = local.sa["github-webhook"]
}

# Publishing to runway-deploy-requests: pubsub.tf. Webhook secret: secrets.tf.

# ---------------------------------------------------------------------------------------------
# worker
# ---------------------------------------------------------------------------------------------

# Firestore read/write: claim releases (compare-and-set), record build id, digest, URL, state.
resource "google_project_iam_member" "worker_datastore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = local.sa["worker"]
}

# Start app builds (builds.create), read them back, cancel a superseded one.
resource "google_project_iam_member" "worker_builds_editor" {
  #checkov:skip=CKV_GCP_49:the worker starts app builds; they run as app-build, its only actAs grant
  project = var.project_id
  role    = "roles/cloudbuild.builds.editor"
  member  = local.sa["worker"]
}

# Create and update the apps' Cloud Run services (custom role above), in any app region.
resource "google_project_iam_member" "worker_app_deployer" {
  project = var.project_id
  role    = google_project_iam_custom_role.app_deployer.id
  member  = local.sa["worker"]
}

# A private app is IAP on its service: the worker sets who may pass (roles/iap.httpsResourceAccessor
# on projects/N/iap_web/cloud_run-REGION/services/APP) and the service's iapEnabled. IAP's
# resource policies are only writable through roles/iap.admin (no narrower predefined role).
resource "google_project_iam_member" "worker_iap_admin" {
  project = var.project_id
  role    = "roles/iap.admin"
  member  = local.sa["worker"]
}

# A build that runs as app-build needs the caller to be allowed to act as app-build.
resource "google_service_account_iam_member" "worker_acts_as_app_build" {
  service_account_id = google_service_account.sa["app-build"].name
  role               = "roles/iam.serviceAccountUser"
  member             = local.sa["worker"]
}

# Upload the source tarball of the exact commit for Cloud Build (create; overwrite on a retry).
resource "google_storage_bucket_iam_member" "worker_source_writer" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectUser"
  member = local.sa["worker"]
}

# Read the tail of a failed build's log to record why it failed.
resource "google_storage_bucket_iam_member" "worker_logs_reader" {
  bucket = google_storage_bucket.build_logs.name
  role   = "roles/storage.objectViewer"
  member = local.sa["worker"]
}

# Resolve an app image's digest (and check a rollback's image still exists).
resource "google_artifact_registry_repository_iam_member" "worker_apps_repo_reader" {
  project    = var.project_id
  location   = google_artifact_registry_repository.apps.location
  repository = google_artifact_registry_repository.apps.name
  role       = "roles/artifactregistry.reader"
  member     = local.sa["worker"]
}

# App secrets (conditional) and GitHub credential: secrets.tf.

# ---------------------------------------------------------------------------------------------
# cleanup
# ---------------------------------------------------------------------------------------------

# Firestore read/write: stale releases (re-publish or fail them), orphaned hooks.
resource "google_project_iam_member" "cleanup_datastore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = local.sa["cleanup"]
}

# Poll builds whose notification never came (builds.get).
resource "google_project_iam_member" "cleanup_builds_viewer" {
  project = var.project_id
  role    = "roles/cloudbuild.builds.viewer"
  member  = local.sa["cleanup"]
}

# A lost build that failed gets its log excerpt recorded, as the worker would have.
resource "google_storage_bucket_iam_member" "cleanup_logs_reader" {
  bucket = google_storage_bucket.build_logs.name
  role   = "roles/storage.objectViewer"
  member = local.sa["cleanup"]
}

# An app whose repository has been gone past gone_repository_grace_hours is removed as submit's
# DELETE removes it: its Cloud Run service and account, and its images.
resource "google_project_iam_member" "cleanup_app_remover" {
  project = var.project_id
  role    = google_project_iam_custom_role.app_remover.id
  member  = local.sa["cleanup"]
}

resource "google_artifact_registry_repository_iam_member" "cleanup_apps_repo_admin" {
  project    = var.project_id
  location   = google_artifact_registry_repository.apps.location
  repository = google_artifact_registry_repository.apps.name
  role       = "roles/artifactregistry.repoAdmin"
  member     = local.sa["cleanup"]
}

# Publishing to runway-deploy-requests (outbox sweep): pubsub.tf. GitHub credential, webhook
# secret, the apps' secrets (to delete a removed app's): secrets.tf.

# ---------------------------------------------------------------------------------------------
# pubsub-push and scheduler: identities only. Each may invoke exactly one service (run.tf);
# nothing else.
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# app-build: runs the apps' Dockerfiles, which anyone who can push to a deployed repository
# controls. Give it only what a build needs.
# ---------------------------------------------------------------------------------------------

# Fetch the source tarball the worker uploaded.
resource "google_storage_bucket_iam_member" "app_build_source_reader" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = local.sa["app-build"]
}

# Write the build log into the logs bucket (Cloud Build rewrites the log object as it grows)...
resource "google_storage_bucket_iam_member" "app_build_logs_writer" {
  bucket = google_storage_bucket.build_logs.name
  role   = "roles/storage.objectAdmin"
  member = local.sa["app-build"]
}

# ... after checking the bucket exists (storage.buckets.get).
resource "google_storage_bucket_iam_member" "app_build_logs_bucket_reader" {
  bucket = google_storage_bucket.build_logs.name
  role   = "roles/storage.legacyBucketReader"
  member = local.sa["app-build"]
}

# Push the app's image (tagged by commit) and pull the live one by digest for --cache-from; only in
# runway-apps. Any build may write any tag there, so Runway reads no tag back (cloud_build.rs).
resource "google_artifact_registry_repository_iam_member" "app_build_apps_repo_writer" {
  project    = var.project_id
  location   = google_artifact_registry_repository.apps.location
  repository = google_artifact_registry_repository.apps.name
  role       = "roles/artifactregistry.writer"
  member     = local.sa["app-build"]
}

# Cloud Build also streams step output to Cloud Logging.
resource "google_project_iam_member" "app_build_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = local.sa["app-build"]
}

# ---------------------------------------------------------------------------------------------
# deployer: cloudbuild/cloudbuild.yaml builds Runway's five images and rolls them out.
# ---------------------------------------------------------------------------------------------

# Push Runway's own images (and pull :latest / cache tags); only in the runway repository.
resource "google_artifact_registry_repository_iam_member" "deployer_runway_repo_writer" {
  project    = var.project_id
  location   = google_artifact_registry_repository.runway.location
  repository = google_artifact_registry_repository.runway.name
  role       = "roles/artifactregistry.writer"
  member     = local.sa["deployer"]
}

# Roll out a new image: run.developer on exactly the five Runway services (run.tf), not on the
# project, so the deployer cannot touch the apps.

# A new revision runs as the function's account: actAs on those five, nothing else.
resource "google_service_account_iam_member" "deployer_acts_as_function" {
  for_each = toset(local.functions)

  service_account_id = google_service_account.sa[each.value].name
  role               = "roles/iam.serviceAccountUser"
  member             = local.sa["deployer"]
}

# The build's logs go to Cloud Logging only (options.logging in cloudbuild.yaml).
resource "google_project_iam_member" "deployer_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = local.sa["deployer"]
}

# `gcloud builds submit --gcs-source-staging-dir=gs://SOURCE_BUCKET/ci` puts the repository
# tarball under ci/ of the source bucket; the deployer may read that prefix only.
resource "google_storage_bucket_iam_member" "deployer_ci_source_reader" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = local.sa["deployer"]

  condition {
    title       = "ci-prefix-only"
    description = "Only the CI source tarballs, not the apps' sources."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.source.name}/objects/ci/\")"
  }
}
