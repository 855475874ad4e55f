# ElastiCache Redis: Feast's online store. TLS, AUTH token, encrypted at rest, Multi-AZ failover.

locals {
  log_group = "/aws/elasticache/${var.name}/slow-log"
}

module "kms" {
  source             = "../kms_key"
  description        = "${var.name} ElastiCache storage, AUTH secret and slow log"
  log_group_name     = local.log_group
  log_retention_days = var.log_retention_days
  tags               = var.tags
}

resource "aws_elasticache_subnet_group" "this" {
  name       = "${var.name}-redis"
  subnet_ids = var.subnet_ids
  tags       = var.tags
}

resource "aws_security_group" "redis" {
  name        = "${var.name}-redis"
  description = "Feast online store: TLS Redis from the EKS cluster only"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-redis" })
}

resource "aws_vpc_security_group_ingress_rule" "redis" {
  for_each                     = toset(var.allowed_security_group_ids)
  security_group_id            = aws_security_group.redis.id
  description                  = "Redis TLS from ${each.value}"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = each.value
}

resource "random_password" "auth" {
  length  = 48
  special = false
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id = "${var.name}-feast"
  description          = "Feast online store for ${var.name}"
  engine               = "redis"
  engine_version       = var.engine_version
  node_type            = var.node_type
  port                 = 6379
  num_cache_clusters   = var.num_cache_clusters

  subnet_group_name  = aws_elasticache_subnet_group.this.name
  security_group_ids = [aws_security_group.redis.id]

  automatic_failover_enabled = true
  multi_az_enabled           = true

  at_rest_encryption_enabled = true
  kms_key_id                 = module.kms.key_arn
  transit_encryption_enabled = true
  auth_token                 = random_password.auth.result
  auth_token_update_strategy = "ROTATE"

  auto_minor_version_upgrade = true
  snapshot_retention_limit   = var.snapshot_retention_days

  log_delivery_configuration {
    destination      = module.kms.log_group_name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "slow-log"
  }

  tags = var.tags
}

resource "aws_secretsmanager_secret" "feast_redis" {
  #checkov:skip=CKV2_AWS_57:The AUTH token is rotated with terraform (auth_token_update_strategy = ROTATE) followed by a restart of the Feast readers; no rotation Lambda is deployed.
  name                    = "${var.name}/redis/feast"
  description             = "Feast Redis connection string (host:port,ssl=true,password=...) for ${var.name}"
  kms_key_id              = module.kms.key_arn
  recovery_window_in_days = 7
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "feast_redis" {
  secret_id = aws_secretsmanager_secret.feast_redis.id
  secret_string = jsonencode({
    host              = aws_elasticache_replication_group.this.primary_endpoint_address
    port              = 6379
    password          = random_password.auth.result
    connection_string = "${aws_elasticache_replication_group.this.primary_endpoint_address}:6379,ssl=true,password=${random_password.auth.result}"
  })
}
