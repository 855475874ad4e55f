variable "name" {
  type        = string
  description = "Identifier prefix of the database instance, e.g. \"ctloop-prod\"."
}

variable "vpc_id" {
  type        = string
  description = "VPC of the database."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets for the DB subnet group (at least two zones)."
}

variable "allowed_security_group_ids" {
  type        = list(string)
  description = "Security groups whose members may connect on 5432 (the EKS cluster security group)."
}

variable "engine_version" {
  type        = string
  description = "PostgreSQL major.minor version."
  default     = "17.6"
}

variable "parameter_group_family" {
  type        = string
  description = "DB parameter group family matching engine_version."
  default     = "postgres17"
}

variable "instance_class" {
  type        = string
  description = "DB instance class."
  default     = "db.m7g.large"
}

variable "allocated_storage_gb" {
  type        = number
  description = "Initial storage in GiB."
  default     = 50
}

variable "max_allocated_storage_gb" {
  type        = number
  description = "Storage autoscaling ceiling in GiB."
  default     = 500
}

variable "multi_az" {
  type        = bool
  description = "Run a synchronous standby in a second zone. Production sets true."
  default     = true
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse deletion of the instance. Production sets true."
  default     = true
}

variable "backup_retention_days" {
  type        = number
  description = "Days of automated backups and point-in-time recovery."
  default     = 14
}

variable "databases" {
  type        = list(string)
  description = "Application databases, each with its own login role and Secrets Manager secret (created in-cluster, see docs/deploy-aws.md)."
  default     = ["airflow", "mlflow"]
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
