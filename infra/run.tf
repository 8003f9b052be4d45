# Runway's five Cloud Run services, their environment (the contract the Rust side reads) and who
# may invoke them.
#
#   service          ingress                          who may invoke
#   submit, status   the load balancer only (lb.tf)   IAP's service agent; people via IAP on the
#                                                     load balancer's backend services
#   github-webhook   the load balancer only (lb.tf)   allUsers (GitHub); requests are HMAC-verified
#   worker           internal                         pubsub-push only (Pub/Sub push, OIDC)
#   cleanup          internal                         scheduler only (Cloud Scheduler, OIDC)
#
# URLs are the deterministic form https://SERVICE-PROJECT_NUMBER.REGION.run.app, known before the
# services exist, so the worker's own URL can be its OIDC audience without a dependency cycle.

locals {
  service_name = { for f in local.functions : f => "${var.name_prefix}-${f}" }
  service_url  = {
    for f in local.functions : f => "https://${local.service_name[f]}-${local.project_number}.${var.region}.run.app"
  }

  app_regions = length(var.app_regions) > 0 ? var.app_regions : [var.region]

  # Deadlines on the worker's longest path, a deploy: Pub/Sub pushes it to the worker and waits
  # up to the ack deadline (at most 600 s); the worker's request may last as long; inside it,
  # CloudRunPlatform waits for the revision a minute less (the startup probe alone may take
  # two); cleanup fails a release still deploying only well after (RUNWAY_DEPLOY_TIMEOUT_SECS).
  # infra/check checks these against each other.
  worker_deadline = 600
  deploy_wait     = 540
  webhook_url = "${local.console_url}/github/webhook"

  image = {
    for f in local.functions : f => "${local.image_base}/${f}:${lookup(var.image_tags, f, var.image_tag)}"
  }

  # --- environment: plain values ---------------------------------------------------------------
  common_env = {
    RUNWAY_BACKEND       = "gcp"
    GOOGLE_CLOUD_PROJECT = var.project_id
    RUNWAY_REGION        = var.region
    RUST_LOG             = "info"
    # /metrics, on loopback only: the Prometheus sidecar scrapes it (monitoring.tf).
    RUNWAY_METRICS_PORT = tostring(local.metrics_port)
  }

  # RUNWAY_CONSOLE_URL: what the deployments and commit statuses Runway sets on GitHub link to.
  github_env = merge(
    { RUNWAY_GITHUB_API = var.github_api, RUNWAY_CONSOLE_URL = local.console_url },
    var.github_auth == "app" ? { RUNWAY_GITHUB_APP_ID = var.github_app_id } : {},
    var.github_auth == "app" && var.github_app_installation != "" ? {
      RUNWAY_GITHUB_APP_INSTALLATION = var.github_app_installation
    } : {},
  )

  # What CloudBuildBuilder reads: submit (delete), status (logs), worker and cleanup (poll).
  build_env = {
    RUNWAY_SOURCE_BUCKET         = google_storage_bucket.source.name
    RUNWAY_LOGS_BUCKET           = google_storage_bucket.build_logs.name
    RUNWAY_IMAGE_REPO            = local.apps_image_repo
    RUNWAY_BUILD_SERVICE_ACCOUNT = local.sa_email["app-build"]
  }
  # What CloudRunPlatform reads: submit (delete) and worker (deploy). Each app runs as its own
  # service account, ${name_prefix}-a-{app}, which the worker creates and submit deletes.
  platform_env = {
    RUNWAY_REGIONS        = join(",", local.app_regions)
    RUNWAY_MAX_INSTANCES  = tostring(var.app_max_instances)
    RUNWAY_PROJECT_NUMBER = local.project_number
    RUNWAY_PUBLIC_ACCESS  = var.app_public_access
    # App names may not start with it (Runway's own services do); apps' accounts start with it.
    RUNWAY_NAME_PREFIX = var.name_prefix
  }

  # What FirestoreStore reads, so every function stamps the deliveries it records with the same
  # expiry (firestore.tf's TTL policy deletes them then): every function, since all have a store.
  store_env = {
    RUNWAY_KEEP_DELIVERIES_DAYS = tostring(var.delivery_retention_days)
  }

  function_env = {
    submit = merge(local.common_env, local.store_env, local.github_env, local.build_env, local.platform_env, {
      RUNWAY_IAP_AUDIENCE = local.iap_audience["submit"]
      RUNWAY_ADMINS       = join(",", var.admins)
      RUNWAY_WEBHOOK_URL  = local.webhook_url
      RUNWAY_DEPLOY_TOPIC = local.deploy_topic
      # Which repositories may be deployed, checked before GitHub is asked anything.
      RUNWAY_ALLOWED_REPOS = join(",", var.allowed_repositories)
      # Who may open an app whose submit does not say.
      RUNWAY_APP_ACCESS  = var.app_access
      RUNWAY_APP_VIEWERS = join(",", var.app_viewers)
      # Each signed-in person's changes a minute, per instance.
      RUNWAY_SUBMIT_CALLER_PER_MINUTE = tostring(var.submit_caller_per_minute)
      # Whether a notification target may be on a private network.
      RUNWAY_NOTIFY_PRIVATE_TARGETS = var.notify_private_targets ? "allow" : "refuse"
    })
    status = merge(local.common_env, local.store_env, local.build_env, {
      RUNWAY_IAP_AUDIENCE = local.iap_audience["status"]
      RUNWAY_ADMINS       = join(",", var.admins)
      # The deploy policy, read for the regions the app page's settings offer.
      RUNWAY_REGIONS       = join(",", local.app_regions)
      RUNWAY_NAME_PREFIX   = var.name_prefix
      RUNWAY_APP_ACCESS    = var.app_access
      RUNWAY_APP_VIEWERS   = join(",", var.app_viewers)
      RUNWAY_ALLOWED_REPOS = join(",", var.allowed_repositories)
      # The apps' runtime log: Cloud Run's entries only (service_accounts.tf).
      RUNWAY_LOG_VIEW = google_logging_log_view.apps.id
    })
    "github-webhook" = merge(local.common_env, local.store_env, {
      RUNWAY_DEPLOY_TOPIC = local.deploy_topic
      # Deliveries a minute per app and per source address, per instance.
      RUNWAY_WEBHOOK_APP_PER_MINUTE    = tostring(var.webhook_app_per_minute)
      RUNWAY_WEBHOOK_SOURCE_PER_MINUTE = tostring(var.webhook_source_per_minute)
      # The load balancer (lb.tf) appends "CLIENT, LOAD_BALANCER" to X-Forwarded-For: the source
      # address is the first of those two, never what the client wrote before them.
      RUNWAY_TRUSTED_XFF_ENTRIES = "2"
      # any, or github: GitHub's hook addresses only, asked of GitHub's meta API (no credentials).
      RUNWAY_WEBHOOK_SOURCES = var.webhook_sources
      RUNWAY_GITHUB_API      = var.github_api
    })
    worker = merge(local.common_env, local.store_env, local.github_env, local.build_env, local.platform_env, {
      RUNWAY_OIDC_AUDIENCE           = local.service_url["worker"]
      RUNWAY_INVOKER_SERVICE_ACCOUNT = local.sa_email["pubsub-push"]
      RUNWAY_DEPLOY_WAIT_SECS        = tostring(local.deploy_wait)
      RUNWAY_MAX_SOURCE_MB           = tostring(var.max_source_mb)
      RUNWAY_DEPLOY_TOPIC            = local.deploy_topic
      RUNWAY_NOTIFY_TOPIC            = local.notify_topic
      RUNWAY_NOTIFY_PRIVATE_TARGETS  = var.notify_private_targets ? "allow" : "refuse"
    })
    # platform_env: an app whose repository is gone is removed after gone_repository_grace_hours.
    cleanup = merge(local.common_env, local.store_env, local.github_env, local.build_env, local.platform_env, {
      RUNWAY_OIDC_AUDIENCE           = local.service_url["cleanup"]
      RUNWAY_INVOKER_SERVICE_ACCOUNT = local.sa_email["scheduler"]
      RUNWAY_WEBHOOK_URL             = local.webhook_url
      RUNWAY_DEPLOY_TOPIC            = local.deploy_topic
      RUNWAY_NOTIFY_TOPIC            = local.notify_topic
      # How long an app whose repository is gone stays, flagged, before it is removed.
      RUNWAY_GONE_REPO_GRACE_SECS = tostring(var.gone_repository_grace_hours * 3600)
      # Queued or building this long: publish again / poll the build (notification lost).
      RUNWAY_STALE_SECS = "600"
      # Deploying this long: interrupted (Cloud Run's operation wait is 10 minutes).
      RUNWAY_DEPLOY_TIMEOUT_SECS = "900"
      # The scheduler's period, and how often each repository's hooks are listed.
      RUNWAY_CLEANUP_EVERY_SECS = tostring(var.cleanup_every_minutes * 60)
      RUNWAY_HOOK_SWEEP_SECS    = tostring(max(var.hook_sweep_minutes, var.cleanup_every_minutes) * 60)
      # Each app's newest releases kept; cleanup prunes older finished ones.
      RUNWAY_KEEP_RELEASES = tostring(var.release_keep_count)
    })
  }

  # --- environment: secrets (name => Secret Manager secret id, version "latest") -----------------
  github_secret_env = var.github_auth == "token" ? {
    RUNWAY_GITHUB_TOKEN = google_secret_manager_secret.github.secret_id
    } : {
    RUNWAY_GITHUB_APP_KEY = google_secret_manager_secret.github.secret_id
  }
  # The key every app's webhook secret is derived from (shared/http/src/webhook.rs, app_secret).
  webhook_secret_env = { RUNWAY_WEBHOOK_SECRET = google_secret_manager_secret.webhook.secret_id }

  function_secret_env = {
    submit           = merge(local.github_secret_env, local.webhook_secret_env)
    status           = {}
    "github-webhook" = local.webhook_secret_env
    worker           = local.github_secret_env
    # cleanup gives a hook it sets right its secret again.
    cleanup = merge(local.github_secret_env, local.webhook_secret_env)
  }

  # --- per-service settings --------------------------------------------------------------------
  function_settings = {
    submit = {
      ingress       = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
      timeout       = "60s"
      min_instances = 0
    }
    status = {
      ingress = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
      # An app's page follows its release over one Server-Sent Events response, which status
      # ends after 15 minutes (FOLLOW_AT_MOST); the browser then reconnects.
      timeout       = "960s"
      min_instances = 0
    }
    "github-webhook" = {
      ingress = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
      timeout = "30s" # GitHub gives up after 10 s anyway
      # GitHub never retries a delivery it gave up on: a cold start must not eat its 10 s.
      min_instances = var.webhook_min_instances
    }
    worker = {
      ingress       = var.private_ingress
      # = the push subscriptions' ack deadline (pubsub.tf): a deploy runs inside one push.
      timeout       = "${local.worker_deadline}s"
      min_instances = 0
    }
    cleanup = {
      ingress       = var.private_ingress
      timeout       = "300s" # = the scheduler job's attempt deadline
      min_instances = 0
    }
  }
}

