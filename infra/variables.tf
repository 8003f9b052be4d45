# ---------------------------------------------------------------------------------------------
# Where Runway itself lives
# ---------------------------------------------------------------------------------------------

variable "project_id" {
  description = "Google Cloud project that holds Runway and the apps it deploys."
  type        = string
}

variable "region" {
  description = "Runway's own region: its five services, Cloud Build builds, Artifact Registry, buckets (RUNWAY_REGION)."
  type        = string
  default     = "europe-west1"
}

variable "app_regions" {
  description = "Regions the submit form offers for apps (RUNWAY_REGIONS). Empty means just var.region."
  type        = list(string)
  default     = []
}

variable "name_prefix" {
  description = "Prefix of every resource name (service accounts, services, topics, repos). Apps must not use it as a name prefix: see README."
  type        = string
  default     = "runway"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,12}$", var.name_prefix))
    error_message = "name_prefix: a lowercase letter, then [a-z0-9-], at most 13 characters (service account ids are limited to 30)."
  }
}

variable "firestore_location" {
  description = "Firestore location (a region such as europe-west1, or a multi-region such as eur3). Null means var.region. Cannot be changed later."
  type        = string
  default     = null
}

variable "scheduler_region" {
  description = "Cloud Scheduler location (not every Cloud Run region has Cloud Scheduler). Null means var.region."
  type        = string
  default     = null
}

# ---------------------------------------------------------------------------------------------
# Who may use Runway
# ---------------------------------------------------------------------------------------------

variable "iap_members" {
  description = "Principals IAP lets through to the console (the submit and status backend services), e.g. [\"group:data-science@example.com\", \"domain:example.com\", \"user:ana@example.com\"]."
  type        = list(string)
  default     = []
}

variable "admins" {
  description = "E-mail addresses of Runway admins (RUNWAY_ADMINS). They must also be let through by iap_members."
  type        = list(string)
  default     = []
}

variable "console_domain" {
  description = "The console's domain, e.g. runway.example.com: the load balancer (lb.tf) serves the console, the API and GitHub's webhook there, with a Google-managed certificate. Point its DNS A record at terraform output console_address."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]*[a-z0-9])?\\.)+[a-z]{2,}$", var.console_domain))
    error_message = "console_domain: a DNS name such as runway.example.com (lowercase, no scheme, no path)."
  }
}

# ---------------------------------------------------------------------------------------------
# GitHub
# ---------------------------------------------------------------------------------------------

variable "github_auth" {
  description = "How Runway authenticates to GitHub: \"app\" (a GitHub App: contents:read + webhooks:write; recommended) or \"token\" (a personal access token)."
  type        = string
  default     = "app"

  validation {
    condition     = contains(["app", "token"], var.github_auth)
    error_message = "github_auth must be \"app\" or \"token\"."
  }
}

variable "github_app_id" {
  description = "GitHub App id (RUNWAY_GITHUB_APP_ID); required when github_auth = \"app\"."
  type        = string
  default     = ""
}

variable "github_app_installation" {
  description = "GitHub App installation id (RUNWAY_GITHUB_APP_INSTALLATION); optional, Runway can look it up per repository."
  type        = string
  default     = ""
}

variable "github_api" {
  description = "GitHub REST API base (RUNWAY_GITHUB_API); change for GitHub Enterprise Server."
  type        = string
  default     = "https://api.github.com"
}

# ---------------------------------------------------------------------------------------------
# Images and sizing
# ---------------------------------------------------------------------------------------------

variable "image_tag" {
  description = "Tag of Runway's own images used when a service is created (cloudbuild/ pushes $SHORT_SHA and latest). Later rollouts are Cloud Build's: Terraform ignores image changes (run.tf)."
  type        = string
  default     = "latest"
}

variable "image_tags" {
  description = "Per-function overrides of image_tag, e.g. { worker = \"3f9c2e1\" }."
  type        = map(string)
  default     = {}
}

variable "webhook_min_instances" {
  description = "Instances of github-webhook kept warm: GitHub gives up on a delivery after 10 s and never retries it, so a cold start must not eat that time (0 saves the idle cost)."
  type        = number
  default     = 1
}

variable "function_max_instances" {
  description = "Max instances of each Runway service."
  type        = number
  default     = 5
}

variable "app_max_instances" {
  description = "Max instances of each deployed app (RUNWAY_MAX_INSTANCES)."
  type        = number
  default     = 3
}

