variable "name" {
  type        = string
  description = "Environment name prefix for every resource, e.g. \"ctloop-prod\"."
}

variable "namespace" {
  type        = string
  description = "Kubernetes namespace of the environment's overlay (k8s/overlays/<env>); IRSA trusts its service accounts."
}

variable "azs" {
  type        = list(string)
  description = "Availability zones; one private and one public subnet each (and one NAT gateway each unless single_nat_gateway)."
}

variable "vpc_cidr" {
  type        = string
  description = "CIDR of the VPC; the subnets are carved from it (/20 private, /24 public)."
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway for all zones (cheaper, dev) instead of one per zone (prod)."
  default     = false
}

variable "lake_force_destroy" {
  type        = bool
  description = "Allow terraform destroy to delete the non-empty lake and access-log buckets (dev only)."
  default     = false
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version of the EKS control plane (kept equal to tests/infra's KUBERNETES_VERSION)."
  default     = "1.35"
}

variable "admin_principal_arns" {
  type        = list(string)
  description = "IAM principals (operators, CI) given cluster-admin on the EKS cluster."
  default     = []
}

variable "admin_cidrs" {
  type        = list(string)
  description = "CIDRs allowed to reach the cluster's public API endpoint (e.g. an office or VPN egress). Empty keeps the endpoint private."
  default     = []
}

variable "cpu_nodes" {
  type = object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
    disk_size_gb   = optional(number) # null: the eks module's default (100)
  })
  description = "CPU node group (Airflow, lander, serving, Feast, MLflow, Spark): instance types, autoscaling bounds, optional root volume in GiB."
}

variable "gpu_nodes" {
  type = object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
    disk_size_gb   = optional(number) # null: the eks module's default (200)
  })
  description = "Tainted GPU node group for training pods: instance types, autoscaling bounds (min 0 lets it scale to zero), optional root volume in GiB."
}

variable "msk" {
  type = object({
    broker_instance_type       = string
    broker_count               = number
    broker_volume_size_gb      = number
    default_replication_factor = number
    min_insync_replicas        = number
    auto_create_topics         = bool
  })
  description = "MSK sizing and durability: broker type, count and volume, replication factor, min in-sync replicas, topic auto-creation."
}

variable "rds" {
  type = object({
    instance_class           = string
    allocated_storage_gb     = number
    max_allocated_storage_gb = number
    multi_az                 = bool
    deletion_protection      = bool
    backup_retention_days    = number
  })
  description = "PostgreSQL sizing and safety switches: instance class, storage bounds, Multi-AZ, deletion protection, backup retention."
}

variable "redis" {
  type = object({
    node_type          = string
    num_cache_clusters = number
  })
  description = "Feast Redis sizing: node type and number of cache clusters (at least 2 for Multi-AZ failover)."
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource (the environments also set them as provider default tags)."
  default     = {}
}
