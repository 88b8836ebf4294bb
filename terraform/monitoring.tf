# Log-based metrics and alerts on the function's JSON log lines (Cloud Logging jsonPayload).

# A dead-lettered event: every attempt failed; it needs a fix and `stripe-ledger replay`.
resource "google_logging_metric" "dead_lettered" {
  project     = var.project_id
  name        = "${var.function_name}/dead_lettered_events"
  description = "Stripe events dead-lettered by ${var.function_name} after their last attempt."
  filter      = "${local.function_logs} AND severity=ERROR AND jsonPayload.status=\"dead\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Dead-lettered Stripe events"

    labels {
      key         = "event_type"
      value_type  = "STRING"
      description = "The Stripe event type"
    }
  }

  label_extractors = {
    event_type = "EXTRACT(jsonPayload.event_type)"
  }
}

# An outbox task dead-lettered: its executor failed on every allowed run (or its runs kept
# dying), in the webhook (first run) or the outbox runner (retries). It needs a fix; see
# docs/outbox.md for how to run it again.
resource "google_logging_metric" "dead_tasks" {
  project     = var.project_id
  name        = "${var.function_name}/dead_tasks"
  description = "Outbox tasks of ${var.function_name} dead-lettered after their last run."
  filter      = "resource.type=\"cloud_run_revision\" AND (resource.labels.service_name=\"${var.function_name}\" OR resource.labels.service_name=\"${var.outbox_function_name}\") AND severity=ERROR AND jsonPayload.task_status=\"dead\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Dead-lettered outbox tasks"

    labels {
      key         = "task"
      value_type  = "STRING"
      description = "The task's name (its @task executor)"
    }
  }

  label_extractors = {
    task = "EXTRACT(jsonPayload.task)"
  }
}

# A delivery refused for its signature: none, not matching any configured secret, or too old.
# A burst means a wrong or rotated secret, or someone probing the endpoint.
resource "google_logging_metric" "signature_failures" {
  project     = var.project_id
  name        = "${var.function_name}/signature_failures"
  description = "Deliveries to ${var.function_name} refused with 400 because their Stripe signature did not verify."
  filter      = "${local.function_logs} AND severity=WARNING AND jsonPayload.status=\"rejected\" AND jsonPayload.http_status=400 AND (jsonPayload.reason=\"missing\" OR jsonPayload.reason=\"invalid\" OR jsonPayload.reason=\"stale\")"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Stripe signature failures"

    labels {
      key         = "reason"
      value_type  = "STRING"
      description = "missing, invalid or stale"
    }
  }

  label_extractors = {
    reason = "EXTRACT(jsonPayload.reason)"
  }
}

# Every request the webhook answered, by the `status` it logged (completed, ignored,
# duplicate, failed, dead, in_flight, rejected, error) and its HTTP status: the dashboard's
# events and deliveries. Task runs log no http_status, so they are not counted here.
resource "google_logging_metric" "deliveries" {
  project     = var.project_id
  name        = "${var.function_name}/deliveries"
  description = "Requests answered by ${var.function_name}, by ledger status and HTTP status."
  filter      = "${local.function_logs} AND jsonPayload.http_status:*"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Stripe webhook deliveries"

    labels {
      key         = "status"
      value_type  = "STRING"
      description = "The outcome the function logged: completed, ignored, duplicate, failed, dead, rejected, ..."
    }

    labels {
      key         = "http_status"
      value_type  = "STRING"
      description = "The HTTP status of the answer"
    }
  }

  label_extractors = {
    status      = "EXTRACT(jsonPayload.status)"
    http_status = "EXTRACT(jsonPayload.http_status)"
  }
}

# How long the webhook took to answer each request (`duration_ms` of the same lines), as a
# distribution: the dashboard's latency percentiles.
resource "google_logging_metric" "delivery_latency" {
  project         = var.project_id
  name            = "${var.function_name}/delivery_latency"
  description     = "Time ${var.function_name} took to answer a request, in milliseconds."
  filter          = "${local.function_logs} AND jsonPayload.http_status:*"
  value_extractor = "EXTRACT(jsonPayload.duration_ms)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "ms"
    display_name = "Stripe webhook answer latency"

    labels {
      key         = "status"
      value_type  = "STRING"
      description = "The outcome the function logged"
    }
  }

  label_extractors = {
    status = "EXTRACT(jsonPayload.status)"
  }

  # 1 ms to about 7 minutes, each bucket half again as wide as the one before.
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 32
      growth_factor      = 1.5
      scale              = 1
    }
  }
}

