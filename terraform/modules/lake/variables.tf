variable "bucket_name" {
  type        = string
  description = "Globally unique name of the lake bucket, e.g. \"ctloop-prod-lake-111122223333\"."
}

variable "log_bucket_name" {
  type        = string
  description = "Globally unique name of the bucket that receives the lake's S3 server access logs."
}

variable "lake_prefix" {
  type        = string
  description = "Key prefix of the lake root inside the bucket; CTLOOP_LAKE_URI is s3://<bucket>/<lake_prefix>."
  default     = "lake"
}

variable "raw_transition_days" {
  type        = number
  description = "Days after which objects under raw/ and _dlq/ move to STANDARD_IA."
  default     = 30
}

variable "raw_glacier_days" {
  type        = number
  description = "Days after which objects under raw/ and _dlq/ move to GLACIER_IR (must exceed raw_transition_days)."
  default     = 180
}

variable "noncurrent_version_expiration_days" {
  type        = number
  description = "Days after which non-current object versions are deleted."
  default     = 90
}

variable "access_log_retention_days" {
  type        = number
  description = "Days to keep S3 server access logs."
  default     = 365
}

variable "force_destroy" {
  type        = bool
  description = "Allow terraform destroy to delete a non-empty bucket (dev only)."
  default     = false
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
