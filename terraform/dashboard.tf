# One Cloud Monitoring dashboard of the webhook and its outbox, built from the log-based
# metrics of monitoring.tf, so that an operator looks instead of querying. Its panels, and
# the question each answers, are listed in docs/deploy.md ("The dashboard").
resource "google_monitoring_dashboard" "webhook" {
  project = var.project_id
  dashboard_json = templatefile("${path.module}/dashboard.json.tftpl", {
    title              = "${var.function_name}: Stripe webhook"
    deliveries         = "logging.googleapis.com/user/${google_logging_metric.deliveries.name}"
    delivery_latency   = "logging.googleapis.com/user/${google_logging_metric.delivery_latency.name}"
    dead_lettered      = "logging.googleapis.com/user/${google_logging_metric.dead_lettered.name}"
    dead_tasks         = "logging.googleapis.com/user/${google_logging_metric.dead_tasks.name}"
    task_runs          = "logging.googleapis.com/user/${google_logging_metric.task_runs.name}"
    signature_failures = "logging.googleapis.com/user/${google_logging_metric.signature_failures.name}"
    outbox_service     = var.outbox_function_name
  })
}