resource "google_cloud_run_v2_service" "function" {
  for_each = local.function_settings

  project             = var.project_id
  location            = var.region
  name                = local.service_name[each.key]
  description         = "Runway ${each.key}"
  ingress             = each.value.ingress
  deletion_protection = var.deletion_protection

  template {
    service_account = local.sa_email[each.key]
    timeout         = each.value.timeout

    scaling {
      min_instance_count = each.value.min_instances
      max_instance_count = var.function_max_instances
    }

    containers {
      name  = "runway"
      image = local.image[each.key]

      # Cloud Run sets PORT=8080 from this; the binaries listen on $PORT (cloudbuild/README.md).
      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.function_env[each.key]
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = local.function_secret_env[each.key]
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      # Traffic only reaches an instance once /ready answers 2xx (up to 60 s after start).
      startup_probe {
        initial_delay_seconds = 0
        period_seconds        = 2
        timeout_seconds       = 1
        failure_threshold     = 30
        http_get {
          path = "/ready"
        }
      }

      # An instance whose /health stops answering is restarted.
      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 3
        failure_threshold = 3
        http_get {
          path = "/health"
        }
      }
    }

    # Managed Service for Prometheus: scrapes the function's loopback /metrics (monitoring.tf).
    containers {
      name       = "metrics"
      image      = var.metrics_sidecar_image
      depends_on = ["runway"]

      resources {
        limits = {
          cpu    = "1"
          memory = "256Mi"
        }
        cpu_idle = true
      }

      volume_mounts {
        name       = "run-monitoring"
        mount_path = "/etc/rungmp"
      }
    }

    volumes {
      name = "run-monitoring"
      secret {
        secret = google_secret_manager_secret.run_monitoring.secret_id
        items {
          version = "latest"
          path    = "config.yaml"
        }
      }
    }
  }

  lifecycle {
    # cloudbuild/cloudbuild.yaml rolls out new images (by digest); Terraform only sets the first
    # one. gcloud also stamps client/client_version on every update.
    ignore_changes = [
      template[0].containers[0].image,
      client,
      client_version,
    ]

    precondition {
      condition     = var.github_auth != "app" || var.github_app_id != ""
      error_message = "github_auth = \"app\" needs github_app_id."
    }
  }

  depends_on = [
    google_project_service.api,
    google_secret_manager_secret_iam_member.github_accessor,
    google_secret_manager_secret_iam_member.webhook_accessor,
    google_secret_manager_secret_iam_member.run_monitoring_accessor,
    google_secret_manager_secret_version.run_monitoring,
  ]
}

