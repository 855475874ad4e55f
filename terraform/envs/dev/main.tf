# dev: the same platform as prod, sized down (single NAT, two zones, small instances, single-AZ
# database) and easier to tear down.

provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

locals {
  tags = {
    Project     = "ctloop"
    Environment = "dev"
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
  single_nat_gateway   = true
  lake_force_destroy   = true

  cpu_nodes = { instance_types = ["m6i.large"], min_size = 2, max_size = 4, desired_size = 2 }
  gpu_nodes = { instance_types = ["g4dn.xlarge"], min_size = 0, max_size = 1, desired_size = 0 }

  msk = {
    broker_instance_type       = "kafka.t3.small"
    broker_count               = 2
    broker_volume_size_gb      = 20
    default_replication_factor = 2
    min_insync_replicas        = 1
    auto_create_topics         = true
  }

  rds = {
    instance_class           = "db.t4g.medium"
    allocated_storage_gb     = 20
    max_allocated_storage_gb = 100
    multi_az                 = false
    deletion_protection      = false
    backup_retention_days    = 7
  }

  redis = { node_type = "cache.t4g.small", num_cache_clusters = 2 }

  tags = local.tags
}