# Every run of an outbox task, in the webhook (the first run, after the commit) or the
# scheduled runner (retries and tasks whose first run never happened), by outcome.
resource "google_logging_metric" "task_runs" {
  project     = var.project_id
  name        = "${var.function_name}/task_runs"
  description = "Outbox task runs of ${var.function_name} and ${var.outbox_function_name}, by outcome."
  filter      = "resource.type=\"cloud_run_revision\" AND (resource.labels.service_name=\"${var.function_name}\" OR resource.labels.service_name=\"${var.outbox_function_name}\") AND jsonPayload.task_status:*"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Outbox task runs"

    labels {
      key         = "task_status"
      value_type  = "STRING"
      description = "done, failed, dead, lease_lost, ..."
    }

    labels {
      key         = "service"
      value_type  = "STRING"
      description = "The function that ran it: the webhook (first run) or the outbox runner"
    }
  }

  label_extractors = {
    task_status = "EXTRACT(jsonPayload.task_status)"
    service     = "EXTRACT(resource.labels.service_name)"
  }
}

resource "google_monitoring_notification_channel" "email" {
  count = var.alert_email == null ? 0 : 1

  project      = var.project_id
  display_name = "${var.function_name} alerts"
  type         = "email"
  labels = {
    email_address = var.alert_email
  }
}

resource "google_monitoring_alert_policy" "dead_lettered" {
  project               = var.project_id
  display_name          = "${var.function_name}: Stripe event dead-lettered"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "At least one event dead-lettered"

    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"logging.googleapis.com/user/${google_logging_metric.dead_lettered.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.event_type"]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A Stripe event failed on every attempt and was dead-lettered (status `dead` in the ledger). Find it with `stripe-ledger events list --status dead`, fix the cause, then `stripe-ledger replay EVENT_ID`."
  }

  # Created after the functions' builds, minutes after the metric (see bootstrap.tf).
  depends_on = [
    google_logging_metric.dead_lettered,
    google_cloudfunctions2_function.webhook,
    google_cloudfunctions2_function.outbox,
  ]
}

resource "google_monitoring_alert_policy" "dead_tasks" {
  project               = var.project_id
  display_name          = "${var.function_name}: outbox task dead-lettered"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "At least one outbox task dead-lettered"

    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"logging.googleapis.com/user/${google_logging_metric.dead_tasks.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.task"]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "An outbox task failed on every allowed run (status `dead`): its side effect did not happen. Find it with `stripe-ledger outbox list --status dead`, read its `last_error`, fix the cause, then run it again as docs/outbox.md explains."
  }

  # Created after the functions' builds, minutes after the metric (see bootstrap.tf).
  depends_on = [
    google_logging_metric.dead_tasks,
    google_cloudfunctions2_function.webhook,
    google_cloudfunctions2_function.outbox,
  ]
}

resource "google_monitoring_alert_policy" "signature_failures" {
  project               = var.project_id
  display_name          = "${var.function_name}: burst of Stripe signature failures"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels

  conditions {
    display_name = "More than ${var.signature_failure_threshold} signature failures in ${var.signature_failure_window_seconds} s"

    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"logging.googleapis.com/user/${google_logging_metric.signature_failures.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.signature_failure_threshold
      duration        = "0s"

      aggregations {
        alignment_period     = "${var.signature_failure_window_seconds}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "3600s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Deliveries are being refused for their Stripe signature (`jsonPayload.reason`: missing, invalid or stale). `invalid` after a rotation means the function lacks the endpoint's current signing secret: see docs/deploy.md, \"Rotating the signing secret\". Stripe retries refused deliveries for up to three days."
  }

  # Created after the functions' builds, minutes after the metric (see bootstrap.tf).
  depends_on = [
    google_logging_metric.signature_failures,
    google_cloudfunctions2_function.webhook,
    google_cloudfunctions2_function.outbox,
  ]
}
