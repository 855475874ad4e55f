variable "region" {
  type        = string
  description = "AWS region of the environment."
  default     = "eu-west-1"
}

variable "name" {
  type        = string
  description = "Environment name prefix for every resource."
  default     = "ctloop-prod"
}

variable "namespace" {
  type        = string
  description = "Kubernetes namespace of the prod overlay (k8s/overlays/prod)."
  default     = "ctloop"
}

variable "azs" {
  type        = list(string)
  description = "Availability zones used by the environment."
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
}

variable "vpc_cidr" {
  type        = string
  description = "CIDR of the environment's VPC."
  default     = "10.10.0.0/16"
}

variable "admin_principal_arns" {
  type        = list(string)
  description = "IAM principals (operators, CI) given cluster-admin on the EKS cluster."
  default     = []
}

variable "admin_cidrs" {
  type        = list(string)
  description = "CIDRs allowed to reach the prod cluster's public API endpoint (e.g. an office or VPN egress). Empty keeps the endpoint private."
  default     = []
}
