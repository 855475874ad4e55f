# MSK: private brokers, TLS everywhere, IAM authentication (kafka-python's AWS_MSK_IAM mechanism
# with the pod's IRSA credentials), encrypted storage and broker logs.

locals {
  log_group = "/aws/msk/${var.name}"
}

module "kms" {
  source             = "../kms_key"
  description        = "${var.name} MSK storage and broker logs"
  log_group_name     = local.log_group
  log_retention_days = var.log_retention_days
  tags               = var.tags
}

resource "aws_security_group" "msk" {
  name        = "${var.name}-msk"
  description = "MSK brokers: IAM-authenticated TLS from the EKS cluster only"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-msk" })
}

resource "aws_vpc_security_group_ingress_rule" "msk_iam" {
  for_each                     = toset(var.allowed_security_group_ids)
  security_group_id            = aws_security_group.msk.id
  description                  = "Kafka over TLS with IAM auth from ${each.value}"
  ip_protocol                  = "tcp"
  from_port                    = 9098
  to_port                      = 9098
  referenced_security_group_id = each.value
}

resource "aws_msk_configuration" "this" {
  name           = "${var.name}-config"
  kafka_versions = [var.kafka_version]
  server_properties = join("\n", [
    "auto.create.topics.enable=${var.auto_create_topics}",
    "default.replication.factor=${var.default_replication_factor}",
    "min.insync.replicas=${var.min_insync_replicas}",
    "num.partitions=6",
    "log.retention.hours=${var.log_retention_hours}",
    "unclean.leader.election.enable=false",
  ])
}

resource "aws_msk_cluster" "this" {
  cluster_name           = var.name
  kafka_version          = var.kafka_version
  number_of_broker_nodes = var.broker_count

  broker_node_group_info {
    instance_type   = var.broker_instance_type
    client_subnets  = var.subnet_ids
    security_groups = [aws_security_group.msk.id]

    storage_info {
      ebs_storage_info {
        volume_size = var.broker_volume_size_gb
      }
    }

    connectivity_info {
      public_access {
        type = "DISABLED"
      }
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this.arn
    revision = aws_msk_configuration.this.latest_revision
  }

  client_authentication {
    unauthenticated = false
    sasl {
      iam = true
    }
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = module.kms.key_arn
    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = module.kms.log_group_name
      }
    }
  }

  enhanced_monitoring = "PER_TOPIC_PER_BROKER"

  open_monitoring {
    prometheus {
      jmx_exporter {
        enabled_in_broker = true
      }
      node_exporter {
        enabled_in_broker = true
      }
    }
  }

  tags = var.tags
}