variable "app_access" {
  description = "Who may open an app whose submit does not say (RUNWAY_APP_ACCESS): public (anyone with the URL) or private (IAP on the app, app_viewers and whoever the form names). Each app can override it in the form."
  type        = string
  default     = "public"

  validation {
    condition     = contains(["public", "private"], var.app_access)
    error_message = "app_access must be public or private."
  }
}

variable "allowed_repositories" {
  description = "GitHub repositories anyone behind IAP may deploy (RUNWAY_ALLOWED_REPOS): OWNER/* for every repository of an owner, OWNER/REPO for one. Runway's GitHub credential reads more than any one user should deploy, so there is no default."
  type        = list(string)

  validation {
    condition = length(var.allowed_repositories) > 0 && alltrue([
      for entry in var.allowed_repositories : can(regex("^[A-Za-z0-9-]+/([A-Za-z0-9._-]+|\\*)$", entry))
    ])
    error_message = "allowed_repositories: at least one entry, each OWNER/* or OWNER/REPO."
  }
}

variable "app_viewers" {
  description = "Viewers of an app that is private by default (RUNWAY_APP_VIEWERS): user:, group: or serviceAccount: emails, or domain:example.com."
  type        = list(string)
  default     = []
}

variable "app_public_access" {
  description = "How a public app is opened (RUNWAY_PUBLIC_ACCESS): all-users grants roles/run.invoker to allUsers; invoker-iam-disabled turns the service's invoker check off, for organizations whose policy (domain-restricted sharing) forbids allUsers."
  type        = string
  default     = "all-users"

  validation {
    condition     = contains(["all-users", "invoker-iam-disabled"], var.app_public_access)
    error_message = "app_public_access must be all-users or invoker-iam-disabled."
  }
}

variable "private_ingress" {
  description = "Ingress of worker and cleanup. Pub/Sub push and Cloud Scheduler in the same project count as internal traffic, so INTERNAL_ONLY works and keeps the internet out; the invoker IAM binding is the second lock."
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_ALL"], var.private_ingress)
    error_message = "private_ingress must be INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_ALL."
  }
}

