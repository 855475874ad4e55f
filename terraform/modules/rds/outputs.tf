output "address" {
  description = "Hostname of the PostgreSQL instance."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "Port of the PostgreSQL instance."
  value       = aws_db_instance.this.port
}

output "master_user_secret_arn" {
  description = "Secrets Manager ARN of the RDS-managed master credentials (used once to create the application roles)."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "app_secret_arns" {
  description = "Secrets Manager ARN per application database, keyed by database name."
  value       = { for db, secret in aws_secretsmanager_secret.app : db => secret.arn }
}

output "app_secret_names" {
  description = "Secrets Manager name per application database, keyed by database name."
  value       = { for db, secret in aws_secretsmanager_secret.app : db => secret.name }
}
