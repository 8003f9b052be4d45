# Buckets. Both: uniform bucket-level access (IAM only, needed for the IAM condition on ci/ in
# service_accounts.tf), public access prevented, in Runway's region.

# Source tarballs of the exact commit a build is for (RUNWAY_SOURCE_BUCKET), and Runway's own CI
# source under ci/. A build reads its tarball within minutes; after source_retention_days it is
# deleted. No versioning: a tarball is written once.
resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_78:a tarball is written once and deleted by the lifecycle rule
  #checkov:skip=CKV_GCP_62:private (IAM only, public access prevented); usage logs need a 2nd bucket
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name_prefix}-source"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  lifecycle_rule {
    condition {
      age = var.source_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.api]
}

# Build logs (RUNWAY_LOGS_BUCKET): Cloud Build writes log-BUILD_ID.txt here for every app build
# (the worker sets logsBucket); status serves them. No retention policy: Cloud Build rewrites the
# log object while the build runs, which a retention policy would forbid.
resource "google_storage_bucket" "build_logs" {
  #checkov:skip=CKV_GCP_78:Cloud Build rewrites a log while it runs; versions would keep each rewrite
  #checkov:skip=CKV_GCP_62:private (IAM only, public access prevented); usage logs need a 2nd bucket
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name_prefix}-build-logs"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  lifecycle_rule {
    condition {
      age = var.build_log_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.api]
}
