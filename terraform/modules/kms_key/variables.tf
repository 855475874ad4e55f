variable "description" {
  type        = string
  description = "Description of the KMS key: what it encrypts."
}

variable "log_group_name" {
  type        = string
  description = "Name of a CloudWatch log group to create, encrypted with the key; CloudWatch Logs may use the key for it alone. Null: no log group."
  default     = null
}

variable "log_retention_days" {
  type        = number
  description = "Days to keep the log group's events; at least a year, for audit (checkov CKV_AWS_338)."
  default     = 365

  validation {
    condition     = var.log_retention_days >= 365
    error_message = "Keep logs for at least 365 days."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
