# Firestore in native mode, the composite indexes the Store's queries need, and the TTL policy
# that deletes old webhook deliveries.
# The same indexes are in firestore.indexes.json (Firebase CLI format) so the Rust store can check
# itself against them; `infra/check` fails when the two disagree.
#
# Queries and the index each needs:
#   releases   where app == X            order by seq desc         -> (app ASC, seq DESC)
#   releases   where state == X and updated_at < T
#                                        order by updated_at asc   -> (state ASC, updated_at ASC)
#   deliveries where app == X            order by received_at desc -> (app ASC, received_at DESC)
#   audit      where app == X            order by at desc          -> (app ASC, at DESC)
# Equality on one field (deployments by repo_id, releases by build_id) and an order on one field
# (the whole audit trail by at) are served by Firestore's automatic single-field indexes.

resource "google_firestore_database" "runway" {
  project     = var.project_id
  name        = "(default)"
  location_id = coalesce(var.firestore_location, var.region)
  type        = "FIRESTORE_NATIVE"

  concurrency_mode                  = "OPTIMISTIC"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = var.deletion_protection ? "ABANDON" : "DELETE"

  depends_on = [google_project_service.api]
}

locals {
  # collection => list of [field, order]; kept in step with firestore.indexes.json.
  firestore_indexes = {
    releases_by_app = {
      collection = "releases"
      fields     = [["app", "ASCENDING"], ["seq", "DESCENDING"]]
    }
    releases_stale_by_state = {
      collection = "releases"
      fields     = [["state", "ASCENDING"], ["updated_at", "ASCENDING"]]
    }
    deliveries_by_app = {
      collection = "deliveries"
      fields     = [["app", "ASCENDING"], ["received_at", "DESCENDING"]]
    }
    audit_by_app = {
      collection = "audit"
      fields     = [["app", "ASCENDING"], ["at", "DESCENDING"]]
    }
  }
}

resource "google_firestore_index" "runway" {
  for_each = local.firestore_indexes

  project     = var.project_id
  database    = google_firestore_database.runway.name
  collection  = each.value.collection
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path = fields.value[0]
      order      = fields.value[1]
    }
  }
}

# Deliveries expire: each document carries `expire_at` (received_at + delivery_retention_days,
# written by FirestoreStore), and Firestore deletes it once that has passed, usually within a
# day, without Runway reading it. Cleanup's prune deletes what TTL has not yet (and deliveries
# recorded before documents carried `expire_at`).
resource "google_firestore_field" "deliveries_expire_at" {
  project    = var.project_id
  database   = google_firestore_database.runway.name
  collection = "deliveries"
  field      = "expire_at"

  # No query reads expire_at, and an index on an ever-growing timestamp is a write hotspot
  # (Google's advice for TTL fields): the empty block takes its single-field indexes away.
  index_config {}

  ttl_config {}
}
