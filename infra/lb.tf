# The console's one origin: a global external Application Load Balancer at
# https://CONSOLE_DOMAIN, with a serverless NEG and a backend service per public function, IAP on
# the backend services of submit and status, and a URL map that sends each path to the function
# that owns it (url_map.json, which the production tests route by too). The pages (status) and
# the form and its changes (submit) then share one origin: the form opens an app's page after a
# submit, the app's page posts its redeploy, rollback and delete, and the CSRF cookie and IAP's
# session cover both. GitHub reaches github-webhook through the same address, without IAP.
#
#   path (url_map.json)                                 backend          IAP
#   /new, /new/*, /api/deployments, /api/deployments/*  submit           yes
#   /github/webhook, /github/webhook/*                  github-webhook   no (HMAC-verified)
#   everything else: /, /apps/*, /audit, /api/apps/*…   status           yes
#
# The three services take traffic only from the load balancer (run.tf: ingress), so IAP cannot
# be walked around through their run.app URLs. IAP calls them as its service agent (run.tf:
# iap_invoker) and signs each request with an assertion whose audience is its backend service
# (/projects/NUMBER/global/backendServices/ID): that is RUNWAY_IAP_AUDIENCE.

locals {
  url_map = jsondecode(file("${path.module}/url_map.json"))
  # The functions behind the load balancer: the default and every function a path names.
  lb_functions = toset(concat([local.url_map.default], keys(local.url_map.paths)))
  iap_audience = {
    for f in local.url_map.iap : f =>
    "/projects/${local.project_number}/global/backendServices/${google_compute_backend_service.function[f].generated_id}"
  }
  console_url = "https://${var.console_domain}"
}

resource "google_compute_global_address" "console" {
  project = var.project_id
  name    = "${var.name_prefix}-console"

  depends_on = [google_project_service.api]
}

# Google provisions the certificate once CONSOLE_DOMAIN resolves to the address above
# (terraform output console_address); until then the console answers with a TLS error.
resource "google_compute_managed_ssl_certificate" "console" {
  project = var.project_id
  name    = "${var.name_prefix}-console"

  managed {
    domains = [var.console_domain]
  }

  depends_on = [google_project_service.api]
}

resource "google_compute_ssl_policy" "console" {
  project         = var.project_id
  name            = "${var.name_prefix}-console"
  profile         = "RESTRICTED"
  min_tls_version = "TLS_1_2"

  depends_on = [google_project_service.api]
}

# A serverless NEG names its Cloud Run service; it needs no dependency on the service itself.
resource "google_compute_region_network_endpoint_group" "function" {
  for_each = local.lb_functions

  project               = var.project_id
  region                = var.region
  name                  = "${local.service_name[each.key]}-neg"
  network_endpoint_type = "SERVERLESS"

  cloud_run {
    service = local.service_name[each.key]
  }

  depends_on = [google_project_service.api]
}

resource "google_compute_backend_service" "function" {
  for_each = local.lb_functions

  project               = var.project_id
  name                  = local.service_name[each.key]
  description           = "Runway ${each.key}"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTPS"

  backend {
    group = google_compute_region_network_endpoint_group.function[each.key].id
  }

  # Google-managed OAuth client: only the organization's identities get in (README: IAP).
  dynamic "iap" {
    for_each = contains(local.url_map.iap, each.key) ? [true] : []
    content {
      enabled = true
    }
  }

  log_config {
    enable      = true
    sample_rate = 1
  }
}

resource "google_compute_url_map" "console" {
  project         = var.project_id
  name            = "${var.name_prefix}-console"
  default_service = google_compute_backend_service.function[local.url_map.default].id

  host_rule {
    hosts        = [var.console_domain]
    path_matcher = "runway"
  }

  path_matcher {
    name            = "runway"
    default_service = google_compute_backend_service.function[local.url_map.default].id

    dynamic "path_rule" {
      for_each = local.url_map.paths
      content {
        paths   = path_rule.value
        service = google_compute_backend_service.function[path_rule.key].id
      }
    }
  }
}

resource "google_compute_target_https_proxy" "console" {
  project          = var.project_id
  name             = "${var.name_prefix}-console"
  url_map          = google_compute_url_map.console.id
  ssl_certificates = [google_compute_managed_ssl_certificate.console.id]
  ssl_policy       = google_compute_ssl_policy.console.id
}

resource "google_compute_global_forwarding_rule" "https" {
  project               = var.project_id
  name                  = "${var.name_prefix}-console-https"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_protocol           = "TCP"
  ip_address            = google_compute_global_address.console.id
  port_range            = "443"
  target                = google_compute_target_https_proxy.console.id
}

# Plain HTTP only redirects to HTTPS.
resource "google_compute_url_map" "http_redirect" {
  project = var.project_id
  name    = "${var.name_prefix}-console-http"

  default_url_redirect {
    https_redirect         = true
    redirect_response_code = "MOVED_PERMANENTLY_DEFAULT"
    strip_query            = false
  }
}

resource "google_compute_target_http_proxy" "http_redirect" {
  project = var.project_id
  name    = "${var.name_prefix}-console-http"
  url_map = google_compute_url_map.http_redirect.id
}

resource "google_compute_global_forwarding_rule" "http" {
  project               = var.project_id
  name                  = "${var.name_prefix}-console-http"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_protocol           = "TCP"
  ip_address            = google_compute_global_address.console.id
  port_range            = "80"
  target                = google_compute_target_http_proxy.http_redirect.id
}

# Who IAP lets through to submit and status.
resource "google_iap_web_backend_service_iam_member" "iap_access" {
  for_each = {
    for pair in setproduct(local.url_map.iap, var.iap_members) : "${pair[0]} ${pair[1]}" => pair
  }

  project             = var.project_id
  web_backend_service = google_compute_backend_service.function[each.value[0]].name
  role                = "roles/iap.httpsResourceAccessor"
  member              = each.value[1]
}
