# Two Docker repositories in Runway's region:
#   runway       Runway's own five images (REGION-docker.pkg.dev/PROJECT/runway/FUNCTION),
#                pushed by cloudbuild/cloudbuild.yaml;
#   runway-apps  the apps' images (RUNWAY_IMAGE_REPO = REGION-docker.pkg.dev/PROJECT/runway-apps,
#                one package per app, tagged by commit sha), pushed by the apps' builds.
#
# Cleanup policies: Artifact Registry deletes what a DELETE policy matches unless a KEEP policy
# matches it too. Here everything older than a day is a candidate, and the newest N versions of
# every package are kept. Rollback needs the image of the release it goes back to, so N bounds
# how far back an app can roll back without a rebuild (app_image_keep_count). Cloud Run keeps
# serving a running revision whose image was deleted, but cannot start new instances of it.

locals {
  runway_repo_id  = var.name_prefix
  apps_repo_id    = "${var.name_prefix}-apps"
  image_base      = "${var.region}-docker.pkg.dev/${var.project_id}/${local.runway_repo_id}"
  apps_image_repo = "${var.region}-docker.pkg.dev/${var.project_id}/${local.apps_repo_id}"
}

resource "google_artifact_registry_repository" "runway" {
  #checkov:skip=CKV_GCP_84:Google-managed keys; images hold no secret (Secret Manager at run time)
  project       = var.project_id
  location      = var.region
  repository_id = local.runway_repo_id
  format        = "DOCKER"
  description   = "Runway's own images (one package per function)."

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "delete-older-than-a-day"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "86400s"
    }
  }

  cleanup_policies {
    id     = "keep-newest-versions"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.runway_image_keep_count
    }
  }

  # :latest is the --cache-from source and what a fresh `terraform apply` deploys.
  cleanup_policies {
    id     = "keep-latest-and-cache"
    action = "KEEP"
    condition {
      tag_state    = "TAGGED"
      tag_prefixes = ["latest", "buildcache"]
    }
  }

  depends_on = [google_project_service.api]
}

resource "google_artifact_registry_repository" "apps" {
  #checkov:skip=CKV_GCP_84:Google-managed keys; images hold no secret (Secret Manager at run time)
  project       = var.project_id
  location      = var.region
  repository_id = local.apps_repo_id
  format        = "DOCKER"
  description   = "Images of the apps Runway deploys (one package per app, tagged by commit sha)."

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "delete-older-than-a-day"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "86400s"
    }
  }

  cleanup_policies {
    id     = "keep-newest-versions-per-app"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.app_image_keep_count
    }
  }

  depends_on = [google_project_service.api]
}
