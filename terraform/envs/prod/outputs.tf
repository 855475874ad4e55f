# The outputs below are written into k8s/overlays/prod and next to the Helm values; see
# docs/deploy-aws.md. Keys must stay in step with k8s/overlays/prod/{settings,aws}.env
# (tests/infra checks that).

output "region" {
  description = "AWS region of the environment."
  value       = var.region
}

output "cluster_name" {
  description = "EKS cluster name, for aws eks update-kubeconfig."
  value       = module.eks.cluster_name
}

output "ecr_repository_urls" {
  description = "ECR repository URL per image (airflow, job, serving)."
  value       = module.ecr.repository_urls
}

output "ecr_registry" {
  description = "ECR registry host for docker login."
  value       = module.ecr.registry
}

output "lake_uri" {
  description = "CTLOOP_LAKE_URI of the environment."
  value       = module.lake.lake_uri
}

output "postgres_master_secret_arn" {
  description = "Secrets Manager ARN of the RDS master credentials, used once to create the application roles."
  value       = module.rds.master_user_secret_arn
}

output "postgres_app_secret_names" {
  description = "Secrets Manager names of the Airflow and MLflow database logins."
  value       = module.rds.app_secret_names
}

output "feast_redis_secret_name" {
  description = "Secrets Manager name of the Feast Redis connection string."
  value       = module.redis.connection_secret_name
}

output "kustomize_settings_env" {
  description = "Contents of k8s/overlays/prod/settings.env: non-secret ctloop settings merged into the ctloop-settings ConfigMap."
  value       = <<-EOT
    CTLOOP_LAKE_URI=${module.lake.lake_uri}
    CTLOOP_KAFKA_BOOTSTRAP=${module.msk.bootstrap_brokers_iam}
    AWS_REGION=${var.region}
    AWS_DEFAULT_REGION=${var.region}
  EOT
}

output "kustomize_aws_env" {
  description = "Contents of k8s/overlays/prod/aws.env: IRSA role ARNs, the VPC CIDR and the MLflow artifact root, substituted into the overlay."
  value       = <<-EOT
    LANDER_ROLE_ARN=${module.workload_iam.role_arns["lander"]}
    JOB_ROLE_ARN=${module.workload_iam.role_arns["job"]}
    SERVING_ROLE_ARN=${module.workload_iam.role_arns["serving"]}
    FEAST_ROLE_ARN=${module.workload_iam.role_arns["feast"]}
    MLFLOW_ROLE_ARN=${module.workload_iam.role_arns["mlflow"]}
    MLFLOW_ARTIFACTS_DESTINATION=s3://${module.lake.bucket_name}/mlflow-artifacts
    VPC_CIDR=${module.network.vpc_cidr}
  EOT
}

output "airflow_helm_values" {
  description = "Environment-specific Helm values for the Airflow chart (IRSA annotations, remote log folder, image); pass with -f after k8s/airflow/values.yaml."
  value = yamlencode({
    images = {
      airflow = {
        repository = module.ecr.repository_urls["airflow"]
      }
    }
    config = {
      logging = {
        remote_base_log_folder = "s3://${module.lake.bucket_name}/airflow-logs"
      }
    }
    scheduler    = { serviceAccount = { annotations = { "eks.amazonaws.com/role-arn" = module.workload_iam.role_arns["airflow"] } } }
    workers      = { serviceAccount = { annotations = { "eks.amazonaws.com/role-arn" = module.workload_iam.role_arns["airflow"] } } }
    triggerer    = { serviceAccount = { annotations = { "eks.amazonaws.com/role-arn" = module.workload_iam.role_arns["airflow"] } } }
    apiServer    = { serviceAccount = { annotations = { "eks.amazonaws.com/role-arn" = module.workload_iam.role_arns["airflow"] } } }
    dagProcessor = { serviceAccount = { annotations = { "eks.amazonaws.com/role-arn" = module.workload_iam.role_arns["airflow"] } } }
  })
}
