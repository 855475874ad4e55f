# prod: three zones, one NAT gateway per zone, Multi-AZ database, deletion protection, private
# API endpoint unless admin CIDRs are given.

provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

locals {
  tags = {
    Project     = "ctloop"
    Environment = "prod"
    ManagedBy   = "terraform"
  }
}

module "platform" {
  source               = "../../modules/platform"
  name                 = var.name
  namespace            = var.namespace
  azs                  = var.azs
  vpc_cidr             = var.vpc_cidr
  admin_principal_arns = var.admin_principal_arns
  admin_cidrs          = var.admin_cidrs
  single_nat_gateway   = false
  lake_force_destroy   = false

  cpu_nodes = { instance_types = ["m6i.xlarge", "m6a.xlarge"], min_size = 3, max_size = 12, desired_size = 3 }
  gpu_nodes = { instance_types = ["g5.2xlarge"], min_size = 0, max_size = 4, desired_size = 1 }

  msk = {
    broker_instance_type       = "kafka.m7g.large"
    broker_count               = 3
    broker_volume_size_gb      = 500
    default_replication_factor = 3
    min_insync_replicas        = 2
    auto_create_topics         = false
  }

  rds = {
    instance_class           = "db.m7g.large"
    allocated_storage_gb     = 100
    max_allocated_storage_gb = 1000
    multi_az                 = true
    deletion_protection      = true
    backup_retention_days    = 14
  }

  redis = { node_type = "cache.r7g.large", num_cache_clusters = 3 }

  tags = local.tags
}
