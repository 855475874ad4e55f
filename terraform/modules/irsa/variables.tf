variable "name" {
  type        = string
  description = "IAM role name, e.g. \"ctloop-prod-lander\"."
}

variable "oidc_provider_arn" {
  type        = string
  description = "ARN of the cluster's IAM OIDC provider."
}

variable "oidc_issuer" {
  type        = string
  description = "OIDC issuer without https://, e.g. \"oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE\"."
}

variable "namespace" {
  type        = string
  description = "Kubernetes namespace of the service accounts."
}

variable "service_accounts" {
  type        = list(string)
  description = "Service account names (in var.namespace) allowed to assume the role; nothing else can."

  validation {
    condition     = length(var.service_accounts) > 0 && alltrue([for sa in var.service_accounts : !strcontains(sa, "*")])
    error_message = "Name at least one service account, without wildcards."
  }
}

variable "policy_json" {
  type        = string
  description = "IAM policy document (JSON) with the role's permissions, scoped to the exact resources it needs."
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
