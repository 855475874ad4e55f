variable "name" {
  type        = string
  description = "Role name prefix, e.g. \"ctloop-prod\"."
}

variable "namespace" {
  type        = string
  description = "Kubernetes namespace of ctloop and Airflow (the overlay's namespace)."
}

variable "airflow_release" {
  type        = string
  description = "Helm release name of Airflow; the chart names its service accounts <release>-<component>."
  default     = "airflow"
}

variable "oidc_provider_arn" {
  type        = string
  description = "ARN of the cluster's IAM OIDC provider."
}

variable "oidc_issuer" {
  type        = string
  description = "OIDC issuer without https://."
}

variable "lake_bucket_arn" {
  type        = string
  description = "ARN of the lake bucket."
}

variable "lake_prefix" {
  type        = string
  description = "Key prefix of the lake root inside the bucket."
}

variable "lake_kms_key_arn" {
  type        = string
  description = "ARN of the KMS key encrypting the lake bucket."
}

variable "msk_cluster_arn" {
  type        = string
  description = "ARN of the MSK cluster."
}

variable "msk_topic_arn_prefix" {
  type        = string
  description = "ARN prefix of the MSK cluster's topics (ends with /)."
}

variable "msk_group_arn_prefix" {
  type        = string
  description = "ARN prefix of the MSK cluster's consumer groups (ends with /)."
}

variable "kafka_topic_patterns" {
  type        = list(string)
  description = "Topic name patterns ctloop reads and writes (event topics and prediction logs); narrow them to your pipelines."
  default     = ["*"]
}

variable "kafka_group_patterns" {
  type        = list(string)
  description = "Consumer group name patterns used by the lander and the monitoring jobs."
  default     = ["ctloop*"]
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
