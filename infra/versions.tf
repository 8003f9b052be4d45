# Provider versions.
#
# hashicorp/google ~> 6.50 (>= 6.50, < 7.0) for everything that is GA, and hashicorp/google-beta
# at the same version for the two things that are still beta-only in 6.50:
#   - `iap_enabled` on google_cloud_run_v2_service (Cloud Run's direct IAP integration), used by
#     the submit and status services (run.tf);
#   - google_project_service_identity, used to materialise the IAP and Pub/Sub service agents
#     before they are granted roles (apis.tf).
# `infra/check` validates every resource and argument name against the 6.50.0 schemas of both
# providers (shipped in the @cdktf/provider-google{,-beta}@16.12.1 npm packages).
# Moving to 7.x: read the 7.0.0 upgrade guide first; nothing used here is known to change, but
# it has not been checked against a 7.x schema.

terraform {
  required_version = ">= 1.6"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.50"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.50"
    }
  }

  # State holds no secret values (see secrets.tf), but keep it in a bucket with versioning, e.g.
  #   terraform init -backend-config="bucket=PROJECT-tfstate" -backend-config="prefix=runway"
  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}

data "google_project" "this" {
  project_id = var.project_id
}