# --- who may invoke each service -------------------------------------------------------------------

# GitHub calls the webhook (through the load balancer) without Google credentials; the function
# itself rejects anything without a valid X-Hub-Signature-256.
resource "google_cloud_run_v2_service_iam_member" "github_webhook_public" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.function["github-webhook"].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# Only Pub/Sub's push identity may call the worker.
resource "google_cloud_run_v2_service_iam_member" "worker_invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.function["worker"].name
  role     = "roles/run.invoker"
  member   = local.sa["pubsub-push"]
}

# Only Cloud Scheduler's identity may call cleanup.
resource "google_cloud_run_v2_service_iam_member" "cleanup_invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.function["cleanup"].name
  role     = "roles/run.invoker"
  member   = local.sa["scheduler"]
}

# IAP, once it has let a person through, calls submit and status as its service agent (with
# X-Serverless-Authorization).
resource "google_cloud_run_v2_service_iam_member" "iap_invoker" {
  for_each = toset(local.url_map.iap)

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.function[each.value].name
  role     = "roles/run.invoker"
  member   = local.iap_service_agent
}

# The deployer rolls out new images of exactly these five services.
resource "google_cloud_run_v2_service_iam_member" "deployer_developer" {
  for_each = toset(local.functions)

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.function[each.value].name
  role     = "roles/run.developer"
  member   = local.sa["deployer"]
}
