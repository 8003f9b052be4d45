output "console_url" {
  description = "The console, the API and the webhook: one origin behind the load balancer and IAP."
  value       = local.console_url
}

output "console_address" {
  description = "The load balancer's address: CONSOLE_DOMAIN's DNS A record must name it."
  value       = google_compute_global_address.console.address
}

output "urls" {
  description = "The services' own run.app URLs. submit, status and github-webhook take traffic only from the load balancer (console_url); these are for logs and the console's Cloud Run pages."
  value       = local.service_url
}

output "webhook_url" {
  description = "Where GitHub delivers push events (RUNWAY_WEBHOOK_URL)."
  value       = local.webhook_url
}

output "iap_audience" {
  description = "RUNWAY_IAP_AUDIENCE of submit and status: their backend services."
  value       = local.iap_audience
}

output "service_accounts" {
  description = "E-mail of every Runway service account."
  value       = local.sa_email
}

output "image_base" {
  description = "Where cloudbuild/ pushes Runway's images: IMAGE_BASE/FUNCTION:TAG."
  value       = local.image_base
}

output "apps_image_repo" {
  description = "RUNWAY_IMAGE_REPO: where app builds push."
  value       = local.apps_image_repo
}

output "source_bucket" {
  description = "RUNWAY_SOURCE_BUCKET (CI stages its source under ci/)."
  value       = google_storage_bucket.source.name
}

output "logs_bucket" {
  description = "RUNWAY_LOGS_BUCKET."
  value       = google_storage_bucket.build_logs.name
}

output "secrets_to_fill" {
  description = "Secret Manager secrets that need a version added by hand before the services can start."
  value       = [
    google_secret_manager_secret.github.secret_id,
    google_secret_manager_secret.webhook.secret_id,
  ]
}

output "cloudbuild_substitutions" {
  description = "Substitutions for cloudbuild/cloudbuild.yaml."
  value       = join(",", [
    "_REGION=${var.region}",
    "_REPO=${local.runway_repo_id}",
    "_SERVICE_PREFIX=${var.name_prefix}-",
    "_DEPLOYER=${local.sa_email["deployer"]}",
  ])
}

output "environment" {
  description = "The plain environment of each service (secrets are listed by name only)."
  value       = {
    for f in local.functions : f => merge(
      local.function_env[f],
      { for k, v in local.function_secret_env[f] : k => "secret:${v}" },
    )
  }
}
