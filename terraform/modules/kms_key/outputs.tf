output "key_arn" {
  description = "ARN of the KMS key."
  value       = aws_kms_key.this.arn
}

output "key_id" {
  description = "ID of the KMS key."
  value       = aws_kms_key.this.key_id
}

output "log_group_name" {
  description = "Name of the encrypted log group (null without log_group_name)."
  value       = one(aws_cloudwatch_log_group.this[*].name)
}

output "log_group_arn" {
  description = "ARN of the encrypted log group (null without log_group_name)."
  value       = one(aws_cloudwatch_log_group.this[*].arn)
}
