# A customer-managed KMS key, rotated yearly, that the account administers. With log_group_name
# set it also creates that CloudWatch log group, encrypted with the key, and lets CloudWatch Logs
# use the key for that one log group only. The calling module uses the key for its own data too
# (EKS secrets, MSK and ElastiCache storage, RDS storage and secrets, ECR images, the lake).

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.region
  with_logs  = var.log_group_name != null

  account_administers = {
    Sid       = "AccountAdministers"
    Effect    = "Allow"
    Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
    Action    = "kms:*"
    Resource  = "*"
  }
  cloudwatch_logs_use = {
    Sid       = "CloudWatchLogsUse"
    Effect    = "Allow"
    Principal = { Service = "logs.${local.region}.amazonaws.com" }
    Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    Resource  = "*"
    Condition = {
      ArnLike = {
        "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${coalesce(var.log_group_name, "-")}"
      }
    }
  }
}

resource "aws_kms_key" "this" {
  description         = var.description
  enable_key_rotation = true
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = concat([local.account_administers], local.with_logs ? [local.cloudwatch_logs_use] : [])
  })
  tags = var.tags
}

resource "aws_cloudwatch_log_group" "this" {
  count             = local.with_logs ? 1 : 0
  name              = var.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
  tags              = var.tags
}
