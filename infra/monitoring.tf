# Metrics and alerts.
#
# Every function serves its metrics in the Prometheus text format on 127.0.0.1:9464/metrics
# (RUNWAY_METRICS_PORT; never on its public port). Each service runs Google Cloud Managed Service
# for Prometheus's Cloud Run sidecar beside it (run.tf), which scrapes that port every 30 s and
# writes the series to Cloud Monitoring as prometheus.googleapis.com/runway_*: deliveries by
# outcome, releases by state, build, deploy and queued-to-live durations, HTTP requests by route
# (shared/http/src/metrics.rs lists them). The queue's depth and age and the dead letters are
# Pub/Sub's own metrics: the alerts below read those.
#
# Alerts, each to var.alert_notification_channels (none: the incidents only show in the console):
#   dead letters         a message reached a dead-letter topic (a deploy request or a build's
#                        end the worker gave up on after max_delivery_attempts)
#   failed deploys       releases failed in the last 15 minutes
#   stuck queue          a deploy request has waited for the worker longer than 15 minutes
#   unrecorded pushes    the webhook could not record deliveries (store down or full): GitHub
#                        shows them failed, and nobody redelivers them by themselves

locals {
  metrics_port = 9464

  # The sidecar's scrape configuration (a RunMonitoring resource), mounted at /etc/rungmp.
  run_monitoring = <<-EOT
    apiVersion: monitoring.googleapis.com/v1beta
    kind: RunMonitoring
    metadata:
      name: runway
    spec:
      endpoints:
        - port: ${local.metrics_port}
          path: /metrics
          interval: 30s
          timeout: 10s
      targetLabels:
        metadata:
          - service
          - revision
  EOT
}

# The sidecar reads its configuration from a mounted secret, the only way it takes one. It holds
# no secret value.
resource "google_secret_manager_secret" "run_monitoring" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-run-monitoring"

  replication {
    auto {}
  }

  depends_on = [google_project_service.api]
}

resource "google_secret_manager_secret_version" "run_monitoring" {
  secret      = google_secret_manager_secret.run_monitoring.id
  secret_data = local.run_monitoring
}

resource "google_secret_manager_secret_iam_member" "run_monitoring_accessor" {
  for_each = toset(local.functions)

  project   = var.project_id
  secret_id = google_secret_manager_secret.run_monitoring.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.sa[each.key]
}

# The sidecar writes the scraped series as the service's own account.
resource "google_project_iam_member" "metric_writer" {
  for_each = toset(local.functions)

  project = var.project_id
  role    = "roles/monitoring.metricWriter"
  member  = local.sa[each.key]
}

resource "google_monitoring_alert_policy" "dead_letters" {
  project      = var.project_id
  display_name = "Runway: messages in a dead-letter topic"
  combiner     = "OR"

  conditions {
    display_name = "undelivered dead letters"
    condition_threshold {
      filter = join(" AND ", [
        "resource.type = \"pubsub_subscription\"",
        "metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\"",
        "resource.label.subscription_id = monitoring.regex.full_match(\"${var.name_prefix}-.*-dead-letter-keep\")",
      ])
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The worker gave up on a message after ${var.max_delivery_attempts} deliveries. Its release is failed or requeued by cleanup; read the message in the subscription `${var.name_prefix}-*-dead-letter-keep` and the worker's log for why."
  }

  notification_channels = var.alert_notification_channels
  depends_on            = [google_project_service.api]
}

resource "google_monitoring_alert_policy" "stuck_queue" {
  project      = var.project_id
  display_name = "Runway: deploy requests waiting"
  combiner     = "OR"

  conditions {
    display_name = "oldest deploy request older than 15 minutes"
    condition_threshold {
      filter = join(" AND ", [
        "resource.type = \"pubsub_subscription\"",
        "metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\"",
        "resource.label.subscription_id = \"${google_pubsub_subscription.deploy_requests.name}\"",
      ])
      comparison      = "COMPARISON_GT"
      threshold_value = 900
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Pub/Sub cannot hand deploy requests to the worker: check the worker service's log and its /ready."
  }

  notification_channels = var.alert_notification_channels
  depends_on            = [google_project_service.api]
}

# The alerts on Runway's own series (PromQL over what the sidecar writes).
resource "google_monitoring_alert_policy" "prometheus" {
  for_each = {
    failed_deploys = {
      name      = "Runway: releases failing"
      condition = "releases failed in the last 15 minutes"
      query     = "sum(increase(runway_releases_total{state=\"failed\"}[15m])) >= ${var.alert_failed_releases}"
      what_now  = "Releases failed: each app's page says why (a build error in the app's repository is the app owner's to fix; many at once point at Runway, Cloud Build or Cloud Run)."
    }
    unrecorded_pushes = {
      name      = "Runway: pushes not recorded"
      condition = "webhook deliveries Runway could not record"
      query     = "sum(increase(runway_deliveries_total{outcome=\"failed\"}[5m])) > 0"
      what_now  = "The webhook answered GitHub 5xx: the pushes were not recorded and will not deploy until someone presses Redeliver on the hook's Recent Deliveries page. Check Firestore and the github-webhook service's log."
    }
  }

  project      = var.project_id
  display_name = each.value.name
  combiner     = "OR"

  conditions {
    display_name = each.value.condition
    condition_prometheus_query_language {
      query               = each.value.query
      duration            = "0s"
      evaluation_interval = "60s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = each.value.what_now
  }

  notification_channels = var.alert_notification_channels
  depends_on            = [google_project_service.api]
}
