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
  lake_root = "${var.lake_bucket_arn}/${var.lake_prefix}"

  kafka_topics = [for t in var.kafka_topic_patterns : "${var.msk_topic_arn_prefix}${t}"]
  kafka_groups = [for g in var.kafka_group_patterns : "${var.msk_group_arn_prefix}${g}"]

  airflow_service_accounts = [
    for component in ["scheduler", "worker", "triggerer", "api-server", "dag-processor"] :
    "${var.airflow_release}-${component}"
  ]
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

# --- lander ----------------------------------------------------------------------------------

data "aws_iam_policy_document" "lander" {
  source_policy_documents = [
    data.aws_iam_policy_document.kms_lake.json,
    data.aws_iam_policy_document.kafka_connect.json,
    data.aws_iam_policy_document.kafka_read.json,
  ]

  statement {
    sid       = "LandRawAndDeadLetters"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"]
    resources = ["${local.lake_root}/raw/*", "${local.lake_root}/_dlq/*"]
  }

  statement {
    sid       = "ListRawAndDeadLetters"
    actions   = ["s3:ListBucket"]
    resources = [var.lake_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.lake_prefix}/raw/*", "${var.lake_prefix}/_dlq/*"]
    }
  }
}

module "lander" {
  source            = "../irsa"
  name              = "${var.name}-lander"
  oidc_provider_arn = var.oidc_provider_arn
  oidc_issuer       = var.oidc_issuer
  namespace         = var.namespace
  service_accounts  = ["ctloop-lander"]
  policy_json       = data.aws_iam_policy_document.lander.json
  tags              = var.tags
}

# --- jobs (Spark clean/features, Feast materialize, training, evaluation, monitoring) -------

data "aws_iam_policy_document" "job" {
  source_policy_documents = [
    data.aws_iam_policy_document.kms_lake.json,
    data.aws_iam_policy_document.kafka_connect.json,
    data.aws_iam_policy_document.kafka_read.json,
    data.aws_iam_policy_document.kafka_write.json,
  ]

  statement {
    sid     = "LakeAndFeastObjects"
    actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = [
      "${local.lake_root}/*",
      "${var.lake_bucket_arn}/feast/*",
    ]
  }

  statement {
    sid       = "ListLakeAndFeast"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [var.lake_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.lake_prefix}/*", "feast/*"]
    }
  }
}

module "job" {
  source            = "../irsa"
  name              = "${var.name}-job"
  oidc_provider_arn = var.oidc_provider_arn
  oidc_issuer       = var.oidc_issuer
  namespace         = var.namespace
  service_accounts  = ["ctloop-job"]
  policy_json       = data.aws_iam_policy_document.job.json
  tags              = var.tags
}

# --- serving ---------------------------------------------------------------------------------

data "aws_iam_policy_document" "serving" {
  source_policy_documents = [
    data.aws_iam_policy_document.kms_lake.json,
    data.aws_iam_policy_document.kafka_connect.json,
    data.aws_iam_policy_document.kafka_write.json,
  ]

  statement {
    sid       = "ReadFeastRegistry"
    actions   = ["s3:GetObject"]
    resources = ["${var.lake_bucket_arn}/feast/*"]
  }
}

module "serving" {
  source            = "../irsa"
  name              = "${var.name}-serving"
  oidc_provider_arn = var.oidc_provider_arn
  oidc_issuer       = var.oidc_issuer
  namespace         = var.namespace
  service_accounts  = ["ctloop-serving"]
  policy_json       = data.aws_iam_policy_document.serving.json
  tags              = var.tags
}

# --- Feast feature server --------------------------------------------------------------------

data "aws_iam_policy_document" "feast" {
  source_policy_documents = [data.aws_iam_policy_document.kms_lake.json]

  statement {
    sid       = "ReadFeastRegistry"
    actions   = ["s3:GetObject"]
    resources = ["${var.lake_bucket_arn}/feast/*"]
  }

  statement {
    sid       = "ListFeast"
    actions   = ["s3:ListBucket"]
    resources = [var.lake_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["feast/*"]
    }
  }
}

module "feast" {
  source            = "../irsa"
  name              = "${var.name}-feast"
  oidc_provider_arn = var.oidc_provider_arn
  oidc_issuer       = var.oidc_issuer
  namespace         = var.namespace
  service_accounts  = ["ctloop-feast"]
  policy_json       = data.aws_iam_policy_document.feast.json
  tags              = var.tags
}

# --- MLflow (serves artifacts to clients through its proxy, so only it touches the bucket) --

data "aws_iam_policy_document" "mlflow" {
  source_policy_documents = [data.aws_iam_policy_document.kms_lake.json]

  statement {
    sid       = "Artifacts"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${var.lake_bucket_arn}/mlflow-artifacts/*"]
  }

  statement {
    sid       = "ListArtifacts"
    actions   = ["s3:ListBucket"]
    resources = [var.lake_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["mlflow-artifacts/*"]
    }
  }
}

module "mlflow" {
  source            = "../irsa"
  name              = "${var.name}-mlflow"
  oidc_provider_arn = var.oidc_provider_arn
  oidc_issuer       = var.oidc_issuer
  namespace         = var.namespace
  service_accounts  = ["ctloop-mlflow"]
  policy_json       = data.aws_iam_policy_document.mlflow.json
  tags              = var.tags
}

# --- Airflow (remote task logs) --------------------------------------------------------------

data "aws_iam_policy_document" "airflow" {
  source_policy_documents = [data.aws_iam_policy_document.kms_lake.json]

  statement {
    sid       = "TaskLogs"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${var.lake_bucket_arn}/airflow-logs/*"]
  }

  statement {
    sid       = "ListTaskLogs"
    actions   = ["s3:ListBucket"]
    resources = [var.lake_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["airflow-logs/*"]
    }
  }
}

module "airflow" {
  source            = "../irsa"
  name              = "${var.name}-airflow"
  oidc_provider_arn = var.oidc_provider_arn
  oidc_issuer       = var.oidc_issuer
  namespace         = var.namespace
  service_accounts  = local.airflow_service_accounts
  policy_json       = data.aws_iam_policy_document.airflow.json
  tags              = var.tags
}
