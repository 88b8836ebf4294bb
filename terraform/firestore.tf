# The ledger database: its TTL policies, index exemptions, composite indexes and rules.

resource "google_firestore_database" "ledger" {
  project     = var.project_id
  name        = var.firestore_database
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"

  # The ledger's claim-then-transaction design was measured under pessimistic locking.
  concurrency_mode            = "PESSIMISTIC"
  app_engine_integration_mode = "DISABLED"

  # Seven days of point-in-time reads: a bad handler release can be undone from history.
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  # `terraform destroy` forgets the database instead of deleting the ledger with it.
  deletion_policy = "ABANDON"

  depends_on = [google_project_service.required]
}

# TTL: Firestore deletes a ledger record once its `expire_at` has passed (retention days after
# it was received). The field is also exempt from indexing: expiry timestamps only grow, which
# would make a write hotspot of their index, and no query filters or sorts on them.
resource "google_firestore_field" "ledger_ttl" {
  project    = var.project_id
  database   = google_firestore_database.ledger.name
  collection = var.events_collection
  field      = "expire_at"

  index_config {}
  ttl_config {}
}

resource "google_firestore_field" "tasks_ttl" {
  project    = var.project_id
  database   = google_firestore_database.ledger.name
  collection = var.tasks_collection
  field      = "expire_at"

  index_config {}
  ttl_config {}
}

# Large fields that no query touches: exempt from single-field indexing, so that a big event
# costs no index writes and never runs into the index-entry size limit. (An empty
# index_config removes every single-field index of the field, subfields of a map included.)
resource "google_firestore_field" "ledger_unindexed" {
  for_each = toset(["payload", "payload_zlib"])

  project    = var.project_id
  database   = google_firestore_database.ledger.name
  collection = var.events_collection
  field      = each.value

  index_config {}
}

resource "google_firestore_field" "tasks_unindexed" {
  for_each = toset(["payload"])

  project    = var.project_id
  database   = google_firestore_database.ledger.name
  collection = var.tasks_collection
  field      = each.value

  index_config {}
}

# Every projection keeps the whole Stripe object under `object`.
resource "google_firestore_field" "projection_object" {
  for_each = toset(var.projection_collections)

  project    = var.project_id
  database   = google_firestore_database.ledger.name
  collection = each.value
  field      = "object"

  index_config {}
}

# The access documents of handlers/access.py. Their collections are the code's, not settings.
locals {
  access_collections = {
    customer = "customer_access"
    user     = "user_access"
  }
}

# Their maps keyed by subscription ID (`subscriptions`) or customer ID (`customer_features`)
# gain a key with every subscription and customer: indexed, each key would be index entries
# on every write and a step towards the index-entry limit, and no query reads them (an app
# reads its user's document by its ID).
resource "google_firestore_field" "access_unindexed" {
  for_each = {
    customer_subscriptions = { collection = local.access_collections.customer, field = "subscriptions" }
    user_subscriptions     = { collection = local.access_collections.user, field = "subscriptions" }
    user_customer_features = { collection = local.access_collections.user, field = "customer_features" }
  }

  project    = var.project_id
  database   = google_firestore_database.ledger.name
  collection = each.value.collection
  field      = each.value.field

  index_config {}
}

# The queries of the operations CLI (`stripe-ledger events list --status ... --type ...`): equality on
# status and/or type, newest first. Each index lists its fields in order, with their direction.
resource "google_firestore_index" "ledger" {
  for_each = {
    status_received      = [["status", "ASCENDING"], ["received_at", "DESCENDING"]]
    type_received        = [["type", "ASCENDING"], ["received_at", "DESCENDING"]]
    status_type_received = [["status", "ASCENDING"], ["type", "ASCENDING"], ["received_at", "DESCENDING"]]
  }

  project     = var.project_id
  database    = google_firestore_database.ledger.name
  collection  = var.events_collection
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value
    content {
      field_path = fields.value[0]
      order      = fields.value[1]
    }
  }
}

# The outbox's queries: the due tasks of a status, oldest first (`Outbox.due`, for
# `stripe-ledger outbox run` and the scheduled runner), and the listings of
# `stripe-ledger outbox list --status ... --task ...`, newest first.
resource "google_firestore_index" "tasks" {
  for_each = {
    status_next_attempt = [["status", "ASCENDING"], ["next_attempt_at", "ASCENDING"]]
    status_created      = [["status", "ASCENDING"], ["created_at", "DESCENDING"]]
    task_created        = [["task", "ASCENDING"], ["created_at", "DESCENDING"]]
    status_task_created = [["status", "ASCENDING"], ["task", "ASCENDING"], ["created_at", "DESCENDING"]]
  }

  project     = var.project_id
  database    = google_firestore_database.ledger.name
  collection  = var.tasks_collection
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value
    content {
      field_path = fields.value[0]
      order      = fields.value[1]
    }
  }
}

# firestore.rules refuses every client read and write. The function's service account
# authenticates with IAM, which Firestore security rules do not apply to.
resource "google_firebaserules_ruleset" "firestore" {
  project = var.project_id

  source {
    files {
      name    = "firestore.rules"
      content = file("${local.repo_root}/firestore.rules")
    }
  }

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [google_project_service.required, google_firestore_database.ledger]
}

resource "google_firebaserules_release" "firestore" {
  project      = var.project_id
  name         = var.firestore_database == "(default)" ? "cloud.firestore" : "cloud.firestore/${var.firestore_database}"
  ruleset_name = "projects/${var.project_id}/rulesets/${google_firebaserules_ruleset.firestore.name}"

  lifecycle {
    replace_triggered_by = [google_firebaserules_ruleset.firestore]
  }
}
