variable "project_id" {
  description = "Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Cloud Run region (pick one close to Twilio's media edge and to the Gemini endpoint)."
  type        = string
  default     = "us-central1"
}

variable "service_name" {
  description = "Cloud Run service name (also the service account's prefix)."
  type        = string
  default     = "voice-agent"
}

variable "image" {
  description = "Container image built from infra/Dockerfile, e.g. us-central1-docker.pkg.dev/PROJECT/REPO/voice-agent:TAG."
  type        = string
}

variable "public_url" {
  description = "Public base URL Twilio calls (a custom domain). Empty: the service's deterministic run.app URL."
  type        = string
  default     = ""
}

variable "secret_ids" {
  description = <<-EOT
    Environment variable => id of an EXISTING Secret Manager secret (created out of band with
    gcloud, see README "Deploying"). Only the ids live in Terraform; the values never enter state.
    DATABASE_URL is the call records' database, a Postgres URL (postgresql+psycopg://..., e.g.
    Cloud SQL through var.cloud_sql_instances): the server's default, sqlite:///calls.db, is a
    file inside one instance, lost when it stops and never shared between instances, so it is
    not suitable here. API_TOKEN is the bearer token of the operator API (GET/POST /calls).
  EOT
  type        = map(string)
  # The ids are names, not values: the inline skips tell checkov's secret scan so.
  default = {
    # checkov:skip=CKV_SECRET_6: a Secret Manager secret id, not a key
    GEMINI_API_KEY = "gemini-api-key"
    # checkov:skip=CKV_SECRET_6: a Secret Manager secret id, not a token
    TWILIO_AUTH_TOKEN  = "twilio-auth-token"
    TWILIO_ACCOUNT_SID = "twilio-account-sid"
    DATABASE_URL       = "database-url"
    # checkov:skip=CKV_SECRET_6: a Secret Manager secret id, not a token
    API_TOKEN = "api-token"
  }

  validation {
    condition     = alltrue([for name in ["DATABASE_URL", "API_TOKEN"] : contains(keys(var.secret_ids), name)])
    error_message = "secret_ids needs DATABASE_URL (a Postgres URL: the SQLite default is per instance) and API_TOKEN."
  }
}

variable "cloud_sql_instances" {
  description = <<-EOT
    Cloud SQL instance connection names (PROJECT:REGION:INSTANCE), mounted as Unix sockets
    under /cloudsql/NAME: DATABASE_URL then ends with ?host=/cloudsql/NAME (README "Deploying").
    The service account gets roles/cloudsql.client. Empty: DATABASE_URL reaches Postgres by
    address (private IP through a VPC, or another provider).
  EOT
  type        = list(string)
  default     = []
}

variable "cpu" {
  description = "vCPUs per instance."
  type        = string
  default     = "1"
}

variable "memory" {
  description = "Memory per instance (~95 MiB base + ~0.5 MiB per call, measured)."
  type        = string
  default     = "512Mi"
}

variable "concurrency" {
  description = "Requests (calls' WebSockets + webhook POSTs) per instance; see the comment in main.tf."
  type        = number
  default     = 90

  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000
    error_message = "concurrency must be between 1 and 1000."
  }
}

variable "max_concurrent_calls" {
  description = "The server's own limit (MAX_CONCURRENT_CALLS); keep it >= concurrency so Cloud Run's limit binds first."
  type        = number
  default     = 100
}

variable "min_instances" {
  description = "Instances kept warm (>= 1: no cold start on the first call's webhook)."
  type        = number
  default     = 1

  validation {
    condition     = var.min_instances >= 1
    error_message = "min_instances must be at least 1 (a cold start would delay answering a call)."
  }
}

variable "max_instances" {
  description = "Upper bound on instances (max simultaneous calls ~= max_instances * concurrency)."
  type        = number
  default     = 10
}

variable "env" {
  description = "Extra non-secret environment variables (AGENT_VOICE, AGENT_GREETING, ...); their values are stored in Terraform state."
  type        = map(string)
  default     = {}

  validation {
    condition = length(setintersection(keys(var.env), [
      "GEMINI_API_KEY", "TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "DATABASE_URL", "API_TOKEN",
      "METRICS_TOKEN", "PORT",
    ])) == 0
    error_message = "Secrets go in secret_ids (their values never enter state), and Cloud Run sets PORT."
  }
}

variable "deletion_protection" {
  description = "Refuse `terraform destroy` of the service."
  type        = bool
  default     = true
}
