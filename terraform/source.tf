# The function's source is the zip `make bundle` writes (stripe_ledger/bundle.py): main.py, the
# core, the built-in handlers, the packages of var.handler_modules and a hash-pinned
# requirements.txt. Terraform uploads that file as it is, under its own SHA-256, so there is
# one definition of what is deployed and any change to it deploys a new revision. The
# manifest beside it says what it was built from; the preconditions below refuse to plan with
# a bundle that is missing, stale, or built for other handler modules.

locals {
  bundle_zip      = "${local.repo_root}/dist/function-source.zip"
  bundle_manifest = "${local.repo_root}/dist/function-source.json"
  bundle          = fileexists(local.bundle_manifest) ? jsondecode(file(local.bundle_manifest)) : null

  # Inputs of the bundle changed (or gone) since it was built.
  bundle_stale = local.bundle == null ? [] : [
    for name, digest in local.bundle.inputs : name
    if(fileexists("${local.repo_root}/${name}") ? filesha256("${local.repo_root}/${name}") != digest : true)
  ]

  source_hash = local.bundle == null ? "missing" : local.bundle.sha256
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
  source       = local.bundle_zip
  content_type = "application/zip"

  lifecycle {
    precondition {
      condition     = local.bundle != null
      error_message = "dist/function-source.zip has not been built: run `make bundle` in the repository root, then apply again."
    }
    precondition {
      condition     = local.bundle == null ? true : (fileexists(local.bundle_zip) ? filesha256(local.bundle_zip) == local.bundle.sha256 : false)
      error_message = "dist/function-source.zip is missing or is not the zip its manifest describes: run `make bundle` again, then apply."
    }
    precondition {
      condition     = local.bundle == null ? true : join(",", local.bundle.handler_modules) == join(",", var.handler_modules)
      error_message = "dist/function-source.zip was built for handler modules [${local.bundle == null ? "" : join(", ", local.bundle.handler_modules)}], but handler_modules is [${join(", ", var.handler_modules)}]: run `make bundle` (it reads handler_modules from terraform.tfvars), then apply again."
    }
    precondition {
      condition     = length(local.bundle_stale) == 0
      error_message = "dist/function-source.zip is older than ${join(", ", local.bundle_stale)}: run `make bundle`, then apply again."
    }
  }
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
