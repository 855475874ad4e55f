# prod: three zones, one NAT gateway per zone, Multi-AZ database, deletion protection, private
# API endpoint unless admin CIDRs are given.

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
    Environment = "prod"
    ManagedBy   = "terraform"
  }
}

module "network" {
  source               = "../../modules/network"
  name                 = var.name
  cluster_name         = var.name
  cidr                 = var.vpc_cidr
  azs                  = var.azs
  private_subnet_cidrs = [for i in range(length(var.azs)) : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnet_cidrs  = [for i in range(length(var.azs)) : cidrsubnet(var.vpc_cidr, 8, 200 + i)]
  single_nat_gateway   = false
  tags                 = local.tags
}

module "lake" {
  source          = "../../modules/lake"
  bucket_name     = "${var.name}-lake-${local.account_id}"
  log_bucket_name = "${var.name}-s3-access-logs-${local.account_id}"
  force_destroy   = false
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
  cpu_instance_types     = ["m6i.xlarge", "m6a.xlarge"]
  cpu_min_size           = 3
  cpu_max_size           = 12
  cpu_desired_size       = 3
  gpu_instance_types     = ["g5.2xlarge"]
  gpu_min_size           = 0
  gpu_max_size           = 4
  gpu_desired_size       = 1
  tags                   = local.tags
}

module "msk" {
  source                     = "../../modules/msk"
  name                       = var.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = [module.eks.cluster_security_group_id]
  broker_instance_type       = "kafka.m7g.large"
  broker_count               = 3
  broker_volume_size_gb      = 500
  default_replication_factor = 3
  min_insync_replicas        = 2
  auto_create_topics         = false
  tags                       = local.tags
}

module "rds" {
  source                     = "../../modules/rds"
  name                       = var.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = [module.eks.cluster_security_group_id]
  instance_class             = "db.m7g.large"
  allocated_storage_gb       = 100
  max_allocated_storage_gb   = 1000
  multi_az                   = true
  deletion_protection        = true
  backup_retention_days      = 14
  tags                       = local.tags
}

module "redis" {
  source                     = "../../modules/redis"
  name                       = var.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = [module.eks.cluster_security_group_id]
  node_type                  = "cache.r7g.large"
  num_cache_clusters         = 3
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
