# The environments pass these through unchanged; kustomize_settings_env and kustomize_aws_env are
# written into k8s/overlays/<env>/{settings,aws}.env (tests/infra keeps their keys in step).

output "region" {
  description = "AWS region of the environment."
  value       = local.region
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
  description = "Contents of k8s/overlays/<env>/settings.env: non-secret ctloop settings merged into the ctloop-settings ConfigMap."
  value       = <<-EOT
    CTLOOP_LAKE_URI=${module.lake.lake_uri}
    CTLOOP_KAFKA_BOOTSTRAP=${module.msk.bootstrap_brokers_iam}
    CTLOOP_FEAST_REGISTRY=s3://${module.lake.bucket_name}/feast/registry.db
    AWS_REGION=${local.region}
    AWS_DEFAULT_REGION=${local.region}
  EOT
}

output "kustomize_aws_env" {
  description = "Contents of k8s/overlays/<env>/aws.env: IRSA role ARNs, the VPC CIDR and the MLflow artifact root, substituted into the overlay."
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
  value = yamlencode(merge(
    {
      images = { airflow = { repository = module.ecr.repository_urls["airflow"] } }
      config = { logging = { remote_base_log_folder = "s3://${module.lake.bucket_name}/airflow-logs" } }
    },
    # Every Airflow component runs as its own service account; all of them assume the airflow role.
    {
      for component in ["scheduler", "workers", "triggerer", "apiServer", "dagProcessor"] :
      component => { serviceAccount = { annotations = { "eks.amazonaws.com/role-arn" = module.workload_iam.role_arns["airflow"] } } }
    },
  ))
}
