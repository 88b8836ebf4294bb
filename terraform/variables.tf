# Inputs of the deployment. Only project_id is required; terraform.tfvars.example lists the
# ones worth reviewing.

variable "project_id" {
  description = "The Google Cloud project to deploy into (its ID, not its number)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID: 6-30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Region of the function, its source bucket and its image repository (e.g. us-central1, europe-west1)."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Cloud Run region such as us-central1."
  }
}

variable "firestore_location" {
  description = "Location of the Firestore database: a multi-region (nam5, eur3) or a region. It cannot be changed once the database exists."
  type        = string
  default     = "nam5"

  validation {
    condition     = can(regex("^[a-z0-9-]+$", var.firestore_location))
    error_message = "firestore_location must be a Firestore location ID such as nam5, eur3 or us-central1."
  }
}

variable "firestore_database" {
  description = "ID of the Firestore database holding the ledger and projections; \"(default)\" or a named database."
  type        = string
  default     = "(default)"

  validation {
    condition     = var.firestore_database == "(default)" || can(regex("^[a-z][a-z0-9-]{2,61}[a-z0-9]$", var.firestore_database))
    error_message = "firestore_database must be \"(default)\" or 4-63 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "function_name" {
  description = "Name of the Cloud Function (and of its Cloud Run service); part of the webhook URL."
  type        = string
  default     = "stripe-webhook"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,47}[a-z0-9]$", var.function_name))
    error_message = "function_name must be 2-49 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "runtime" {
  description = "Python runtime of the function."
  type        = string
  default     = "python312"

  validation {
    condition     = contains(["python312", "python313"], var.runtime)
    error_message = "runtime must be python312 or python313 (the versions requirements.txt is compiled and tested for)."
  }
}

variable "available_memory" {
  description = "Memory of each instance, as Cloud Run writes it (512Mi, 1Gi)."
  type        = string
  default     = "512Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi|M|G)$", var.available_memory))
    error_message = "available_memory must look like 512Mi or 1Gi."
  }
}

variable "available_cpu" {
  description = "vCPUs of each instance (\"1\", \"2\", or a fraction such as \"0.5\" when concurrency is 1)."
  type        = string
  default     = "1"

  validation {
    condition     = can(tonumber(var.available_cpu)) && tonumber(var.available_cpu) > 0 && tonumber(var.available_cpu) <= 8
    error_message = "available_cpu must be a number of vCPUs between 0.08 and 8."
  }
}

variable "max_instance_request_concurrency" {
  description = "Requests one instance serves at once; also functions-framework's THREADS. Stripe deliveries are mostly Firestore round trips, so several per instance is cheap."
  type        = number
  default     = 8

  validation {
    condition     = var.max_instance_request_concurrency >= 1 && var.max_instance_request_concurrency <= 1000 && floor(var.max_instance_request_concurrency) == var.max_instance_request_concurrency
    error_message = "max_instance_request_concurrency must be a whole number from 1 to 1000."
  }

  validation {
    condition     = var.max_instance_request_concurrency == 1 || tonumber(var.available_cpu) >= 1
    error_message = "Cloud Run serves more than one request per instance only with at least 1 vCPU: raise available_cpu or set concurrency to 1."
  }
}

variable "timeout_seconds" {
  description = "Longest a delivery may run; also the claim lease (STRIPE_LEASE_SECONDS). Stripe itself waits at most about 20 s for an answer."
  type        = number
  default     = 60

  validation {
    condition     = var.timeout_seconds >= 10 && var.timeout_seconds <= 3600
    error_message = "timeout_seconds must be between 10 and 3600."
  }
}

variable "min_instance_count" {
  description = "Instances kept warm (billed while idle). 0 scales to zero; 1 removes cold starts."
  type        = number
  default     = 0

  validation {
    condition     = var.min_instance_count >= 0 && var.min_instance_count <= var.max_instance_count
    error_message = "min_instance_count must be between 0 and max_instance_count."
  }
}

variable "max_instance_count" {
  description = "Upper bound on instances: caps cost and Firestore load during a burst (Stripe retries what is refused)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_instance_count >= 1 && var.max_instance_count <= 1000
    error_message = "max_instance_count must be between 1 and 1000."
  }
}

variable "max_attempts" {
  description = "Failed attempts after which an event is dead-lettered (STRIPE_MAX_ATTEMPTS)."
  type        = number
  default     = 5

  validation {
    condition     = var.max_attempts >= 1
    error_message = "max_attempts must be at least 1."
  }
}

