variable "name" {
  type        = string
  description = "MSK cluster name, e.g. \"ctloop-prod\"."
}

variable "kafka_version" {
  type        = string
  description = "Apache Kafka version of the MSK cluster."
  default     = "3.9.x"
}

variable "vpc_id" {
  type        = string
  description = "VPC of the brokers."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets for the brokers, one per availability zone."
}

variable "allowed_security_group_ids" {
  type        = list(string)
  description = "Security groups whose members may connect to the brokers (the EKS cluster security group)."
}

variable "broker_instance_type" {
  type        = string
  description = "Broker instance type."
  default     = "kafka.m7g.large"
}

variable "broker_count" {
  type        = number
  description = "Number of brokers; a multiple of the number of subnets."
  default     = 3
}

variable "broker_volume_size_gb" {
  type        = number
  description = "EBS storage per broker in GiB."
  default     = 100
}

variable "default_replication_factor" {
  type        = number
  description = "Replication factor for topics created without one."
  default     = 3
}

variable "min_insync_replicas" {
  type        = number
  description = "Minimum in-sync replicas for acks=all writes (the lander and producers use acks=all)."
  default     = 2
}

variable "auto_create_topics" {
  type        = bool
  description = "Let clients create topics on first use. Off in production, where topics are created explicitly."
  default     = false
}

variable "log_retention_hours" {
  type        = number
  description = "Broker-side topic retention in hours: how far back raw events can be replayed into the lake."
  default     = 168
}

variable "log_retention_days" {
  type        = number
  description = "Days to keep broker logs in CloudWatch."
  default     = 365
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
