# Secret Manager secrets. Terraform creates the secrets, never their values: values are added
# out of band (`gcloud secrets versions add`, see docs/deploy.md), so no secret ever reaches
# the Terraform state, a plan, or a variable file.

# The webhook signing secrets of the endpoint, comma-separated in one value ("whsec_new,whsec_old"
# while a secret is being rotated): the function's STRIPE_WEBHOOK_SECRET.
resource "google_secret_manager_secret" "webhook_signing" {
  project   = var.project_id
  secret_id = var.webhook_secret_id

  replication {
    auto {}
  }

  depends_on = [google_project_service.required]
}

# The optional Stripe API key (STRIPE_API_KEY): used by the operations CLI and for refetching
# objects. The function only sees it once `api_key_secret_version` is set.
resource "google_secret_manager_secret" "api_key" {
  project   = var.project_id
  secret_id = var.api_key_secret_id

  replication {
    auto {}
  }

  depends_on = [google_project_service.required]
}

# The runtime service account reads these two secrets and nothing else in Secret Manager.
resource "google_secret_manager_secret_iam_member" "runtime_reads" {
  for_each = {
    webhook_signing = google_secret_manager_secret.webhook_signing.id
    api_key         = google_secret_manager_secret.api_key.id
  }

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime.member
}
