# The Cloud Function (2nd gen, i.e. a Cloud Run service built by Cloud Build).

resource "google_cloudfunctions2_function" "webhook" {
  #checkov:skip=CKV_GCP_124:Stripe delivers from the internet, so ingress must allow all; every request must carry a valid Stripe signature or is refused with 400.
  project     = var.project_id
  name        = var.function_name
  location    = var.region
  description = "Receives Stripe webhooks and records every event exactly once in Firestore."

  build_config {
    runtime           = var.runtime
    entry_point       = "stripe_webhook"
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.runtime.email
    # Stripe calls from the internet; every request is authenticated by its signature.
    ingress_settings               = "ALLOW_ALL"
    all_traffic_on_latest_revision = true

    available_memory                 = var.available_memory
    available_cpu                    = var.available_cpu
    max_instance_request_concurrency = var.max_instance_request_concurrency
    timeout_seconds                  = var.timeout_seconds
    min_instance_count               = var.min_instance_count
    max_instance_count               = var.max_instance_count

    environment_variables = {
      GOOGLE_CLOUD_PROJECT             = var.project_id
      FIRESTORE_DATABASE               = google_firestore_database.ledger.name
      STRIPE_EVENTS_COLLECTION         = var.events_collection
      STRIPE_TASKS_COLLECTION          = var.tasks_collection
      STRIPE_HANDLER_MODULES           = join(",", var.handler_modules)
      STRIPE_MAX_ATTEMPTS              = tostring(var.max_attempts)
      STRIPE_TASK_MAX_ATTEMPTS         = tostring(var.task_max_attempts)
      STRIPE_EVENT_RETENTION_DAYS      = tostring(var.event_retention_days)
      STRIPE_FIRESTORE_TIMEOUT_SECONDS = tostring(var.firestore_timeout_seconds)
      STRIPE_API_TIMEOUT_SECONDS       = tostring(var.stripe_api_timeout_seconds)
      STRIPE_REFETCH                   = tostring(var.refetch)
      STRIPE_REFETCH_EXCLUDE           = join(",", var.refetch_exclude)
      STRIPE_APP_USER_KEY              = var.app_user_key
      STRIPE_FEATURES_KEY              = var.features_key
      STRIPE_ACCESS_STATUSES           = join(",", var.access_statuses)
      STRIPE_CUSTOM_CLAIMS             = tostring(var.custom_claims)
      # A claim is held for as long as a request may run: a delivery that times out releases
      # its event when its lease ends, not before.
      STRIPE_LEASE_SECONDS = tostring(var.timeout_seconds)
      # functions-framework's gunicorn threads: one per request an instance is sent at once.
      THREADS = tostring(var.max_instance_request_concurrency)
    }

    # Always mounted: the precondition below refuses to plan a webhook without its secret.
    secret_environment_variables {
      key        = "STRIPE_WEBHOOK_SECRET"
      project_id = var.project_id
      secret     = google_secret_manager_secret.webhook_signing.secret_id
      version    = var.webhook_secret_version
    }

    dynamic "secret_environment_variables" {
      for_each = var.api_key_secret_version == null ? [] : [var.api_key_secret_version]
      content {
        key        = "STRIPE_API_KEY"
        project_id = var.project_id
        secret     = google_secret_manager_secret.api_key.secret_id
        version    = secret_environment_variables.value
      }
    }
  }

  # Without its signing secret the webhook would answer every delivery 500: an outage, not a
  # deployment. So a plan that would deploy it so fails here, and says what to set.
  lifecycle {
    precondition {
      condition     = var.webhook_secret_version != null
      error_message = "webhook_secret_version is not set, and the webhook cannot verify a delivery without its signing secret. Store the endpoint's secret (gcloud secrets versions add ${var.webhook_secret_id} --project=${var.project_id} --data-file=-), put the version it prints in terraform.tfvars as webhook_secret_version = \"1\", and apply. On a fresh project, create the secret first with `terraform apply -target=terraform_data.bootstrap` (docs/deploy.md)."
    }
  }

  depends_on = [
    google_project_service.required,
    google_project_iam_member.runtime_datastore_user,
    google_project_iam_member.runtime_firebaseauth_admin,
    google_secret_manager_secret_iam_member.runtime_reads,
    google_project_iam_member.build_log_writer,
    google_project_iam_member.build_source_reader,
    google_storage_bucket_iam_member.build_reads_source,
    google_artifact_registry_repository_iam_member.build_pushes_image,
  ]
}

# Stripe cannot authenticate to Google, so the function's Cloud Run service lets anyone invoke
# it; the function itself refuses every request whose Stripe signature does not verify.
# Organisations with domain-restricted sharing refuse `allUsers`: see docs/deploy.md.
resource "google_cloud_run_v2_service_iam_member" "public_invoker" {
  count = var.public_invoker ? 1 : 0

  project  = var.project_id
  location = google_cloudfunctions2_function.webhook.location
  name     = google_cloudfunctions2_function.webhook.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
