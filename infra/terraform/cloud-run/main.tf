# Cloud Run (v2) deployment of `voice-agent serve`, ready for hour-long Twilio Media Stream
# WebSockets. Secrets (credentials, DATABASE_URL, API_TOKEN) are referenced by id from Secret
# Manager; their values never enter Terraform state (create them with gcloud, see README
# "Deploying"). Call records go to Postgres (DATABASE_URL), shared by every instance.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  # Cloud Run's deterministic URL: https://SERVICE-PROJECT_NUMBER.REGION.run.app
  default_url = "https://${var.service_name}-${data.google_project.this.number}.${var.region}.run.app"
  public_url  = var.public_url != "" ? trimsuffix(var.public_url, "/") : local.default_url

  env = merge(
    {
      PUBLIC_URL = local.public_url
      # Fail fast at startup when credentials are missing instead of serving the simulator.
      LIVE_SIMULATOR       = "off"
      LOG_FORMAT           = "json"
      MAX_CONCURRENT_CALLS = tostring(var.max_concurrent_calls)
      MAX_CALL_SECONDS     = "3600"
      # Cloud Run sends SIGKILL 10 s after SIGTERM, whatever DRAIN_TIMEOUT_S says: drain
      # within that window (see README "Deploying" for what this means for calls).
      DRAIN_TIMEOUT_S = "8"
      # Only Google's front end reaches the container: believe its X-Forwarded-For, so that
      # per-client limits apply to callers.
      FORWARDED_ALLOW_IPS = "*"
      # /metrics off the public URL: Cloud Run routes only container_port (8080), so this
      # port is reachable from inside the instance only (a Managed Prometheus sidecar). To
      # scrape over the public URL instead, pass env = { METRICS_PORT = "" } and a
      # METRICS_TOKEN in secret_ids.
      METRICS_PORT = "9090"
      # Call records the database refuses wait in /tmp (writable; in memory on Cloud Run)
      # until it takes them again. Each instance's host is "localhost": INSTANCE_ID defaults
      # to a name unique to the process.
      RECORDS_SPOOL_DIR    = "/tmp/voice-agent-spool"
      RECORDS_SPOOL_MAX_MB = "32"
    },
    var.env,
  )
}

# A dedicated identity: it can read the listed secrets (and connect to the listed Cloud SQL
# instances) and nothing else.
resource "google_service_account" "agent" {
  project      = var.project_id
  account_id   = substr("${var.service_name}-run", 0, 30)
  display_name = "Voice agent (Cloud Run)"
}

resource "google_secret_manager_secret_iam_member" "agent" {
  for_each = var.secret_ids

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.agent.email}"
}

# Cloud SQL connections (the /cloudsql socket below) need this project-level role.
resource "google_project_iam_member" "cloudsql_client" {
  count = length(var.cloud_sql_instances) > 0 ? 1 : 0

  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = "serviceAccount:${google_service_account.agent.email}"
}

resource "google_cloud_run_v2_service" "agent" {
  project  = var.project_id
  name     = var.service_name
  location = var.region

  # Twilio must reach the webhook and the Media Stream from the internet.
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection

  template {
    service_account = google_service_account.agent.email

    # A call's WebSocket is one request: allow the longest call (MAX_CALL_SECONDS = 3600).
    timeout = "3600s"

    # Best effort: keeps a caller's webhook POST and its Media Stream on the same instance.
    session_affinity = true

    # Measured (README "Capacity", bench/capacity.py): ~130 calls per core on the 2-core
    # development VM at its slowest this month (7.7 ms CPU per call-second at 100 calls, all
    # features on), ~0.5 MiB per call + ~135 MiB base. On 1 vCPU we allow 90 concurrent
    # requests (each call = one WebSocket, plus a short webhook POST): the sizing rule, 70 % of
    # a core, leaving headroom for CPU spikes (barge-ins, reconnects, GC). Memory at 90 calls:
    # ~180 MiB of 512 MiB. Re-measure on
    # your hardware and scale this with var.cpu.
    max_instance_request_concurrency = var.concurrency

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    # Cloud SQL Auth Proxy sockets at /cloudsql/PROJECT:REGION:INSTANCE (see DATABASE_URL).
    dynamic "volumes" {
      for_each = length(var.cloud_sql_instances) > 0 ? [1] : []
      content {
        name = "cloudsql"
        cloud_sql_instance {
          instances = var.cloud_sql_instances
        }
      }
    }

    containers {
      image = var.image

      # Cloud Run sets PORT from this (PORT itself is reserved and must not be set below).
      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        # CPU always allocated: audio keeps flowing on open WebSockets between requests, so
        # no throttling outside request processing.
        cpu_idle          = false
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.env
        content {
          name  = env.key
          value = env.value
        }
      }

      # Secrets: references only (secret id + version), resolved by Cloud Run at start. This
      # includes DATABASE_URL (the Postgres URL carries a password) and API_TOKEN.
      dynamic "env" {
        for_each = var.secret_ids
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      dynamic "volume_mounts" {
        for_each = length(var.cloud_sql_instances) > 0 ? [1] : []
        content {
          name       = "cloudsql"
          mount_path = "/cloudsql"
        }
      }

      startup_probe {
        http_get {
          path = "/healthz"
          port = 8080
        }
        initial_delay_seconds = 0
        period_seconds        = 2
        timeout_seconds       = 2
        failure_threshold     = 30
      }

      # /healthz, not /readyz: a full or draining instance is alive and must not be restarted
      # (that would cut its calls). Cloud Run's load balancing handles "full" via concurrency.
      liveness_probe {
        http_get {
          path = "/healthz"
          port = 8080
        }
        period_seconds    = 10
        timeout_seconds   = 3
        failure_threshold = 3
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  depends_on = [
    google_secret_manager_secret_iam_member.agent,
    google_project_iam_member.cloudsql_client,
  ]
}

# Public ingress on purpose: Twilio cannot present Google credentials. Authentication is the
# X-Twilio-Signature check the server performs on every webhook and WebSocket upgrade (enabled
# by TWILIO_AUTH_TOKEN + PUBLIC_URL); unsigned requests are rejected.
resource "google_cloud_run_v2_service_iam_member" "public" {
  project  = var.project_id
  location = google_cloud_run_v2_service.agent.location
  name     = google_cloud_run_v2_service.agent.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
