variable "name" {
  type        = string
  description = "EKS cluster name, e.g. \"ctloop-prod\"."
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version of the control plane and node groups; k8s/ manifests are validated against the same version."
  default     = "1.35"
}

variable "vpc_id" {
  type        = string
  description = "VPC the cluster runs in."
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

variable "cpu_instance_types" {
  type        = list(string)
  description = "Instance types of the CPU node group (Airflow, lander, serving, Feast, MLflow, Spark jobs)."
  default     = ["m6i.xlarge"]
}

variable "cpu_min_size" {
  type        = number
  description = "Minimum number of CPU nodes."
  default     = 2
}

variable "cpu_max_size" {
  type        = number
  description = "Maximum number of CPU nodes."
  default     = 6
}

variable "cpu_desired_size" {
  type        = number
  description = "Initial number of CPU nodes (an autoscaler adjusts it afterwards)."
  default     = 2
}

variable "gpu_instance_types" {
  type        = list(string)
  description = "Instance types of the GPU node group that runs training pods."
  default     = ["g5.xlarge"]
}

variable "gpu_min_size" {
  type        = number
  description = "Minimum number of GPU nodes (0 lets an autoscaler remove them between retrains)."
  default     = 0
}

variable "gpu_max_size" {
  type        = number
  description = "Maximum number of GPU nodes."
  default     = 2
}

variable "gpu_desired_size" {
  type        = number
  description = "Initial number of GPU nodes."
  default     = 1
}

variable "node_disk_size_gb" {
  type        = number
  description = "Root volume size of CPU nodes in GiB."
  default     = 100
}

variable "gpu_node_disk_size_gb" {
  type        = number
  description = "Root volume size of GPU nodes in GiB (the job image with CUDA, TensorFlow and Spark is large)."
  default     = 200
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
