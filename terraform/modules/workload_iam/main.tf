# One IRSA role per workload, each limited to the prefixes, topics and keys that workload touches.
#
#   workload          service account(s)             S3 (lake bucket)                       Kafka
#   lander            ctloop-lander                  rw <lake>/raw/, <lake>/_dlq/            read events
#   job               ctloop-job                     rw <lake>/, feast/                      read + write
#   serving           ctloop-serving                 r  feast/ (registry)                    write predictions
#   feast             ctloop-feast                   r  feast/                               -
#   mlflow            ctloop-mlflow                  rw mlflow-artifacts/                    -
#   airflow           <release>-scheduler, -worker,  rw airflow-logs/ (remote task logs)     -
#                     -triggerer, -api-server, -dag-processor
# The blue-green deployer only talks to the Kubernetes API and has no AWS role.

locals {
  kafka_topics = [for t in var.kafka_topic_patterns : "${var.msk_topic_arn_prefix}${t}"]
  kafka_groups = [for g in var.kafka_group_patterns : "${var.msk_group_arn_prefix}${g}"]

  airflow_service_accounts = [
    for component in ["scheduler", "worker", "triggerer", "api-server", "dag-processor"] :
    "${var.airflow_release}-${component}"
  ]

  # What each workload may do (the table above). Every workload gets the lake key; Kafka access
  # adds the connect statement plus the shared read/write statements below. S3 access is limited
  # to the listed key prefixes of the lake bucket: object_actions on <prefix>*, and list_actions
  # (ListBucket, when not empty) with s3:prefix restricted to the same prefixes.
  workloads = {
    lander = {
      service_accounts = ["ctloop-lander"]
      kafka            = ["read"]
      sid              = "RawAndDeadLetters"
      prefixes         = ["${var.lake_prefix}/raw/", "${var.lake_prefix}/_dlq/"]
      object_actions   = ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"]
      list_actions     = ["s3:ListBucket"]
    }
    # Spark clean/features, Feast materialize, training, evaluation, monitoring.
    job = {
      service_accounts = ["ctloop-job"]
      kafka            = ["read", "write"]
      sid              = "LakeAndFeast"
      prefixes         = ["${var.lake_prefix}/", "feast/"]
      object_actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
      list_actions     = ["s3:ListBucket", "s3:GetBucketLocation"]
    }
    # Reads the Feast registry by key; never lists.
    serving = {
      service_accounts = ["ctloop-serving"]
      kafka            = ["write"]
      sid              = "FeastRegistry"
      prefixes         = ["feast/"]
      object_actions   = ["s3:GetObject"]
      list_actions     = []
    }
    feast = {
      service_accounts = ["ctloop-feast"]
      kafka            = []
      sid              = "FeastRegistry"
      prefixes         = ["feast/"]
      object_actions   = ["s3:GetObject"]
      list_actions     = ["s3:ListBucket"]
    }
    # MLflow serves artifacts to clients through its proxy, so only it touches the bucket.
    mlflow = {
      service_accounts = ["ctloop-mlflow"]
      kafka            = []
      sid              = "Artifacts"
      prefixes         = ["mlflow-artifacts/"]
      object_actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
      list_actions     = ["s3:ListBucket"]
    }
    # Remote task logs.
    airflow = {
      service_accounts = local.airflow_service_accounts
      kafka            = []
      sid              = "TaskLogs"
      prefixes         = ["airflow-logs/"]
      object_actions   = ["s3:GetObject", "s3:PutObject"]
      list_actions     = ["s3:ListBucket"]
    }
  }

  kafka_documents = {
    read  = data.aws_iam_policy_document.kafka_read.json
    write = data.aws_iam_policy_document.kafka_write.json
  }
}

# --- reusable statements ---------------------------------------------------------------------

data "aws_iam_policy_document" "kms_lake" {
  statement {
    sid       = "LakeKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.lake_kms_key_arn]
  }
}

data "aws_iam_policy_document" "kafka_connect" {
  statement {
    sid       = "KafkaConnect"
    actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
    resources = [var.msk_cluster_arn]
  }
}

data "aws_iam_policy_document" "kafka_read" {
  statement {
    sid       = "KafkaReadTopics"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"]
    resources = local.kafka_topics
  }

  statement {
    sid       = "KafkaConsumerGroups"
    actions   = ["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"]
    resources = local.kafka_groups
  }
}

data "aws_iam_policy_document" "kafka_write" {
  statement {
    sid       = "KafkaWriteTopics"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"]
    resources = local.kafka_topics
  }
}

# --- one policy and one IRSA role per workload -----------------------------------------------

data "aws_iam_policy_document" "workload" {
  for_each = local.workloads

  source_policy_documents = concat(
    [data.aws_iam_policy_document.kms_lake.json],
    length(each.value.kafka) > 0 ? [data.aws_iam_policy_document.kafka_connect.json] : [],
    [for access in each.value.kafka : local.kafka_documents[access]],
  )

  statement {
    sid       = "${each.value.sid}Objects"
    actions   = each.value.object_actions
    resources = [for prefix in each.value.prefixes : "${var.lake_bucket_arn}/${prefix}*"]
  }

  dynamic "statement" {
    for_each = length(each.value.list_actions) > 0 ? [each.value] : []
    content {
      sid       = "List${statement.value.sid}"
      actions   = statement.value.list_actions
      resources = [var.lake_bucket_arn]
      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = [for prefix in statement.value.prefixes : "${prefix}*"]
      }
    }
  }
}

module "role" {
  source            = "../irsa"
  for_each          = local.workloads
  name              = "${var.name}-${each.key}"
  oidc_provider_arn = var.oidc_provider_arn
  oidc_issuer       = var.oidc_issuer
  namespace         = var.namespace
  service_accounts  = each.value.service_accounts
  policy_json       = data.aws_iam_policy_document.workload[each.key].json
  tags              = var.tags
}