variable "deletion_protection" {
  description = "Protect the Cloud Run services and the Firestore database from terraform destroy."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------------------------
# Rate limits (each instance of a service counts on its own: N instances take up to N times these)
# ---------------------------------------------------------------------------------------------

variable "webhook_app_per_minute" {
  description = "Verified webhook deliveries one app's hook takes a minute before 429 with Retry-After (RUNWAY_WEBHOOK_APP_PER_MINUTE; 0: no limit). GitHub sends at most a few pushes a second for a repository."
  type        = number
  default     = 300

  validation {
    condition     = var.webhook_app_per_minute >= 0 && floor(var.webhook_app_per_minute) == var.webhook_app_per_minute
    error_message = "webhook_app_per_minute must be a whole number, 0 or more."
  }
}

variable "webhook_source_per_minute" {
  description = "Webhook deliveries one source address (an IPv6 /64) makes a minute before 429 (RUNWAY_WEBHOOK_SOURCE_PER_MINUTE; 0: no limit). GitHub delivers every app's hooks from a handful of addresses."
  type        = number
  default     = 3000

  validation {
    condition     = var.webhook_source_per_minute >= 0 && floor(var.webhook_source_per_minute) == var.webhook_source_per_minute
    error_message = "webhook_source_per_minute must be a whole number, 0 or more."
  }
}

variable "submit_caller_per_minute" {
  description = "Changes (create, update, redeploy, rollback, delete) one signed-in person makes a minute before 429 (RUNWAY_SUBMIT_CALLER_PER_MINUTE; 0: no limit)."
  type        = number
  default     = 120

  validation {
    condition     = var.submit_caller_per_minute >= 0 && floor(var.submit_caller_per_minute) == var.submit_caller_per_minute
    error_message = "submit_caller_per_minute must be a whole number, 0 or more."
  }
}

variable "webhook_sources" {
  description = "Where webhook deliveries may come from (RUNWAY_WEBHOOK_SOURCES): any (the signature is the check), or github (only the hook addresses GitHub's meta API publishes, asked of github_api without credentials; not for GitHub Enterprise Server, whose meta lists none)."
  type        = string
  default     = "any"

  validation {
    condition     = contains(["any", "github"], var.webhook_sources)
    error_message = "webhook_sources must be any or github."
  }
}

# ---------------------------------------------------------------------------------------------
# Retention
# ---------------------------------------------------------------------------------------------

variable "source_retention_days" {
  description = "Days a source tarball stays in the source bucket (the build has long read it)."
  type        = number
  default     = 7
}

variable "build_log_retention_days" {
  description = "Days build logs stay in the logs bucket (status shows them)."
  type        = number
  default     = 90
}

variable "app_image_keep_count" {
  description = "Images kept per app in the runway-apps repository (newest first). Rollback can only go back this far."
  type        = number
  default     = 10
}

variable "runway_image_keep_count" {
  description = "Images kept per function in Runway's own repository."
  type        = number
  default     = 10
}

variable "delivery_retention_days" {
  description = "Days a GitHub webhook delivery is kept (an app's page shows what each push did). Firestore's TTL policy on deliveries.expire_at deletes older ones, and cleanup those recorded before documents carried expire_at."
  type        = number
  default     = 30

  validation {
    condition     = var.delivery_retention_days >= 1 && var.delivery_retention_days == floor(var.delivery_retention_days)
    error_message = "delivery_retention_days must be a whole number of days, at least 1."
  }
}

variable "release_keep_count" {
  description = "Releases kept per app (newest first); cleanup deletes older finished ones, never the one serving nor one still on its way."
  type        = number
  default     = 100

  validation {
    condition     = var.release_keep_count >= 1 && var.release_keep_count == floor(var.release_keep_count)
    error_message = "release_keep_count must be a whole number, at least 1."
  }
}

# ---------------------------------------------------------------------------------------------
# Queues and schedules
# ---------------------------------------------------------------------------------------------

variable "max_source_mb" {
  description = "The largest commit source one build takes, packed and unpacked, in MiB: a larger repository's release fails and says so. The worker streams sources, so this bounds builds, not the worker's memory."
  type        = number
  default     = 1024

  validation {
    condition     = var.max_source_mb >= 1 && var.max_source_mb <= 10240
    error_message = "max_source_mb must be between 1 and 10240."
  }
}

variable "gone_repository_grace_hours" {
  description = "How long an app whose GitHub repository is gone (or no longer readable by Runway) stays, flagged on the console, before cleanup removes it with its service, hook, secrets and records."
  type        = number
  default     = 72
}

variable "notify_private_targets" {
  description = "Whether apps' notification targets may be on private networks (a chat server inside the VPC). Off: anyone who may deploy could otherwise make Runway post inside the network."
  type        = bool
  default     = false
}

variable "max_delivery_attempts" {
  description = "Pub/Sub deliveries to the worker before a message goes to its dead-letter topic (5-100)."
  type        = number
  default     = 10
}

variable "dead_letter_retention" {
  description = "How long dead letters are kept in their keeping subscription (at most 31 days)."
  type        = string
  default     = "604800s"
}

variable "cleanup_every_minutes" {
  description = "How often Cloud Scheduler runs cleanup (POST /cleanup/run), in minutes; cleanup is told the same period."
  type        = number
  default     = 10

  validation {
    condition     = contains([1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30], var.cleanup_every_minutes)
    error_message = "cleanup_every_minutes must divide an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30)."
  }
}

variable "hook_sweep_minutes" {
  description = "How often cleanup lists each deployed repository's webhooks (for stale ones), in minutes: the repositories are spread over the runs in between, so ~1,000 repositories cost ~1,000 GitHub requests per period, not per run."
  type        = number
  default     = 60

  validation {
    condition     = var.hook_sweep_minutes >= 1 && var.hook_sweep_minutes <= 10080
    error_message = "hook_sweep_minutes must be between 1 and 10080 (a week)."
  }
}

variable "alert_notification_channels" {
  description = "Cloud Monitoring notification channels (projects/P/notificationChannels/ID) the alerts of monitoring.tf go to; none: incidents only show in the console."
  type        = list(string)
  default     = []
}

variable "alert_failed_releases" {
  description = "How many releases failing within 15 minutes raise the failed-deploys alert."
  type        = number
  default     = 3
}

variable "metrics_sidecar_image" {
  description = "Managed Service for Prometheus's Cloud Run sidecar, which scrapes each function's /metrics (monitoring.tf)."
  type        = string
  default     = "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.2.0"
}
