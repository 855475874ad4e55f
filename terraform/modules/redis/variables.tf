variable "name" {
  type        = string
  description = "Replication group id prefix, e.g. \"ctloop-prod\"."
}

variable "vpc_id" {
  type        = string
  description = "VPC of the cache."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets for the cache subnet group."
}

variable "allowed_security_group_ids" {
  type        = list(string)
  description = "Security groups whose members may connect on 6379 (the EKS cluster security group)."
}

variable "engine_version" {
  type        = string
  description = "Redis OSS engine version."
  default     = "7.1"
}

variable "node_type" {
  type        = string
  description = "Cache node type."
  default     = "cache.r7g.large"
}

variable "num_cache_clusters" {
  type        = number
  description = "Primary plus replicas; at least 2 for automatic failover across zones."
  default     = 2

  validation {
    condition     = var.num_cache_clusters >= 2
    error_message = "At least two nodes are needed for Multi-AZ automatic failover."
  }
}

variable "snapshot_retention_days" {
  type        = number
  description = "Days to keep daily snapshots (the online store can be rematerialized from the offline store)."
  default     = 3
}

variable "log_retention_days" {
  type        = number
  description = "Days to keep the slow log in CloudWatch."
  default     = 365
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