variable "event_retention_days" {
  description = "Days a ledger record is kept before Firestore's TTL deletes it (STRIPE_EVENT_RETENTION_DAYS)."
  type        = number
  default     = 35

  validation {
    condition     = var.event_retention_days >= 30
    error_message = "event_retention_days must be at least 30: Stripe can resend an event for 30 days, and a forgotten event would be processed again."
  }
}

variable "firestore_timeout_seconds" {
  description = "Bound on each Firestore call, retries included (STRIPE_FIRESTORE_TIMEOUT_SECONDS)."
  type        = number
  default     = 4

  validation {
    condition     = var.firestore_timeout_seconds >= 1 && 12 * var.firestore_timeout_seconds <= var.timeout_seconds
    error_message = "firestore_timeout_seconds must be at least 1 and at most timeout_seconds / 12: the claim lease (timeout_seconds) must outlive a delivery's 12 bounded Firestore calls."
  }
}

variable "events_collection" {
  description = "Firestore collection of the event ledger (STRIPE_EVENTS_COLLECTION)."
  type        = string
  default     = "stripe_events"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,100}$", var.events_collection))
    error_message = "events_collection must be 1-100 letters, digits, '_' or '-'."
  }
}

variable "tasks_collection" {
  description = "Firestore collection of the outbox of side effects (TTL on expire_at, payload not indexed)."
  type        = string
  default     = "stripe_tasks"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,100}$", var.tasks_collection))
    error_message = "tasks_collection must be 1-100 letters, digits, '_' or '-'."
  }
}

variable "task_max_attempts" {
  description = "Runs after which an outbox task whose executor keeps failing is dead-lettered (STRIPE_TASK_MAX_ATTEMPTS); with the backoff (30 s doubling to 1 h) 10 runs span about 3 to 5 hours."
  type        = number
  default     = 10

  validation {
    condition     = var.task_max_attempts >= 1 && floor(var.task_max_attempts) == var.task_max_attempts
    error_message = "task_max_attempts must be a whole number, at least 1."
  }
}

variable "outbox_function_name" {
  description = "Name of the private function (and Cloud Run service, and Cloud Scheduler job) that runs the due outbox tasks."
  type        = string
  default     = "stripe-webhook-outbox"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,47}[a-z0-9]$", var.outbox_function_name))
    error_message = "outbox_function_name must be 2-49 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "outbox_schedule" {
  description = "When Cloud Scheduler runs the due outbox tasks, as a cron expression in UTC (default: every minute)."
  type        = string
  default     = "* * * * *"

  validation {
    condition     = length(split(" ", trimspace(var.outbox_schedule))) == 5
    error_message = "outbox_schedule must be a cron expression of five fields, such as \"* * * * *\" or \"*/5 * * * *\"."
  }
}

variable "outbox_timeout_seconds" {
  description = "Longest one run of the outbox function may take, and the lease of the tasks it claims; it starts no task after half of it."
  type        = number
  default     = 60

  validation {
    condition     = var.outbox_timeout_seconds >= var.timeout_seconds && var.outbox_timeout_seconds <= 1800
    error_message = "outbox_timeout_seconds must be at least timeout_seconds (its lease must outlive the same bounded calls) and at most 1800 (Cloud Scheduler's longest attempt)."
  }
}

variable "outbox_ingress" {
  description = "Ingress of the outbox function. ALLOW_INTERNAL_ONLY admits Cloud Scheduler's calls to its run.app URL from the same project; ALLOW_ALL is the fallback where a network setup (a VPC Service Controls perimeter that leaves Cloud Scheduler out) refuses them. Either way a call needs the invoker's OIDC token."
  type        = string
  default     = "ALLOW_INTERNAL_ONLY"

  validation {
    condition     = contains(["ALLOW_INTERNAL_ONLY", "ALLOW_ALL"], var.outbox_ingress)
    error_message = "outbox_ingress must be ALLOW_INTERNAL_ONLY or ALLOW_ALL."
  }
}

variable "outbox_invoker_service_account_id" {
  description = "Account ID of the service account Cloud Scheduler calls the outbox function as (roles/run.invoker on that function only)."
  type        = string
  default     = "stripe-outbox-invoker"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.outbox_invoker_service_account_id))
    error_message = "outbox_invoker_service_account_id must be 6-30 lowercase letters, digits or hyphens."
  }
}

