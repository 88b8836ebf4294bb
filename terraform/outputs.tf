output "webhook_url" {
  description = "Paste this into Stripe: Developers > Webhooks > Add endpoint > Endpoint URL."
  value       = google_cloudfunctions2_function.webhook.url
}

output "service_uri" {
  description = "The same function's Cloud Run URL (either URL works)."
  value       = google_cloudfunctions2_function.webhook.service_config[0].uri
}

output "runtime_service_account" {
  description = "The service account the function runs as."
  value       = google_service_account.runtime.email
}

output "build_service_account" {
  description = "The service account Cloud Build builds the function with."
  value       = google_service_account.build.email
}

output "webhook_secret_id" {
  description = "Secret Manager secret of the signing secret(s): add versions to it with gcloud."
  value       = google_secret_manager_secret.webhook_signing.secret_id
}

output "api_key_secret_id" {
  description = "Secret Manager secret of the optional Stripe API key."
  value       = google_secret_manager_secret.api_key.secret_id
}

output "outbox_function_uri" {
  description = "The private outbox runner's URL (Cloud Scheduler calls it; nobody else may)."
  value       = google_cloudfunctions2_function.outbox.service_config[0].uri
}

output "outbox_invoker_service_account" {
  description = "The service account Cloud Scheduler invokes the outbox runner as."
  value       = google_service_account.outbox_invoker.email
}

output "firestore_database" {
  description = "The Firestore database of the ledger and projections."
  value       = google_firestore_database.ledger.name
}

output "add_webhook_secret_command" {
  description = "Stores a signing secret (read from $STRIPE_WEBHOOK_SECRET) as a new version; then set webhook_secret_version to the number it prints and apply."
  value       = "printf '%s' \"$STRIPE_WEBHOOK_SECRET\" | gcloud secrets versions add ${google_secret_manager_secret.webhook_signing.secret_id} --project=${var.project_id} --data-file=-"
}
