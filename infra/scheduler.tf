# Cloud Scheduler calls POST /cleanup/run every 10 minutes with an OIDC token of the scheduler
# account, for cleanup's own URL (RUNWAY_OIDC_AUDIENCE of cleanup). A missed run is not retried:
# the next one does the same sweep.

resource "google_cloud_scheduler_job" "cleanup" {
  project   = var.project_id
  region    = coalesce(var.scheduler_region, var.region)
  name      = "${var.name_prefix}-cleanup"
  schedule  = "*/${var.cleanup_every_minutes} * * * *"
  time_zone = "Etc/UTC"

  description      = "Runway cleanup sweep: stuck releases, lost builds, orphaned webhooks."
  attempt_deadline = "300s"

  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "${local.service_url["cleanup"]}/cleanup/run"

    oidc_token {
      service_account_email = local.sa_email["scheduler"]
      audience              = local.service_url["cleanup"]
    }
  }

  depends_on = [
    google_project_service.api,
    google_cloud_run_v2_service_iam_member.cleanup_invoker,
  ]
}