variable "projection_collections" {
  description = "Collections of the projections (one document per Stripe object, whole object under `object`, which is exempt from indexing). Add the collections of your own handlers."
  type        = list(string)
  default = [
    "customers",
    "subscriptions",
    "invoices",
    "invoice_payments",
    "payments",
    "charges",
    "refunds",
    "disputes",
    "checkout_sessions",
    "products",
    "prices",
  ]

  validation {
    condition     = alltrue([for name in var.projection_collections : can(regex("^[A-Za-z0-9_-]{1,100}$", name))])
    error_message = "Each projection collection must be 1-100 letters, digits, '_' or '-'."
  }
}

variable "handler_modules" {
  description = "Your handler modules, imported at cold start (STRIPE_HANDLER_MODULES), as Python import paths such as myapp.billing. `make bundle` reads this list from terraform.tfvars and ships each module's top-level package (myapp/); plan fails if the bundle was built for another list."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for name in var.handler_modules : can(regex("^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*$", name))])
    error_message = "Each handler module must be a Python import path such as handlers.billing."
  }
}

variable "webhook_secret_id" {
  description = "Secret Manager secret holding the endpoint's signing secret(s), comma-separated."
  type        = string
  default     = "stripe-webhook-signing-secrets"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,255}$", var.webhook_secret_id))
    error_message = "webhook_secret_id must be 1-255 letters, digits, '_' or '-'."
  }
}

variable "webhook_secret_version" {
  description = "Version of the signing secret the webhook uses: a version number (recommended: a new number deploys a new revision) or \"latest\". Keep it in terraform.tfvars. Required to plan the webhook (a precondition refuses to deploy it without its secret); only the first, targeted apply of a fresh project (-target=terraform_data.bootstrap) runs without it."
  type        = string
  default     = null

  validation {
    condition     = var.webhook_secret_version == null || can(regex("^(latest|[1-9][0-9]*)$", var.webhook_secret_version))
    error_message = "webhook_secret_version must be \"latest\" or a version number such as \"1\" (the one `gcloud secrets versions add` printed)."
  }
}

variable "api_key_secret_id" {
  description = "Secret Manager secret holding the optional Stripe API key (a restricted key is enough)."
  type        = string
  default     = "stripe-api-key"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,255}$", var.api_key_secret_id))
    error_message = "api_key_secret_id must be 1-255 letters, digits, '_' or '-'."
  }
}

variable "api_key_secret_version" {
  description = "Version of the Stripe API key secret exposed to the function as STRIPE_API_KEY; null leaves it out."
  type        = string
  default     = null

  validation {
    condition     = var.api_key_secret_version == null || can(regex("^(latest|[1-9][0-9]*)$", var.api_key_secret_version))
    error_message = "api_key_secret_version must be null, \"latest\" or a version number."
  }
}

variable "stripe_api_timeout_seconds" {
  description = "Bound on one delivery's calls to Stripe's API, retries included (thin events, refetch mode; STRIPE_API_TIMEOUT_SECONDS)."
  type        = number
  default     = 10

  validation {
    condition     = var.stripe_api_timeout_seconds >= 1 && (var.api_key_secret_version == null || 12 * var.firestore_timeout_seconds + var.stripe_api_timeout_seconds <= var.timeout_seconds)
    error_message = "With an API key, timeout_seconds (the claim lease) must be at least 12 x firestore_timeout_seconds + stripe_api_timeout_seconds."
  }
}

variable "refetch" {
  description = "Project the current state of each object read from Stripe's API instead of the event's snapshot (STRIPE_REFETCH): one API call per event; needs api_key_secret_version."
  type        = bool
  default     = false

  validation {
    condition     = !var.refetch || var.api_key_secret_version != null
    error_message = "refetch needs the Stripe API key: set api_key_secret_version."
  }
}

variable "refetch_exclude" {
  description = "Event types (or family.* patterns) projected from the event as sent even in refetch mode (STRIPE_REFETCH_EXCLUDE)."
  type        = list(string)
  default     = []
}

variable "app_user_key" {
  description = "Customer metadata key naming the app's user a customer's access belongs to, user_access/{that value} (STRIPE_APP_USER_KEY). A customer without it is linked by the client_reference_id of its latest completed Checkout Session."
  type        = string
  default     = "app_user_id"

  validation {
    condition     = length(var.app_user_key) >= 1 && length(var.app_user_key) <= 40 && trimspace(var.app_user_key) == var.app_user_key && !strcontains(var.app_user_key, ",")
    error_message = "app_user_key must be a Stripe metadata key: 1-40 characters, no comma, no leading or trailing space."
  }
}

