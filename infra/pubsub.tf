# Pub/Sub: three flows into the worker, each a push subscription with an OIDC token, a retry
# policy with exponential backoff, and a dead-letter topic whose messages are kept in a pull
# subscription nobody consumes, so a human can look at them (README: "Dead letters").
#
#   runway-deploy-requests --push--> worker /pubsub/deploy-requests
#     published by submit, github-webhook and cleanup (outbox sweep), ordered per app
#     (ordering key = app name) so an app's requests arrive in the order they were queued;
#   cloud-builds           --push--> worker /pubsub/build-events
#     Cloud Build publishes every build's status changes to a topic of exactly this name in the
#     project, when it exists (base64 Build JSON, attributes buildId and status);
#   runway-notifications   --push--> worker /pubsub/notifications
#     one release announcement for one of an app's targets (Slack, Chat, Teams, a signed
#     webhook), published by the worker and cleanup; a target that is down is retried with the
#     backoff below, and one still down after max_delivery_attempts becomes a dead letter.
#
# The push request timeout is the ack deadline, local.worker_deadline (run.tf): the worker never
# holds a push for a build, but it deploys (a finished build, a rollback) inside one. Any non-2xx
# answer means redelivery after the backoff.

locals {
  deploy_topic = "${var.name_prefix}-deploy-requests"
  notify_topic = "${var.name_prefix}-notifications"
}

resource "google_pubsub_topic" "deploy_requests" {
  #checkov:skip=CKV_GCP_83:Google-managed keys; a message is an app name and a release id, no secret
  project = var.project_id
  name    = local.deploy_topic

  message_retention_duration = "86400s"

  depends_on = [google_project_service.api]
}

resource "google_pubsub_topic" "notifications" {
  #checkov:skip=CKV_GCP_83:Google-managed keys; a message names its target by id, never its URL
  project = var.project_id
  name    = local.notify_topic

  message_retention_duration = "86400s"

  depends_on = [google_project_service.api]
}

# The name is fixed by Cloud Build; do not prefix it.
resource "google_pubsub_topic" "cloud_builds" {
  #checkov:skip=CKV_GCP_83:Google-managed keys; Cloud Build's status messages hold no secret
  project = var.project_id
  name    = "cloud-builds"

  depends_on = [google_project_service.api]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Google-managed keys; dead letters are the three topics' messages, no secret
  for_each = toset(["deploy-requests", "build-events", "notifications"])

  project = var.project_id
  name    = "${var.name_prefix}-${each.key}-dead-letter"

  depends_on = [google_project_service.api]
}

# Dead letters stay here until dead_letter_retention has passed (acked or not).
resource "google_pubsub_subscription" "dead_letter_keep" {
  for_each = google_pubsub_topic.dead_letter

  project = var.project_id
  name    = "${each.value.name}-keep"
  topic   = each.value.id

  ack_deadline_seconds       = 60
  message_retention_duration = var.dead_letter_retention
  retain_acked_messages      = true

  expiration_policy {
    ttl = "" # never expire for inactivity: nobody pulls from it on purpose
  }
}

resource "google_pubsub_subscription" "deploy_requests" {
  project = var.project_id
  name    = "${local.deploy_topic}-worker"
  topic   = google_pubsub_topic.deploy_requests.id

  # A rollback deploys inside its push.
  ack_deadline_seconds    = local.worker_deadline
  enable_message_ordering = true

  push_config {
    push_endpoint = "${local.service_url["worker"]}/pubsub/deploy-requests"
    oidc_token {
      service_account_email = local.sa_email["pubsub-push"]
      audience              = local.service_url["worker"]
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter["deploy-requests"].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_cloud_run_v2_service_iam_member.worker_invoker]
}

resource "google_pubsub_subscription" "build_events" {
  project = var.project_id
  name    = "${var.name_prefix}-build-events-worker"
  topic   = google_pubsub_topic.cloud_builds.id

  # A finished build's push waits for Cloud Run to get the new revision ready: the push is not
  # redelivered while the deploy still runs.
  ack_deadline_seconds = local.worker_deadline

  # Only the end of a build matters to the worker (it marks a release building itself when it
  # starts the build); this drops the QUEUED and WORKING notifications before they cost a push.
  filter = "attributes.status != \"QUEUED\" AND attributes.status != \"WORKING\" AND attributes.status != \"PENDING\""

  push_config {
    push_endpoint = "${local.service_url["worker"]}/pubsub/build-events"
    oidc_token {
      service_account_email = local.sa_email["pubsub-push"]
      audience              = local.service_url["worker"]
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter["build-events"].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_cloud_run_v2_service_iam_member.worker_invoker]
}

resource "google_pubsub_subscription" "notifications" {
  project = var.project_id
  name    = "${local.notify_topic}-worker"
  topic   = google_pubsub_topic.notifications.id

  # One post, bounded at 10 s by the worker; the deadline is the worker's, as for every push.
  ack_deadline_seconds = local.worker_deadline

  push_config {
    push_endpoint = "${local.service_url["worker"]}/pubsub/notifications"
    oidc_token {
      service_account_email = local.sa_email["pubsub-push"]
      audience              = local.service_url["worker"]
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter["notifications"].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_cloud_run_v2_service_iam_member.worker_invoker]
}

# --- who may publish ----------------------------------------------------------------------------

# submit (new deployment, redeploy, rollback), github-webhook (push events), cleanup (the
# outbox sweep re-publishes releases stuck in queued) and worker (an app's build ended: the
# release queued behind it starts) publish deploy requests; nobody else.
resource "google_pubsub_topic_iam_member" "deploy_publisher" {
  for_each = toset(["submit", "github-webhook", "cleanup", "worker"])

  project = var.project_id
  topic   = google_pubsub_topic.deploy_requests.name
  role    = "roles/pubsub.publisher"
  member  = local.sa[each.value]
}

# The worker (a release went live or failed) and cleanup (it failed a stuck deploy) announce.
resource "google_pubsub_topic_iam_member" "notify_publisher" {
  for_each = toset(["worker", "cleanup"])

  project = var.project_id
  topic   = google_pubsub_topic.notifications.name
  role    = "roles/pubsub.publisher"
  member  = local.sa[each.value]
}

# --- what Pub/Sub's own service agent needs -----------------------------------------------------

# Mint the OIDC token of pubsub-push for each push (only for that account).
resource "google_service_account_iam_member" "pubsub_agent_token_creator" {
  service_account_id = google_service_account.sa["pubsub-push"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent

  depends_on = [google_project_service.api]
}

# Forward undeliverable messages: publish to the dead-letter topics ...
resource "google_pubsub_topic_iam_member" "pubsub_agent_dead_letter_publisher" {
  for_each = google_pubsub_topic.dead_letter

  project = var.project_id
  topic   = each.value.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

# ... and acknowledge them on the subscription they came from.
resource "google_pubsub_subscription_iam_member" "pubsub_agent_subscriber" {
  for_each = {
    "deploy-requests" = google_pubsub_subscription.deploy_requests.name
    "build-events"    = google_pubsub_subscription.build_events.name
    "notifications"   = google_pubsub_subscription.notifications.name
  }

  project      = var.project_id
  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
