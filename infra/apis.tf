# APIs Runway uses. disable_on_destroy = false: destroying Runway must not switch off an API
# something else in the project relies on.

locals {
  apis = [
    "artifactregistry.googleapis.com",     # images: Runway's own and the apps'
    "cloudbuild.googleapis.com",           # app builds and Runway's own builds
    "cloudresourcemanager.googleapis.com", # project IAM bindings
    "cloudscheduler.googleapis.com",       # cleanup every 10 minutes
    "compute.googleapis.com",              # the console's load balancer (lb.tf)
    "firestore.googleapis.com",            # the Store
    "iam.googleapis.com",                  # service accounts, custom roles
    "iamcredentials.googleapis.com",       # OIDC tokens minted for Pub/Sub push and Scheduler
    "iap.googleapis.com",                  # Identity-Aware Proxy in front of submit and status
    "logging.googleapis.com",              # build and service logs
    "monitoring.googleapis.com",           # Runway's metrics and alerts (monitoring.tf)
    "pubsub.googleapis.com",               # deploy requests and Cloud Build notifications
    "run.googleapis.com",                  # Runway's services and the apps
    "secretmanager.googleapis.com",        # GitHub credentials and the apps' secrets
    "storage.googleapis.com",              # source tarballs and build logs
  ]
}

resource "google_project_service" "api" {
  for_each = toset(local.apis)

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# Service agents Runway grants roles to. They only exist once something asks for them, and a
# grant to a not-yet-existing agent fails, so ask explicitly (google-beta only in 6.50):
#   IAP's (service-PROJECT_NUMBER@gcp-sa-iap...) calls submit and status (run.tf);
#   Pub/Sub's (service-PROJECT_NUMBER@gcp-sa-pubsub...) signs push OIDC tokens and moves
#   undeliverable messages to the dead-letter topics (pubsub.tf).
resource "google_project_service_identity" "agent" {
  provider = google-beta
  for_each = toset(["iap.googleapis.com", "pubsub.googleapis.com"])

  project = var.project_id
  service = each.value

  depends_on = [google_project_service.api]
}

locals {
  project_number       = data.google_project.this.number
  iap_service_agent    = "serviceAccount:${google_project_service_identity.agent["iap.googleapis.com"].email}"
  pubsub_service_agent = "serviceAccount:${google_project_service_identity.agent["pubsub.googleapis.com"].email}"
}
