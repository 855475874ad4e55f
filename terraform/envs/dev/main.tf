# dev: the same building blocks as prod, sized down (single NAT, two zones, small instances,
# single-AZ database) and easier to tear down.

provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

data "aws_caller_identity" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  tags = {
    Project     = "ctloop"
    Environment = "dev"
    ManagedBy   = "terraform"
  }
}

module "network" {
  source               = "../../modules/network"
  name                 = var.name
  cluster_name         = var.name
  cidr                 = var.vpc_cidr
  azs                  = var.azs
  private_subnet_cidrs = [cidrsubnet(var.vpc_cidr, 4, 0), cidrsubnet(var.vpc_cidr, 4, 1)]
  public_subnet_cidrs  = [cidrsubnet(var.vpc_cidr, 8, 200), cidrsubnet(var.vpc_cidr, 8, 201)]
  single_nat_gateway   = true
  tags                 = local.tags
}

module "lake" {
  source          = "../../modules/lake"
  bucket_name     = "${var.name}-lake-${local.account_id}"
  log_bucket_name = "${var.name}-s3-access-logs-${local.account_id}"
  force_destroy   = true
  tags            = local.tags
}

module "eks" {
  source                 = "../../modules/eks"
  name                   = var.name
  kubernetes_version     = "1.35"
  vpc_id                 = module.network.vpc_id
  subnet_ids             = module.network.private_subnet_ids
  endpoint_public_access = length(var.admin_cidrs) > 0
  public_access_cidrs    = var.admin_cidrs
  admin_principal_arns   = var.admin_principal_arns
  cpu_instance_types     = ["m6i.large"]
  cpu_min_size           = 2
  cpu_max_size           = 4
  cpu_desired_size       = 2
  gpu_instance_types     = ["g4dn.xlarge"]
  gpu_min_size           = 0
  gpu_max_size           = 1
  gpu_desired_size       = 0
  tags                   = local.tags
}

module "msk" {
  source                     = "../../modules/msk"
  name                       = var.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = [module.eks.cluster_security_group_id]
  broker_instance_type       = "kafka.t3.small"
  broker_count               = 2
  broker_volume_size_gb      = 20
  default_replication_factor = 2
  min_insync_replicas        = 1
  auto_create_topics         = true
  tags                       = local.tags
}

module "rds" {
  source                     = "../../modules/rds"
  name                       = var.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = [module.eks.cluster_security_group_id]
  instance_class             = "db.t4g.medium"
  allocated_storage_gb       = 20
  max_allocated_storage_gb   = 100
  multi_az                   = false
  deletion_protection        = false
  backup_retention_days      = 7
  tags                       = local.tags
}

module "redis" {
  source                     = "../../modules/redis"
  name                       = var.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = [module.eks.cluster_security_group_id]
  node_type                  = "cache.t4g.small"
  num_cache_clusters         = 2
  tags                       = local.tags
}

module "ecr" {
  source = "../../modules/ecr"
  name   = var.name
  tags   = local.tags
}

module "workload_iam" {
  source               = "../../modules/workload_iam"
  name                 = var.name
  namespace            = var.namespace
  oidc_provider_arn    = module.eks.oidc_provider_arn
  oidc_issuer          = module.eks.oidc_issuer
  lake_bucket_arn      = module.lake.bucket_arn
  lake_prefix          = module.lake.lake_prefix
  lake_kms_key_arn     = module.lake.kms_key_arn
  msk_cluster_arn      = module.msk.cluster_arn
  msk_topic_arn_prefix = module.msk.topic_arn_prefix
  msk_group_arn_prefix = module.msk.group_arn_prefix
  tags                 = local.tags
}
