# The first, targeted apply of a fresh project (docs/deploy.md, "Deploy"):
#
#   terraform apply -target=terraform_data.bootstrap
#
# creates what must exist before the rest can be: the APIs (Identity Toolkit among them when
# custom_claims is already true; an apply that turns it on later enables it before it updates
# the functions), the Secret Manager secret of the signing secret (the webhook cannot be
# planned until a version of it exists, function.tf) and the log-based metrics. Cloud Monitoring refuses an alert policy on a log-based metric
# for minutes after the metric is created ("Error 404: Cannot find metric(s)",
# hashicorp/terraform-provider-google#11102); created here, the metrics have long been
# usable when the full apply creates the policies, which also wait for the functions' builds.
resource "terraform_data" "bootstrap" {
  depends_on = [
    google_project_service.required,
    google_secret_manager_secret.webhook_signing,
    google_secret_manager_secret.api_key,
    google_logging_metric.dead_lettered,
    google_logging_metric.dead_tasks,
    google_logging_metric.signature_failures,
    google_logging_metric.deliveries,
    google_logging_metric.delivery_latency,
    google_logging_metric.task_runs,
  ]
}
