# Secret Manager.
#
# Terraform creates the secret *containers* only; their values are added by hand with gcloud
# (README: "Secrets"), so no secret value is ever in Terraform state or in this repository.
#
#   runway-github-token           GitHub personal access token   (github_auth = "token")
#   runway-github-app-key         GitHub App private key (PEM)   (github_auth = "app")
#   runway-github-webhook-secret  HMAC key of the push webhooks Runway creates
#   runway-app-{app}              an app's secrets.toml; created, versioned and deleted by Runway
#                                 at run time, never by Terraform
#   runway-app-{app}--previews    the secrets.toml its pull requests' previews run with, the same
#                                 way (inside the runway-app- prefix, so the same grants cover it)
#   runway-notify-{app}           an app's notification targets (hook URLs, signing keys), the
#                                 same way; the worker reads them back to post
#
# Cloud Run reads the first three as secret environment variables ("latest" version, resolved
# when an instance starts: restart the services after rotating one).

locals {
  github_secret_ids = {
    token = "${var.name_prefix}-github-token"
    app   = "${var.name_prefix}-github-app-key"
  }
  github_secret_id  = local.github_secret_ids[var.github_auth]
  webhook_secret_id = "${var.name_prefix}-github-webhook-secret"

  # Every app secret's name starts with this; IAM conditions below match on it. Fixed (not
  # name_prefix) because the Rust SecretStore names secrets runway-app-{app}.
  # Secret Manager resource names in IAM conditions use the project *number*.
  app_secret_prefix      = "runway-app-"
  app_secret_name_prefix = "projects/${local.project_number}/secrets/${local.app_secret_prefix}"
  # An app's notification targets: runway-notify-{app}, also fixed by the Rust SecretStore.
  notify_secret_name_prefix = "projects/${local.project_number}/secrets/runway-notify-"
}

resource "google_secret_manager_secret" "github" {
  project   = var.project_id
  secret_id = local.github_secret_id

  replication {
    auto {}
  }

  depends_on = [google_project_service.api]
}

resource "google_secret_manager_secret" "webhook" {
  project   = var.project_id
  secret_id = local.webhook_secret_id

  replication {
    auto {}
  }

  depends_on = [google_project_service.api]
}

# --- who may read Runway's own secrets ----------------------------------------------------------

# The GitHub credential: submit (default branch, commit, create/remove the hook), worker
# (resolve the commit, download the tarball) and cleanup (list and remove orphaned hooks).
# Not status, not github-webhook, not the apps.
resource "google_secret_manager_secret_iam_member" "github_accessor" {
  for_each = toset(["submit", "worker", "cleanup"])

  project   = var.project_id
  secret_id = google_secret_manager_secret.github.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.sa[each.value]
}

# The webhook HMAC key: submit (puts it into the hooks it creates), cleanup (into the hooks it
# sets right) and github-webhook (verifies X-Hub-Signature-256 with it).
resource "google_secret_manager_secret_iam_member" "webhook_accessor" {
  for_each = toset(["submit", "github-webhook", "cleanup"])

  project   = var.project_id
  secret_id = google_secret_manager_secret.webhook.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.sa[each.value]
}

# --- the apps' secrets: runway-app-{app}, created at run time ------------------------------------

# Every app runs as its own account, which reads its secrets.toml from a Secret Manager volume:
# the worker grants it roles/secretmanager.secretAccessor on that one secret (its IAM policy)
# before the app's revision runs. No app's account can read another app's secret.

# submit stores an app's secrets on create/update and deletes them with the app; the worker
# manages them too (Secret Manager admin-like, custom role in service_accounts.tf: no payload
# access, no IAM changes). Secret-level permissions are checked on the secret, so the prefix
# limits them to runway-app-*. secretmanager.secrets.create is checked on the *project*, hence
# the second clause: it lets them create secrets (any name), never read or change others.
resource "google_project_iam_member" "app_secrets_manager" {
  # cleanup: deletes the secrets of an app whose repository has been gone past the grace period.
  for_each = toset(["submit", "worker", "cleanup"])

  project = var.project_id
  role    = google_project_iam_custom_role.app_secrets.id
  member  = local.sa[each.value]

  condition {
    title       = "runway-app-secrets-only"
    description = "Secrets named ${local.app_secret_prefix}* or runway-notify-*; create is evaluated on the project."
    expression  = "resource.name.startsWith(\"${local.app_secret_name_prefix}\") || resource.name.startsWith(\"${local.notify_secret_name_prefix}\") || resource.type == \"cloudresourcemanager.googleapis.com/Project\""
  }
}

# The one secret Runway reads back: the worker posts each announcement to the target it holds.
# Nothing else may read an app's targets: not submit (which writes them), not the apps.
resource "google_project_iam_member" "notify_reader" {
  project = var.project_id
  role    = "roles/secretmanager.secretAccessor"
  member  = local.sa["worker"]

  condition {
    title       = "runway-notify-secrets-only"
    description = "The notification targets of Runway's apps, runway-notify-*."
    expression  = "resource.name.startsWith(\"${local.notify_secret_name_prefix}\")"
  }
}