variable "features_key" {
  description = "Product metadata key listing a product's features, comma-separated, for customers Stripe sends no Entitlements summary for (STRIPE_FEATURES_KEY)."
  type        = string
  default     = "features"

  validation {
    condition     = length(var.features_key) >= 1 && length(var.features_key) <= 40 && trimspace(var.features_key) == var.features_key && !strcontains(var.features_key, ",")
    error_message = "features_key must be a Stripe metadata key: 1-40 characters, no comma, no leading or trailing space."
  }
}

variable "access_statuses" {
  description = "Subscription statuses that grant access in customer_access and user_access (STRIPE_ACCESS_STATUSES); add past_due for a grace period while Stripe retries a payment."
  type        = list(string)
  default     = ["active", "trialing"]

  validation {
    condition     = length(var.access_statuses) >= 1
    error_message = "access_statuses must name at least one subscription status (an empty list would fall back to the function's default, active and trialing)."
  }

  validation {
    condition     = alltrue([for status in var.access_statuses : contains(["incomplete", "incomplete_expired", "trialing", "active", "past_due", "unpaid", "canceled", "paused"], status)])
    error_message = "Each of access_statuses must be a Stripe subscription status: incomplete, incomplete_expired, trialing, active, past_due, unpaid, canceled or paused."
  }
}

variable "custom_claims" {
  description = "Mirror each user's access into Firebase Auth custom claims from the outbox (STRIPE_CUSTOM_CLAIMS). True enables the Identity Toolkit API and grants the account both functions run as roles/firebaseauth.admin; false (the default) enables and grants nothing."
  type        = bool
  default     = false
}

variable "public_invoker" {
  description = "Grant roles/run.invoker to allUsers so that Stripe can call the function. Set false where an organisation policy forbids allUsers, and see docs/deploy.md for the alternative."
  type        = bool
  default     = true
}

variable "runtime_service_account_id" {
  description = "Account ID of the service account the function runs as."
  type        = string
  default     = "stripe-webhook-runtime"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.runtime_service_account_id))
    error_message = "runtime_service_account_id must be 6-30 lowercase letters, digits or hyphens."
  }
}

variable "build_service_account_id" {
  description = "Account ID of the service account Cloud Build uses to build the function."
  type        = string
  default     = "stripe-webhook-build"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.build_service_account_id))
    error_message = "build_service_account_id must be 6-30 lowercase letters, digits or hyphens."
  }
}

variable "source_bucket_name" {
  description = "Bucket for the source zip; null means PROJECT_ID-stripe-webhook-source. Bucket names are global."
  type        = string
  default     = null

  validation {
    condition     = var.source_bucket_name == null || can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", var.source_bucket_name))
    error_message = "source_bucket_name must be a valid bucket name (3-63 lowercase letters, digits, '.', '_' or '-')."
  }
}

variable "artifact_repository_id" {
  description = "Artifact Registry repository (created here) for the function's images."
  type        = string
  default     = "stripe-webhook"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,61}[a-z0-9]$", var.artifact_repository_id))
    error_message = "artifact_repository_id must be lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "alert_email" {
  description = "E-mail address notified by the alert policies; null creates no e-mail channel."
  type        = string
  default     = null

  validation {
    condition     = var.alert_email == null || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alert_email))
    error_message = "alert_email must be an e-mail address or null."
  }
}

variable "notification_channel_ids" {
  description = "Existing Cloud Monitoring notification channels (projects/P/notificationChannels/ID) the alert policies also notify."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.notification_channel_ids : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", id))])
    error_message = "Each notification channel must be a resource name projects/P/notificationChannels/ID."
  }
}

variable "signature_failure_threshold" {
  description = "Signature failures within the window above which the burst alert fires."
  type        = number
  default     = 10

  validation {
    condition     = var.signature_failure_threshold >= 0
    error_message = "signature_failure_threshold must not be negative."
  }
}

variable "signature_failure_window_seconds" {
  description = "Window over which signature failures are counted for the burst alert."
  type        = number
  default     = 300

  validation {
    condition     = var.signature_failure_window_seconds >= 60 && var.signature_failure_window_seconds <= 86400
    error_message = "signature_failure_window_seconds must be between 60 and 86400."
  }
}

variable "labels" {
  description = "Labels put on every resource that takes labels."
  type        = map(string)
  default = {
    app = "stripe-webhook"
  }
}
