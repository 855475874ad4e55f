# The whole ctloop platform on AWS: every building block, wired together once. The environments
# (terraform/envs/{dev,prod}) call this module with their sizes and safety switches and add only
# the provider and the remote state backend.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.region
}

module "network" {
  source               = "../network"
  name                 = var.name
  cluster_name         = var.name
  cidr                 = var.vpc_cidr
  azs                  = var.azs
  private_subnet_cidrs = [for i in range(length(var.azs)) : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnet_cidrs  = [for i in range(length(var.azs)) : cidrsubnet(var.vpc_cidr, 8, 200 + i)]
  single_nat_gateway   = var.single_nat_gateway
  tags                 = var.tags
}

module "lake" {
  source          = "../lake"
  bucket_name     = "${var.name}-lake-${local.account_id}"
  log_bucket_name = "${var.name}-s3-access-logs-${local.account_id}"
  force_destroy   = var.lake_force_destroy
  tags            = var.tags
}

module "eks" {
  source                 = "../eks"
  name                   = var.name
  kubernetes_version     = var.kubernetes_version
  subnet_ids             = module.network.private_subnet_ids
  endpoint_public_access = length(var.admin_cidrs) > 0
  public_access_cidrs    = var.admin_cidrs
  admin_principal_arns   = var.admin_principal_arns
  cpu_nodes              = var.cpu_nodes
  gpu_nodes              = var.gpu_nodes
  tags                   = var.tags
}

module "msk" {
  source                     = "../msk"
  name                       = var.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = [module.eks.cluster_security_group_id]
  broker_instance_type       = var.msk.broker_instance_type
  broker_count               = var.msk.broker_count
  broker_volume_size_gb      = var.msk.broker_volume_size_gb
  default_replication_factor = var.msk.default_replication_factor
  min_insync_replicas        = var.msk.min_insync_replicas
  auto_create_topics         = var.msk.auto_create_topics
  tags                       = var.tags
}

module "rds" {
  source                     = "../rds"
  name                       = var.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = [module.eks.cluster_security_group_id]
  instance_class             = var.rds.instance_class
  allocated_storage_gb       = var.rds.allocated_storage_gb
  max_allocated_storage_gb   = var.rds.max_allocated_storage_gb
  multi_az                   = var.rds.multi_az
  deletion_protection        = var.rds.deletion_protection
  backup_retention_days      = var.rds.backup_retention_days
  tags                       = var.tags
}

module "redis" {
  source                     = "../redis"
  name                       = var.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = [module.eks.cluster_security_group_id]
  node_type                  = var.redis.node_type
  num_cache_clusters         = var.redis.num_cache_clusters
  tags                       = var.tags
}

module "ecr" {
  source = "../ecr"
  name   = var.name
  tags   = var.tags
}

module "workload_iam" {
  source               = "../workload_iam"
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
  tags                 = var.tags
}
