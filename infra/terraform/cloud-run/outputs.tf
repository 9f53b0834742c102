output "service_url" {
  description = "The Cloud Run URL of the service."
  value       = google_cloud_run_v2_service.agent.uri
}

output "public_url" {
  description = "PUBLIC_URL given to the server (what Twilio must call)."
  value       = local.public_url
}

output "twilio_voice_webhook" {
  description = "Set this as the phone number's \"A call comes in\" webhook (HTTP POST)."
  value       = "${local.public_url}/twilio/voice"
}

output "service_account_email" {
  description = "Identity the service runs as (secretAccessor on the listed secrets; cloudsql.client with cloud_sql_instances)."
  value       = google_service_account.agent.email
}
