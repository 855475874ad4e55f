output "bucket_name" {
  description = "Name of the lake bucket."
  value       = aws_s3_bucket.lake.id
}

output "bucket_arn" {
  description = "ARN of the lake bucket."
  value       = aws_s3_bucket.lake.arn
}

output "lake_uri" {
  description = "Lake root as ctloop expects it in CTLOOP_LAKE_URI."
  value       = "s3://${aws_s3_bucket.lake.id}/${var.lake_prefix}"
}

output "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the lake; readers and writers need kms:Decrypt / kms:GenerateDataKey on it."
  value       = module.kms.key_arn
}

output "log_bucket_name" {
  description = "Name of the bucket holding S3 server access logs."
  value       = aws_s3_bucket.logs.id
}

output "lake_prefix" {
  description = "Key prefix of the lake root inside the bucket."
  value       = var.lake_prefix
}
