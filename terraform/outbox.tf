# The outbox runner (docs/outbox.md): a second function, built from the same source, that runs
# the tasks handlers enqueued whose run failed or never happened. Cloud Scheduler calls it
# every minute with an OIDC token of a service account that may invoke it and nothing else;
# nobody else can (no public invoker, internal ingress).

resource "google_cloudfunctions2_function" "outbox" {
  project     = var.project_id
  name        = var.outbox_function_name
  location    = var.region
  description = "Runs the due outbox tasks of ${var.function_name}; called by Cloud Scheduler."

  build_config {
    runtime           = var.runtime
    entry_point       = "run_outbox"
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
    # The webhook's identity: executors run in both functions and need the same rights.
    service_account_email          = google_service_account.runtime.email
    ingress_settings               = var.outbox_ingress
    all_traffic_on_latest_revision = true

    available_memory = var.available_memory
    available_cpu    = var.available_cpu
    # One run at a time per instance, and at most two instances: runs that overlap claim
    # different tasks (a claim is a compare-and-set), so a second one only shortens a backlog.
    max_instance_request_concurrency = 1
    timeout_seconds                  = var.outbox_timeout_seconds
    min_instance_count               = 0
    max_instance_count               = 2

    # The webhook's settings, so that tasks run as they would after a delivery; no signing
    # secret: this function never verifies a delivery.
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
      # A task claimed here is leased for as long as this request may run; the runner starts
      # no task after half of it.
      STRIPE_LEASE_SECONDS = tostring(var.outbox_timeout_seconds)
      THREADS              = "1"
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

# Cloud Scheduler's identity for the call: it holds no role but invoking this one service.
resource "google_service_account" "outbox_invoker" {
  project      = var.project_id
  account_id   = var.outbox_invoker_service_account_id
  display_name = "Stripe outbox runner (Cloud Scheduler invoker)"
  description  = "Cloud Scheduler calls ${var.outbox_function_name} as this account: it may invoke that function and nothing else."
}

resource "google_cloud_run_v2_service_iam_member" "outbox_invoker" {
  project  = var.project_id
  location = google_cloudfunctions2_function.outbox.location
  name     = google_cloudfunctions2_function.outbox.name
  role     = "roles/run.invoker"
  member   = google_service_account.outbox_invoker.member
}

resource "google_cloud_scheduler_job" "outbox" {
  project          = var.project_id
  region           = var.region
  name             = var.outbox_function_name
  description      = "Runs the due outbox tasks of ${var.function_name} (docs/outbox.md)."
  schedule         = var.outbox_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "${var.outbox_timeout_seconds}s"

  # The next tick is the retry: a run that failed leaves its tasks due.
  retry_config {
    retry_count = 0
  }

  # The run.app URL: Cloud Scheduler's calls to it count as internal traffic of the project.
  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.outbox.service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.outbox_invoker.email
      audience              = google_cloudfunctions2_function.outbox.service_config[0].uri
    }
  }

  depends_on = [
    google_project_service.required,
    google_cloud_run_v2_service_iam_member.outbox_invoker,
  ]
}
