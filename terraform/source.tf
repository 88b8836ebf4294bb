# The function's source: main.py, the handlers and stripe_ledger packages and the pinned
# requirements.txt, nothing else (no tests, no virtual environments, no caches). It is
# uploaded under a name derived from the files' contents, so any code change redeploys.

locals {
  source_files = sort(setunion(
    ["main.py", "requirements.txt"],
    fileset(local.repo_root, "{handlers,stripe_ledger}/**/*.py"),
  ))

  # A hash of the inputs, not of the zip: the name does not depend on how the zip is written.
  source_hash = sha256(join("\n", [
    for name in local.source_files : "${name} ${filesha256("${local.repo_root}/${name}")}"
  ]))
}

data "archive_file" "source" {
  type             = "zip"
  output_path      = "${path.module}/build/function-source.zip"
  output_file_mode = "0644"

  dynamic "source" {
    for_each = local.source_files
    content {
      filename = source.value
      content  = file("${local.repo_root}/${source.value}")
    }
  }
}

resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:Holds only the function's source code, never customer data; reads and writes of it are in Cloud Audit Logs.
  project  = var.project_id
  name     = coalesce(var.source_bucket_name, "${var.project_id}-stripe-webhook-source")
  location = var.region

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  # Object names are content hashes, so an overwritten version is never needed again.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.required]
}

resource "google_storage_bucket_object" "source" {
  bucket       = google_storage_bucket.source.name
  name         = "${var.function_name}/source-${local.source_hash}.zip"
  source       = data.archive_file.source.output_path
  content_type = "application/zip"
}

# The function's images live in this deployment's own repository, so that the build service
# account can be given write access to it alone.
resource "google_artifact_registry_repository" "functions" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption; the images hold only the open-source function code.
  project       = var.project_id
  location      = var.region
  repository_id = var.artifact_repository_id
  format        = "DOCKER"
  description   = "Images of the ${var.function_name} Cloud Function"

  depends_on = [google_project_service.required]
}
