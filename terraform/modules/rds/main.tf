# One PostgreSQL instance holding the Airflow metadata database and the MLflow backend store.
# The master password is managed by RDS in Secrets Manager; each application gets its own role
# whose generated password is stored in its own secret and reaches pods as a Kubernetes Secret.

data "aws_partition" "current" {}

locals {
  partition = data.aws_partition.current.partition
}

module "kms" {
  source      = "../kms_key"
  description = "${var.name} RDS storage, Performance Insights and secrets"
  tags        = var.tags
}

resource "aws_db_subnet_group" "this" {
  name       = "${var.name}-postgres"
  subnet_ids = var.subnet_ids
  tags       = var.tags
}

resource "aws_security_group" "rds" {
  name        = "${var.name}-postgres"
  description = "PostgreSQL for Airflow and MLflow: only from the EKS cluster"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-postgres" })
}

resource "aws_vpc_security_group_ingress_rule" "rds" {
  for_each                     = toset(var.allowed_security_group_ids)
  security_group_id            = aws_security_group.rds.id
  description                  = "PostgreSQL from ${each.value}"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = each.value
}

resource "aws_db_parameter_group" "this" {
  name   = "${var.name}-postgres"
  family = var.parameter_group_family

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  tags = var.tags
}

data "aws_iam_policy_document" "monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  name               = "${var.name}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.monitoring_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "this" {
  #checkov:skip=CKV_AWS_157:Multi-AZ is an input (var.multi_az): dev runs single-AZ to save cost, prod sets it true and tests/infra asserts that.
  #checkov:skip=CKV_AWS_293:Deletion protection is an input (var.deletion_protection, default true): dev turns it off so the environment can be torn down; prod keeps it on and tests/infra asserts that.
  identifier     = "${var.name}-postgres"
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class

  allocated_storage     = var.allocated_storage_gb
  max_allocated_storage = var.max_allocated_storage_gb
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = module.kms.key_arn

  db_name                       = "postgres"
  username                      = "ctloop_admin"
  manage_master_user_password   = true
  master_user_secret_kms_key_id = module.kms.key_arn

  db_subnet_group_name                = aws_db_subnet_group.this.name
  vpc_security_group_ids              = [aws_security_group.rds.id]
  parameter_group_name                = aws_db_parameter_group.this.name
  publicly_accessible                 = false
  multi_az                            = var.multi_az
  iam_database_authentication_enabled = true

  backup_retention_period   = var.backup_retention_days
  copy_tags_to_snapshot     = true
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-postgres-final"

  auto_minor_version_upgrade      = true
  enabled_cloudwatch_logs_exports = ["postgresql", "upgrade"]
  monitoring_interval             = 60
  monitoring_role_arn             = aws_iam_role.monitoring.arn

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = module.kms.key_arn
  performance_insights_retention_period = 7

  tags = var.tags
}

# --- application logins ----------------------------------------------------------------------

resource "random_password" "app" {
  for_each         = toset(var.databases)
  length           = 32
  special          = true
  override_special = "-_"
}

resource "aws_secretsmanager_secret" "app" {
  #checkov:skip=CKV2_AWS_57:Application DB passwords are rotated by re-running terraform (taint random_password) and the in-cluster ALTER ROLE step in docs/deploy-aws.md; no rotation Lambda is deployed.
  for_each                = toset(var.databases)
  name                    = "${var.name}/postgres/${each.value}"
  description             = "Login for the ${each.value} database on ${var.name}-postgres"
  kms_key_id              = module.kms.key_arn
  recovery_window_in_days = 7
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "app" {
  for_each  = toset(var.databases)
  secret_id = aws_secretsmanager_secret.app[each.value].id
  secret_string = jsonencode({
    engine   = "postgres"
    host     = aws_db_instance.this.address
    port     = aws_db_instance.this.port
    dbname   = each.value
    username = each.value
    password = random_password.app[each.value].result
    # The SQLAlchemy URL Airflow and MLflow read from their Kubernetes Secret.
    uri = "postgresql://${each.value}:${random_password.app[each.value].result}@${aws_db_instance.this.address}:${aws_db_instance.this.port}/${each.value}?sslmode=require"
  })
}
