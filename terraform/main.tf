# The Stripe webhook function and everything it needs, in one Google Cloud project.
# See docs/deploy.md for the commands, the secret rotation and the rollback procedure.

provider "google" {
  project = var.project_id
  region  = var.region

  # Firebase Rules (and a few other APIs) refuse user credentials that carry no quota
  # project; bill every call to the project being deployed.
  user_project_override = true
  billing_project       = var.project_id

  default_labels = var.labels
}

data "google_project" "this" {
  project_id = var.project_id
}

# The APIs the deployment calls. They stay enabled on `terraform destroy`: other workloads in
# the project may use them, and disabling Firestore's API does not delete its data anyway.
# Identity Toolkit (Firebase Authentication's API) only when the functions set custom claims.
locals {
  services = setunion([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "firebaserules.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ], var.custom_claims ? ["identitytoolkit.googleapis.com"] : [])
}

locals {
  repo_root = abspath("${path.module}/..")

  # Logs of the function's Cloud Run service: what the log-based metrics count.
  function_logs = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${var.function_name}\""

  notification_channels = concat(
    google_monitoring_notification_channel.email[*].id,
    var.notification_channel_ids,
  )
}

resource "google_project_service" "required" {
  for_each = local.services

  project                    = var.project_id
  service                    = each.value
  disable_on_destroy         = false
  disable_dependent_services = false
}
