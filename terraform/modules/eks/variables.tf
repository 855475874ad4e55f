variable "name" {
  type        = string
  description = "EKS cluster name, e.g. \"ctloop-prod\"."
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version of the control plane and node groups; k8s/ manifests are validated against the same version."
  default     = "1.35"
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets for the control-plane ENIs and the nodes."
}

variable "endpoint_public_access" {
  type        = bool
  description = "Expose the Kubernetes API endpoint publicly (restricted to public_access_cidrs). Off by default: reach it from inside the VPC."
  default     = false
}

variable "public_access_cidrs" {
  type        = list(string)
  description = "CIDRs allowed to reach the public API endpoint when endpoint_public_access is true. Never 0.0.0.0/0."
  default     = []

  validation {
    condition     = !contains(var.public_access_cidrs, "0.0.0.0/0")
    error_message = "The API endpoint must not be open to 0.0.0.0/0."
  }
}

variable "admin_principal_arns" {
  type        = list(string)
  description = "IAM role or user ARNs granted cluster-admin through EKS access entries (operators, CI)."
  default     = []
}

variable "cpu_nodes" {
  type = object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
    disk_size_gb   = optional(number, 100)
  })
  description = "CPU node group (Airflow, lander, serving, Feast, MLflow, Spark jobs): instance types, autoscaling bounds, initial size (an autoscaler adjusts it afterwards) and root volume in GiB."
  default     = { instance_types = ["m6i.xlarge"], min_size = 2, max_size = 6, desired_size = 2 }
}

variable "gpu_nodes" {
  type = object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
    disk_size_gb   = optional(number, 200)
  })
  description = "Tainted GPU node group for training pods: instance types, autoscaling bounds (min 0 lets an autoscaler remove them between retrains), initial size and root volume in GiB (the job image with CUDA, TensorFlow and Spark is large)."
  default     = { instance_types = ["g5.xlarge"], min_size = 0, max_size = 2, desired_size = 1 }
}

variable "log_retention_days" {
  type        = number
  description = "Days to keep control-plane logs in CloudWatch."
  default     = 365
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
