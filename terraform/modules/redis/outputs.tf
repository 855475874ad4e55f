output "primary_endpoint" {
  description = "host:port of the primary, the non-secret part of CTLOOP_FEAST_REDIS."
  value       = "${aws_elasticache_replication_group.this.primary_endpoint_address}:6379"
}

output "connection_secret_arn" {
  description = "Secrets Manager ARN holding the full Feast connection string (with the AUTH token)."
  value       = aws_secretsmanager_secret.feast_redis.arn
}

output "connection_secret_name" {
  description = "Secrets Manager name holding the full Feast connection string."
  value       = aws_secretsmanager_secret.feast_redis.name
}
