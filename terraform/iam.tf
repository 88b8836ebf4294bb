# Two dedicated service accounts, each with only what it needs. Nothing here grants a basic
# role (owner, editor, viewer).

# What the function runs as: it reads and writes the ledger database and reads its own
# secrets (secrets.tf).
resource "google_service_account" "runtime" {
  project      = var.project_id
  account_id   = var.runtime_service_account_id
  display_name = "Stripe webhook function (runtime)"
  description  = "Runs ${var.function_name}: Firestore user on the ledger database, reads its own secrets."
}

resource "google_project_iam_member" "runtime_datastore_user" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.runtime.member

  # Firestore supports IAM conditions on the database name: the function reaches no other
  # database of the project.
  condition {
    title       = "ledger-database-only"
    description = "Only the Stripe ledger database"
    expression  = "resource.name == \"projects/${var.project_id}/databases/${google_firestore_database.ledger.name}\""
  }
}

# What Cloud Build runs as when it builds the function's image from the source zip.
resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = var.build_service_account_id
  display_name = "Stripe webhook function (build)"
  description  = "Builds ${var.function_name}: writes build logs and the image, reads the staged source."
}

# Build logs go to Cloud Logging; this role has no narrower scope than the project.
resource "google_project_iam_member" "build_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.build.member
}

# Cloud Functions copies the source zip into its staging bucket
# (gcf-v2-sources-PROJECT_NUMBER-REGION, created on the first deployment) and Cloud Build
# fetches it from there. The condition limits the read to that bucket.
resource "google_project_iam_member" "build_source_reader" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = google_service_account.build.member

  condition {
    title       = "function-staging-bucket-only"
    description = "Only the Cloud Functions source staging bucket of this region"
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-${data.google_project.this.number}-${var.region}\")"
  }
}

# The uploaded zip itself, in case the build is pointed at it directly.
resource "google_storage_bucket_iam_member" "build_reads_source" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.build.member
}

# The image (and the buildpacks' cache image) goes to this deployment's own repository only.
resource "google_artifact_registry_repository_iam_member" "build_pushes_image" {
  project    = var.project_id
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.build.member
}

# With custom_claims, the outbox's tasks set each user's Firebase Authentication custom claims
# (firebase-admin), and tasks run in both functions, so the account both run as needs the
# role. It is the whole project's Firebase Authentication (read, create, update and delete
# users, and its configuration): nothing is granted while custom_claims is false.
resource "google_project_iam_member" "runtime_firebaseauth_admin" {
  count = var.custom_claims ? 1 : 0

  project = var.project_id
  role    = "roles/firebaseauth.admin"
  member  = google_service_account.runtime.member
}
